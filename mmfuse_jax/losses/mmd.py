"""Maximum Mean Discrepancy with a multi-bandwidth Gaussian kernel.

MMD^2(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y) (Gretton et al., JMLR 2012, Eq. 3);
MICA (Liang et al., ICCV 2021, Sec. 3.4, "Marginal distribution alignment") uses the
biased empirical estimate of it between the keys and the queries of a crossmodal block.

Kernel: k(x, y) = (1/S) sum_s exp(-||x - y||^2 / (2 * scale_s * sigma0^2)), the mean of S
Gaussian kernels around a base bandwidth sigma0^2 (multi-kernel MMD as in Long et al. 2015).
sigma0^2 is a fixed number, or the median ('median', Gretton et al. 2012) or the mean
('mean') of the squared pairwise distances between the valid elements of the pooled
sample, computed under stop_gradient.

Samples carry non-negative per-element weights (a bool mask is the 0/1 case): the biased
estimator uses the weighted empirical distributions sum_ij w_i w_j k_ij / (sum w)^2, the
unbiased one leaves out i = j: sum_{i != j} w_i w_j k_ij / ((sum w)^2 - sum w^2).
Every function here is pure and works under jit, grad and vmap.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from mmfuse_jax.losses.order import masked_median

DEFAULT_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


def squared_distances(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
  """(n, d), (m, d) -> (n, m) squared Euclidean distances, clipped at 0."""
  xx = jnp.sum(x * x, -1)[:, None]
  yy = jnp.sum(y * y, -1)[None, :]
  return jnp.maximum(xx + yy - 2.0 * x @ y.T, 0.0)


def _as_weights(w, n: int, dtype) -> jnp.ndarray:
  if w is None:
    return jnp.ones((n,), dtype)
  return jnp.asarray(w).astype(dtype)


def base_bandwidth(x: jnp.ndarray, y: jnp.ndarray, x_weights=None, y_weights=None,
                   rule: str | float = "median") -> jnp.ndarray:
  """sigma0^2 for the Gaussian kernels, without gradient.

  rule: 'median' or 'mean' of the squared distances over pairs (i != j) of valid elements
  (weight > 0) of the pooled sample [x; y]; a positive number is returned as is.
  """
  if not isinstance(rule, str):
    return jnp.asarray(float(rule), x.dtype)
  z = jax.lax.stop_gradient(jnp.concatenate([x, y], 0))
  valid = jnp.concatenate([_as_weights(x_weights, x.shape[0], x.dtype) > 0,
                           _as_weights(y_weights, y.shape[0], y.dtype) > 0])
  n = z.shape[0]
  pair = valid[:, None] & valid[None, :] & ~jnp.eye(n, dtype=bool)
  d2 = squared_distances(z, z)
  if rule == "median":
    sigma2 = masked_median(d2, pair)  # exact, by bisection (no sort of all pairs)
  elif rule == "mean":
    sigma2 = jnp.sum(jnp.where(pair, d2, 0.0)) / jnp.maximum(pair.sum(), 1)
  else:
    raise ValueError(f"unknown bandwidth rule {rule!r} (valid: 'median', 'mean' or a number)")
  # No valid pair (nan) or identical points (0): fall back to 1 so the kernel stays finite.
  sigma2 = jnp.where(jnp.isfinite(sigma2) & (sigma2 > 0), sigma2, 1.0)
  return jax.lax.stop_gradient(sigma2)


def gaussian_kernel(d2: jnp.ndarray, sigma2, scales: Sequence[float] = DEFAULT_SCALES
                    ) -> jnp.ndarray:
  """Mean over scales s of exp(-d2 / (2 s sigma2)), elementwise on squared distances."""
  scales = jnp.asarray(scales, d2.dtype)
  return jnp.mean(jnp.exp(-d2[..., None] / (2.0 * scales * sigma2)), axis=-1)


def mmd2(x: jnp.ndarray, y: jnp.ndarray, x_weights=None, y_weights=None, *,
         bandwidth: str | float = "median", scales: Sequence[float] = DEFAULT_SCALES,
         estimator: str = "biased") -> jnp.ndarray:
  """Squared MMD between the samples x (n, d) and y (m, d) (MICA Sec. 3.4, l_hat_{s,t}).

  x_weights (n,), y_weights (m,): element weights or bool masks (padding = 0 / False).
  estimator: 'biased' (V-statistic, the paper's formula: all pairs including i = j) or
  'unbiased' (U-statistic: the within-sample terms leave out i = j; may be negative).
  An empty side (all weights 0) gives 0.
  """
  dtype = jnp.result_type(x.dtype, jnp.float32)
  x = x.astype(dtype); y = y.astype(dtype)
  wx = _as_weights(x_weights, x.shape[0], dtype)
  wy = _as_weights(y_weights, y.shape[0], dtype)
  sigma2 = base_bandwidth(x, y, wx, wy, bandwidth)
  kxx = gaussian_kernel(squared_distances(x, x), sigma2, scales)
  kyy = gaussian_kernel(squared_distances(y, y), sigma2, scales)
  kxy = gaussian_kernel(squared_distances(x, y), sigma2, scales)
  sx, sy = wx.sum(), wy.sum()
  cross = wx @ kxy @ wy / jnp.maximum(sx * sy, 1e-12)
  if estimator == "biased":
    within_x = wx @ kxx @ wx / jnp.maximum(sx * sx, 1e-12)
    within_y = wy @ kyy @ wy / jnp.maximum(sy * sy, 1e-12)
  elif estimator == "unbiased":
    qx = jnp.sum(wx * wx); qy = jnp.sum(wy * wy)
    diag_x = jnp.sum(wx * wx * jnp.diagonal(kxx)); diag_y = jnp.sum(wy * wy * jnp.diagonal(kyy))
    within_x = (wx @ kxx @ wx - diag_x) / jnp.maximum(sx * sx - qx, 1e-12)
    within_y = (wy @ kyy @ wy - diag_y) / jnp.maximum(sy * sy - qy, 1e-12)
  else:
    raise ValueError(f"unknown MMD estimator {estimator!r} (valid: 'biased', 'unbiased')")
  value = within_x + within_y - 2.0 * cross
  return jnp.where((sx > 0) & (sy > 0), value, 0.0)
