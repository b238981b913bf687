"""losses/vib.py against closed forms, Monte-Carlo numpy estimates and numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.losses import vib
from mmfuse_jax.losses.modality_discriminator import (discriminator_regularizer,
                                                      modality_discriminator_loss)
from mmfuse_jax.losses.mutual_information import gaussian_mi_lower_bound


def _np_kl(mu, std):
  return 0.5 * np.sum(mu ** 2 + std ** 2 - 1 - np.log(std ** 2), axis=-1)


def test_std_from_raw_is_softplus_minus_five():
  raw = np.array([-3.0, 0.0, 5.0, 12.0], np.float32)
  np.testing.assert_allclose(vib.std_from_raw(jnp.asarray(raw)), np.log1p(np.exp(raw - 5.0)),
                             rtol=1e-6)


def test_gaussian_kl_closed_form_and_monte_carlo():
  rng = np.random.default_rng(0)
  mu = rng.normal(size=(3, 4)).astype(np.float32)
  std = rng.uniform(0.3, 1.5, size=(3, 4)).astype(np.float32)
  kl = np.asarray(jax.jit(vib.gaussian_kl)(mu, std))
  np.testing.assert_allclose(kl, _np_kl(mu, std), rtol=1e-5)
  # Monte-Carlo: E_q[log q(z) - log p(z)] with 200k numpy samples per row.
  z = mu[:, None] + std[:, None] * rng.normal(size=(3, 200_000, 4))
  log_q = -0.5 * (((z - mu[:, None]) / std[:, None]) ** 2 + np.log(2 * np.pi * std[:, None] ** 2))
  log_p = -0.5 * (z ** 2 + np.log(2 * np.pi))
  mc = (log_q - log_p).sum(-1).mean(1)
  np.testing.assert_allclose(kl, mc, rtol=0.03, atol=0.02)
  # KL is zero exactly at the prior.
  np.testing.assert_allclose(vib.gaussian_kl(jnp.zeros((2, 5)), jnp.ones((2, 5))), 0.0, atol=1e-6)


def test_weighted_kl_ignores_filler_rows_and_has_closed_form_gradient():
  rng = np.random.default_rng(1)
  mu = rng.normal(size=(4, 3)).astype(np.float32)
  std = rng.uniform(0.5, 1.2, size=(4, 3)).astype(np.float32)
  w = np.array([1, 1, 1, 0], np.float32)
  got = jax.jit(vib.weighted_kl)(mu, std, w)
  np.testing.assert_allclose(got, _np_kl(mu[:3], std[:3]).mean(), rtol=1e-5)
  mu2 = mu.copy(); mu2[3] = 100.0
  np.testing.assert_allclose(vib.weighted_kl(mu2, std, w), got, rtol=1e-6)
  g_mu, g_std = jax.jit(jax.grad(vib.weighted_kl, argnums=(0, 1)))(mu, std, w)
  # d/dmu = mu / n, d/dstd = (std - 1/std) / n on real rows; 0 on filler.
  np.testing.assert_allclose(g_mu, mu * w[:, None] / 3, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g_std, (std - 1 / std) * w[:, None] / 3, rtol=1e-5, atol=1e-6)


def test_reparameterize_statistics_and_gradient():
  mu = jnp.array([0.5, -1.0]); std = jnp.array([0.2, 2.0])
  z = vib.reparameterize(jax.random.PRNGKey(0), jnp.broadcast_to(mu, (50_000, 2)),
                         jnp.broadcast_to(std, (50_000, 2)))
  np.testing.assert_allclose(np.mean(z, 0), mu, atol=0.03)
  np.testing.assert_allclose(np.std(z, 0), std, rtol=0.03)
  g = jax.grad(lambda m, s: vib.reparameterize(jax.random.PRNGKey(1), m, s).sum(),
               argnums=(0, 1))(mu, std)
  np.testing.assert_allclose(g[0], 1.0)
  eps = jax.random.normal(jax.random.PRNGKey(1), mu.shape)
  np.testing.assert_allclose(g[1], eps, rtol=1e-6)


def test_l1_task_loss_with_batch_and_loss_weights():
  pred = np.array([0.5, -1.0, 2.0, 9.0], np.float32)
  y = np.array([1.0, -1.5, 0.0, 0.0], np.float32)
  w = np.array([1, 1, 1, 0], np.float32)
  lw = np.array([0.5, 1.0, 0.25, 1.0], np.float32)
  np.testing.assert_allclose(jax.jit(vib.l1_task_loss)(pred, y, w), (0.5 + 0.5 + 2.0) / 3,
                             rtol=1e-6)
  np.testing.assert_allclose(vib.l1_task_loss(pred, y, w, lw), (0.25 + 0.5 + 0.5) / 3, rtol=1e-6)
  g = jax.grad(vib.l1_task_loss)(jnp.asarray(pred), y, w, lw)
  np.testing.assert_allclose(g, np.sign(pred - y) * w * lw / 3, rtol=1e-6)


def test_gaussian_mi_lower_bound_matches_numpy_log_likelihood():
  rng = np.random.default_rng(2)
  y = rng.normal(size=(5, 3)).astype(np.float32)
  mu = rng.normal(size=(5, 3)).astype(np.float32)
  logvar = rng.normal(size=(5, 3)).astype(np.float32) * 0.3
  w = np.array([1, 1, 0, 1, 1], np.float32)
  ll = -0.5 * (((y - mu) ** 2) / np.exp(logvar) + logvar + np.log(2 * np.pi)).sum(-1)
  got = jax.jit(gaussian_mi_lower_bound)(y, mu, logvar, w)
  np.testing.assert_allclose(got, -(ll * w).sum() / w.sum(), rtol=1e-5)
  g = jax.grad(gaussian_mi_lower_bound, argnums=1)(y, mu, logvar, w)
  np.testing.assert_allclose(g, -((y - mu) / np.exp(logvar)) * w[:, None] / w.sum(), rtol=1e-4,
                             atol=1e-6)


def test_modality_discriminator_loss_and_eq22_scaling():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 4)).astype(np.float32)
  targets = np.array([[1, 1, 1, 1], [0, 0, 0, 0]], np.float32)
  gw = np.array([1, 1, 1, 0], np.float32)
  p = 1 / (1 + np.exp(-logits))
  bce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
  expect = (bce * gw).sum() / (2 * gw.sum())
  got = jax.jit(modality_discriminator_loss)(logits, targets, gw)
  np.testing.assert_allclose(got, expect, rtol=1e-5)
  g = jax.grad(modality_discriminator_loss)(jnp.asarray(logits), targets, gw)
  np.testing.assert_allclose(g, (p - targets) * gw / (2 * gw.sum()), rtol=1e-4, atol=1e-7)
  per_layer = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 1.0]], np.float32)  # (L=2, P=3)
  np.testing.assert_allclose(discriminator_regularizer(per_layer, 4, 0.5),
                             0.5 * 4 / (2 * 2) * per_layer.sum(), rtol=1e-6)


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
