"""MCER's modality discriminator loss (Zhao et al., IJCNN 2024, Eq. 21-22; after BBFN).

After every gated-transformer layer of a modality pair, a discriminator classifies the mean
of each group of k pooled representations by the modality it came from; its loss is the
grouped binary cross-entropy of Eq. 21 (`modality_discriminator_loss`), and Eq. 22 sums the
per-layer losses over layers and modality pairs with the factor lambda K / (2L)
(`discriminator_regularizer`). Differentiable and jit-compatible.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


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
