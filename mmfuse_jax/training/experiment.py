"""A trained run back from its workdir: its config, its validation-selected state, both.

`load_trained` serves the analyses of a finished run (modality drop, training/robustness.py;
MDM's dependency scores, training/dependency_scores.py) and `restore_selected` the
evaluate and export entry points.
"""

from __future__ import annotations

import os

from mmfuse_jax import config as config_lib
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training.checkpoint import Checkpoints, abstract_like
from mmfuse_jax.training.loop import build_experiment, init_state


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
