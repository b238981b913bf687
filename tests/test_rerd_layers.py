"""ProbSparse attention (RERD Eq. 3-4) and distillation layers (Eq. 2) against numpy."""

import math

import jax
import numpy as np
import pytest

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.layers.distill import (DistillConv, DistillationStack, check_distill_layers,
                                       distilled_lengths, masked_max_pool, max_distill_layers,
                                       pooled_length, pools_after)
from mmfuse_jax.layers.probsparse import (ProbSparseSelfAttention, num_sparse,
                                         sample_key_indices)
from mmfuse_jax.layers.transformer import sinusoidal_positions


def _masks():
  mask = np.ones((2, 12), bool)
  mask[0, 9:] = False          # back padding
  mask[1, :4] = False          # front padding
  return mask


def _np_project(p, x):
  q = np.einsum("btd,dhk->bthk", x, p["query"]["kernel"]) + p["query"]["bias"]
  k = np.einsum("btd,dhk->bthk", x, p["key"]["kernel"]) + p["key"]["bias"]
  v = np.einsum("btd,dhk->bthk", x, p["value"]["kernel"]) + p["value"]["bias"]
  return q, k, v


def _np_probsparse(params, x, mask, u, sample_idx):
  """Independent loop implementation of Eq. 3-4 for the given sampled key indices
  (sample_idx None: all valid keys). Returns (output, selected (B, H, L))."""
  p = jax.tree_util.tree_map(np.asarray, params)["params"]
  q, k, v = _np_project(p, x.astype(np.float64))
  b, length, h, d = q.shape
  ctx = np.zeros_like(q)
  selected = np.zeros((b, h, length), bool)
  for i in range(b):
    valid = [j for j in range(length) if mask[i, j]]
    for hh in range(h):
      meas = np.full(length, -np.inf)
      for n in valid:
        keys = valid if sample_idx is None else list(sample_idx[i, n])
        s = np.array([q[i, n, hh] @ k[i, j, hh] / math.sqrt(d) for j in keys])
        meas[n] = s.max() - s.mean()
      order = np.argsort(-meas, kind="stable")[:u]
      top = [n for n in order if mask[i, n]]
      mean_v = v[i, valid, hh].mean(0)
      for n in range(length):
        ctx[i, n, hh] = mean_v
      for n in top:
        s = np.array([q[i, n, hh] @ k[i, j, hh] / math.sqrt(d) for j in valid])
        w = np.exp(s - s.max()); w /= w.sum()
        ctx[i, n, hh] = (w[:, None] * v[i, valid, hh]).sum(0)
        selected[i, hh, n] = True
  out = np.einsum("bthk,hkd->btd", ctx, p["out"]["kernel"]) + p["out"]["bias"]
  return out, selected


def _np_dense(params, x, mask):
  p = jax.tree_util.tree_map(np.asarray, params)["params"]
  q, k, v = _np_project(p, x.astype(np.float64))
  s = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
  s = np.where(mask[:, None, None, :], s, -np.inf)
  w = np.exp(s - s.max(-1, keepdims=True)); w /= w.sum(-1, keepdims=True)
  ctx = np.einsum("bhqk,bkhd->bqhd", w, v)
  return np.einsum("bthk,hkd->btd", ctx, p["out"]["kernel"]) + p["out"]["bias"]


def test_num_sparse_closed_form():
  assert num_sparse(50, 3) == 3 * math.ceil(math.log(50)) == 12
  assert num_sparse(500, 3) == 21
  assert num_sparse(5, 3) == 5          # capped at L
  assert num_sparse(1, 3) == 1          # at least one


def test_sample_key_indices_only_valid_keys():
  mask = _masks()
  idx = np.asarray(jax.jit(sample_key_indices, static_argnums=(2, 3))(
      jax.random.PRNGKey(0), mask, 12, 200))
  assert idx.shape == (2, 12, 200)
  for i in range(2):
    assert mask[i][idx[i]].all()                                      # never a padded key
    assert set(np.unique(idx[i])) == set(np.nonzero(mask[i])[0])      # every valid key reachable
  idx2 = np.asarray(sample_key_indices(jax.random.PRNGKey(0), mask, 12, 200))
  np.testing.assert_array_equal(idx, idx2)                            # explicit key: reproducible
  idx3 = np.asarray(sample_key_indices(jax.random.PRNGKey(1), mask, 12, 200))
  assert (idx3 != idx).any()


