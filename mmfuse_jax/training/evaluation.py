"""Evaluation of an experiment's state on a split.

`predict_split` gives deterministic predictions and per-sample task losses on every row
(the method's compiled eval step, batches of eval_batch_size split over the devices);
`evaluate_split` turns them into the task's metrics. With `with_aux` the model's aux comes
too, from a separate compiled analysis step (`analysis_outputs`) that keeps it split over
the batch axis on the devices: plots and analyses read attention maps and representations
from it, the training loop never does. The functions take the `Experiment` of
training/experiment.py as `exp`.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from mmfuse_jax.data import iterate_batches, shard_batch
from mmfuse_jax.data.core import Split
from mmfuse_jax.training import metrics as metrics_lib
from mmfuse_jax.training.scan import shape_signature


def _round_up(n: int, k: int) -> int:
  return ((n + k - 1) // k) * k


def aux_batch_axis(path, ndim: int) -> int | None:
  """The batch axis of one aux array: 0, except for layer-stacked crossmodal arrays (MICA:
  aux['crossmodal'][dir][name] of shape (D, B, ...); MulT's per-layer lists keep the batch
  first); None for a scalar."""
  if ndim == 0:
    return None
  keys = [getattr(k, "key", None) for k in path]
  stacked = (keys and keys[0] == "crossmodal"
             and not any(isinstance(k, jax.tree_util.SequenceKey) for k in path))
  return 1 if stacked and ndim >= 2 else 0


def _valid_rows(path, value, n: int) -> np.ndarray:
  """The first n (valid) samples of one aux array (along `aux_batch_axis`)."""
  value = np.asarray(value)
  axis = aux_batch_axis(path, value.ndim)
  if axis is None:
    return value
  return value[:, :n] if axis == 1 else value[:n]


def aux_shardings(mesh, aux_shapes):
  """A NamedSharding per aux array: split over 'data' along its batch axis, replicated when
  it has none or that axis does not divide over the devices."""
  ndev = mesh.devices.size

  def one(path, x):
    axis = aux_batch_axis(path, len(x.shape))
    if axis is None or x.shape[axis] % ndev:
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, P(*([None] * axis + ["data"])))
  return jax.tree_util.tree_map_with_path(one, aux_shapes)


def analysis_outputs(exp, state, batch):
  """(pred, per-sample loss, aux) of a device batch, for plots and analysis. A separate
  compiled function (`Method.analysis_step`, compiled per batch shapes), so that the eval
  step of the training loop never returns the aux; the aux stays split over the batch
  axis on the devices (each holds its own rows' attention maps)."""
  key = shape_signature(batch)
  fn = exp.analysis_cache.get(key)
  if fn is None:
    _, _, aux_shapes = jax.eval_shape(exp.method.analysis_step, state, batch)
    fn = jax.jit(exp.method.analysis_step, in_shardings=(exp.state_sharding,
                                                         exp.batch_sharding),
                 out_shardings=(exp.state_sharding, exp.state_sharding,
                                aux_shardings(exp.mesh, aux_shapes)))
    exp.analysis_cache[key] = fn
  return fn(state, batch)


def _to_host(tree):
  """Device arrays to numpy; across processes (batch-sharded aux) gathered first."""
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)


def predict_split(exp, state, split: Split, *, with_aux: bool = False):
  """Deterministic predictions and per-sample task losses on every row of a split; with
  with_aux also the model's aux per batch (valid rows only; `analysis_outputs`)."""
  bs = _round_up(exp.config.eval_batch_size, exp.num_devices)
  preds, losses, auxes = [], [], []
  for batch in iterate_batches(split, bs, num_buckets=exp.config.data.num_buckets):
    n = int(batch.weights.sum())
    device_batch = shard_batch(batch, exp.batch_sharding)
    if with_aux:
      pred, loss, aux = analysis_outputs(exp, state, device_batch)
      auxes.append(jax.tree_util.tree_map_with_path(lambda p, a: _valid_rows(p, a, n),
                                                    _to_host(aux)))
    else:
      pred, loss = exp.eval_step(state, device_batch)
    pred, loss = jax.device_get((pred, loss))
    preds.append(np.asarray(pred)[:n]); losses.append(np.asarray(loss)[:n])
  out = (np.concatenate(preds), np.concatenate(losses))
  return out + (auxes,) if with_aux else out


def evaluate_split(exp, state, split: Split) -> dict[str, float]:
  """Task metrics of the split's predictions (training/metrics.py) and the mean task loss."""
  preds, losses = predict_split(exp, state, split)
  m = metrics_lib.task_metrics(exp.info.task, preds, split.labels)
  m["loss"] = float(np.mean(losses))
  return m
