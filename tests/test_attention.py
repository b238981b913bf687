import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.layers.attention import MultiHeadAttention, causal_mask, masked_softmax
from mmfuse_jax.layers.transformer import last_valid, masked_mean, sinusoidal_positions


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
