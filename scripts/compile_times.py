"""Cold vs warm compile: time to the first finished training step, per model.

    python scripts/compile_times.py [--models=mult,lmf] [--out=compile_times.json]

For each registered model (or --models), trains its default config (on its built-in
synthetic data, synthetic preset) for one step, twice, each time in a fresh Python
subprocess sharing one fresh persistent compilation cache directory: the first run compiles
and fills the cache (cold), the second loads the compiled programs (warm). The training set
is one batch (data.synthetic_train = batch_size) and validation/test are small, so the
compiled shapes are the default config's and the rest of the run is short.

Reported per model: `first_step_s`, the loop's time from the start of the first epoch to
the first finished step (results.json `compile_s`: compiling, or loading, the train step
plus running it once), and `process_s`, the whole subprocess (imports, data, init and eval
compiles, checkpoints). Prints a Markdown table and writes the rows as JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from mmfuse_jax import config as config_lib
from mmfuse_jax.catalog import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_command(model: str, cache_dir: str, workdir: str) -> list[str]:
  """The `python -m mmfuse_jax.train` command of one measured run: the model's default
  config for one step (one training batch), small validation and test splits."""
  batch = config_lib.get_config(model).batch_size
  return [sys.executable, "-m", "mmfuse_jax.train", f"--model={model}", "--epochs=1",
          "--progress=false", f"--workdir={workdir}", f"--compile_cache={cache_dir}",
          f"--data.synthetic_train={batch}", f"--data.synthetic_valid={batch}",
          f"--data.synthetic_test={batch}"]


def measure(model: str, root: str, timeout: int = 3600) -> dict:
  """Cold then warm run of `model` with a fresh cache under `root`."""
  cache = os.path.join(root, f"cache-{model}")
  row = {"model": model}
  for kind in ("cold", "warm"):
    work = os.path.join(root, f"{model}-{kind}")
    t = time.perf_counter()
    proc = subprocess.run(train_command(model, cache, work), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
      raise RuntimeError(f"{model} ({kind}) failed:\n{proc.stderr[-2000:]}")
    with open(os.path.join(work, "results.json")) as f:
      results = json.load(f)
    row[f"{kind}_first_step_s"] = results["compile_s"]
    row[f"{kind}_process_s"] = wall
  row["cache_files"] = sum(len(files) for _, _, files in os.walk(cache))
  return row


def format_table(rows: list[dict]) -> str:
  """Markdown: model, cold/warm first-step seconds, their ratio, cold/warm process seconds."""
  lines = ["| model | first step cold (s) | first step warm (s) | cold / warm | "
           "process cold (s) | process warm (s) |", "|---|---|---|---|---|---|"]
  for r in rows:
    ratio = r["cold_first_step_s"] / r["warm_first_step_s"] if r["warm_first_step_s"] else 0
    lines.append(f"| {r['model']} | {r['cold_first_step_s']:.1f} | "
                 f"{r['warm_first_step_s']:.1f} | {ratio:.1f}x | {r['cold_process_s']:.1f} | "
                 f"{r['warm_process_s']:.1f} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default=",".join(MODELS.names()))
  parser.add_argument("--out", default="")
  args = parser.parse_args(argv)
  rows = []
  with tempfile.TemporaryDirectory(prefix="compile_times_") as root:
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
      rows.append(measure(model, root))
      print(format_table(rows[-1:]).splitlines()[-1], flush=True)
  print(format_table(rows))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
