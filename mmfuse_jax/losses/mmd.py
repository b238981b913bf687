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

matmul_dtype (e.g. bfloat16, under precision='bf16'): the x.y products of the distance
matrices take operands in that dtype with float32 accumulation and output, forward and
backward (`losses.matmul.mixed_einsum`); the squared norms, the kernel, every reduction and
the value stay float32, and the weighted kernel means are elementwise reductions, which XLA
can fuse with the exp instead of materialising the kernel matrix for a matrix-vector
product. Both samples are first shifted by their common weighted mean (distances do not
change), so the rounding of the products is relative to the spread of the points, not
to a shared offset, and the cancellation in |x|^2 + |y|^2 - 2 x.y stays bounded by
about 2^-8 |x - c| |y - c| per entry. None (default): everything in float32 as before.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from mmfuse_jax.losses.matmul import mixed_einsum
from mmfuse_jax.losses.order import masked_median

DEFAULT_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


def squared_distances(x: jnp.ndarray, y: jnp.ndarray, matmul_dtype=None) -> jnp.ndarray:
  """(n, d), (m, d) -> (n, m) squared Euclidean distances, clipped at 0.

  matmul_dtype: x.y with operands in that dtype, accumulated and returned in float32; the
  norms are taken of the same rounded vectors (so d(x, x) is 0 up to float32 summation)."""
  if matmul_dtype is None:
    xx = jnp.sum(x * x, -1)[:, None]
    yy = jnp.sum(y * y, -1)[None, :]
    return jnp.maximum(xx + yy - 2.0 * x @ y.T, 0.0)
  x_low = x.astype(matmul_dtype).astype(jnp.float32)
  y_low = y.astype(matmul_dtype).astype(jnp.float32)
  xx = jnp.sum(x_low * x_low, -1)[:, None]
  yy = jnp.sum(y_low * y_low, -1)[None, :]
  return jnp.maximum(xx + yy - 2.0 * mixed_einsum("nd,md->nm", x, y, matmul_dtype), 0.0)


def common_center(x: jnp.ndarray, y: jnp.ndarray, wx: jnp.ndarray, wy: jnp.ndarray
                  ) -> jnp.ndarray:
  """The weighted mean of the pooled sample [x; y] (zeros when every weight is 0), without
  gradient: subtracting it from both samples leaves every pairwise distance unchanged."""
  total = wx.sum() + wy.sum()
  mean = ((wx[:, None] * x).sum(0) + (wy[:, None] * y).sum(0)) / jnp.maximum(total, 1e-12)
  return jax.lax.stop_gradient(mean)


def _as_weights(w, n: int, dtype) -> jnp.ndarray:
  if w is None:
    return jnp.ones((n,), dtype)
  return jnp.asarray(w).astype(dtype)


def base_bandwidth(x: jnp.ndarray, y: jnp.ndarray, x_weights=None, y_weights=None,
                   rule: str | float = "median", matmul_dtype=None) -> jnp.ndarray:
  """sigma0^2 for the Gaussian kernels, without gradient.

  rule: 'median' or 'mean' of the squared distances over pairs (i != j) of valid elements
  (weight > 0) of the pooled sample [x; y]; a positive number is returned as is.
  matmul_dtype: as in `squared_distances`.
  """
  if not isinstance(rule, str):
    return jnp.asarray(float(rule), x.dtype)
  z = jax.lax.stop_gradient(jnp.concatenate([x, y], 0))
  valid = jnp.concatenate([_as_weights(x_weights, x.shape[0], x.dtype) > 0,
                           _as_weights(y_weights, y.shape[0], y.dtype) > 0])
  n = z.shape[0]
  pair = valid[:, None] & valid[None, :] & ~jnp.eye(n, dtype=bool)
  d2 = squared_distances(z, z, matmul_dtype)
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


def _weighted_mean_kernel(wa: jnp.ndarray, kernel: jnp.ndarray, wb: jnp.ndarray,
                          as_product: bool) -> jnp.ndarray:
  """sum_ij wa_i K_ij wb_j: two matrix-vector products (float32 path, as before) or one
  elementwise reduction (low-precision path: no float32 matmul left in the loss)."""
  if as_product:
    return wa @ kernel @ wb
  return jnp.sum(wa[:, None] * kernel * wb[None, :])


def mmd2(x: jnp.ndarray, y: jnp.ndarray, x_weights=None, y_weights=None, *,
         bandwidth: str | float = "median", scales: Sequence[float] = DEFAULT_SCALES,
         estimator: str = "biased", matmul_dtype=None) -> jnp.ndarray:
  """Squared MMD between the samples x (n, d) and y (m, d) (MICA Sec. 3.4, l_hat_{s,t}).

  x_weights (n,), y_weights (m,): element weights or bool masks (padding = 0 / False).
  estimator: 'biased' (V-statistic, the paper's formula: all pairs including i = j) or
  'unbiased' (U-statistic: the within-sample terms leave out i = j; may be negative).
  An empty side (all weights 0) gives 0. matmul_dtype: see the module docstring.
  """
  dtype = jnp.result_type(x.dtype, jnp.float32)
  x = x.astype(dtype); y = y.astype(dtype)
  wx = _as_weights(x_weights, x.shape[0], dtype)
  wy = _as_weights(y_weights, y.shape[0], dtype)
  if matmul_dtype is not None:
    center = common_center(x, y, wx, wy)
    x, y = x - center, y - center
  dist = lambda a, b: squared_distances(a, b, matmul_dtype)
  wsum = lambda a, k, b: _weighted_mean_kernel(a, k, b, matmul_dtype is None)
  sigma2 = base_bandwidth(x, y, wx, wy, bandwidth, matmul_dtype)
  kxx = gaussian_kernel(dist(x, x), sigma2, scales)
  kyy = gaussian_kernel(dist(y, y), sigma2, scales)
  kxy = gaussian_kernel(dist(x, y), sigma2, scales)
  sx, sy = wx.sum(), wy.sum()
  cross = wsum(wx, kxy, wy) / jnp.maximum(sx * sy, 1e-12)
  if estimator == "biased":
    within_x = wsum(wx, kxx, wx) / jnp.maximum(sx * sx, 1e-12)
    within_y = wsum(wy, kyy, wy) / jnp.maximum(sy * sy, 1e-12)
  elif estimator == "unbiased":
    qx = jnp.sum(wx * wx); qy = jnp.sum(wy * wy)
    diag_x = jnp.sum(wx * wx * jnp.diagonal(kxx)); diag_y = jnp.sum(wy * wy * jnp.diagonal(kyy))
    within_x = (wsum(wx, kxx, wx) - diag_x) / jnp.maximum(sx * sx - qx, 1e-12)
    within_y = (wsum(wy, kyy, wy) - diag_y) / jnp.maximum(sy * sy - qy, 1e-12)
  else:
    raise ValueError(f"unknown MMD estimator {estimator!r} (valid: 'biased', 'unbiased')")
  value = within_x + within_y - 2.0 * cross
  return jnp.where((sx > 0) & (sy > 0), value, 0.0)
