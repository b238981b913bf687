"""Configuration: one locked `ml_collections.ConfigDict` per run.

`get_config(model, dataset)` gives the defaults (library defaults, then the model's own);
`apply_overrides` takes CLI `--key=value` pairs (dotted keys reach nested fields) and
rejects unknown names with the list of valid ones; `validate_config` checks ranges.
Config files define `get_config()` returning a full config; the files in configs/ hold one
method each and take the setting as an argument, `--config=configs/mdm.py:tfn,mosei`.

The field machinery lives in config_base.py (at the bottom of the import graph, where the
data layer can read it) and is re-exported here; this module adds what needs the
registered models.
"""

from __future__ import annotations

import ml_collections

from mmfuse_jax.catalog import MODELS
from mmfuse_jax.config_base import (MODALITY_NAMES, RESUMABLE_FIELDS, all_keys,
                                    apply_overrides, base_config, changed_fields,
                                    config_settings, flat_value, from_json, load_config_file,
                                    modalities, select_setting, split_config_arg, to_json,
                                    validate_config)
from mmfuse_jax.errors import ConfigError

# The built-in synthetic dataset for each kind of model input (ModelSpec.input_kind).
SYNTHETIC_DATASETS = {"sequence": "synthetic", "utterance": "synthetic_utterance"}


def default_dataset(model: str) -> str:
  """The built-in synthetic dataset a model trains on when no dataset is named."""
  return SYNTHETIC_DATASETS[MODELS.get(model).input_kind]


def get_config(model: str = "mult", dataset: str | None = None, *, preset: bool = True
               ) -> ml_collections.ConfigDict:
  """The model's defaults: library defaults, then the model's net and update_config.

  dataset None picks the model's built-in synthetic dataset (`default_dataset`). On a
  built-in synthetic dataset the model's synthetic_setting is applied too (unless preset is
  False) and config.preset says so.
  """
  spec = MODELS.get(model)
  c = base_config()
  c.model = model
  c.dataset = dataset or SYNTHETIC_DATASETS[spec.input_kind]
  c.net = spec.default_net()
  c.method = spec.method
  if spec.update_config is not None:
    spec.update_config(c)
  if preset and spec.synthetic_setting is not None and c.dataset in SYNTHETIC_DATASETS.values():
    spec.synthetic_setting(c)
    c.preset = "synthetic"
  return c


__all__ = ["ConfigError", "MODALITY_NAMES", "RESUMABLE_FIELDS", "SYNTHETIC_DATASETS",
           "all_keys", "apply_overrides", "base_config", "changed_fields", "config_settings",
           "default_dataset", "flat_value", "from_json", "get_config", "load_config_file",
           "modalities", "select_setting", "split_config_arg", "to_json", "validate_config"]
