"""ARGF's joint-embedding losses (Mai et al., AAAI 2020, Eq. 3-9).

Every function takes per-sample arrays and explicit sample `weights` (B,) (0 for filler
rows) and returns a scalar: the weighted mean over samples of the per-sample loss. The
discriminator's outputs are passed as logits z with D(x) = sigmoid(z), so
log D = log_sigmoid(z) and log(1 - D) = log_sigmoid(-z), which is exact and finite where
the printed log(D) would overflow.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from mmfuse_jax.losses.task import weighted_mean

DISTANCES = ("l2", "squared")


def _distance(diff: jnp.ndarray, distance: str) -> jnp.ndarray:
  """Per-sample distance over the last axis: 'l2' the Euclidean norm ||d||_2 (the papers'
  Eq. 6 and 8; its gradient at d = 0 is taken as 0), 'squared' the mean squared error."""
  if distance == "l2":
    sq = jnp.sum(diff ** 2, axis=-1)
    safe = jnp.where(sq > 0, sq, 1.0)
    return jnp.where(sq > 0, jnp.sqrt(safe), 0.0)
  if distance == "squared":
    return jnp.mean(diff ** 2, axis=-1)
  raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def fake_adversarial_loss(source_logits: Sequence[jnp.ndarray], weights,
                          w: float = 1.0) -> jnp.ndarray:
  """Eq. 3: L_fal = -w sum_{s in sources} log D(x_s^e), averaged over samples.

  source_logits: the discriminator's logits (B,) for each source modality's encoding. The
  source encoders minimise it (they try to be classified as the target modality)."""
  per = sum(-jax.nn.log_sigmoid(z) for z in source_logits)
  return w * weighted_mean(per, weights)


def true_adversarial_loss(target_logits: jnp.ndarray, source_logits: Sequence[jnp.ndarray],
                          weights, w: float = 1.0) -> jnp.ndarray:
  """Eq. 4: L_tal = -w [sum_s log(1 - D(x_s^e)) + log D(x_t^e)], averaged over samples.
  The discriminator minimises it (target = true, sources = fake)."""
  per = -jax.nn.log_sigmoid(target_logits)
  per = per + sum(-jax.nn.log_sigmoid(-z) for z in source_logits)
  return w * weighted_mean(per, weights)


def reconstruction_loss(reconstructed: Sequence[jnp.ndarray], originals: Sequence[jnp.ndarray],
                        weights, distance: str = "l2") -> jnp.ndarray:
  """Eq. 6: L_rl = sum_m ||x~_m - x_m||_2 (per sample, averaged over samples).
  Each pair is (B, D_m); distance 'squared' uses the mean squared error instead."""
  per = sum(_distance(r - x, distance) for r, x in zip(reconstructed, originals))
  return weighted_mean(per, weights)


def classification_loss(outputs: Sequence[jnp.ndarray], target: jnp.ndarray, weights,
                        distance: str = "l2") -> jnp.ndarray:
  """Eq. 8: L_cl = sum_m ||y~_m - y||_2 with y the one-hot label (B, N) (or the (B, 1)
  regression target) and y~_m = C(x_m^e) the shared classifier's output for modality m."""
  per = sum(_distance(o - target, distance) for o in outputs)
  return weighted_mean(per, weights)


def embedding_objective(fal, rl, tal, cl, lam: float) -> jnp.ndarray:
  """Eq. 9: L = [lambda L_fal + (1 - lambda) L_rl] + 0.5 L_tal + L_cl.

  ARGF never minimises the sum with one optimiser: the bracket trains encoders and
  decoders, 0.5 L_tal the discriminator, L_cl encoders and classifier (methods/argf.py).
  This is the monitored total."""
  return lam * fal + (1.0 - lam) * rl + 0.5 * tal + cl


def one_hot_targets(labels: jnp.ndarray, task: str, num_outputs: int) -> jnp.ndarray:
  """The y of Eq. 8: one-hot (B, N) for classification, (B, 1) values for regression."""
  if task == "classification":
    return jax.nn.one_hot(labels.astype(jnp.int32), num_outputs)
  if task in ("regression", "sims"):
    return labels.astype(jnp.float32)[:, None]
  raise ValueError(f"ARGF's classification loss supports classification and regression "
                   f"tasks, got {task!r}")


def probability_mse_per_sample(pred: jnp.ndarray, labels: jnp.ndarray, task: str) -> jnp.ndarray:
  """The fusion network's loss as the paper states it ("Mean Square Error as loss function
  for graph fusion network"): classification -> mean_c (softmax(logits)_c - onehot_c)^2;
  regression -> (pred - y)^2. Returns (B,)."""
  if task == "classification":
    probs = jax.nn.softmax(pred.astype(jnp.float32), axis=-1)
    return jnp.mean((probs - jax.nn.one_hot(labels.astype(jnp.int32), pred.shape[-1])) ** 2, -1)
  if task in ("regression", "sims"):
    return (pred - labels.astype(pred.dtype)) ** 2
  raise ValueError(f"probability MSE supports classification and regression, got {task!r}")


__all__ = ["fake_adversarial_loss", "true_adversarial_loss", "reconstruction_loss",
           "classification_loss", "embedding_objective", "one_hot_targets",
           "probability_mse_per_sample", "DISTANCES"]
