"""What a run writes besides checkpoints and per-epoch logs (run_log.py).

preprocessing.json (`save_preprocessing`: data shapes and the train-fitted
standardisation, what inference needs besides the parameters), results.json (written by the
training loop with `write_json_atomic`) and summary.json of a multi-seed run
(`summarize`). The workdir rules (which config a workdir answers for, resumption) are
workdir.py's.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np


def save_preprocessing(workdir: str, exp) -> None:
  """What inference needs besides params: data shapes and train-fitted standardisation."""
  info = dataclasses.asdict(exp.info)
  info["modalities"] = list(info["modalities"])
  stats = exp.data_stats.get("standardize", {})
  write_json_atomic(os.path.join(workdir, "preprocessing.json"), {
      "data_info": info, "standardize": {m: {k: np.asarray(v).tolist() for k, v in s.items()}
                                         for m, s in stats.items()},
      "context": bool(exp.config.data.context)})


def write_json_atomic(path: str, obj) -> None:
  """JSON to `path` through a temporary file, so a reader never sees half a file."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=float)
  os.replace(tmp, path)


def summarize(runs: list[dict]) -> dict:
  """summary.json of a multi-seed run: each run's selected epoch, and the mean, population
  std and values of each validation and test metric over the runs' results.json dicts."""
  out = {"seeds": [r["seed"] for r in runs], "model": runs[0]["model"],
         "dataset": runs[0]["dataset"],
         "selected_epochs": [r["selected_epoch"] for r in runs]}
  for split in ("valid", "test"):
    keys = runs[0][split].keys()
    out[split] = {k: {"mean": float(np.mean([r[split][k] for r in runs])),
                      "std": float(np.std([r[split][k] for r in runs])),
                      "values": [r[split][k] for r in runs]} for k in keys}
  return out
