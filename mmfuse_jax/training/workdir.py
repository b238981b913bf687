"""Which experiment a workdir holds, and whether it may answer for a config.

A workdir belongs to one experiment: its config.json. Before a run returns a finished
workdir's results (or resumes it), `prepare_workdir` compares that file with the new config;
any difference outside `config.RESUMABLE_FIELDS` is an error naming the fields, so a workdir
never answers for a different config. Raising `epochs` (or `patience`) on a finished run
continues it: the loop restores the latest checkpoint and `replay_early_stopping` recomputes
the early-stopping counters from the saved history with the new values, which makes the
continued run identical to one run with those values from the start.

`default_workdir` names a run after its config: model, dataset, seed and, when any other
field differs from `--model`'s defaults, a short hash of those fields.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import jax

from mmfuse_jax import config as config_lib
from mmfuse_jax.errors import ConfigError

log = logging.getLogger(__name__)

# Fields already spelled out in the default workdir name.
_NAMED_FIELDS = frozenset({"model", "dataset", "seed"})


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _as_json(config) -> dict:
  """Dotted field -> value as config.json stores it (tuples become lists)."""
  return _flatten(json.loads(config_lib.to_json(config)))


def config_differences(saved: dict, config) -> dict[str, tuple]:
  """Dotted field -> (saved value, new value) for each field that differs between a saved
  config.json (`saved`, nested dicts) and `config`, outside config.RESUMABLE_FIELDS.

  A field the saved file lacks (added to the library after the run was made) differs only
  when its new value is not the library's or the model's default."""
  old, new = _flatten(saved), _as_json(config)
  defaults = None
  out = {}
  for key, value in new.items():
    if key.split(".")[0] in config_lib.RESUMABLE_FIELDS:
      continue
    if key not in old:
      if defaults is None:
        defaults = (_as_json(config_lib.base_config()),
                    _as_json(config_lib.get_config(config.model, config.dataset, preset=False)))
      if any(key in d and d[key] == value for d in defaults):
        continue
      out[key] = (None, value)
    elif old[key] != value:
      out[key] = (old[key], value)
  return out


def stop_epoch(selected: list[bool], epochs: int, patience: int) -> int | None:
  """The epoch after which a run with these `epochs` and `patience` stops, judged on the
  first len(selected) epochs of its history (selected[e-1]: epoch e improved the validation
  metric); None when it would train past that history.

  The loop stops after epoch e when e == epochs or when patience > 0 and the epochs since
  the last improvement reach patience."""
  since = 0
  for epoch, improved in enumerate(selected, start=1):
    since = 0 if improved else since + 1
    if epoch >= epochs or (patience and since >= patience):
      return epoch
  return None


def _too_long_error(workdir: str, done: int, stop: int, config) -> ConfigError:
  return ConfigError(
      f"{workdir} holds a run that trained {done} epochs; with epochs={config.epochs} and "
      f"patience={config.patience} it would have stopped after epoch {stop}, so its results "
      f"do not answer for this config: use another --workdir (or the saved epochs)")


def replay_early_stopping(loop: dict, config, workdir: str = "") -> dict:
  """The loop state restored from a checkpoint with its early-stopping counters recomputed
  from its history for this config's epochs and patience (both may change on resume)."""
  selected = [bool(row.get("selected")) for row in loop["history"]]
  stop = stop_epoch(selected, config.epochs, config.patience)
  if stop is not None and stop < len(selected):
    raise _too_long_error(workdir, len(selected), stop, config)
  since = 0
  for improved in selected:
    since = 0 if improved else since + 1
  return dict(loop, since_best=since,
              stopped_early=bool(config.patience and since >= config.patience))


def read_history(workdir: str) -> list[dict]:
  """The rows of a workdir's metrics.jsonl (one per finished epoch); [] when absent."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def prepare_workdir(workdir: str, config) -> dict | None:
  """Checks `workdir` against `config` before anything is trained or returned.

  Returns the saved results when the workdir holds a finished run that answers for
  `config` (same config up to RESUMABLE_FIELDS, and the same number of epochs under the new
  epochs/patience); None when training should start or resume (a finished run whose epochs
  were raised loses its results.json, rewritten when the continued run ends). Raises
  ConfigError when the workdir holds a different experiment."""
  config_path = os.path.join(workdir, "config.json")
  results_path = os.path.join(workdir, "results.json")
  if not os.path.exists(config_path):
    if os.path.exists(results_path):
      raise ConfigError(f"{workdir} has a results.json but no config.json: not a workdir "
                        f"this library can check; use another --workdir")
    return None
  with open(config_path) as f:
    try:
      saved = json.load(f)
    except json.JSONDecodeError as e:
      raise ConfigError(f"{config_path} is not valid JSON ({e})") from None
  diff = config_differences(saved, config)
  if diff:
    fields = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())
    raise ConfigError(
        f"{workdir} holds a run with a different config ({len(diff)} field"
        f"{'s' if len(diff) > 1 else ''} differ: {fields}); use another --workdir (without "
        f"--workdir each config gets its own) or the saved settings to resume")
  selected = [bool(row.get("selected")) for row in read_history(workdir)]
  stop = stop_epoch(selected, config.epochs, config.patience)
  if stop is not None and stop < len(selected):
    raise _too_long_error(workdir, len(selected), stop, config)
  if not os.path.exists(results_path):
    return None
  if not selected:  # a finished run without metrics.jsonl: only its own epochs/patience
    if (saved.get("epochs"), saved.get("patience")) != (config.epochs, config.patience):
      raise ConfigError(f"{workdir} has no metrics.jsonl to replay early stopping from; "
                        f"only its own epochs={saved.get('epochs')} and patience="
                        f"{saved.get('patience')} can be reused: use another --workdir")
    stop = 0
  if stop is not None:
    with open(results_path) as f:
      log.info("%s is a finished run of this config; returning its results", workdir)
      return json.load(f)
  log.info("%s finished after %d epochs; continuing to epochs=%d", workdir, len(selected),
           config.epochs)
  if jax.process_index() == 0:
    os.remove(results_path)
  return None


def run_hash(config, reference=None, ignore=frozenset()) -> str:
  """8 hex digits of the fields in which `config` differs from `reference` (default: what
  `--model=M --dataset=D` gives), leaving out RESUMABLE_FIELDS and `ignore`; '' when none."""
  if reference is None:
    reference = config_lib.get_config(config.model, config.dataset)
  changed = {k: new for k, (_, new) in config_lib.changed_fields(reference, config).items()
             if k.split(".")[0] not in config_lib.RESUMABLE_FIELDS | _NAMED_FIELDS | ignore}
  if not changed:
    return ""
  text = json.dumps(changed, sort_keys=True, default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:8]


def default_workdir(config, root: str = "runs") -> str:
  """runs/MODEL-DATASET-seedS, with -HASH (`run_hash`) when other fields were changed."""
  digest = run_hash(config)
  name = f"{config.model}-{config.dataset}-seed{config.seed}"
  return os.path.join(root, f"{name}-{digest}" if digest else name)