def test_probsparse_all_queries_all_keys_is_full_attention():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 12, 8)).astype(np.float32)
  mask = _masks()
  layer = ProbSparseSelfAttention(num_heads=2, factor=100)            # u = U = L
  params = layer.init(jax.random.PRNGKey(0), x, mask)
  y, det = jax.jit(lambda p, x: layer.apply(p, x, mask))(params, x)
  assert det["sample_idx"] is None
  # Valid queries equal full attention (padded queries keep mean(V) and are masked later).
  np.testing.assert_allclose(np.asarray(y)[mask], _np_dense(params, x, mask)[mask], atol=1e-4)
  np.testing.assert_array_equal(det["selected"], np.broadcast_to(mask[:, None], (2, 2, 12)))
  dense = ProbSparseSelfAttention(num_heads=2, sparse=False)
  np.testing.assert_allclose(np.asarray(dense.apply(params, x, mask)[0])[mask],
                             np.asarray(y)[mask], atol=1e-5)


@pytest.mark.parametrize("sampled", [True, False])
def test_probsparse_matches_numpy_selection(sampled):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 12, 8)).astype(np.float32)
  mask = _masks()
  layer = ProbSparseSelfAttention(num_heads=2, factor=1)              # u = U = ceil(ln 12) = 3
  params = layer.init(jax.random.PRNGKey(0), x, mask)
  rngs = {"sample": jax.random.PRNGKey(7)} if sampled else None
  fn = jax.jit(lambda p, x, r: layer.apply(p, x, mask, rngs=r))
  y, det = fn(params, x, rngs)
  sample_idx = None if det["sample_idx"] is None else np.asarray(det["sample_idx"])
  assert (sample_idx is not None) == sampled
  if sampled:
    assert sample_idx.shape == (2, 12, 3) and mask[0][sample_idx[0]].all()
  y_np, sel_np = _np_probsparse(params, x, mask, 3, sample_idx)
  np.testing.assert_allclose(y, y_np, atol=1e-4)
  np.testing.assert_array_equal(det["selected"], sel_np)
  sel = np.asarray(det["selected"])
  assert not sel[~np.broadcast_to(mask[:, None], sel.shape)].any()   # padded query never selected
  assert (sel.sum(-1) == 3).all()
  # A padded key cannot change anything (values far away from the data).
  x2 = x.copy(); x2[0, 9:] = 50.0; x2[1, :4] = -30.0
  y2, _ = fn(params, x2, rngs)
  np.testing.assert_allclose(np.asarray(y2)[mask], np.asarray(y)[mask], atol=1e-4)
  g = jax.jit(jax.grad(lambda p: fn(p, x, rngs)[0][mask].sum()))(params)
  assert all(np.isfinite(a).all() for a in jax.tree_util.tree_leaves(g))
  assert np.abs(np.asarray(g["params"]["query"]["kernel"])).sum() > 0  # selected queries learn


def test_head_width_informer_style():
  x = np.zeros((1, 5, 64), np.float32)
  layer = ProbSparseSelfAttention(num_heads=6)
  params = layer.init(jax.random.PRNGKey(0), x, np.ones((1, 5), bool))
  assert params["params"]["query"]["kernel"].shape == (64, 6, 10)
  assert params["params"]["out"]["kernel"].shape == (6, 10, 64)


def _np_pool(x, mask):
  b, length, d = x.shape
  lo = pooled_length(length)
  y = np.zeros((b, lo, d)); m = np.zeros((b, lo), bool)
  for i in range(b):
    for t in range(lo):
      win = [s for s in (2 * t - 1, 2 * t, 2 * t + 1) if 0 <= s < length and mask[i, s]]
      if win:
        m[i, t] = True
        y[i, t] = x[i, win].max(0)
  return y, m


