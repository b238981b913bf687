"""Train-step benchmark for registered models on the shapes of the standard data sets.

    python scripts/bench_train.py --models=mult --shapes=mosi_unaligned --batch=24 --steps=20
    python scripts/bench_train.py --models=all --shapes=utterance --json=bench.json

For every (model, shape) pair: compile time of the jit-compiled train step (first call) and
the median steady-state step time over --steps calls after --warmup calls, each timed with
block_until_ready. With --train_loop=scan also the training loop's two ways through an
epoch of --steps steps, in the same run, each step on a fresh batch of a split of
steps x batch rows held on device (as the loop feeds it, `training.feeding.DeviceFeed`):
the per-step loop (row indices shipped and the batch gathered per step, steps dispatched
back to back, one sync at the end) and train_loop='scan' (the gathers inside one compiled
lax.scan); prints steps/s of both and their ratio. --precision=bf16 trains in bfloat16
(float32 params). Inputs are synthetic data of exactly those shapes (the numbers depend on
shapes, not values). Prints a table and optionally writes JSON with device and versions.

--torch-ref=PATH also times the official PyTorch model (MulT, RERD, ARGF) from a checkout
of its repository on the same shapes, batch and CPU threads, in the same process, and prints
both step times and the ratio (scripts/torch_ref.py; skipped with a message when torch or
the checkout is missing):

    python scripts/bench_train.py --models=mult --batch=24 --torch-ref=~/src/Multimodal-Transformer
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
from mmfuse_jax.catalog import MODELS
from mmfuse_jax.data import make_synthetic, shard_batch
from mmfuse_jax.data import synthetic as synthetic_data
from mmfuse_jax.data.pipeline import make_batch
from mmfuse_jax.training.feeding import DeviceFeed
from mmfuse_jax.training.experiment import build_experiment
from mmfuse_jax.training.scan import scan_epoch_device

# (lengths, feature dims) per modality
SHAPES = {
    "mosi_unaligned": ({"text": 50, "audio": 375, "vision": 500},
                       {"text": 300, "audio": 5, "vision": 20}),
    "mosei_unaligned": ({"text": 50, "audio": 500, "vision": 500},
                        {"text": 300, "audio": 74, "vision": 35}),
    "utterance": ({"text": 1, "audio": 1, "vision": 1},
                  {"text": 100, "audio": 73, "vision": 100}),
    "synthetic": (dict(synthetic_data.DEFAULT_LENGTHS), dict(synthetic_data.DEFAULT_DIMS)),
}


def bench_epoch(exp, state, rng, steps: int, shape: str, reps: int = 3) -> tuple[dict, object]:
  """Steps/s of an epoch of `steps` steps on fresh batches: per-step loop vs one compiled
  lax.scan, both fed from the split on device."""
  lengths, dims = SHAPES[shape]
  batch = exp.config.batch_size
  ds = make_synthetic(1, sizes={"train": steps * batch, "valid": batch, "test": batch},
                      dims=dims, lengths=lengths)
  feed = DeviceFeed(exp.config, ds.splits["train"], exp.batch_sharding, exp.state_sharding,
                    exp.method.extra_batches)
  plans = feed.plans(0)
  for p in plans[:1]:   # compile the gather
    jax.block_until_ready(feed.batch(p))
  loop_times = []
  for _ in range(reps):
    t = time.perf_counter()
    for p in plans:
      state, m = exp.train_step(state, feed.batch(p), rng)
    jax.block_until_ready(state)
    loop_times.append(time.perf_counter() - t)
  state, _, scan_compile_s = scan_epoch_device(exp, feed, state, plans, rng)  # warm-up epoch
  jax.block_until_ready(state)
  scan_times = []
  for _ in range(reps):
    t = time.perf_counter()
    state, _, _ = scan_epoch_device(exp, feed, state, plans, rng)
    jax.block_until_ready(state)
    scan_times.append(time.perf_counter() - t)
  loop_sps = steps / statistics.median(loop_times)
  scan_sps = steps / statistics.median(scan_times)
  return {"epoch_steps": steps, "loop_steps_per_s": loop_sps, "scan_steps_per_s": scan_sps,
          "scan_speedup": scan_sps / loop_sps, "scan_compile_s": scan_compile_s}, state


def setup_step(model: str, shape: str, batch: int, overrides: dict):
  """(config, dataset, experiment, initial state, one device batch, rng) for timing or
  profiling `model`'s train step on synthetic data of `shape` (SHAPES)."""
  lengths, dims = SHAPES[shape]
  ds = make_synthetic(0, sizes={"train": batch, "valid": batch, "test": batch}, dims=dims,
                      lengths=lengths)
  c = config_lib.get_config(model, preset=False)
  c.batch_size = batch
  c.progress = False
  config_lib.apply_overrides(c, overrides)
  exp = build_experiment(c, ds)
  rows = np.arange(batch)
  more = [np.roll(rows, k + 1) for k in range(exp.method.extra_batches)]  # e.g. MDM's critic
  b = shard_batch(make_batch(ds.splits["train"], rows, batch, more_rows=more), exp.batch_sharding)
  rng = jax.random.PRNGKey(0)
  return c, ds, exp, exp.init_fn(rng, b), b, rng


def median_step_s(exp, state, batch, rng, steps: int, warmup: int):
  """(median seconds per train step over `steps` timed steps after `warmup` untimed ones,
  the state after them)."""
  for _ in range(warmup):
    state, _ = exp.train_step(state, batch, rng)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, _ = exp.train_step(state, batch, rng)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t)
  return statistics.median(times), state


