"""Optimizers and learning-rate schedules from the config (optax): what each method builds
its optimizers with.

Per-step schedules ('constant', 'step', 'cyclic') live inside the optax chain. The
'plateau' schedule reacts to the validation loss at epoch ends: the loop keeps a factor
`lr_scale` in the train state and the methods multiply updates by it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def make_schedule(optim, steps_per_epoch: int, lr: float | None = None):
  lr = optim.lr if lr is None else lr
  if optim.schedule in ("constant", "plateau"):
    return optax.constant_schedule(lr)
  if optim.schedule == "step":
    every = max(1, optim.step_epochs * steps_per_epoch)
    return optax.exponential_decay(lr, transition_steps=every, decay_rate=optim.step_factor,
                                   staircase=True)
  if optim.schedule == "cyclic":
    half = max(1, int(round(optim.cyclic_half_period_epochs * steps_per_epoch)))
    def triangular(step):
      # Triangular cyclic LR (Smith 2017): lr -> max_lr -> lr every 2 * half steps.
      phase = jnp.abs(jnp.mod(step, 2 * half) / half - 1.0)
      return optim.cyclic_max_lr - (optim.cyclic_max_lr - lr) * phase
    return triangular
  raise ValueError(f"unknown schedule {optim.schedule!r}")


def make_optimizer(optim, steps_per_epoch: int, *, lr: float | None = None,
                   b1: float | None = None) -> optax.GradientTransformation:
  """clip by value -> clip by global norm -> Adam/AdamW with the schedule.

  lr and b1 override the config's (methods with several optimizers, e.g. ARGF's betas)."""
  schedule = make_schedule(optim, steps_per_epoch, lr)
  parts = []
  if optim.clip_value > 0:
    parts.append(optax.clip(optim.clip_value))
  if optim.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(optim.clip_norm))
  beta1 = optim.b1 if b1 is None else b1
  if optim.name == "adamw":
    parts.append(optax.adamw(schedule, b1=beta1, b2=optim.b2, weight_decay=optim.weight_decay))
  else:
    parts.append(optax.adam(schedule, b1=beta1, b2=optim.b2))
    if optim.weight_decay > 0:
      # L2 penalty added to the gradient (torch.optim.Adam weight_decay semantics).
      parts.insert(len(parts) - 1, optax.add_decayed_weights(optim.weight_decay))
  return optax.chain(*parts)


def scale_updates(updates, lr_scale):
  """Updates times the plateau schedule's factor (TrainState.lr_scale)."""
  return jax.tree_util.tree_map(lambda u: u * lr_scale.astype(u.dtype), updates)