@pytest.mark.parametrize("length", [1, 2, 7, 12])
def test_masked_max_pool_matches_numpy(length):
  rng = np.random.default_rng(length)
  x = rng.normal(size=(3, length, 4)).astype(np.float32)
  mask = rng.random((3, length)) > 0.4
  mask[0] = True
  y, m = jax.jit(masked_max_pool)(x, mask)
  y_np, m_np = _np_pool(x, mask)
  assert y.shape[1] == pooled_length(length) == -(-length // 2)
  np.testing.assert_array_equal(m, m_np)
  np.testing.assert_allclose(y, y_np, atol=1e-6)
  g = jax.grad(lambda x: masked_max_pool(x, mask)[0].sum())(x)
  assert np.isfinite(g).all() and not np.asarray(g)[~mask].any()    # padded steps never win


def test_distilled_lengths_and_bound():
  assert distilled_lengths(50, 3) == [50, 25, 13]
  assert distilled_lengths(500, 3) == [500, 250, 125]
  assert distilled_lengths(7, 4) == [7, 4, 2, 1]
  assert distilled_lengths(9, 3, distill=False) == [9, 9, 9]
  for t in (1, 2, 3, 7, 8, 50, 500):
    assert max_distill_layers(t) == int(np.floor(np.log2(t))) + 1
  check_distill_layers({"text": 8, "audio": 12}, 4)
  with pytest.raises(ConfigError, match=r"'text', 8 steps\) allows at most .* = 4"):
    check_distill_layers({"text": 8, "audio": 12}, 5)


def test_distill_conv_ignores_padding_and_updates_stats():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 9, 6)).astype(np.float32)
  mask = np.ones((2, 9), bool); mask[0, 6:] = False; mask[1, :2] = False
  layer = DistillConv(norm="batch")
  variables = layer.init(jax.random.PRNGKey(0), x, mask)
  fn = jax.jit(lambda v, x: layer.apply(v, x, mask, train=True, mutable=["batch_stats"]))
  (y, m), st = fn(variables, x)
  assert y.shape == (2, 5, 6)
  np.testing.assert_array_equal(m, _np_pool(x, mask)[1])
  x2 = x.copy(); x2[0, 6:] = 1e3; x2[1, :2] = -1e3
  (y2, _), st2 = fn(variables, x2)
  np.testing.assert_allclose(y2, y, atol=1e-5)
  np.testing.assert_allclose(st2["batch_stats"]["norm"]["mean"], st["batch_stats"]["norm"]["mean"],
                             atol=1e-5)
  # The batch statistics are those of the valid conv outputs only (numpy check).
  p = variables["params"]["conv"]
  xz = np.where(mask[..., None], x, 0.0)
  xp = np.pad(xz, ((0, 0), (1, 1), (0, 0)))
  conv = sum(np.einsum("btd,de->bte", xp[:, j:j + 9], p["kernel"][j]) for j in range(3)) + p["bias"]
  mean = conv[mask].mean(0)
  np.testing.assert_allclose(st["batch_stats"]["norm"]["mean"], 0.1 * mean, atol=1e-5)


@pytest.mark.parametrize("distill", [True, False])
def test_stack_output_lengths_match_prediction(distill):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 11, 8)).astype(np.float32)
  mask = np.ones((2, 11), bool); mask[0, 7:] = False
  stack = DistillationStack(num_heads=2, num_layers=3, d_ff=8, distill=distill)
  variables = stack.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)},
                         x, mask)
  (y, m, det), _ = jax.jit(lambda v, x: stack.apply(
      v, x, mask, train=True, rngs={"sample": jax.random.PRNGKey(2),
                                    "dropout": jax.random.PRNGKey(3)},
      mutable=["batch_stats"]))(variables, x)
  expect = distilled_lengths(11, 3, distill)
  assert [d["mask"].shape[1] for d in det] == expect
  assert y.shape == (2, expect[-1], 8) and m.shape == (2, expect[-1])
  assert not np.asarray(y)[~np.asarray(m)].any()                     # padding stays zero
  expect_mask = mask
  for _ in range(2 if distill else 0):
    expect_mask = _np_pool(np.zeros(expect_mask.shape + (1,)), expect_mask)[1]
  np.testing.assert_array_equal(m, expect_mask)                       # masks pooled alike


def test_official_lengths_and_layer_order():
  """'CIRCULAR_2' (the official ConvLayer) adds two steps before pooling: 50 -> 26 -> 14;
  'reference' order pools after every layer but the last."""
  assert distilled_lengths(50, 3, padding="CIRCULAR_2") == [50, 26, 14]
  assert distilled_lengths(50, 3, padding="CIRCULAR_2", order="reference") == [26, 14, 14]
  assert distilled_lengths(50, 3, order="reference") == [25, 13, 13]
  assert distilled_lengths(2, 3, padding="CIRCULAR_2") == [2, 2, 2]     # never below 2
  assert [pools_after(i, 3, "paper") for i in range(3)] == [False, True, True]
  assert [pools_after(i, 3, "reference") for i in range(3)] == [True, True, False]


