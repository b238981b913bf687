"""Exact order statistics of non-negative float32 values without sorting.

Non-negative float32 numbers sort like their int32 bit patterns, so the k-th largest value
of a set is found exactly by a 31-step bisection over the bits: a few vectorised counting
passes instead of a sort, which is slow on CPU for the large matrices MICA needs (attention
thresholds of every T_t x T_s matrix, the median heuristic over all pairs of an MMD sample).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_ABOVE_INF = 0x7F800001  # bit pattern just above +inf


def kth_largest(values: jnp.ndarray, valid: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:
  """The k-th largest (1-based) valid entry along the last axis, exactly.

  values (..., n) >= 0 (negatives are read as 0); valid (..., n) bool; k (...) int,
  1 <= k <= number of valid entries (k <= 0 gives 0). Returns (...) float32, no gradient.
  """
  values = jax.lax.stop_gradient(values).astype(jnp.float32)
  bits = jax.lax.bitcast_convert_type(jnp.maximum(values, 0.0), jnp.int32)
  bits = jnp.where(valid, bits, -1)
  k = jnp.asarray(k, jnp.int32)

  def step(_, bounds):
    lo, hi = bounds  # count(bits >= lo) >= k > count(bits >= hi)
    mid = lo + (hi - lo) // 2
    enough = (bits >= mid[..., None]).sum(-1) >= k
    return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

  lo = jnp.zeros(k.shape, jnp.int32)
  hi = jnp.full(k.shape, _ABOVE_INF, jnp.int32)
  lo, _ = jax.lax.fori_loop(0, 31, step, (lo, hi))
  return jnp.where(k > 0, jax.lax.bitcast_convert_type(lo, jnp.float32), 0.0)


def masked_median(values: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """Median of the valid entries of a non-negative array (all axes), as numpy's median:
  the mean of the two middle values for an even count; nan when nothing is valid."""
  flat, ok = values.reshape(-1), valid.reshape(-1)
  n = ok.sum().astype(jnp.int32)
  ks = jnp.stack([n // 2 + 1, (n + 1) // 2])     # lower and upper middle, as k-th largest
  both = kth_largest(jnp.broadcast_to(flat, (2,) + flat.shape),
                     jnp.broadcast_to(ok, (2,) + ok.shape), ks)
  return jnp.where(n > 0, both.mean(), jnp.nan)


__all__ = ["kth_largest", "masked_median"]
