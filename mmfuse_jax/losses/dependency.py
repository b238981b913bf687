"""Neural mutual-dependency measures (MDM; Colombo et al., EMNLP 2021, Sec. 3, Th. 1).

A statistic network T_theta (paper Table 4; models/mdm_critic.py) scores samples of the joint distribution
p(x_a, x_v, x_l) (a batch as it is) against samples of the product of the marginals
prod_j p(x_j) (the same batch with every modality permuted independently, Algorithm 1).
Three variational lower bounds turn the scores into a dependency estimate:

* `dv_bound`           Eq. 6, Donsker-Varadhan:  E_P[T] - log E_Q[e^T]           (I_kl)
* `dv_bound_corrected` Eq. 6 with MINE's moving-average gradient-bias correction
* `f_bound`            Eq. 7, f-divergence (KL's convex conjugate, NWJ):
                       E_P[T] - E_Q[e^(T - 1)]                                   (I_f)
* `wasserstein_bound`  Eq. 8, Kantorovich-Rubinstein dual over 1-Lipschitz T:
                       E_P[T] - E_Q[T]                                           (I_W)
  The printed Eq. 8 has a `log` around E_Q[T]; the KR duality the paper cites (and Ozair
  et al.'s Wasserstein dependency measure) has none, and log E_Q[T] is undefined for a
  critic that can go negative. `log_marginal=True` gives the printed form (needs T > 0,
  e.g. the sigmoid output of Table 4).
* `gradient_penalty`   the Lipschitz constraint for Eq. 8 (WGAN-GP, Gulrajani et al. 2017):
                       gp * E[(||grad_z T(z_hat)||_2 - 1)^2] at random interpolates z_hat
                       between joint and product-of-marginals samples.

Every expectation is a weighted mean: rows with weight 0 (the filler rows that pad the
last batch) count in neither expectation and are never drawn as negatives.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

BOUNDS = ("kl", "f", "w")


# ----------------------------------------------------------------------------------------
# Negatives: product of the marginals by independent within-batch permutations
# ----------------------------------------------------------------------------------------
def valid_permutation(rng: jax.Array, weights: jnp.ndarray) -> jnp.ndarray:
  """(B,) source rows: a uniformly random permutation of the rows with weight > 0 among
  themselves; rows with weight 0 map to rows with weight 0 (they stay filler)."""
  valid = weights > 0
  b = weights.shape[0]
  u = jax.random.uniform(rng, (b,))
  # random order of the valid rows, then the filler rows
  shuffled = jnp.argsort(jnp.where(valid, u, 2.0 + u))
  # positions of the valid rows in index order, then the filler rows
  slots = jnp.argsort(jnp.where(valid, 0, 1) * b + jnp.arange(b))
  return jnp.zeros((b,), jnp.int32).at[slots].set(shuffled.astype(jnp.int32))


def shuffle_modalities(rng: jax.Array, per_modality: dict, weights: jnp.ndarray) -> dict:
  """Samples of prod_j p(x_j) (Algorithm 1, 'Build Negative Dataset'): each modality's
  entry (any pytree with a leading batch axis: a representation, or features and mask)
  is permuted by its own permutation sigma_j of the valid rows."""
  out = {}
  for k, (m, tree) in enumerate(sorted(per_modality.items())):
    src = valid_permutation(jax.random.fold_in(rng, k), weights)
    out[m] = jax.tree_util.tree_map(lambda a, s=src: jnp.take(a, s, axis=0), tree)
  return out


# ----------------------------------------------------------------------------------------
# Bounds (Th. 1)
# ----------------------------------------------------------------------------------------
def _wmean(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  w = weights.astype(values.dtype)
  # where(): a filler row's inf/NaN never leaks in (0 * inf = NaN)
  return jnp.where(w > 0, values * w, 0.0).sum() / jnp.maximum(w.sum(), 1.0)


def weighted_log_mean_exp(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """log( sum_i w_i e^{v_i} / sum_i w_i ), stable; weight-0 rows are ignored."""
  w = weights.astype(values.dtype)
  logw = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
  return jax.nn.logsumexp(jnp.where(w > 0, values, 0.0) + logw) - jnp.log(jnp.maximum(w.sum(), 1e-30))


def dv_bound(t_joint: jnp.ndarray, t_marg: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """Eq. 6 (Donsker-Varadhan): E_P[T] - log E_Q[e^T]; a lower bound on the total
  correlation KL(p_avl || prod_j p_j). t_joint, t_marg (B,); weights (B,)."""
  return _wmean(t_joint, weights) - weighted_log_mean_exp(t_marg, weights)


def dv_bound_corrected(t_joint, t_marg, weights, ma_state, rate: float = 0.01):
  """Eq. 6 with MINE's bias-corrected gradient (Belghazi et al. 2018, Sec. 3.2).

  The gradient of log E_Q[e^T] is E_Q[grad T e^T] / E_Q[e^T]; the minibatch denominator
  makes it biased. MINE replaces the denominator by a moving average m of E_Q[e^T].
  ma_state = (m, k): exponential moving average with rate `rate` and its step count k;
  the average is bias-corrected as m / (1 - (1 - rate)^k) (zero initialisation).

  Returns (estimate, surrogate, new_ma_state): `estimate` is the plain DV value (for
  logging); `surrogate` = E_P[T] - E_Q[e^T] / stop_grad(m_hat) has the corrected gradient.
  """
  m, k = ma_state
  mean_exp = jnp.exp(weighted_log_mean_exp(t_marg, weights))
  k_new = k + 1.0
  m_new = (1.0 - rate) * m + rate * jax.lax.stop_gradient(mean_exp)
  m_hat = m_new / (1.0 - (1.0 - rate) ** k_new)
  estimate = _wmean(t_joint, weights) - jnp.log(mean_exp)
  surrogate = _wmean(t_joint, weights) - mean_exp / jax.lax.stop_gradient(m_hat)
  return estimate, surrogate, (m_new, k_new)


def f_bound(t_joint: jnp.ndarray, t_marg: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """Eq. 7 (f-divergence, KL generator, Nguyen et al.): E_P[T] - E_Q[e^(T - 1)]."""
  return _wmean(t_joint, weights) - _wmean(jnp.exp(t_marg - 1.0), weights)


def wasserstein_bound(t_joint: jnp.ndarray, t_marg: jnp.ndarray, weights: jnp.ndarray, *,
                      log_marginal: bool = False) -> jnp.ndarray:
  """Eq. 8 (Kantorovich-Rubinstein dual, T 1-Lipschitz): E_P[T] - E_Q[T].

  log_marginal=True: the printed Eq. 8, E_P[T] - log E_Q[T] (requires T > 0)."""
  neg = _wmean(t_marg, weights)
  if log_marginal:
    neg = jnp.log(neg)
  return _wmean(t_joint, weights) - neg


def gradient_penalty(critic: Callable[[jnp.ndarray], jnp.ndarray], z_joint: jnp.ndarray,
                     z_marg: jnp.ndarray, weights: jnp.ndarray, rng: jax.Array) -> jnp.ndarray:
  """Lipschitz penalty for Eq. 8 (WGAN-GP): E_w[(||grad_z T(z_hat)||_2 - 1)^2] with
  z_hat = e z_joint + (1 - e) z_marg, e ~ U(0, 1) per sample. `critic` maps (B, d) -> (B,)
  and must treat rows independently (a per-row MLP does), so the gradient of the sum
  gives every row's own input gradient. Multiply by the penalty weight outside."""
  e = jax.random.uniform(rng, (z_joint.shape[0], 1), z_joint.dtype)
  z_hat = e * z_joint + (1.0 - e) * z_marg
  g = jax.grad(lambda z: critic(z).sum())(z_hat)
  norm = jnp.sqrt((g ** 2).sum(-1) + 1e-12)
  return _wmean((norm - 1.0) ** 2, weights)


