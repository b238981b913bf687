"""Task losses, per sample (unreduced), and their weighted mean."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def per_sample_task_loss(pred, labels, task: str, kind: str = "") -> jnp.ndarray:
  """(B,) loss per sample. Regression: 'l1' (MulT, MMSA default) or 'mse'.
  Classification: softmax cross-entropy on (B, C) logits. IEMOCAP: cross-entropy over
  the 2 logits of each of the 4 emotions, averaged over emotions (MulT protocol)."""
  if task in ("regression", "sims"):
    kind = kind or "l1"
    diff = pred - labels.astype(pred.dtype)
    if kind == "l1":
      return jnp.abs(diff)
    if kind == "mse":
      return diff ** 2
    raise ValueError(f"unknown regression loss {kind!r} (valid: l1, mse)")
  if task == "iemocap":
    ce = optax.softmax_cross_entropy_with_integer_labels(pred.astype(jnp.float32),
                                                         labels.astype(jnp.int32))
    return ce.mean(-1)
  if task == "classification":
    return optax.softmax_cross_entropy_with_integer_labels(pred.astype(jnp.float32),
                                                           labels.astype(jnp.int32))
  raise ValueError(f"unknown task {task!r}")


def weighted_mean(values, weights) -> jnp.ndarray:
  """sum(w * v) / max(sum(w), 1): filler rows (w = 0) do not count."""
  weights = weights.astype(values.dtype)
  return (values * weights).sum() / jnp.maximum(weights.sum(), 1.0)
