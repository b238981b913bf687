"""python -m mmfuse_jax.train --model=NAME [--dataset=NAME] [--data_dir=PATH] [--workdir=DIR]
[--epochs=N] [--seed=N | --seeds=1,2,3] [--batch_size=N] [--config=FILE] [--any.config.field=V]

Trains on the built-in synthetic dataset unless --dataset/--data_dir name real files.
"""

from __future__ import annotations

import json
import sys

from mmfuse_jax.cli import parse_flags, run_main

KNOWN = {"model": "mult", "dataset": None, "data_dir": None, "workdir": None, "epochs": None,
         "seed": None, "seeds": None, "batch_size": None, "config": None, "help": None}


def usage() -> str:
  from mmfuse_jax import config as config_lib
  from mmfuse_jax import data, methods, models  # noqa: F401
  from mmfuse_jax.registry import DATASETS, METHODS, MODELS
  data._import_readers()
  fields = config_lib.all_keys(config_lib.get_config("mult"))
  return "\n".join([
      __doc__.strip(), "",
      f"models:   {', '.join(MODELS.names())}",
      f"datasets: {', '.join(DATASETS.names())}",
      f"methods:  {', '.join(METHODS.names())}",
      "config fields (override with --field=value; net.* depends on the model):",
      "  " + ", ".join(fields)])


def build_config(flags: dict, overrides: dict):
  from mmfuse_jax import config as config_lib
  if flags["config"]:
    config = config_lib.load_config_file(flags["config"])
    if flags["model"] != KNOWN["model"] and flags["model"] != config.model:
      raise config_lib.ConfigError(f"--model={flags['model']} disagrees with the config file's "
                                   f"model {config.model!r}")
  else:
    config = config_lib.get_config(flags["model"], flags["dataset"] or "synthetic")
  for key in ("dataset", "data_dir", "epochs", "seed", "batch_size"):
    if flags[key] is not None:
      overrides[key] = flags[key]
  config_lib.apply_overrides(config, overrides)
  config_lib.validate_config(config)
  return config


def default_workdir(config) -> str:
  return f"runs/{config.model}-{config.dataset}-seed{config.seed}"


def _main(argv: list[str]) -> int:
  flags, overrides = parse_flags(argv, KNOWN)
  if flags["help"]:
    print(usage())
    return 0
  config = build_config(flags, overrides)
  from mmfuse_jax.data import load_dataset
  from mmfuse_jax.training.loop import train_and_evaluate, train_seeds
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
