"""The library's config fields and the operations on them, knowing no model.

`base_config()` gives the library defaults; `apply_overrides` takes CLI `--key=value` pairs
(dotted keys reach nested fields) and rejects unknown names with the list of valid ones;
`validate_config` checks ranges; `load_config_file` runs a config file's `get_config()`.
A model's defaults on top of these are `mmfuse_jax.config.get_config`, which re-exports
everything here: that module needs the registered models; this one sits at the bottom of
the import graph, so that the data layer can read and check config fields.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from typing import Any

import ml_collections

from mmfuse_jax.errors import ConfigError


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = "mult"
  c.method = ""                  # empty: the model's default method
  c.dataset = "synthetic"
  c.preset = ""                  # '' or 'synthetic': the model's setting for the built-in
                                 # synthetic data applied on top of its paper defaults
  c.data_dir = ""
  c.seed = 0
  c.epochs = 12                  # the quick default; paper configs in configs/ set their own
  c.batch_size = 32              # global batch (all devices)
  c.eval_batch_size = 128
  c.num_devices = 0              # 0: all local devices
  c.patience = 0                 # early stopping on the selection metric; 0: off
  c.select_metric = ""           # empty: task default (MAE for regression, loss otherwise)
  c.select_mode = ""             # 'min' or 'max'; empty: task default
  c.progress = True
  c.train_loop = "auto"          # 'step': one jit call per batch; 'scan': each epoch as one
                                 # lax.scan (docs/concepts.md); 'auto': scan on GPU/TPU when
                                 # the train split fits on the device, step on CPU
  c.input_feed = "auto"          # 'device': train split on device, each epoch ships row
                                 # indices; 'host': numpy batches prefetched 2 ahead; 'auto':
                                 # device when it fits half the free device memory
  c.scan_max_bytes = 2 * 1024 ** 3  # device input budget where the backend reports no memory
                                 # (CPU); host-fed scan: above this (stacked epoch) use 'step'
  c.precision = "float32"        # 'bf16': bf16 forward/backward, float32 params, losses, optimizer
  c.prng_impl = "auto"           # random keys: 'threefry' | 'rbg' | 'unsafe_rbg' (TPU's hardware
                                 # generator); 'auto': rbg on TPU, threefry elsewhere
                                 # (training/rng.py). Changes the numbers: checked on resume
  c.wandb = ""                   # Weights & Biases project to log metrics to; empty: off

  c.data = ml_collections.ConfigDict()
  c.data.modalities = "text,audio,vision"
  c.data.standardize = True
  c.data.nan_policy = "error"    # 'error' or 'zero'
  c.data.num_buckets = 1         # >1: pad time to a few bucket lengths (fewer shapes)
  c.data.task = ""               # empty: the reader's task; 'classification' binarises
  c.data.split = ""              # reader-specific split choice (e.g. 'poria' for utterances)
  c.data.valid_fraction = 0.2    # share of train videos carved out as validation
  c.data.synthetic_train = 1200
  c.data.synthetic_valid = 300
  c.data.synthetic_test = 300
  c.data.synthetic_seed = 0
  c.data.shared_noise_text = 1.0      # synthetic_shared: per-step noise sigma_m of each modality
  c.data.shared_noise_audio = 1.0
  c.data.shared_noise_vision = 1.0
  c.data.shared_heterogeneity = 1.0   # synthetic_shared: 0 one map/scale/shape for all, 1 own
  c.data.shared_specific_share = 0.3  # synthetic_shared: label share of modality-specific signals
  c.data.label_key = ""          # reader-specific label choice
  c.data.context = False         # utterance data: give each utterance its video's utterances
  c.data.file = ""               # data file: a name in data_dir or a path; empty: reader default
  c.data.aligned = False         # MulT/MMSA pickles: read the word-aligned file, not unaligned
  c.data.allow_leakage = False   # utterance data: permit a leaky feature/split pair (warns loudly)
  c.data.split_seed = 0          # seed of a reader's validation carve-out (deterministic)
  c.data.folds_file = ""         # SDK .csd data: folds JSON; empty: *folds*.json in data_dir
  c.data.sdk_features = ""       # SDK: 'text=A.csd,audio=B.csd,vision=C.csd'; empty: by name
  c.data.sdk_labels = ""         # SDK: label .csd; empty: the .csd whose name has 'label'
  c.data.max_steps = 0           # SDK: keep at most this many steps per segment; 0: all

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"          # 'adam' | 'adamw'
  c.optim.lr = 1e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.0
  c.optim.clip_norm = 0.0        # 0: off
  c.optim.clip_value = 0.0       # 0: off
  c.optim.schedule = "constant"  # 'constant' | 'step' | 'plateau' | 'cyclic'
  c.optim.step_epochs = 20       # step: multiply LR by step_factor every step_epochs
  c.optim.step_factor = 0.1
  c.optim.plateau_patience = 20  # plateau: epochs without validation-loss improvement
  c.optim.plateau_factor = 0.1
  c.optim.cyclic_max_lr = 5e-3   # cyclic: triangular between lr and cyclic_max_lr
  c.optim.cyclic_half_period_epochs = 2.0

  c.loss = ml_collections.ConfigDict()
  c.loss.task = ""               # empty: 'l1' for regression, 'ce' for classes
  c.net = ml_collections.ConfigDict()
  return c


# Fields a run may change between a run and its resumption in the same workdir: every other
# field names a different experiment, and a workdir holding one refuses the other.
# - epochs, patience: how long to train. Neither changes a step already taken; the loop
#   replays early stopping from the saved history with the new values, so raising epochs on a
#   finished run continues it exactly as one uninterrupted run with that many epochs (one
#   that would already have stopped earlier is refused).
# - progress, wandb: what is displayed and where metrics are logged.
# - eval_batch_size: how validation/test rows are batched (deterministic predictions).
# - train_loop, scan_max_bytes: per-step jit or one lax.scan per epoch; the same steps in
#   the same order (equal up to float rounding, tests/test_scan_loop.py).
RESUMABLE_FIELDS = frozenset({"epochs", "patience", "progress", "wandb", "eval_batch_size",
                              "train_loop", "scan_max_bytes", "input_feed"})


def changed_fields(old: ml_collections.ConfigDict, new: ml_collections.ConfigDict
                   ) -> dict[str, tuple[Any, Any]]:
  """Dotted field -> (old value, new value) for every field whose value differs."""
  flat_old = {k: flat_value(old, k) for k in all_keys(old)}
  out = {}
  for k in all_keys(new):
    value = flat_value(new, k)
    if k not in flat_old or flat_old[k] != value:
      out[k] = (flat_old.get(k), value)
  return out


def flat_value(config: ml_collections.ConfigDict, dotted: str) -> Any:
  """The value of a dotted field ('net.d_model')."""
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def _parse_value(text: str, current: Any, key: str) -> Any:
  if isinstance(current, bool):
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
      return True
    if low in ("0", "false", "no", "off"):
      return False
    raise ConfigError(f"--{key} expects true/false, got {text!r}")
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      raise ConfigError(f"--{key} expects an integer, got {text!r}") from None
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise ConfigError(f"--{key} expects a number, got {text!r}") from None
  if isinstance(current, (tuple, list)):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = tuple(v.strip() for v in text.split(","))
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)
  return text


def all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      keys.extend(all_keys(v, f"{prefix}{k}."))
    else:
      keys.append(f"{prefix}{k}")
  return keys


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]
                    ) -> ml_collections.ConfigDict:
  """Sets dotted keys from strings, typed by the current value; unknown keys fail."""
  valid = all_keys(config)
  for key, text in overrides.items():
    if key not in valid:
      close = [k for k in valid if k.split(".")[-1] == key.split(".")[-1]]
      hint = f" (did you mean {', '.join(close)}?)" if close else ""
      raise ConfigError(f"unknown config field {key!r}{hint}; valid fields: {', '.join(valid)}")
    parts = key.split(".")
    node = config
    for p in parts[:-1]:
      node = node[p]
    node[parts[-1]] = _parse_value(text, node[parts[-1]], key)
  return config


def split_config_arg(spec: str) -> tuple[str, str | None]:
  """'configs/mdm.py:tfn,mosei' -> ('configs/mdm.py', 'tfn,mosei'); a path without ':ARG'
  (or one that exists as written) -> (path, None). The ml_collections / big_vision form of
  --config."""
  if os.path.exists(spec) or ".py:" not in spec:
    return spec, None
  path, _, arg = spec.partition(".py:")
  return path + ".py", arg


def load_config_module(path: str):
  """The module of a Python config file (its `get_config`, and `SETTINGS` if it has some)."""
  if not os.path.exists(path):
    raise ConfigError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location("mmfuse_user_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} defines no get_config()")
  return module


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """The config of `--config=FILE` or `--config=FILE:ARG`: FILE's `get_config()`, or
  `get_config(ARG)` (configs/<method>.py take the setting as ARG, e.g.
  configs/mdm.py:tfn,mosei)."""
  path, arg = split_config_arg(spec)
  module = load_config_module(path)
  return module.get_config() if arg is None else module.get_config(arg)


def config_settings(path: str) -> tuple[str, ...]:
  """The settings a config file takes after ':' (its SETTINGS), () for a file without."""
  return tuple(getattr(load_config_module(path), "SETTINGS", ()))


def select_setting(path: str, settings: dict, arg: str | None) -> ml_collections.ConfigDict:
  """The config of one named setting of a config file: settings maps ARG of
  --config=PATH:ARG to a function returning the config; a missing or unknown ARG names
  the valid ones."""
  if arg not in settings:
    shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    got = "no setting" if arg is None else f"setting {arg!r}"
    raise ConfigError(f"{shown} takes a setting, --config={shown}:SETTING with SETTING one "
                      f"of {', '.join(settings)}; got {got}")
  return settings[arg]()


MODALITY_NAMES = ("text", "audio", "vision")
PRNG_IMPL_CHOICES = ("auto", "threefry", "rbg", "unsafe_rbg")


def validate_config(c: ml_collections.ConfigDict) -> None:
  """Range checks with messages that name the field and the allowed values."""
  def need(ok, msg):
    if not ok:
      raise ConfigError(msg)
  need(c.epochs >= 1, f"epochs must be >= 1, got {c.epochs}")
  need(c.batch_size >= 1, f"batch_size must be >= 1, got {c.batch_size}")
  need(c.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {c.eval_batch_size}")
  need(c.optim.name in ("adam", "adamw"), f"optim.name must be adam or adamw, got {c.optim.name!r}")
  need(c.optim.schedule in ("constant", "step", "plateau", "cyclic"),
       f"optim.schedule must be constant, step, plateau or cyclic, got {c.optim.schedule!r}")
  need(c.optim.lr > 0, f"optim.lr must be > 0, got {c.optim.lr}")
  need(c.data.nan_policy in ("error", "zero"),
       f"data.nan_policy must be 'error' or 'zero', got {c.data.nan_policy!r}")
  need(c.select_mode in ("", "min", "max"), f"select_mode must be min or max, got {c.select_mode!r}")
  need(c.get("train_loop", "auto") in ("auto", "step", "scan"),
       f"train_loop must be 'auto', 'step' or 'scan', got {c.train_loop!r}")
  need(c.get("input_feed", "auto") in ("auto", "device", "host"),
       f"input_feed must be 'auto', 'device' or 'host', got {c.input_feed!r}")
  need(c.get("scan_max_bytes", 0) >= 0, f"scan_max_bytes must be >= 0, got {c.scan_max_bytes}")
  need(c.get("precision", "float32") in ("float32", "bf16"),
       f"precision must be 'float32' or 'bf16', got {c.precision!r}")
  need(c.get("prng_impl", "auto") in PRNG_IMPL_CHOICES,
       f"prng_impl must be one of {', '.join(PRNG_IMPL_CHOICES)}, got {c.prng_impl!r}")
  need(c.data.num_buckets >= 1, f"data.num_buckets must be >= 1, got {c.data.num_buckets}")
  mods = modalities(c)
  need(mods and set(mods) <= set(MODALITY_NAMES) and len(set(mods)) == len(mods),
       f"data.modalities must list one or more of {','.join(MODALITY_NAMES)} (comma "
       f"separated, no repeats), got {c.data.modalities!r}")


def modalities(c: ml_collections.ConfigDict) -> tuple[str, ...]:
  return tuple(m.strip() for m in c.data.modalities.split(",") if m.strip())


def to_json(c: ml_collections.ConfigDict) -> str:
  return json.dumps(c.to_dict(), indent=2, sort_keys=True, default=str)


def from_json(text: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(json.loads(text))
