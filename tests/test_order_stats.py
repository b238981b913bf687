"""Multi-way bisection (losses.order) against binary bisection and a numpy sort."""

import jax
import numpy as np
import pytest

from mmfuse_jax.losses.alignment import selection_mask
from mmfuse_jax.losses.order import (bisection_passes, default_ways, kth_largest,
                                     masked_median)


def _binary_bisection(values, valid, k):
  """The previous implementation, in numpy: 31 halvings of [0, bits(+inf) + 1) with the
  floor midpoint, over the int32 bit patterns of the valid values."""
  bits = np.where(valid, np.maximum(values, 0).astype(np.float32).view(np.int32), -1)
  lo = np.zeros(k.shape, np.int64)
  hi = np.full(k.shape, 0x7F800001, np.int64)
  for _ in range(31):
    mid = lo + (hi - lo) // 2
    enough = (bits >= mid[..., None]).sum(-1) >= k
    lo, hi = np.where(enough, mid, lo), np.where(enough, hi, mid)
  return np.where(k > 0, lo.astype(np.int32).view(np.float32), 0.0)


def _sorted_kth(values, valid, k):
  out = np.zeros(k.shape, np.float32)
  for idx in np.ndindex(k.shape):
    v = np.sort(values[idx][valid[idx]])[::-1]
    out[idx] = v[k[idx] - 1] if k[idx] > 0 else 0.0
  return out


def _values_with_ties(seed, shape):
  rng = np.random.default_rng(seed)
  vals = rng.exponential(size=shape).astype(np.float32)
  vals[0, 0, : shape[-1] // 4] = 0.5                     # ties
  vals[0, 1, ::2] = vals[0, 1, 1]                        # ties at every other entry
  vals[1, 0] = 0.0                                       # all zero
  vals[1, 1, :3] = [np.inf, 1e-40, np.finfo(np.float32).max]  # +inf, subnormal, max
  valid = rng.random(shape) > 0.3
  k = np.maximum(1, (rng.random(shape[:-1]) * valid.sum(-1)).astype(np.int32))
  k[1, 2] = 0
  return vals, valid, k


@pytest.mark.parametrize("ways", [2, 3, 4, 16, 256])
def test_multiway_equals_binary_bisection_and_sort(ways):
  vals, valid, k = _values_with_ties(ways, (3, 4, 61))
  got = np.asarray(jax.jit(kth_largest, static_argnums=3)(vals, valid, k, ways))
  np.testing.assert_array_equal(got, _sorted_kth(vals, valid, k))
  np.testing.assert_array_equal(got, _binary_bisection(vals, valid, k))


def test_passes_before_and_after():
  assert bisection_passes(2) == 31 and bisection_passes(16) == 8
  # the bracket 2**31-ish wide shrinks at least `ways`-fold per pass
  for ways in (3, 4, 16, 256):
    assert ways ** (bisection_passes(ways) - 1) < 0x7F800001 <= ways ** bisection_passes(ways)
  assert default_ways("cpu") == 2 and default_ways("gpu") == default_ways("tpu") == 16
  with pytest.raises(ValueError, match="ways"):
    bisection_passes(1)


@pytest.mark.parametrize("ways", [2, 16])
def test_masked_median_with_any_ways_equals_numpy(ways):
  rng = np.random.default_rng(ways)
  vals = np.round(rng.exponential(size=(40, 3)), 1).astype(np.float32)   # many ties
  valid = rng.random((40, 3)) > 0.4
  got = float(jax.jit(masked_median, static_argnums=2)(vals, valid, ways))
  assert got == pytest.approx(float(np.median(vals[valid])), rel=1e-6)


@pytest.mark.parametrize("tau", [0.0, 0.07, 0.25, 1.0])
def test_selection_mask_same_set_with_16_ways(tau):
  """MICA's selection W (top tau of each valid T_t x T_s matrix, ties included) is the same
  with 16-way as with binary bisection, and equals a sort-based numpy selection."""
  rng = np.random.default_rng(3)
  b, h, t_t, t_s = 3, 2, 6, 9
  logits = np.round(rng.normal(size=(b, h, t_t, t_s)), 1)             # ties in the probs
  probs = np.asarray(jax.nn.softmax(logits.astype(np.float32), -1))
  q_mask = np.ones((b, 1, t_t), bool); q_mask[0, 0, 4:] = False
  k_mask = np.ones((b, 1, t_s), bool); k_mask[1, 0, :5] = False
  run = jax.jit(selection_mask, static_argnums=(3, 4))
  two, sixteen = (np.asarray(run(probs, q_mask, k_mask, tau, w)) for w in (2, 16))
  np.testing.assert_array_equal(sixteen, two)
  for i, j in np.ndindex(b, h):
    valid = q_mask[i, 0][:, None] & k_mask[i, 0][None, :]
    n = int(np.ceil(tau * valid.sum() - 1e-6))
    want = np.zeros_like(valid)
    if n:
      gamma = np.sort(probs[i, j][valid])[::-1][n - 1]
      want = valid & (probs[i, j] >= gamma)
    np.testing.assert_array_equal(sixteen[i, j], want)