def dependency_bound(kind: str, t_joint, t_marg, weights, *, ma_state=None, ma_rate=0.0,
                     log_marginal: bool = False):
  """Dispatch: kind 'kl' (Eq. 6), 'f' (Eq. 7) or 'w' (Eq. 8).

  Returns (estimate, surrogate, new_ma_state). surrogate is what gradients are taken of
  (equal to estimate except for 'kl' with ma_rate > 0, MINE's correction)."""
  if kind == "kl":
    if ma_rate > 0:
      return dv_bound_corrected(t_joint, t_marg, weights, ma_state, ma_rate)
    est = dv_bound(t_joint, t_marg, weights)
    return est, est, ma_state
  if kind == "f":
    est = f_bound(t_joint, t_marg, weights)
    return est, est, ma_state
  if kind == "w":
    est = wasserstein_bound(t_joint, t_marg, weights, log_marginal=log_marginal)
    return est, est, ma_state
  raise ValueError(f"unknown dependency measure {kind!r} (valid: {', '.join(BOUNDS)})")


def gaussian_total_correlation(rho: float, dim: int) -> float:
  """Closed-form I(X; Y) for X, Y in R^dim with corr(X_i, Y_k) = delta_ik rho (paper
  Fig. 1 setting): -dim/2 log(1 - rho^2)."""
  return -0.5 * dim * math.log(1.0 - rho ** 2)
