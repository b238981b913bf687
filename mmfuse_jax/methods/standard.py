"""Standard method: one optimizer over all parameters, task loss + the model's regulariser."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mmfuse_jax.losses.task import weighted_mean
from mmfuse_jax.methods.base import Method, TrainState
from mmfuse_jax.methods.optim import make_optimizer, scale_updates
from mmfuse_jax.registry import METHODS


@METHODS.register("standard")
class StandardMethod(Method):

  def __init__(self, config, model, spec, info, steps_per_epoch):
    super().__init__(config, model, spec, info, steps_per_epoch)
    self.tx = make_optimizer(config.optim, steps_per_epoch)

  def init_state(self, rng, batch) -> TrainState:
    variables = dict(self.init_variables(rng, batch))
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                      opt_state=self.tx.init(params), lr_scale=jnp.ones((), jnp.float32),
                      extras={})

  def loss(self, params, model_state, batch, rng):
    """Task loss (mean over real samples) + the model's regulariser (e.g. RERD Eq. 11)."""
    model_rng, reg_rng = jax.random.split(rng)
    (pred, aux), new_model_state = self.apply(params, model_state, batch, train=True,
                                              rng=model_rng, mutable=True)
    task = weighted_mean(self.task_loss_per_sample(pred, batch), batch.weights)
    metrics = {"task_loss": task}
    total = task
    if self.spec.regularizer is not None:
      reg, reg_metrics = self.spec.regularizer(aux, batch, self.config, reg_rng)
      total = total + reg
      metrics.update(reg_metrics)
    metrics["loss"] = total
    return total, (metrics, new_model_state)

  def train_step(self, state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    grads, (metrics, model_state) = jax.grad(self.loss, has_aux=True)(
        state.params, state.model_state, batch, rng)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    updates = scale_updates(updates, state.lr_scale)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.replace(step=state.step + 1, params=params, model_state=model_state,
                         opt_state=opt_state), metrics
