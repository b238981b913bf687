"""Optimizers and schedules built from the config (compared with closed forms / optax)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmfuse_jax import config as config_lib
from mmfuse_jax.methods.optim import make_optimizer, make_schedule, scale_updates


def _optim(**kw):
  c = config_lib.get_config("mult").optim
  c.update(kw)
  return c


def test_step_and_cyclic_schedules():
  step = make_schedule(_optim(schedule="step", lr=1.0, step_epochs=2, step_factor=0.1), 5)
  assert [float(step(s)) for s in (0, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
  cyc = make_schedule(_optim(schedule="cyclic", lr=1e-3, cyclic_max_lr=5e-3,
                             cyclic_half_period_epochs=1.0), 10)
  # triangular: base at 0, max at 10 steps, base again at 20
  assert [float(cyc(s)) for s in (0, 5, 10, 15, 20)] == pytest.approx(
      [1e-3, 3e-3, 5e-3, 3e-3, 1e-3])


def test_adam_with_clipping_matches_optax_chain():
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([10.0, -0.5, 0.2])}
  ours = make_optimizer(_optim(lr=0.1, clip_value=1.0, clip_norm=0.5), 10)
  ref = optax.chain(optax.clip(1.0), optax.clip_by_global_norm(0.5), optax.adam(0.1))
  u1, _ = ours.update(grads, ours.init(params), params)
  u2, _ = ref.update(grads, ref.init(params), params)
  np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)
  half = scale_updates(u1, jnp.float32(0.5))
  np.testing.assert_allclose(half["w"], 0.5 * np.asarray(u1["w"]))


def test_adamw_and_beta_override():
  params = {"w": jnp.ones(2)}
  grads = {"w": jnp.array([0.3, -0.1])}
  ours = make_optimizer(_optim(name="adamw", lr=0.01, weight_decay=0.1), 1, b1=0.5)
  ref = optax.adamw(0.01, b1=0.5, weight_decay=0.1)
  state_o, state_r = ours.init(params), ref.init(params)
  for _ in range(3):
    u1, state_o = ours.update(grads, state_o, params)
    u2, state_r = ref.update(grads, state_r, params)
    np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)
