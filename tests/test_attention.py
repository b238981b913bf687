import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.layers.attention import MultiHeadAttention, causal_mask, masked_softmax
from mmfuse_jax.layers.transformer import (AttentionPool, last_valid, masked_mean,
                                           sinusoidal_positions)


def _numpy_mha(params, xq, xkv, key_mask, heads, attn_mask=None):
  p = params["params"]
  q = np.einsum("btd,dhk->bthk", xq, p["query"]["kernel"]) + p["query"]["bias"]
  k = np.einsum("btd,dhk->bthk", xkv, p["key"]["kernel"]) + p["key"]["bias"]
  v = np.einsum("btd,dhk->bthk", xkv, p["value"]["kernel"]) + p["value"]["bias"]
  b, tq, tk = xq.shape[0], xq.shape[1], xkv.shape[1]
  out = np.zeros((b, tq, heads, q.shape[-1]))
  probs = np.zeros((b, heads, tq, tk))
  for i in range(b):
    for h in range(heads):
      for n in range(tq):
        valid = [m for m in range(tk) if key_mask[i, m] and (attn_mask is None or attn_mask[n, m])]
        s = np.array([q[i, n, h] @ k[i, m, h] / np.sqrt(q.shape[-1]) for m in valid])
        w = np.exp(s - s.max()); w /= w.sum()
        for j, m in enumerate(valid):
          probs[i, h, n, m] = w[j]
          out[i, n, h] += w[j] * v[i, m, h]
  y = np.einsum("bthk,hkd->btd", out, p["out"]["kernel"]) + p["out"]["bias"]
  return y, probs


@pytest.mark.parametrize("causal", [False, True])
def test_mha_matches_numpy_with_masks(causal):
  rng = np.random.default_rng(0)
  xq = rng.normal(size=(2, 5, 8)).astype(np.float32)
  xkv = rng.normal(size=(2, 7, 8)).astype(np.float32)
  key_mask = np.ones((2, 7), bool); key_mask[0, 5:] = False; key_mask[1, :2] = False
  am = np.asarray(causal_mask(5, 7)) if causal else None
  layer = MultiHeadAttention(num_heads=2)
  params = layer.init(jax.random.PRNGKey(0), xq, xkv, key_mask, am)
  fn = jax.jit(lambda p, a, b: layer.apply(p, a, b, key_mask, am))
  y, det = fn(params, xq, xkv)
  y_np, probs_np = _numpy_mha(jax.tree_util.tree_map(np.asarray, params), xq, xkv, key_mask, 2, am)
  np.testing.assert_allclose(y, y_np, atol=1e-4)
  np.testing.assert_allclose(det["probs"], probs_np, atol=1e-5)
  assert np.all(np.asarray(det["probs"])[0, :, :, 5:] == 0)  # padded keys get no weight
  # Values at padded keys cannot change the output.
  xkv2 = xkv.copy(); xkv2[0, 5:] = 100.0; xkv2[1, :2] = -50.0
  np.testing.assert_allclose(fn(params, xq, xkv2)[0], y, atol=1e-5)
  g = jax.grad(lambda p: fn(p, xq, xkv)[0].sum())(params)
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(g))


def test_causal_mask_shift_like_mult():
  m = np.asarray(causal_mask(3, 3))
  np.testing.assert_array_equal(m, np.tril(np.ones((3, 3), bool)))
  m = np.asarray(causal_mask(2, 5))  # query i sees keys j <= i + 3
  np.testing.assert_array_equal(m, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])


def test_masked_softmax_all_masked_row_is_zero():
  p = masked_softmax(jnp.zeros((2, 3)), jnp.array([[True, False, True], [False] * 3]))
  np.testing.assert_allclose(p, [[0.5, 0, 0.5], [0, 0, 0]])


def test_last_valid_and_masked_mean():
  x = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
  mask = np.array([[1, 1, 0, 0], [0, 1, 1, 1]], bool)
  np.testing.assert_array_equal(last_valid(x, mask), np.stack([x[0, 1], x[1, 3]]))
  np.testing.assert_allclose(masked_mean(x, mask), np.stack([x[0, :2].mean(0), x[1, 1:].mean(0)]))


def test_sinusoidal_positions():
  t = np.asarray(sinusoidal_positions(6, 8))
  assert t.shape == (6, 8)
  np.testing.assert_allclose(t[0], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-6)
  np.testing.assert_allclose(t[3, 0], np.sin(3.0), atol=1e-6)
  # offset 1 (MulT's public code numbers positions from 1): the same table, one row on.
  np.testing.assert_allclose(sinusoidal_positions(5, 8, offset=1), t[1:], atol=1e-6)


@pytest.mark.parametrize("scan_layers", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_remat_attention_same_values_grads_and_params_less_memory(scan_layers):
  """remat_attention recomputes the scores in the backward pass: same parameter tree,
  same loss and gradients (same dropout masks) as storing them, with masks and dropout
  on; with the layer scan, less XLA temp memory for the gradient (no per-layer stacks of
  scores; unrolled, XLA's scheduler already frees them at this size)."""
  from mmfuse_jax.layers.transformer import TransformerEncoder
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 40, 8))
  kv = jax.random.normal(jax.random.PRNGKey(1), (2, 30, 8))
  qm = jnp.ones((2, 40), bool).at[1, 25:].set(False)
  km = jnp.ones((2, 30), bool).at[0, 21:].set(False)
  mods = [TransformerEncoder(2, 3, attn_dropout=0.3, relu_dropout=0.2, res_dropout=0.1,
                             embed_dropout=0.1, scan_layers=scan_layers, remat_attention=r)
          for r in (False, True)]
  params = mods[0].init(jax.random.PRNGKey(2), x, qm, kv, km)
  assert (jax.tree_util.tree_structure(params)
          == jax.tree_util.tree_structure(mods[1].init(jax.random.PRNGKey(2), x, qm, kv, km)))
  loss = lambda m: jax.value_and_grad(lambda p: jnp.sum(m.apply(
      p, x, qm, kv, km, train=True, rngs={"dropout": jax.random.PRNGKey(3)})[0] ** 2))
  (v0, g0), (v1, g1) = [jax.jit(loss(m))(params) for m in mods]
  np.testing.assert_allclose(float(v1), float(v0), rtol=1e-6)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                         g1, g0)
  if scan_layers:
    temp = [jax.jit(loss(m)).lower(params).compile().memory_analysis().temp_size_in_bytes
            for m in mods]
    assert temp[1] < temp[0], temp


def test_attention_pool_matches_numpy_with_masks_under_jit_and_grad():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 5, 4)).astype(np.float32)
  mask = np.array([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
  pool = AttentionPool()
  variables = pool.init(jax.random.PRNGKey(0), x, mask)
  out = jax.jit(pool.apply)(variables, x, mask)
  w, b = (np.asarray(variables["params"]["score"][k]) for k in ("kernel", "bias"))
  expected = np.zeros((3, 4))
  for i in range(3):
    valid = np.nonzero(mask[i])[0]
    if len(valid) == 0:
      continue                                    # no valid step: zeros
    s = x[i, valid] @ w[:, 0] + b[0]
    a = np.exp(s - s.max()); a /= a.sum()
    expected[i] = a @ x[i, valid]
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  # Padded steps get no weight and no gradient; gradients are finite for an empty row.
  grad = jax.grad(lambda xx: pool.apply(variables, xx, mask).sum())(jnp.asarray(x))
  assert np.all(np.asarray(grad)[~mask] == 0) and np.all(np.isfinite(grad))
