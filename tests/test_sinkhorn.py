"""Multimodal Sinkhorn distance (RERD Eq. 7-10) against ott-jax itself and numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ott.geometry import pointcloud
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn

from mmfuse_jax.losses.sinkhorn import (flatten_to_scalars, mask_to_weights, msd_loss,
                                        msd_per_sample, pairwise_cost, sinkhorn_cost)

ABSOLUTE = dict(epsilon=0.5, relative_epsilon=False)


def _clouds(seed=0, shift=1.0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(7, 4)).astype(np.float32)
  y = (rng.normal(size=(9, 4)) + shift).astype(np.float32)
  ma = np.ones(7, bool); ma[5:] = False
  mb = np.ones(9, bool); mb[:3] = False
  return x, y, ma, mb


def _np_sinkhorn(x, y, eps, iters=5000):
  """Log-domain Sinkhorn in numpy (uniform marginals, squared Euclidean cost): returns
  (transport cost <P, C>, entropic cost <P, C> + eps KL(P | a b^T))."""
  c = ((x[:, None, :].astype(np.float64) - y[None, :, :]) ** 2).sum(-1)
  n, m = c.shape
  la, lb = np.full(n, -np.log(n)), np.full(m, -np.log(m))
  f, g = np.zeros(n), np.zeros(m)
  def lse(z, axis):
    zm = z.max(axis, keepdims=True)
    return (zm + np.log(np.exp(z - zm).sum(axis, keepdims=True))).squeeze(axis)
  for _ in range(iters):
    f = -eps * lse((g[None, :] - c) / eps + lb[None, :], 1)
    g = -eps * lse((f[:, None] - c) / eps + la[:, None], 0)
  logp = (f[:, None] + g[None, :] - c) / eps + la[:, None] + lb[None, :]
  p = np.exp(logp)
  transport = (p * c).sum()
  kl = (p * (logp - la[:, None] - lb[None, :])).sum() - p.sum() + 1.0
  return transport, transport + eps * kl


@pytest.mark.parametrize("kind", ["entropic", "transport", "divergence"])
def test_equals_ott_on_the_unpadded_clouds(kind):
  x, y, ma, mb = _clouds()
  fn = jax.jit(lambda x, y: sinkhorn_cost(x, y, mask_to_weights(ma), mask_to_weights(mb),
                                          kind=kind, max_iterations=30, **ABSOLUTE)[0])
  value = fn(x, y)
  # ott directly, on the clouds with the padded steps removed.
  xs, ys = x[ma], y[mb]
  geom = pointcloud.PointCloud(xs, ys, epsilon=0.5)
  out = sinkhorn.Sinkhorn(max_iterations=30)(linear_problem.LinearProblem(geom))
  if kind == "entropic":
    ref = out.reg_ot_cost
  elif kind == "transport":
    ref = jnp.sum(out.matrix * geom.cost_matrix)
  else:
    from ott.tools import sinkhorn_divergence
    ref = sinkhorn_divergence.sinkhorn_divergence(
        pointcloud.PointCloud, xs, ys, epsilon=0.5,
        solve_kwargs={"max_iterations": 30})[0]
  np.testing.assert_allclose(value, ref, rtol=1e-4)
  # Padded steps carry no mass: moving them anywhere changes nothing.
  x2, y2 = x.copy(), y.copy(); x2[~ma] = 40.0; y2[~mb] = -25.0
  np.testing.assert_allclose(fn(x2, y2), value, rtol=1e-5)


def test_matches_numpy_sinkhorn_at_convergence():
  x, y, _, _ = _clouds(seed=3, shift=0.5)
  transport_np, entropic_np = _np_sinkhorn(x, y, eps=0.5)
  a, b = np.full(7, 1 / 7, np.float32), np.full(9, 1 / 9, np.float32)
  kw = dict(max_iterations=5000, threshold=1e-7, **ABSOLUTE)
  np.testing.assert_allclose(sinkhorn_cost(x, y, a, b, kind="transport", **kw)[0],
                             transport_np, rtol=1e-3)
  np.testing.assert_allclose(sinkhorn_cost(x, y, a, b, kind="entropic", **kw)[0], entropic_np,
                             rtol=1e-3)


def test_divergence_zero_for_identical_and_grows_with_shift():
  x, _, ma, _ = _clouds()
  a = mask_to_weights(ma)
  shifts = jnp.array([0.0, 0.5, 1.0, 2.0])
  for kind in ("divergence", "entropic"):
    values = np.asarray(jax.jit(jax.vmap(
        lambda s: sinkhorn_cost(x, x + s, a, a, kind=kind)[0]))(shifts))
    assert np.all(np.diff(values) > 0), (kind, values)
    if kind == "divergence":
      assert abs(values[0]) < 1e-3                                    # debiased: zero at 0


@pytest.mark.parametrize("implicit", [True, False])
def test_gradients_finite_masked_and_match_finite_differences(implicit):
  x, y, ma, mb = _clouds(seed=1)
  kw = dict(max_iterations=300, threshold=1e-6, implicit_diff=implicit, **ABSOLUTE)
  f = lambda x: sinkhorn_cost(x, y, mask_to_weights(ma), mask_to_weights(mb), **kw)[0]
  g = np.asarray(jax.jit(jax.grad(f))(x))
  assert np.isfinite(g).all()
  assert not g[~ma].any()                                             # no mass, no gradient
  d = np.random.default_rng(0).normal(size=x.shape).astype(np.float32) * ma[:, None]
  h = 1e-2
  fd = (float(f(x + h * d)) - float(f(x - h * d))) / (2 * h)
  np.testing.assert_allclose((g * d).sum(), fd, rtol=2e-2, atol=1e-3)


def test_msd_averages_pairs_and_weights_samples():
  rng = np.random.default_rng(4)
  seqs = {"text": rng.normal(size=(3, 4, 5)).astype(np.float32),
          "audio": (rng.normal(size=(3, 6, 5)) + 1).astype(np.float32),
          "vision": (rng.normal(size=(3, 5, 5)) - 1).astype(np.float32)}
  seqs = {m: np.concatenate([s, s[:1]]) for m, s in seqs.items()}     # 4 samples
  masks = {m: np.ones(s.shape[:2], bool) for m, s in seqs.items()}
  masks["text"][0, 2:] = False
  masks["audio"][1, :3] = False
  masks["vision"][2] = False                                          # an empty modality
  masks["text"][3] = False; masks["audio"][3] = False                 # no valid pair at all
  values, valid, info = jax.jit(msd_per_sample)(seqs, masks)
  np.testing.assert_array_equal(valid, [True, True, True, False])
  # Reference: each pair on its own (unstacked, unpadded to a common length), then the mean.
  one = jax.jit(jax.vmap(lambda x, y, ma, mb: sinkhorn_cost(x, y, mask_to_weights(ma),
                                                            mask_to_weights(mb))[0]))
  pairs = np.stack([one(seqs[p], seqs[q], masks[p], masks[q])
                    for p, q in (("text", "audio"), ("text", "vision"), ("audio", "vision"))])
  np.testing.assert_allclose(values[:2], pairs.mean(0)[:2], rtol=1e-4)
  np.testing.assert_allclose(values[2], pairs[0, 2], rtol=1e-4)        # only text-audio counts
  assert float(values[3]) == 0.0
  w = np.array([1.0, 0.0, 1.0, 1.0], np.float32)                     # sample 1 is filler
  loss, stats = jax.jit(msd_loss)(seqs, masks, w)
  np.testing.assert_allclose(loss, (values[0] + values[2]) / 2, rtol=1e-5)
  # The reported error is the worst solve that counts: samples 0 and 2, their valid pairs.
  counted = np.asarray(info["counted"]) & (w > 0)[None]
  assert counted.tolist() == [[True, False, True, False], [True, False, False, False],
                              [True, False, False, False]]
  np.testing.assert_allclose(stats["error"], np.asarray(info["error"])[counted].max())
  assert 0 < float(stats["error"]) < 1e-4                             # converged (defaults)
  assert int(stats["iterations"]) == np.asarray(info["iterations"])[counted].max()
  g = jax.grad(lambda s: msd_loss(s, masks, w)[0])(seqs)
  assert all(np.isfinite(v).all() for v in g.values())
  assert not np.asarray(g["audio"])[1].any()                          # filler row: no gradient
  assert not np.asarray(g["vision"])[2].any()                         # empty modality: none


def test_pairwise_cost_is_the_distance_map():
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4))
  d = np.asarray(pairwise_cost(x, y))
  np.testing.assert_allclose(d[1, 2, 4], ((x[1, 2] - y[1, 4]) ** 2).sum(), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(pairwise_cost(x, y, "euclidean")) ** 2, d, rtol=1e-4)


def _init_like_clouds(seed=0, n=(13, 94), d=30, scale=1.4):
  """30-d clouds with the mean squared distance (~60) of RERD's distilled outputs at
  initialisation, the second one padded (its last third carries no mass)."""
  rng = np.random.default_rng(seed)
  x = (rng.normal(size=(n[0], d)) * scale).astype(np.float32)
  y = (rng.normal(size=(n[1], d)) * scale + 0.3).astype(np.float32)
  mb = np.arange(n[1]) < n[1] - n[1] // 3
  return x, y, np.ones(n[0], bool), mb


def test_relative_epsilon_is_the_weighted_mean_cost_and_scale_free():
  x, y, ma, mb = _init_like_clouds(1, n=(9, 14), d=5)
  a, b = mask_to_weights(ma), mask_to_weights(mb)
  c = ((x[:, None] - y[None]) ** 2).sum(-1)
  value, info = jax.jit(lambda x, y: sinkhorn_cost(x, y, a, b, epsilon=0.05))(x, y)
  # eps = 0.05 * the mean cost over mass-carrying pairs only (padded points do not count).
  np.testing.assert_allclose(info["epsilon"], 0.05 * c[:, mb].mean(), rtol=1e-5)
  # With a relative eps the plan does not depend on the scale: the values scale as C does.
  for kind in ("entropic", "transport"):
    f = jax.jit(lambda x, y: sinkhorn_cost(x, y, a, b, kind=kind)[0])
    np.testing.assert_allclose(f(3 * x, 3 * y), 9 * f(x, y), rtol=1e-4)


def test_defaults_converge_on_init_like_clouds_and_match_numpy():
  """The issue's regime: 30-d clouds, mean cost ~60. The defaults stop below the
  threshold well before the cap and agree with a converged numpy Sinkhorn at the same
  eps; the former settings (eps 0.5 absolute, 30 iterations) did not converge here."""
  x, y, ma, mb = _init_like_clouds()
  a, b = mask_to_weights(ma), mask_to_weights(mb)
  c = ((x[:, None] - y[None]) ** 2).sum(-1)
  assert 50 < c[:, mb].mean() < 150
  value, info = jax.jit(lambda x, y: sinkhorn_cost(x, y, a, b, kind="transport"))(x, y)
  assert float(info["error"]) < 1e-4 and int(info["iterations"]) < 100
  transport_np, _ = _np_sinkhorn(x, y[mb], eps=float(info["epsilon"]), iters=3000)
  np.testing.assert_allclose(value, transport_np, rtol=1e-4)
  _, old = jax.jit(lambda x, y: sinkhorn_cost(x, y, a, b, max_iterations=30, threshold=1e-3,
                                              **ABSOLUTE))(x, y)
  assert float(old["error"]) > 1e-2 and int(old["iterations"]) == 30


def test_gradients_at_the_production_settings_match_finite_differences():
  """Implicit differentiation at the defaults (relative eps, threshold 1e-4, cap 200):
  the gradient is the derivative at the solved eps (which carries no gradient), checked
  against central differences of the value at that fixed eps."""
  x, y, ma, mb = _init_like_clouds(2)
  a, b = mask_to_weights(ma), mask_to_weights(mb)
  g = jax.jit(jax.grad(lambda y: sinkhorn_cost(x, y, a, b)[0]))(y)
  eps = float(sinkhorn_cost(x, y, a, b)[1]["epsilon"])
  fixed = jax.jit(lambda y: sinkhorn_cost(x, y, a, b, epsilon=eps, relative_epsilon=False,
                                          max_iterations=2000, threshold=1e-6)[0])
  g = np.asarray(g)
  assert np.isfinite(g).all() and not g[~mb].any()
  rng = np.random.default_rng(3)
  for _ in range(2):
    d = rng.normal(size=y.shape).astype(np.float32) * mb[:, None]
    h = 5e-2
    fd = (float(fixed(y + h * d)) - float(fixed(y - h * d))) / (2 * h)
    np.testing.assert_allclose((g * d).sum(), fd, rtol=1e-2)


def test_reference_quantity_flattened_scalars_transport_pairs_summed():
  """The official code's MSD: each sample's (T, d) sequence flattened to T*d scalars (a
  1-D cloud), transport cost at eps 0.5, the pairs summed."""
  rng = np.random.default_rng(6)
  seqs = {m: rng.normal(size=(2, 3, 4)).astype(np.float32) + k
          for k, m in enumerate(("text", "audio", "vision"))}
  masks = {m: np.ones((2, 3), bool) for m in seqs}
  flat, flat_masks = flatten_to_scalars(seqs, masks)
  assert flat["text"].shape == (2, 12, 1) and flat_masks["text"].shape == (2, 12)
  np.testing.assert_array_equal(flat["audio"][1, :, 0], seqs["audio"][1].reshape(-1))
  values, valid, _ = jax.jit(lambda s, m: msd_per_sample(
      s, m, kind="transport", pair_reduce="sum", max_iterations=2000, threshold=1e-6,
      **ABSOLUTE))(flat, flat_masks)
  assert valid.all()
  for i in range(2):
    pts = {m: seqs[m][i].reshape(-1, 1) for m in seqs}
    expect = sum(_np_sinkhorn(pts[p], pts[q], eps=0.5)[0]
                 for p, q in (("text", "audio"), ("audio", "vision"), ("vision", "text")))
    np.testing.assert_allclose(values[i], expect, rtol=1e-3)
