"""Experiments: everything built from a config, and a trained one back from its workdir.

`build_experiment(config)` loads the data (unless given), builds the model and its method
on a 1-D device mesh (batch sharded on 'data', state replicated) and jit-compiles the
train, eval and init steps and the epoch scans of training/scan.py: the `Experiment` the
training loop, evaluation and the analyses work on. `init_state` gives the seed's initial
state. `load_trained` serves the analyses of a finished run (modality drop,
training/robustness.py; MDM's dependency scores, training/dependency_scores.py) and
`restore_selected` the evaluate and export entry points.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mmfuse_jax import config as config_lib
from mmfuse_jax.catalog import METHODS, MODELS
from mmfuse_jax.data import load_dataset, make_batch, shard_batch
from mmfuse_jax.data.core import Dataset
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.models.base import DataInfo, check_model_modalities
from mmfuse_jax.training.checkpoint import Checkpoints, abstract_like
from mmfuse_jax.training.mesh import batch_sharding, make_data_mesh, replicated
from mmfuse_jax.training.rng import seed_key
from mmfuse_jax.training.scan import scan_rows, scan_steps


@dataclasses.dataclass
class Experiment:
  """Everything built from a config: data, model, method, mesh and compiled steps."""
  config: Any
  dataset: Dataset
  data_stats: dict
  info: DataInfo
  spec: Any
  model: Any
  method: Any
  mesh: Any
  batch_sharding: Any
  state_sharding: Any
  train_step: Any
  eval_step: Any
  init_fn: Any
  train_scan: Any = None          # (state, stacked batches, rng) -> (state, stacked metrics)
  train_scan_masked: Any = None   # the same with a (steps,) bool `live` mask (padded runs)
  stacked_sharding: Any = None    # stacked batches: steps axis replicated, batch axis on 'data'
  train_scan_rows: Any = None     # (state, device split, stacked row plans, rng, lengths)
  train_scan_rows_masked: Any = None  # the same with a `live` mask before `lengths`
  scan_cache: dict = dataclasses.field(default_factory=dict)  # compiled scans by shapes
  analysis_cache: dict = dataclasses.field(default_factory=dict)  # jitted analysis steps

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size


def build_experiment(config, dataset: Dataset | None = None, data_stats: dict | None = None
                     ) -> Experiment:
  """Loads data (unless given), builds model and method, and jit-compiles the steps."""
  config_lib.validate_config(config)
  spec = MODELS.get(config.model)
  method_cls = METHODS.get(config.method or spec.method)
  check_model_modalities(spec, config_lib.modalities(config) if dataset is None
                         else dataset.modalities)
  if dataset is None:
    dataset, data_stats = load_dataset(config)
  info = DataInfo(modalities=dataset.modalities, feature_dims=dataset.feature_dims,
                  max_lengths=dataset.max_lengths, task=dataset.task,
                  num_classes=dataset.num_classes)
  mesh = make_data_mesh(config.num_devices)
  ndev = mesh.devices.size
  if config.batch_size % ndev:
    raise ConfigError(f"batch_size={config.batch_size} must be a multiple of the "
                      f"{ndev} devices in the mesh")
  steps_per_epoch = -(-len(dataset.splits["train"]) // config.batch_size)
  model = spec.build(config.net, info)
  method = method_cls(config, model, spec, info, steps_per_epoch)
  method.set_train_split(dataset.splits["train"])
  b_sh, r_sh = batch_sharding(mesh), replicated(mesh)
  train_step = jax.jit(method.train_step, in_shardings=(r_sh, b_sh, r_sh),
                       out_shardings=(r_sh, r_sh), donate_argnums=(0,))
  eval_step = jax.jit(method.eval_step, in_shardings=(r_sh, b_sh), out_shardings=r_sh)
  init_fn = jax.jit(method.init_state, in_shardings=(r_sh, b_sh), out_shardings=r_sh)
  s_sh = NamedSharding(mesh, P(None, "data"))
  steps = functools.partial(scan_steps, method)   # (state, stacked batches, rng[, live])
  train_scan = jax.jit(steps, in_shardings=(r_sh, s_sh, r_sh), out_shardings=(r_sh, r_sh),
                       donate_argnums=(0,))
  train_scan_masked = jax.jit(steps, in_shardings=(r_sh, s_sh, r_sh, r_sh),
                              out_shardings=(r_sh, r_sh), donate_argnums=(0,))
  # Epoch scans over a device-resident split: each step gathers its batch from row indices.
  rows = functools.partial(scan_rows, method)  # (state, split, plans, rng, lengths[, live])
  train_scan_rows = jax.jit(rows, static_argnums=(4,), in_shardings=(r_sh, r_sh, s_sh, r_sh),
                            out_shardings=(r_sh, r_sh), donate_argnums=(0,))
  train_scan_rows_masked = jax.jit(rows, static_argnums=(4,),
                                   in_shardings=(r_sh, r_sh, s_sh, r_sh, r_sh),
                                   out_shardings=(r_sh, r_sh), donate_argnums=(0,))
  return Experiment(config, dataset, data_stats or {}, info, spec, model, method, mesh, b_sh,
                    r_sh, train_step, eval_step, init_fn, train_scan, train_scan_masked, s_sh,
                    train_scan_rows, train_scan_rows_masked)


def first_batch(exp: Experiment):
  """The first train batch on the mesh (the shapes `init_state` initialises with)."""
  split = exp.dataset.splits["train"]
  rows = np.arange(min(len(split), exp.config.batch_size))
  return shard_batch(make_batch(split, rows, exp.config.batch_size,
                                exp.config.data.num_buckets), exp.batch_sharding)


def init_state(exp: Experiment):
  """The initial TrainState of the experiment's seed (what training and restoring start from)."""
  init_rng, _ = jax.random.split(seed_key(exp.config))   # config.prng_impl's keys
  return exp.init_fn(init_rng, first_batch(exp))


def load_workdir_config(workdir: str, data_dir: str | None = None):
  """The config a workdir was trained with (its config.json); data_dir replaces the
  recorded data folder (data moved since training)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ConfigError(f"{workdir} has no config.json: not a training workdir")
  with open(path) as f:
    config = config_lib.from_json(f.read())
  if data_dir:
    config.data_dir = data_dir
  return config


def restore_selected(workdir: str, exp):
  """The validation-selected TrainState of a workdir, placed on the experiment's mesh."""
  state = init_state(exp)
  ckpt = Checkpoints(workdir)
  restored = ckpt.restore_best(abstract_like(state, exp.state_sharding))
  ckpt.close()
  if restored is None:
    raise ConfigError(f"{workdir} has no selected checkpoint yet (checkpoints/best is empty)")
  return restored


def load_trained(workdir: str, *, dataset=None):
  """(Experiment, TrainState) of a workdir: its config.json, the data (loaded from the
  config unless given) and the validation-selected checkpoint."""
  exp = build_experiment(load_workdir_config(workdir), dataset)
  return exp, restore_selected(workdir, exp)[0]
