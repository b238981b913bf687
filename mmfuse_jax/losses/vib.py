"""Variational information bottleneck (VIB) terms and MCER's other regularisers.

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

This module also holds MCER's two other regularisers (pure functions of arrays):
- `gaussian_mi_lower_bound`: the L_MI term of Sec. III-C (the input-level MI of MMIM, Han
  et al. 2021, ref. [24]): a Barber-Agakov lower bound I(X; Y) >= H(Y) + E log q(y | x) with
  a Gaussian q; H(Y) does not depend on the q network, so the loss is -E log q(y | x).
- `modality_discriminator_loss`: the grouped binary cross-entropy of Eq. 21-22 (BBFN).
All functions are differentiable and jit-compatible.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

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


def weighted_mean(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """sum(w * v) / max(sum(w), 1) (filler rows with w = 0 do not count)."""
  weights = weights.astype(values.dtype)
  return (values * weights).sum() / jnp.maximum(weights.sum(), 1.0)


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


def gaussian_log_likelihood(y: jnp.ndarray, mu: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """log N(y; mu, diag exp(logvar)) per sample (summed over the last axis)."""
  return -0.5 * jnp.sum((y - mu) ** 2 / jnp.exp(logvar) + logvar + np.log(2 * np.pi), axis=-1)


def gaussian_mi_lower_bound(y: jnp.ndarray, mu: jnp.ndarray, logvar: jnp.ndarray,
                            weights: jnp.ndarray) -> jnp.ndarray:
  """Loss form of the Barber-Agakov bound I(X; Y) >= H(Y) + E log q(y | x): returns
  -E_w log q(y | x), where (mu, logvar) = q-network(x). Minimising it maximises the bound
  (MCER's L_MI, Sec. III-C; MMIM's input-level MI)."""
  return -weighted_mean(gaussian_log_likelihood(y, mu, logvar), weights)


def modality_discriminator_loss(logits: jnp.ndarray, targets: jnp.ndarray,
                                group_weights: jnp.ndarray) -> jnp.ndarray:
  """Grouped binary cross-entropy of one gated-transformer layer (MCER Eq. 21).

  logits, targets: (..., G) discriminator logits and 0/1 modality labels of the G = 2n/k
  groups; group_weights (G,) (0 for groups made only of filler rows). Returns the weighted
  mean over groups of -[c log c_hat + (1 - c) log(1 - c_hat)], averaged over leading axes.
  """
  bce = optax.sigmoid_binary_cross_entropy(logits, targets.astype(logits.dtype))
  w = jnp.broadcast_to(group_weights.astype(logits.dtype), bce.shape)
  return (bce * w).sum() / jnp.maximum(w.sum(), 1.0)


def discriminator_regularizer(layer_losses: jnp.ndarray, group_size: int,
                              lam: float = 1.0) -> jnp.ndarray:
  """MCER Eq. 22: lambda * K / (2L) * sum over the L layers and the modality pairs of the
  per-layer losses of Eq. 21. layer_losses: (L, P) array. (The outer (1/n) sum_j of Eq. 22
  averages a quantity that does not depend on j, so it is the identity.)"""
  num_layers = layer_losses.shape[0]
  return lam * group_size / (2.0 * num_layers) * layer_losses.sum()


__all__ = ["std_from_raw", "reparameterize", "gaussian_kl", "weighted_kl", "l1_task_loss",
           "gaussian_log_likelihood", "gaussian_mi_lower_bound", "modality_discriminator_loss",
           "discriminator_regularizer", "weighted_mean", "STD_SHIFT"]
