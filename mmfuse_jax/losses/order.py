"""Exact order statistics of non-negative float32 values without sorting.

Non-negative float32 numbers sort like their int32 bit patterns, so the k-th largest value
of a set is found exactly by bisection over the bits: a few vectorised counting passes
instead of a sort, which is slow on CPU for the large matrices MICA needs (attention
thresholds of every T_t x T_s matrix, the median heuristic over all pairs of an MMD sample).

A pass tests `ways - 1` thresholds at once and narrows the bracket ways-fold: binary
bisection (ways=2) makes 31 passes with one comparison per value each; ways=16 makes 8
passes with 15 comparisons each. On an accelerator each pass re-reads every value from
memory and the comparisons are nearly free, so fewer passes are faster there; on a CPU the
comparisons dominate and binary bisection is faster. Every choice gives the same, exact
result; `default_ways` picks by backend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_ABOVE_INF = 0x7F800001  # bit pattern just above +inf
ACCELERATOR_WAYS = 16    # thresholds per pass + 1 on GPU/TPU: 8 passes instead of 31


def default_ways(backend: str | None = None) -> int:
  """2 (binary bisection) on CPU, ACCELERATOR_WAYS on GPU/TPU (default: JAX's backend)."""
  return 2 if (backend or jax.default_backend()) == "cpu" else ACCELERATOR_WAYS


def bisection_passes(ways: int) -> int:
  """Passes over the values `kth_largest` makes with `ways`: until the bracket [0, +inf]
  of int32 bit patterns, narrowed to ceil(width / ways) per pass, has width 1."""
  if ways < 2:
    raise ValueError(f"ways must be >= 2, got {ways}")
  width, passes = _ABOVE_INF, 0
  while width > 1:
    width, passes = -(-width // ways), passes + 1
  return passes


def kth_largest(values: jnp.ndarray, valid: jnp.ndarray, k: jnp.ndarray,
                ways: int | None = None) -> jnp.ndarray:
  """The k-th largest (1-based) valid entry along the last axis, exactly.

  values (..., n) >= 0 (negatives are read as 0); valid (..., n) bool; k (...) int,
  1 <= k <= number of valid entries (k <= 0 gives 0). ways: bracket narrowing per pass
  (None: `default_ways()`); the result does not depend on it. Returns (...) float32, no
  gradient.
  """
  ways = default_ways() if ways is None else int(ways)
  passes = bisection_passes(ways)
  values = jax.lax.stop_gradient(values).astype(jnp.float32)
  bits = jax.lax.bitcast_convert_type(jnp.maximum(values, 0.0), jnp.int32)
  bits = jnp.where(valid, bits, -1)   # below every threshold (all are >= 1)
  k = jnp.asarray(k, jnp.int32)
  steps = jnp.arange(1, ways, dtype=jnp.int32)

  def narrow(_, bounds):
    lo, hi = bounds  # invariant: count(bits >= lo) >= k > count(bits >= hi)
    step = (hi - lo + (ways - 1)) // ways          # ceil((hi - lo) / ways) >= 1; no overflow
    cuts = jnp.minimum(lo[..., None] + steps * step[..., None], hi[..., None])  # (..., w-1)
    counts = (bits[..., None, :] >= cuts[..., :, None]).sum(-1)   # one pass over the values
    n_enough = (counts >= k[..., None]).sum(-1)    # counts fall with the cut: a prefix holds
    below = jnp.take_along_axis(cuts, jnp.maximum(n_enough - 1, 0)[..., None], -1)[..., 0]
    above = jnp.take_along_axis(cuts, jnp.minimum(n_enough, ways - 2)[..., None], -1)[..., 0]
    return (jnp.where(n_enough > 0, below, lo), jnp.where(n_enough < ways - 1, above, hi))

  lo = jnp.zeros(k.shape, jnp.int32)
  hi = jnp.full(k.shape, _ABOVE_INF, jnp.int32)
  lo, _ = jax.lax.fori_loop(0, passes, narrow, (lo, hi))
  return jnp.where(k > 0, jax.lax.bitcast_convert_type(lo, jnp.float32), 0.0)


def masked_median(values: jnp.ndarray, valid: jnp.ndarray, ways: int | None = None
                  ) -> jnp.ndarray:
  """Median of the valid entries of a non-negative array (all axes), as numpy's median:
  the mean of the two middle values for an even count; nan when nothing is valid.
  ways: as in `kth_largest`."""
  flat, ok = values.reshape(-1), valid.reshape(-1)
  n = ok.sum().astype(jnp.int32)
  ks = jnp.stack([n // 2 + 1, (n + 1) // 2])     # lower and upper middle, as k-th largest
  both = kth_largest(jnp.broadcast_to(flat, (2,) + flat.shape),
                     jnp.broadcast_to(ok, (2,) + ok.shape), ks, ways)
  return jnp.where(n > 0, both.mean(), jnp.nan)


__all__ = ["ACCELERATOR_WAYS", "bisection_passes", "default_ways", "kth_largest",
           "masked_median"]
