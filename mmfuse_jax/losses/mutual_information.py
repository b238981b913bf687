"""MCER's L_MI (Zhao et al., IJCNN 2024, Sec. III-C): the input-level mutual information of
MMIM (Han et al. 2021, MCER ref. [24]) between the text representation and each of audio
and vision.

A Barber-Agakov lower bound I(X; Y) >= H(Y) + E log q(y | x) with a Gaussian q(y | x) =
N(mu(x), diag exp(logvar(x))) predicted by a network; H(Y) does not depend on that network,
so the loss is -E log q(y | x) (`gaussian_mi_lower_bound`), a weighted mean over the real
rows of the batch. Differentiable and jit-compatible.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mmfuse_jax.losses.task import weighted_mean


def gaussian_log_likelihood(y: jnp.ndarray, mu: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """log N(y; mu, diag exp(logvar)) per sample (summed over the last axis)."""
  return -0.5 * jnp.sum((y - mu) ** 2 / jnp.exp(logvar) + logvar + np.log(2 * np.pi), axis=-1)


def gaussian_mi_lower_bound(y: jnp.ndarray, mu: jnp.ndarray, logvar: jnp.ndarray,
                            weights: jnp.ndarray) -> jnp.ndarray:
  """Loss form of the Barber-Agakov bound I(X; Y) >= H(Y) + E log q(y | x): returns
  -E_w log q(y | x), where (mu, logvar) = q-network(x). Minimising it maximises the bound
  (MCER's L_MI, Sec. III-C; MMIM's input-level MI)."""
  return -weighted_mean(gaussian_log_likelihood(y, mu, logvar), weights)
