"""Runs the command a new user runs first, `python -m mmfuse_jax.train --model=X`, for every
registered model (no other flag: its default data and settings), and checks that each one
learns within the time limit.

python scripts/check_defaults.py [--models=mult,argf] [--workdir=runs/check_defaults]
                                 [--limit_s=300] [--json=FILE]

Each model runs in its own process exactly as a user would start it on a fresh machine: a
fresh workdir (nothing is resumed) and an empty compilation cache (every step is compiled,
none loaded from an earlier run), timed from start to exit. The table lists the default
data, the wall time, the selected checkpoint's test metrics and those of the constant
predictor (train label mean) on the same test split, and whether the run passes its bar:

  sequence synthetic ('synthetic'):               test Acc-2 >= 70 and MAE <= 0.90
  utterance synthetic ('synthetic_utterance'):    test Acc-2 >= 75 and MAE <= 0.90

The label-mean MAE is 1.173 and 1.377 on those test splits, so the utterance bar is the
stronger one (0.65 x the label mean against 0.77 x). Exit status 1 if any model misses its
bar or the time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from mmfuse_jax import config as config_lib
from mmfuse_jax.catalog import MODELS

BARS = {"synthetic": {"acc2_non0": 0.70, "mae": 0.90},
        "synthetic_utterance": {"acc2_non0": 0.75, "mae": 0.90}}


def passes(dataset: str, test: dict) -> bool:
  bar = BARS[dataset]
  return test["acc2_non0"] >= bar["acc2_non0"] and test["mae"] <= bar["mae"]


def run_default(model: str, workdir: str) -> dict:
  """`python -m mmfuse_jax.train --model=MODEL --workdir=WORKDIR` in a fresh process, with
  an empty persistent compilation cache (a temporary directory): a first run's cold compile."""
  shutil.rmtree(workdir, ignore_errors=True)
  with tempfile.TemporaryDirectory() as cache:
    cmd = [sys.executable, "-m", "mmfuse_jax.train", f"--model={model}",
           f"--workdir={workdir}", "--progress=false", f"--compile_cache={cache}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
  if proc.returncode != 0:
    return {"model": model, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1],
            "wall_s": wall}
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  return {"model": model, "dataset": results["dataset"], "preset": results["config"]["preset"],
          "epochs": results["epochs_run"], "selected_epoch": results["selected_epoch"],
          "wall_s": wall, "compile_s": results["compile_s"], "test": results["test"],
          "baseline": results["baseline"]["test"]}


def table(rows: list[dict], limit_s: float) -> str:
  lines = ["| `--model` | default data | epochs | wall time | test Acc-2 | test MAE | test Corr "
           "| label-mean MAE | passes |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if "error" in r:
      lines.append(f"| `{r['model']}` | error: {r['error']} | | {r['wall_s']:.0f} s | | | | | no |")
      continue
    t, b = r["test"], r["baseline"]
    ok = passes(r["dataset"], t) and r["wall_s"] <= limit_s
    lines.append(f"| `{r['model']}` | {r['dataset']} | {r['epochs']} | {r['wall_s']:.0f} s | "
                 f"{100 * t['acc2_non0']:.1f} | {t['mae']:.3f} | {t['corr']:.3f} | "
                 f"{b['mae']:.3f} | {'yes' if ok else 'no'} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=",".join(MODELS.names()))
  p.add_argument("--workdir", default="runs/check_defaults")
  p.add_argument("--limit_s", type=float, default=300.0)
  p.add_argument("--json", default="")
  args = p.parse_args(argv)
  rows = []
  for model in [m.strip() for m in args.models.split(",") if m.strip()]:
    print(f"{model}: python -m mmfuse_jax.train --model={model} "
          f"(data: {config_lib.default_dataset(model)}) ...", flush=True)
    rows.append(run_default(model, os.path.join(args.workdir, model)))
    print(table(rows[-1:], args.limit_s).splitlines()[-1], flush=True)
  print()
  print(table(rows, args.limit_s))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)
  ok = all("error" not in r and passes(r["dataset"], r["test"]) and r["wall_s"] <= args.limit_s
           for r in rows)
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
