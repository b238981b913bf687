"""MMD^2 with a multi-bandwidth Gaussian kernel against direct numpy double loops."""

import jax
import numpy as np
import pytest

from mmfuse_jax.losses.mmd import base_bandwidth, mmd2

SCALES = (0.5, 1.0, 2.0)


def _kernel(a, b, sigma2, scales):
  d2 = float(np.sum((a - b) ** 2))
  return float(np.mean([np.exp(-d2 / (2 * s * sigma2)) for s in scales]))


def ref_mmd2(x, y, wx, wy, sigma2, scales, unbiased=False):
  """Weighted MMD^2 by explicit double loops (float64)."""
  x = np.asarray(x, np.float64); y = np.asarray(y, np.float64)
  wx = np.asarray(wx, np.float64); wy = np.asarray(wy, np.float64)

  def within(z, w):
    num = den = 0.0
    for i in range(len(z)):
      for j in range(len(z)):
        if unbiased and i == j:
          continue
        num += w[i] * w[j] * _kernel(z[i], z[j], sigma2, scales)
        den += w[i] * w[j]
    return num / den

  cross = 0.0
  for i in range(len(x)):
    for j in range(len(y)):
      cross += wx[i] * wy[j] * _kernel(x[i], y[j], sigma2, scales)
  cross /= wx.sum() * wy.sum()
  return within(x, wx) + within(y, wy) - 2 * cross


def ref_median(x, y, wx, wy):
  z = np.concatenate([x, y]).astype(np.float64)
  valid = np.concatenate([np.asarray(wx) > 0, np.asarray(wy) > 0])
  d = [float(np.sum((z[i] - z[j]) ** 2)) for i in range(len(z)) for j in range(len(z))
       if i != j and valid[i] and valid[j]]
  return float(np.median(d))


@pytest.fixture
def samples():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(7, 3)).astype(np.float32)
  y = (rng.normal(size=(5, 3)) + 0.7).astype(np.float32)
  mx = np.array([1, 1, 1, 0, 1, 1, 0], bool)
  my = np.array([1, 0, 1, 1, 1], bool)
  return x, y, mx, my


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("bandwidth", [1.3, "median"])
def test_matches_double_loop_with_masks(samples, estimator, bandwidth):
  x, y, mx, my = samples
  fn = jax.jit(lambda a, b, c, d: mmd2(a, b, c, d, bandwidth=bandwidth, scales=SCALES,
                                       estimator=estimator))
  got = float(fn(x, y, mx, my))
  sigma2 = bandwidth if bandwidth != "median" else ref_median(x, y, mx, my)
  want = ref_mmd2(x, y, mx, my, sigma2, SCALES, unbiased=estimator == "unbiased")
  assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_median_heuristic_ignores_padding(samples):
  x, y, mx, my = samples
  got = float(jax.jit(lambda *a: base_bandwidth(*a, rule="median"))(x, y, mx, my))
  assert got == pytest.approx(ref_median(x, y, mx, my), rel=1e-5)
  z = np.concatenate([x, y]); valid = np.concatenate([mx, my])
  d = [np.sum((z[i] - z[j]) ** 2) for i in range(12) for j in range(12)
       if i != j and valid[i] and valid[j]]
  mean = float(base_bandwidth(x, y, mx, my, rule="mean"))
  assert mean == pytest.approx(float(np.mean(d)), rel=1e-5)


def test_soft_weights_match_weighted_double_loop(samples):
  x, y, _, _ = samples
  wx = np.linspace(0.2, 1.0, 7).astype(np.float32)
  wy = np.array([0.5, 1.0, 0.0, 2.0, 1.0], np.float32)
  for est in ("biased", "unbiased"):
    got = float(mmd2(x, y, wx, wy, bandwidth=0.9, scales=SCALES, estimator=est))
    want = ref_mmd2(x, y, wx, wy, 0.9, SCALES, unbiased=est == "unbiased")
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_padding_values_do_not_matter(samples):
  x, y, mx, my = samples
  x2 = x.copy(); x2[~mx] = 100.0
  y2 = y.copy(); y2[~my] = -50.0
  a = mmd2(x, y, mx, my); b = mmd2(x2, y2, mx, my)
  assert float(a) == pytest.approx(float(b), rel=1e-5)


