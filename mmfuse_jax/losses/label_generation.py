"""MCER's label generation modules SLGM and CLGM (Eq. 9, 19, 30-31), as pure functions.

Both follow Self-MM's ULGM (Yu et al. 2021): for a representation r of sample i,
  d_p = |r_i - C_p|_2, d_n = |r_i - C_n|_2, alpha = (d_n - d_p) / (d_p + eps),
where C_p / C_n are the positive / negative class centres of that representation. With
alpha_m of the fusion representation F'_m and alpha_c of the task representation (H_s for
SLGM, h_c for CLGM) the offset of Eq. 30 is
  delta = (alpha_c - alpha_m) / 2 * (y_m + alpha_m) / alpha_m
        = 0.5 * alpha_c / alpha_m * y_m + 0.5 * (y_m + alpha_c - alpha_m) - y_m,
and the new label y_m + delta is clipped to [-clip, clip] (Self-MM's H: the label range).
The generated labels are smoothed across epochs with Eq. 31's momentum
  y^(i) = (i - 1)/(i + 1) y^(i-1) + 2/(i + 1) y_new^i   (i > 1),  y^(1) = y_m.
"""

from __future__ import annotations

import jax.numpy as jnp

EPS = 1e-8


def class_centres(features: jnp.ndarray, labels: jnp.ndarray, weights: jnp.ndarray, *,
                  exclude_zero: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Weighted positive and negative class centres of a representation.

  features (N, D), labels (N,), weights (N,) (0 for rows not to count: filler rows or
  train rows not seen yet). Positive: label > 0 (>= 0 unless exclude_zero), negative:
  label < 0. Returns (C_p (D,), C_n (D,)); a class with no member gives the zero vector."""
  w = weights.astype(features.dtype)
  pos = (labels > 0) if exclude_zero else (labels >= 0)
  wp = w * pos.astype(features.dtype)
  wn = w * (labels < 0).astype(features.dtype)
  cp = (wp[:, None] * features).sum(0) / jnp.maximum(wp.sum(), EPS)
  cn = (wn[:, None] * features).sum(0) / jnp.maximum(wn.sum(), EPS)
  return cp, cn


def relative_distance(features: jnp.ndarray, centre_pos: jnp.ndarray,
                      centre_neg: jnp.ndarray) -> jnp.ndarray:
  """alpha = (d_n - d_p) / (d_p + eps) per row (Self-MM's relative distance, MCER Fig. 2)."""
  d_p = jnp.linalg.norm(features - centre_pos, axis=-1)
  d_n = jnp.linalg.norm(features - centre_neg, axis=-1)
  return (d_n - d_p) / (d_p + EPS)


def label_offset(y_m: jnp.ndarray, alpha_c: jnp.ndarray, alpha_m: jnp.ndarray) -> jnp.ndarray:
  """delta = (alpha_c - alpha_m) / 2 * (y_m + alpha_m) / alpha_m (MCER Eq. 30), written in
  Self-MM's equivalent form 0.5 * (alpha_c / alpha_m) * y_m + 0.5 * (y_m + alpha_c - alpha_m)
  - y_m, with eps added to alpha_m in the division."""
  return (0.5 * alpha_c / (alpha_m + EPS) * y_m + 0.5 * (y_m + alpha_c - alpha_m)) - y_m


def generate_labels(y_m: jnp.ndarray, alpha_c: jnp.ndarray, alpha_m: jnp.ndarray,
                    clip: float) -> jnp.ndarray:
  """y_c = y_m + delta (Eq. 30) clipped to [-clip, clip]."""
  return jnp.clip(y_m + label_offset(y_m, alpha_c, alpha_m), -clip, clip)


def momentum_update(previous: jnp.ndarray, new: jnp.ndarray, i) -> jnp.ndarray:
  """Eq. 31 for i > 1: (i - 1)/(i + 1) * previous + 2/(i + 1) * new."""
  i = jnp.asarray(i, previous.dtype)
  return (i - 1.0) / (i + 1.0) * previous + 2.0 / (i + 1.0) * new


def loss_weights(y_gen: jnp.ndarray, y_m: jnp.ndarray) -> jnp.ndarray:
  """W = tanh(|y_gen - y_m|) (MCER Eq. 32): 0 while the generated label equals y_m."""
  return jnp.tanh(jnp.abs(y_gen - y_m))


__all__ = ["class_centres", "relative_distance", "label_offset", "generate_labels",
           "momentum_update", "loss_weights"]
