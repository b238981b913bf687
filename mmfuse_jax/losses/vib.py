"""Variational information bottleneck (VIB) terms.

MCER (Zhao et al., IJCNN 2024) applies the multimodal information bottleneck (MIB, Mai et
al. 2023) to the multimodal task (M-MIB, Eq. 23-26) and to each unimodal task (S-MIB,
Eq. 27-29):

- a Gaussian encoder q(z | x) = N(mu, diag(std^2)) with std = softplus(raw - 5) (MIB's
  parameterisation: a small initial std), sampled by reparameterisation
  z = mu + std * eps, eps ~ N(0, I) (`reparameterize`);
- the compression term KL(N(mu, std^2) || N(0, I)) in closed form (`gaussian_kl`), weighted
  per sample (`weighted_kl`, Eq. 26 and Eq. 29);
- the prediction term -log q(y | z) = |y - D(z)|_1 + C (Eq. 25), i.e. a per-sample L1 loss
  (`l1_task_loss`, Eq. 24 and Eq. 28, with optional extra per-sample weights: Eq. 32's
  tanh(|y_s - y_m|)).

MCER's two other regularisers have their own modules: losses/mutual_information.py (L_MI)
and losses/modality_discriminator.py (Eq. 21-22). All functions are differentiable and
jit-compatible.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mmfuse_jax.losses.task import weighted_mean

STD_SHIFT = 5.0  # MIB: std = softplus(raw - 5)


def std_from_raw(raw: jnp.ndarray, shift: float = STD_SHIFT) -> jnp.ndarray:
  """MIB's standard deviation softplus(raw - shift) (> 0, small at initialisation)."""
  return jax.nn.softplus(raw - shift)


def reparameterize(rng, mu: jnp.ndarray, std: jnp.ndarray) -> jnp.ndarray:
  """z = mu + std * eps with eps ~ N(0, I) drawn from `rng` (the 'sample' stream)."""
  eps = jax.random.normal(rng, mu.shape, mu.dtype)
  return mu + std * eps


def gaussian_kl(mu: jnp.ndarray, std: jnp.ndarray) -> jnp.ndarray:
  """KL(N(mu, diag std^2) || N(0, I)) per sample, summed over the last axis.

  Closed form 0.5 * sum(mu^2 + std^2 - 1 - log std^2) (MCER Eq. 26 / Eq. 29)."""
  var = std ** 2
  return 0.5 * jnp.sum(mu ** 2 + var - 1.0 - jnp.log(var), axis=-1)


def weighted_kl(mu: jnp.ndarray, std: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """(1/n) sum_i KL(N(mu_i, std_i) || N(0, I)) over real samples (MCER Eq. 26, one term of
  Eq. 29). The paper's beta is applied by the caller."""
  return weighted_mean(gaussian_kl(mu, std), weights)


def l1_task_loss(pred: jnp.ndarray, target: jnp.ndarray, weights: jnp.ndarray,
                 loss_weights: jnp.ndarray | None = None) -> jnp.ndarray:
  """-E log q(y | z) up to a constant = mean |y - y_hat| (MCER Eq. 24-25, Eq. 28, Eq. 20).

  `weights` are the batch weights (0 for filler rows; the mean is over real samples);
  `loss_weights` optional per-sample factors multiplied inside the mean (Eq. 32's
  W = tanh(|y_s - y_m|), as in Self-MM: sum(w * W * |.|) / sum(w))."""
  per = jnp.abs(pred - target.astype(pred.dtype))
  if loss_weights is not None:
    per = per * loss_weights
  return weighted_mean(per, weights)


__all__ = ["std_from_raw", "reparameterize", "gaussian_kl", "weighted_kl", "l1_task_loss",
           "STD_SHIFT"]