def test_identical_and_same_distribution_near_zero():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(300, 4)).astype(np.float32)
  y = rng.normal(size=(300, 4)).astype(np.float32)
  shifted = y + 1.5
  assert abs(float(mmd2(x, x))) < 1e-6
  same_u = float(mmd2(x, y, estimator="unbiased"))
  same_b = float(mmd2(x, y))
  diff = float(mmd2(x, shifted))
  assert abs(same_u) < 5e-3
  assert 0.0 <= same_b < 0.02
  assert diff > 10 * same_b, (diff, same_b)


def test_vmap_matches_loop(samples):
  rng = np.random.default_rng(2)
  xs = rng.normal(size=(3, 6, 2)).astype(np.float32)
  ys = rng.normal(size=(3, 4, 2)).astype(np.float32) + 0.5
  mxs = rng.random((3, 6)) > 0.3; mxs[:, 0] = True
  mys = rng.random((3, 4)) > 0.3; mys[:, 0] = True
  batched = jax.jit(jax.vmap(lambda a, b, c, d: mmd2(a, b, c, d)))(xs, ys, mxs, mys)
  for i in range(3):
    assert float(batched[i]) == pytest.approx(float(mmd2(xs[i], ys[i], mxs[i], mys[i])),
                                              rel=1e-5, abs=1e-7)


def test_gradients_finite_and_zero_on_padding(samples):
  x, y, mx, my = samples
  for est in ("biased", "unbiased"):
    gx, gy = jax.jit(jax.grad(lambda a, b: mmd2(a, b, mx, my, estimator=est),
                              argnums=(0, 1)))(x, y)
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))
    assert np.all(np.asarray(gx)[~mx] == 0) and np.all(np.asarray(gy)[~my] == 0)
    assert np.abs(np.asarray(gx)[mx]).sum() > 0
  # Gradient matches a central finite difference (fixed bandwidth: smooth function).
  f = lambda a: mmd2(a, y, mx, my, bandwidth=1.1, scales=SCALES)
  g = np.asarray(jax.grad(f)(x))
  eps = 1e-2
  e = np.zeros_like(x); e[1, 2] = eps
  fd = (float(f(x + e)) - float(f(x - e))) / (2 * eps)
  assert g[1, 2] == pytest.approx(fd, rel=2e-2, abs=1e-4)


def test_alignment_gradient_step_reduces_mmd():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(40, 2)).astype(np.float32)
  y = rng.normal(size=(40, 2)).astype(np.float32) + 2.0
  f = jax.jit(lambda a: mmd2(a, y, bandwidth=2.0))
  before = float(f(x))
  g = jax.jit(jax.grad(f))
  for _ in range(30):
    x = x - 40.0 * np.asarray(g(x))  # per-element gradients scale as 1/n
  assert float(f(x)) < 0.5 * before


def test_empty_side_and_errors(samples):
  x, y, mx, my = samples
  assert float(mmd2(x, y, np.zeros(7, bool), my)) == 0.0
  with pytest.raises(ValueError, match="estimator"):
    mmd2(x, y, estimator="other")
  with pytest.raises(ValueError, match="bandwidth"):
    mmd2(x, y, bandwidth="silverman")


# ------------------------------------------------------------------ exact order statistics
def test_kth_largest_matches_sort_with_masks_and_ties():
  from mmfuse_jax.losses.order import kth_largest
  rng = np.random.default_rng(7)
  vals = rng.exponential(size=(4, 3, 50)).astype(np.float32)
  vals[0, 0, :10] = 0.5  # ties
  vals[1, 2] = 0.0       # all zero
  valid = rng.random((4, 3, 50)) > 0.3
  n_valid = valid.sum(-1)
  k = np.maximum(1, (rng.random((4, 3)) * n_valid).astype(int))
  k[2, 1] = 0
  got = np.asarray(jax.jit(kth_largest)(vals, valid, k))
  for idx in np.ndindex(4, 3):
    v = np.sort(vals[idx][valid[idx]])[::-1]
    want = v[k[idx] - 1] if k[idx] > 0 else 0.0
    assert got[idx] == want, (idx, got[idx], want)


@pytest.mark.parametrize("n", [1, 6, 7, 200])
def test_masked_median_equals_numpy(n):
  from mmfuse_jax.losses.order import masked_median
  rng = np.random.default_rng(n)
  vals = rng.exponential(size=(n, 3)).astype(np.float32)
  valid = rng.random((n, 3)) > 0.4
  valid[0, 0] = True
  got = float(jax.jit(masked_median)(vals, valid))
  assert got == pytest.approx(float(np.median(vals[valid])), rel=1e-6)
  assert np.isnan(float(masked_median(vals, np.zeros_like(valid))))