def bench(model: str, shape: str, batch: int, steps: int, warmup: int, overrides: dict,
          torch_ref: str = "", torch_threads: int = 0, train_loop: str = "step") -> dict:
  lengths, dims = SHAPES[shape]
  c, ds, exp, state, b, rng = setup_step(model, shape, batch, overrides)
  t0 = time.perf_counter()
  state, m = exp.train_step(state, b, rng)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t0
  med, state = median_step_s(exp, state, b, rng, steps, warmup)
  row = {"model": model, "shape": shape, "batch": batch, "compile_s": compile_s,
         "step_s_median": med, "steps_per_s": 1.0 / med, "precision": c.precision,
         "params": int(sum(x.size for x in jax.tree_util.tree_leaves(state.params)))}
  if train_loop == "scan":
    epoch, state = bench_epoch(exp, state, rng, steps, shape)
    row.update(epoch)
  if torch_ref:
    row["torch_ref"] = _torch_ref(model, torch_ref, c, ds, lengths, dims, batch, steps, warmup,
                                  torch_threads)
    if "step_s_median" in row["torch_ref"]:
      row["speedup_vs_torch"] = row["torch_ref"]["step_s_median"] / med
  return row


def _torch_ref(model, path, c, ds, lengths, dims, batch, steps, warmup, threads) -> dict:
  """The original PyTorch model on the same shapes, batch and CPU threads (scripts/torch_ref.py)."""
  import os
  import sys
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import torch_ref
  from mmfuse_jax.models.base import output_dim
  threads = threads or len(os.sched_getaffinity(0))
  device = "cuda" if jax.default_backend() == "gpu" else "cpu"   # the device JAX runs on
  try:
    return torch_ref.bench_reference(model, path, c, dims, lengths,
                                     output_dim(ds.task, ds.num_classes), batch, steps,
                                     warmup, threads, device)
  except Exception as e:  # noqa: BLE001  (their code failing must not lose our numbers)
    return {"error": f"{type(e).__name__}: {e}"}


def _print_torch_ref(r: dict) -> None:
  t = r.get("torch_ref")
  if t is None:
    return
  head = f"{'':10s} {'(PyTorch)':16s}"
  if "skipped" in t or "error" in t:
    print(f"{head} SKIPPED torch reference: {t.get('skipped') or t.get('error')}", flush=True)
    return
  print(f"{head} original   first {t['first_step_s']:7.2f} s  step "
        f"{1000 * t['step_s_median']:9.2f} ms  {t['steps_per_s']:8.2f} steps/s  "
        f"params {t['params']}  threads {t['threads']}", flush=True)
  print(f"{head} ours / original: {r['speedup_vs_torch']:.2f}x faster per step", flush=True)
  for note in t.get("notes", []):
    print(f"{head} note: {note}", flush=True)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--models", default="mult", help="comma list or 'all'")
  p.add_argument("--shapes", default="mosi_unaligned", help=f"comma list of {list(SHAPES)}")
  p.add_argument("--batch", type=int, default=24)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--json", default="")
  p.add_argument("--set", action="append", default=[], help="config override key=value")
  p.add_argument("--torch-ref", "--torch_ref", dest="torch_ref", default="",
                 help="checkout(s) of the official PyTorch code: also time the original model "
                      "(see scripts/torch_ref.py)")
  p.add_argument("--torch_threads", type=int, default=0,
                 help="torch.set_num_threads for --torch-ref (0: the CPUs JAX uses)")
  p.add_argument("--train_loop", default="step", choices=("step", "scan"),
                 help="scan: also time an epoch of --steps steps, step loop vs lax.scan")
  p.add_argument("--precision", default="", choices=("", "float32", "bf16"),
                 help="config.precision (bf16: bfloat16 compute, float32 params)")
  args = p.parse_args()
  names = MODELS.names() if args.models == "all" else args.models.split(",")
  overrides = dict(kv.split("=", 1) for kv in args.set)
  if args.precision:
    overrides["precision"] = args.precision
  rows = []
  for shape in args.shapes.split(","):
    for name in names:
      try:
        rows.append(bench(name, shape, args.batch, args.steps, args.warmup, overrides,
                          args.torch_ref, args.torch_threads, train_loop=args.train_loop))
      except Exception as e:  # noqa: BLE001  (report and continue with the other models)
        rows.append({"model": name, "shape": shape, "error": f"{type(e).__name__}: {e}"})
      r = rows[-1]
      if "error" in r:
        print(f"{name:10s} {shape:16s} ERROR {r['error'][:200]}", flush=True)
      else:
        print(f"{name:10s} {shape:16s} batch {r['batch']:4d}  compile {r['compile_s']:7.2f} s  "
              f"step {1000 * r['step_s_median']:9.2f} ms  {r['steps_per_s']:8.2f} steps/s  "
              f"params {r['params']}", flush=True)
        if "scan_steps_per_s" in r:
          print(f"{'':10s} {'':16s} epoch of {r['epoch_steps']} steps: step loop "
                f"{r['loop_steps_per_s']:8.2f} steps/s  scan {r['scan_steps_per_s']:8.2f} "
                f"steps/s  ratio {r['scan_speedup']:5.2f}  (scan compile "
                f"{r['scan_compile_s']:.2f} s)", flush=True)
        _print_torch_ref(r)
  env = {"device": str(jax.devices()[0]), "platform": jax.devices()[0].platform,
         "num_devices": len(jax.devices()), "jax": jax.__version__,
         "python": platform.python_version(), "machine": platform.machine()}
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"env": env, "results": rows}, f, indent=2)
  print(json.dumps(env))


if __name__ == "__main__":
  main()