def test_circular2_conv_matches_numpy_with_masks():
  """Conv over x wrapped two steps each side (torch padding_mode='circular', padding=2) on
  the padded length; an output step is valid when its window holds a valid step."""
  rng = np.random.default_rng(7)
  x = rng.normal(size=(2, 7, 3)).astype(np.float32)
  mask = np.ones((2, 7), bool); mask[1, 5:] = False
  layer = DistillConv(norm="layer", padding="CIRCULAR_2")
  variables = layer.init(jax.random.PRNGKey(0), x, mask)
  layer_conv = lambda v, x: layer.apply(v, x, mask, capture_intermediates=True)
  (y, m), state = jax.jit(layer_conv)(variables, x)
  conv_out = np.asarray(state["intermediates"]["conv"]["__call__"][0])
  p = variables["params"]["conv"]
  xz = np.where(mask[..., None], x, 0.0)
  xp = xz[:, (np.arange(-2, 9)) % 7]                                  # (2, 11, 3)
  ref = sum(np.einsum("btd,de->bte", xp[:, j:j + 9], p["kernel"][j]) for j in range(3))
  np.testing.assert_allclose(conv_out, ref + p["bias"], rtol=1e-5, atol=1e-5)
  mp = mask[:, (np.arange(-2, 9)) % 7]
  conv_mask = np.stack([mp[:, j:j + 3].any(1) for j in range(9)], 1)
  assert y.shape == (2, 5, 3)
  np.testing.assert_array_equal(m, _np_pool(np.zeros((2, 9, 1)), conv_mask)[1])
  assert not np.asarray(y)[~np.asarray(m)].any()


def test_reference_view_layout_matches_numpy():
  """The official `.view` head split: (B, L, H, d) read as (B, H, L, d), attention per
  "head" of L consecutive slices, context read back as (B, L, H * d). Dense here (u = L)."""
  rng = np.random.default_rng(8)
  x = rng.normal(size=(2, 4, 6)).astype(np.float32)
  mask = np.ones((2, 4), bool); mask[0, 3] = False                   # ignored in this layout
  layer = ProbSparseSelfAttention(num_heads=2, factor=5, layout="reference_view")
  variables = layer.init(jax.random.PRNGKey(0), x, mask)
  out, _ = jax.jit(lambda v, x: layer.apply(v, x, mask))(variables, x)
  p = variables["params"]
  proj = lambda n: np.einsum("bld,dhe->blhe", x, p[n]["kernel"]) + p[n]["bias"]
  q, k, v = (proj(n).reshape(2, 2, 4, 3) for n in ("query", "key", "value"))  # torch .view
  s = np.einsum("bhqe,bhke->bhqk", q, k) / np.sqrt(3)
  a = np.exp(s - s.max(-1, keepdims=True)); a /= a.sum(-1, keepdims=True)
  ctx = np.einsum("bhqk,bhke->bhqe", a, v).reshape(2, 4, 2, 3)        # .view(B, L, -1)
  ref = np.einsum("blhe,hed->bld", ctx, p["out"]["kernel"]) + p["out"]["bias"]
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
  heads = ProbSparseSelfAttention(num_heads=2, factor=5).apply(variables, x, np.ones_like(mask))[0]
  assert np.abs(np.asarray(heads) - ref).max() > 1e-2                # not the per-head split


def test_interleaved_positions_are_vaswanis_table():
  t = np.asarray(sinusoidal_positions(5, 6, "interleaved"))
  pos, i = np.arange(5)[:, None], np.arange(3)[None]
  np.testing.assert_allclose(t[:, 0::2], np.sin(pos / 10000 ** (2 * i / 6)), atol=1e-6)
  np.testing.assert_allclose(t[:, 1::2], np.cos(pos / 10000 ** (2 * i / 6)), atol=1e-6)
  assert np.asarray(sinusoidal_positions(3, 5, "interleaved")).shape == (3, 5)
