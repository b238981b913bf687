"""The method contract: a TrainState and pure train/eval steps.

A method holds only static things (the model, the optimizers, the config); everything that
changes lives in `TrainState`, a pytree that the loop checkpoints. Several optimizers (ARGF,
MDM) keep one optax state each in `opt_state` (a dict) over their own parameter subsets;
extra training state (MCER's generated labels, MDM's critic) lives in `extras`.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from mmfuse_jax.data.core import Batch
from mmfuse_jax.losses.task import per_sample_task_loss


def _is_low_float(x) -> bool:
  dtype = jnp.result_type(x)
  return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32


def cast_floating(tree, dtype):
  """Every floating leaf of `tree` as `dtype` (integer and bool leaves unchanged)."""
  return jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x,
      tree)


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray          # int32 scalar
  params: Any                # the model's 'params' collection
  model_state: Any           # other mutable collections (e.g. 'batch_stats'), {} if none
  opt_state: Any             # optax state, or a dict of them for several optimizers
  lr_scale: jnp.ndarray      # float32 scalar set by the loop (plateau schedule)
  extras: Any                # method-specific state (dict)


class Method:
  """Base class. Subclasses implement init_state and train_step; eval_step is shared."""

  def __init__(self, config, model, spec, info, steps_per_epoch: int):
    self.config = config
    self.model = model
    self.spec = spec
    self.info = info
    self.steps_per_epoch = steps_per_epoch

  # --- helpers -------------------------------------------------------------------------
  def init_variables(self, rng, batch):
    """Model variables for a sample batch (never trains; dropout off)."""
    params_rng, sample_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "sample": sample_rng, "dropout": sample_rng},
                           batch, train=False)

  @property
  def compute_dtype(self):
    """bfloat16 with config.precision = 'bf16', else None (float32 throughout)."""
    return jnp.bfloat16 if self.config.get("precision", "float32") == "bf16" else None

  def to_compute(self, tree):
    """Floating leaves (a Batch: its features only) in the compute dtype; identity in float32.
    The cast is differentiable, so gradients reach the float32 master params."""
    dtype = self.compute_dtype
    if dtype is None:
      return tree
    if isinstance(tree, Batch):
      return tree.replace(features=cast_floating(tree.features, dtype))
    return cast_floating(tree, dtype)

  def to_float32(self, tree):
    """Low-precision floating leaves back to float32 (model outputs, aux, updated state)."""
    if self.compute_dtype is None:
      return tree
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if _is_low_float(x) else x, tree)

  def apply(self, params, model_state, batch, *, train: bool, rng=None, mutable=False):
    """The model's forward pass: (pred, aux) and the updated model_state. Under
    precision='bf16' params and features are cast to bfloat16 here and the outputs back to
    float32, so every loss and regulariser runs in float32."""
    variables = {"params": self.to_compute(params), **model_state}
    batch = self.to_compute(batch)
    rngs = None
    if rng is not None:
      d, s = jax.random.split(rng)
      rngs = {"dropout": d, "sample": s}
    if train and model_state:
      (out, new_state) = self.model.apply(variables, batch, train=True, rngs=rngs,
                                          mutable=list(model_state))
      return self.to_float32(out), self.to_float32(new_state)
    out = self.model.apply(variables, batch, train=train, rngs=rngs)
    return self.to_float32(out), model_state

  def task_loss_per_sample(self, pred, batch):
    return per_sample_task_loss(pred, batch.labels, self.info.task, self.config.loss.task)

  # --- the contract ----------------------------------------------------------------------
  def init_state(self, rng, batch) -> TrainState:
    raise NotImplementedError

  def train_step(self, state: TrainState, batch, rng) -> tuple[TrainState, dict]:
    raise NotImplementedError

  def eval_step(self, state: TrainState, batch) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Deterministic predictions and per-sample task loss: all that metrics need. The aux
    is dropped here, so the compiled step neither returns nor (where nothing else reads
    them) computes every layer's queries, keys and attention maps (GiBs per eval batch at
    MOSI shapes); `analysis_step` returns them."""
    (pred, _), _ = self.apply(state.params, state.model_state, batch, train=False)
    return pred, self.task_loss_per_sample(pred, batch)

  def analysis_step(self, state: TrainState, batch
                    ) -> tuple[jnp.ndarray, jnp.ndarray, dict]:
    """`eval_step` plus the model's aux (attention maps, queries/keys, distances), for plots
    and analysis only (`training.evaluation.analysis_outputs` shards it over the batch)."""
    (pred, aux), _ = self.apply(state.params, state.model_state, batch, train=False)
    return pred, self.task_loss_per_sample(pred, batch), aux

  @property
  def extra_batches(self) -> int:
    """K > 0: every training batch must carry K further batches in `batch.more` (the loop
    supplies the next K batches of the epoch, `pipeline.iterate_batches(extra_batches=K)`);
    MDM's critic updates each draw one (Algorithm 1)."""
    return 0

  def set_train_split(self, split) -> None:
    """Called by the loop before init_state: methods with per-sample state (MCER's
    generated labels) size it from the train split. Records the train labels."""
    self.train_labels = split.labels

  def end_of_epoch(self, state: TrainState, epoch: int) -> TrainState:
    """Hook for methods with per-epoch state updates (MCER's label generation)."""
    return state
