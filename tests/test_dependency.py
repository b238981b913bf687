"""Dependency bounds (MDM paper Eq. 6-8) against numpy, and MI recovery on Gaussians."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmfuse_jax.losses import dependency as dep
from mmfuse_jax.models.mdm_critic import StatisticNetwork


def _np_wmean(v, w):
  return float((v * w).sum() / w.sum())


@pytest.fixture
def scores():
  rng = np.random.default_rng(0)
  tj = rng.normal(size=9).astype(np.float32)
  tm = rng.normal(size=9).astype(np.float32)
  w = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0], np.float32)
  return tj, tm, w


def test_valid_permutation_keeps_filler_apart():
  w = jnp.array([1, 0, 1, 1, 0, 1, 1, 1], jnp.float32)
  seen = set()
  for s in range(20):
    src = np.asarray(jax.jit(dep.valid_permutation)(jax.random.PRNGKey(s), w))
    assert sorted(src.tolist()) == list(range(8))
    valid = np.asarray(w) > 0
    assert valid[src[valid]].all() and (~valid[src[~valid]]).all()
    seen.add(tuple(src[valid]))
  assert len(seen) > 10  # actually random


def test_shuffle_modalities_independent_permutations():
  x = jnp.arange(16, dtype=jnp.float32)[:, None]
  w = jnp.ones(16)
  out = dep.shuffle_modalities(jax.random.PRNGKey(0), {"a": x, "b": x, "c": {"f": x, "m": x}},
                               w)
  a, b = np.asarray(out["a"])[:, 0], np.asarray(out["b"])[:, 0]
  assert sorted(a) == list(range(16)) and not np.array_equal(a, b)
  # a pytree entry (features + mask) is permuted consistently
  np.testing.assert_array_equal(out["c"]["f"], out["c"]["m"])


def test_dv_bound_matches_numpy_and_grad(scores):
  tj, tm, w = scores
  v = jax.jit(dep.dv_bound)(tj, tm, w)
  ref = _np_wmean(tj, w) - np.log(_np_wmean(np.exp(tm), w))
  np.testing.assert_allclose(v, ref, rtol=1e-5)
  gj, gm = jax.grad(dep.dv_bound, argnums=(0, 1))(tj, tm, w)
  np.testing.assert_allclose(gj, w / w.sum(), rtol=1e-5)
  np.testing.assert_allclose(gm, -w * np.exp(tm) / (w * np.exp(tm)).sum(), rtol=1e-5, atol=1e-7)


def test_dv_bound_corrected(scores):
  tj, tm, w = scores
  ma = (jnp.zeros(()), jnp.zeros(()))
  est, sur, (m, k) = jax.jit(dep.dv_bound_corrected, static_argnums=4)(tj, tm, w, ma, 0.1)
  np.testing.assert_allclose(est, dep.dv_bound(tj, tm, w), rtol=1e-5)
  mean_exp = _np_wmean(np.exp(tm), w)
  np.testing.assert_allclose(m, 0.1 * mean_exp, rtol=1e-5)  # first step: m_hat = mean_exp
  assert float(k) == 1.0
  # second step with an older average: the gradient uses the moving average
  ma2 = (jnp.asarray(0.5 * 0.19), jnp.asarray(2.0))  # m_hat(before) = 0.5
  g = jax.grad(lambda t: dep.dv_bound_corrected(tj, t, w, ma2, 0.1)[1])(tm)
  m_new = 0.9 * 0.5 * 0.19 + 0.1 * mean_exp
  m_hat = m_new / (1 - 0.9 ** 3)
  np.testing.assert_allclose(g, -w * np.exp(tm) / w.sum() / m_hat, rtol=1e-4, atol=1e-7)


def test_f_and_w_bounds(scores):
  tj, tm, w = scores
  np.testing.assert_allclose(jax.jit(dep.f_bound)(tj, tm, w),
                             _np_wmean(tj, w) - _np_wmean(np.exp(tm - 1), w), rtol=1e-5)
  np.testing.assert_allclose(jax.jit(dep.wasserstein_bound)(tj, tm, w),
                             _np_wmean(tj, w) - _np_wmean(tm, w), rtol=1e-5, atol=1e-6)
  pos = np.abs(tm) + 0.1
  np.testing.assert_allclose(dep.wasserstein_bound(tj, pos, w, log_marginal=True),
                             _np_wmean(tj, w) - np.log(_np_wmean(pos, w)), rtol=1e-5)
  gm = jax.grad(dep.f_bound, argnums=1)(tj, tm, w)
  np.testing.assert_allclose(gm, -w * np.exp(tm - 1) / w.sum(), rtol=1e-5, atol=1e-7)
  # filler rows change nothing
  tj2, tm2 = tj.copy(), tm.copy()
  tj2[-2:] = 100.0; tm2[-2:] = 100.0
  for fn in (dep.dv_bound, dep.f_bound, dep.wasserstein_bound):
    np.testing.assert_allclose(fn(tj2, tm2, w), fn(tj, tm, w), rtol=1e-5)


def test_gradient_penalty_closed_form():
  a = jnp.array([0.6, 0.3, -0.2])
  critic = lambda z: z @ a  # noqa: E731  (gradient a everywhere)
  z1 = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
  z2 = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
  w = jnp.array([1, 1, 1, 0, 1.0])
  gp = jax.jit(dep.gradient_penalty, static_argnums=0)(critic, z1, z2, w, jax.random.PRNGKey(2))
  np.testing.assert_allclose(gp, (np.linalg.norm(a) - 1) ** 2, rtol=1e-4)
  # quadratic critic T = 0.5 |z|^2: grad = z_hat; check against explicit interpolates
  e = jax.random.uniform(jax.random.PRNGKey(2), (5, 1))
  zh = np.asarray(e * z1 + (1 - e) * z2)
  ref = _np_wmean((np.linalg.norm(zh, axis=1) - 1) ** 2, np.asarray(w))
  gp2 = dep.gradient_penalty(lambda z: 0.5 * (z ** 2).sum(-1), z1, z2, w, jax.random.PRNGKey(2))
  np.testing.assert_allclose(gp2, ref, rtol=1e-4)
  g = jax.grad(lambda z: dep.gradient_penalty(lambda x: 0.5 * (x ** 2).sum(-1), z, z2, w,
                                              jax.random.PRNGKey(2)))(z1)
  assert np.all(np.isfinite(g)) and np.abs(np.asarray(g)[3]).max() == 0.0  # filler row


def test_statistic_network_is_table4():
  net = StatisticNetwork()
  z = jnp.ones((4, 40))
  params = net.init(jax.random.PRNGKey(0), z)["params"]
  widths = [params[f"dense_{i}"]["kernel"].shape[1] for i in range(5)]
  assert widths == [20, 40, 40, 10, 10] and params["out"]["kernel"].shape == (10, 1)
  t = net.apply({"params": params}, z)
  assert t.shape == (4,) and np.all((t > 0) & (t < 1))
  z = jax.random.normal(jax.random.PRNGKey(1), (4, 40))
  t1 = net.apply({"params": params}, z, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  t2 = net.apply({"params": params}, z, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
  assert not np.allclose(t1, t2)  # dropout 0.4 active in training
  np.testing.assert_allclose(net.apply({"params": params}, z), net.apply({"params": params}, z))


def _train_critic(kind, rho, dim=2, steps=500, batch=128, seed=0):
  """Trains a linear-output critic on x, y ~ N(0, [[I, rho I], [rho I, I]]) with negatives
  drawn by in-batch shuffling (Algorithm 1); returns the bound on 8192 fresh samples."""
  net = StatisticNetwork(dropout=0.0, output="linear", widths=(64, 64))
  def sample(key, n):
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, (n, dim))
    y = rho * x + np.sqrt(1 - rho ** 2) * jax.random.normal(k2, (n, dim))
    return x, y
  def scores(params, key, n):
    x, y = sample(key, n)
    w = jnp.ones(n)
    neg = dep.shuffle_modalities(jax.random.fold_in(key, 7), {"x": x, "y": y}, w)
    tj = net.apply({"params": params}, jnp.concatenate([x, y], -1))
    tm = net.apply({"params": params}, jnp.concatenate([neg["x"], neg["y"]], -1))
    return tj, tm, w, (jnp.concatenate([x, y], -1), jnp.concatenate([neg["x"], neg["y"]], -1))
  def loss(params, key):
    tj, tm, w, (zj, zm) = scores(params, key, batch)
    _, sur, _ = dep.dependency_bound(kind, tj, tm, w)
    out = -sur
    if kind == "w":
      critic = lambda z: net.apply({"params": params}, z)  # noqa: E731
      out = out + 10.0 * dep.gradient_penalty(critic, zj, zm, w, jax.random.fold_in(key, 3))
    return out
  params = net.init(jax.random.PRNGKey(seed), jnp.zeros((1, 2 * dim)))["params"]
  tx = optax.adam(3e-3)
  def step(carry, key):
    p, o = carry
    g = jax.grad(loss)(p, key)
    u, o = tx.update(g, o, p)
    return (optax.apply_updates(p, u), o), None
  keys = jax.random.split(jax.random.PRNGKey(seed + 100), steps)
  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), keys)
  tj, tm, w, _ = scores(params, jax.random.PRNGKey(999), 8192)
  return float(dep.dependency_bound(kind, tj, tm, w)[0])


def test_kl_bound_recovers_gaussian_mutual_information():
  # rho = 0.8, d = 2: I = -0.5 * 2 * log(0.36) = 1.022 nats
  true = dep.gaussian_total_correlation(0.8, 2)
  est = _train_critic("kl", 0.8)
  assert abs(est - true) < 0.15, (est, true)
  est0 = _train_critic("kl", 0.0)
  assert abs(est0) < 0.05, est0


def test_f_and_w_bounds_detect_dependence():
  true = dep.gaussian_total_correlation(0.8, 2)
  est_f = _train_critic("f", 0.8)
  assert true - 0.3 < est_f < true + 0.1, (est_f, true)  # a lower bound, looser than DV
  assert abs(_train_critic("f", 0.0)) < 0.05
  w_dep, w_ind = _train_critic("w", 0.8), _train_critic("w", 0.0)
  assert w_dep > 0.3 and abs(w_ind) < 0.05, (w_dep, w_ind)
