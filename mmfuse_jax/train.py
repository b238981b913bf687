"""python -m mmfuse_jax.train --model=NAME [--dataset=NAME] [--data_dir=PATH] [--workdir=DIR]
[--epochs=N] [--seed=N | --seeds=1,2,3] [--batch_size=N] [--config=FILE[:SETTING]]
[--preset=none] [--compile_cache=PATH|none] [--wandb=PROJECT] [--any.config.field=V]

--config names a config file, and the setting of the files in configs/ after a colon:
--config=configs/mdm.py:tfn,mosei (the file lists its settings).

Without --dataset a model trains on its built-in synthetic dataset ('synthetic' for sequence
models, 'synthetic_utterance' for utterance-level models such as ARGF) with the model's
synthetic preset (settings that learn that data in minutes on a CPU; --preset=none keeps the
paper defaults). --dataset/--data_dir name real files.

Without --workdir a run goes to runs/MODEL-DATASET-seedS, plus a short hash of the fields
that differ from --model's defaults (epochs, patience and display/logging fields aside).
A workdir holding a finished run of the same config returns its results; one holding a
different config is an error; raising --epochs on a finished run continues it. Compiled
steps are kept in a persistent cache (default ~/.cache/mmfuse_jax/jax; --compile_cache).
"""

from __future__ import annotations

import sys

from mmfuse_jax import config as config_lib
from mmfuse_jax.catalog import DATASETS, METHODS, MODELS
from mmfuse_jax.cli import parse_flags, run_main
from mmfuse_jax.data import load_dataset
from mmfuse_jax.training import compile_cache
from mmfuse_jax.training.loop import train_and_evaluate, train_seeds
from mmfuse_jax.training.run_log import import_wandb
from mmfuse_jax.training.workdir import default_workdir

KNOWN = {"model": "mult", "dataset": None, "data_dir": None, "workdir": None, "epochs": None,
         "seed": None, "seeds": None, "batch_size": None, "config": None, "preset": None,
         "compile_cache": None, "help": None}


def usage(model: str = "mult") -> str:
  config = config_lib.get_config(model)
  groups: dict[str, list[str]] = {}
  for key in config_lib.all_keys(config):
    group = key.split(".")[0] if "." in key else "run"
    groups.setdefault(group, []).append(
        f"  --{key}={config_lib.flat_value(config, key)!s}")
  lines = [__doc__.strip(), "",
           f"models:   {', '.join(MODELS.names())}",
           f"datasets: {', '.join(DATASETS.names())}",
           f"methods:  {', '.join(METHODS.names())}", "",
           f"config fields of --model={model} with their defaults on its default data "
           f"({config.dataset}); override any with --field=value:"]
  for group, keys in groups.items():
    lines += ["", f"{group}:" if group != "net" else f"net ({model}):"] + keys
  return "\n".join(lines)


def build_config(flags: dict, overrides: dict):
  if flags["config"]:
    config = config_lib.load_config_file(flags["config"])
    if flags["model"] != KNOWN["model"] and flags["model"] != config.model:
      raise config_lib.ConfigError(f"--model={flags['model']} disagrees with the config file's "
                                   f"model {config.model!r}")
    if flags["preset"] is not None:
      raise config_lib.ConfigError("--preset applies to --model defaults, not to --config files")
  else:
    if flags["preset"] not in (None, "synthetic", "none"):
      raise config_lib.ConfigError(f"--preset must be 'synthetic' (default on the built-in "
                                   f"synthetic data) or 'none', got {flags['preset']!r}")
    config = config_lib.get_config(flags["model"], flags["dataset"],
                                   preset=flags["preset"] != "none")
  for key in ("dataset", "data_dir", "epochs", "seed", "batch_size"):
    if flags[key] is not None:
      overrides[key] = flags[key]
  config_lib.apply_overrides(config, overrides)
  config_lib.validate_config(config)
  return config


def describe_defaults(config, flags: dict) -> str:
  """What a run without --dataset/--config trains on, and which preset changed what."""
  if flags["config"] or flags["dataset"]:
    return ""
  kind = MODELS.get(config.model).input_kind
  lines = [f"data: {config.dataset}, the built-in synthetic data for {kind}-level models "
           f"(no --dataset given; --dataset=NAME --data_dir=PATH trains on real files)"]
  if config.preset:
    paper = config_lib.get_config(config.model, config.dataset, preset=False)
    changed = config_lib.changed_fields(paper, config)
    changed.pop("preset", None)
    lines.append(f"settings: {config.model}'s synthetic preset on top of its paper defaults "
                 f"(--preset=none to keep those): " + ", ".join(
                     f"{k}={new} (paper {old})" for k, (old, new) in changed.items()))
  return "\n".join(lines)


def _main(argv: list[str]) -> int:
  flags, overrides = parse_flags(argv, KNOWN)
  if flags["help"]:
    print(usage(flags["model"]))
    return 0
  config = build_config(flags, overrides)
  if config.wandb:
    import_wandb()  # a missing package fails here, before any data is read
  compile_cache.enable(flags["compile_cache"])
  note = describe_defaults(config, flags)
  if note:
    print(note, flush=True)
  workdir = flags["workdir"] or default_workdir(config)
  dataset, stats = load_dataset(config)  # fail fast on bad data, before any workdir exists
  if flags["seeds"]:
    seeds = [int(s) for s in flags["seeds"].split(",") if s.strip()]
    summary = train_seeds(config, workdir, seeds, dataset=dataset, data_stats=stats)
    print(format_summary(summary))
    return 0
  results = train_and_evaluate(config, workdir, dataset=dataset, data_stats=stats)
  print(format_results(results, workdir))
  return 0


def format_results(results: dict, workdir: str) -> str:
  lines = [f"workdir: {workdir}",
           f"selected epoch {results['selected_epoch']} of {results['epochs_run']} "
           f"(by validation {results['select_metric']})"]
  for split in ("valid", "test"):
    lines.append(f"{split:5s}: " + "  ".join(f"{k}={v:.4f}" for k, v in results[split].items()))
  if "baseline" in results:  # results.json of runs before the baseline was recorded lack it
    base = results["baseline"]
    lines.append(f"test of the {base['predictor']} (a constant prediction, for comparison): "
                 + "  ".join(f"{k}={v:.4f}" for k, v in base["test"].items()))
  if results.get("train_steps_per_s"):
    lines.append(f"train steps/s: {results['train_steps_per_s']:.2f}  compile: "
                 f"{results['compile_s']:.1f}s  wall: {results['wall_time_s']:.1f}s")
  return "\n".join(lines)


def format_summary(summary: dict) -> str:
  lines = [f"seeds {summary['seeds']} (mean +- std of the validation-selected checkpoints)"]
  for split in ("valid", "test"):
    lines.append(f"{split:5s}: " + "  ".join(
        f"{k}={v['mean']:.4f}+-{v['std']:.4f}" for k, v in summary[split].items()))
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  return run_main(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
