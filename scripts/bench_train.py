"""Train-step benchmark for registered models on the shapes of the standard data sets.

    python scripts/bench_train.py --models=mult --shapes=mosi_unaligned --batch=24 --steps=20
    python scripts/bench_train.py --models=all --shapes=utterance --json=bench.json

For every (model, shape) pair: compile time of the jit-compiled train step (first call) and
the median steady-state step time over --steps calls after --warmup calls, each timed with
block_until_ready. Inputs are synthetic data of exactly those shapes (the numbers depend on
shapes, not values). Prints a table and optionally writes JSON with device and versions.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import numpy as np

from mmfuse_jax import config as config_lib
from mmfuse_jax import models  # noqa: F401
from mmfuse_jax.data import make_synthetic, shard_batch
from mmfuse_jax.data.pipeline import make_batch
from mmfuse_jax.registry import MODELS
from mmfuse_jax.training.loop import build_experiment

# (lengths, feature dims) per modality
SHAPES = {
    "mosi_unaligned": ({"text": 50, "audio": 375, "vision": 500},
                       {"text": 300, "audio": 5, "vision": 20}),
    "mosei_unaligned": ({"text": 50, "audio": 500, "vision": 500},
                        {"text": 300, "audio": 74, "vision": 35}),
    "utterance": ({"text": 1, "audio": 1, "vision": 1},
                  {"text": 100, "audio": 73, "vision": 100}),
}


def bench(model: str, shape: str, batch: int, steps: int, warmup: int, overrides: dict) -> dict:
  lengths, dims = SHAPES[shape]
  ds = make_synthetic(0, sizes={"train": batch, "valid": batch, "test": batch}, dims=dims,
                      lengths=lengths)
  c = config_lib.get_config(model)
  c.batch_size = batch
  c.progress = False
  config_lib.apply_overrides(c, overrides)
  exp = build_experiment(c, ds)
  split = ds.splits["train"]
  b = shard_batch(make_batch(split, np.arange(batch), batch), exp.batch_sharding)
  rng = jax.random.PRNGKey(0)
  state = exp.init_fn(rng, b)
  t0 = time.perf_counter()
  state, m = exp.train_step(state, b, rng)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    state, m = exp.train_step(state, b, rng)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = exp.train_step(state, b, rng)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t)
  med = statistics.median(times)
  return {"model": model, "shape": shape, "batch": batch, "compile_s": compile_s,
          "step_s_median": med, "steps_per_s": 1.0 / med,
          "params": int(sum(x.size for x in jax.tree_util.tree_leaves(state.params)))}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--models", default="mult", help="comma list or 'all'")
  p.add_argument("--shapes", default="mosi_unaligned", help=f"comma list of {list(SHAPES)}")
  p.add_argument("--batch", type=int, default=24)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--json", default="")
  p.add_argument("--set", action="append", default=[], help="config override key=value")
  args = p.parse_args()
  names = MODELS.names() if args.models == "all" else args.models.split(",")
  overrides = dict(kv.split("=", 1) for kv in args.set)
  rows = []
  for shape in args.shapes.split(","):
    for name in names:
      try:
        rows.append(bench(name, shape, args.batch, args.steps, args.warmup, overrides))
      except Exception as e:  # noqa: BLE001  (report and continue with the other models)
        rows.append({"model": name, "shape": shape, "error": f"{type(e).__name__}: {e}"})
      r = rows[-1]
      if "error" in r:
        print(f"{name:10s} {shape:16s} ERROR {r['error'][:200]}", flush=True)
      else:
        print(f"{name:10s} {shape:16s} batch {r['batch']:4d}  compile {r['compile_s']:7.2f} s  "
              f"step {1000 * r['step_s_median']:9.2f} ms  {r['steps_per_s']:8.2f} steps/s  "
              f"params {r['params']}", flush=True)
  env = {"device": str(jax.devices()[0]), "platform": jax.devices()[0].platform,
         "num_devices": len(jax.devices()), "jax": jax.__version__,
         "python": platform.python_version(), "machine": platform.machine()}
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"env": env, "results": rows}, f, indent=2)
  print(json.dumps(env))


if __name__ == "__main__":
  main()
