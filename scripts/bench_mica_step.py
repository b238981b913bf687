"""Train-step time of MICA next to MulT at CMU-MOSEI unaligned shapes.

Shapes: text 50 x 300, audio 500 x 74, vision 500 x 35 (random data, all steps valid unless
--valid-fraction < 1), batch 64, d = 40, 10 heads, 6 layers (paper Table 1, MOSEI). Each
model's jit-compiled `train_step` (the one the training loop uses) is timed over --steps
steps after one compile step. Rows:
  mica           L_p + alpha L_m + beta L_e (the full model)
  mica_backbone  the gated backbone only (alpha = beta = 0: no alignment losses)
  mult           MulT with the same d, heads and layers

  python scripts/bench_mica_step.py                       # full size (slow on CPU)
  python scripts/bench_mica_step.py --batch 8 --steps 2   # what fits a small CPU
  python scripts/bench_mica_step.py --compile-only        # compile time + XLA temp memory
Prints one JSON line per model and a summary table.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from mmfuse_jax import config as config_lib
from mmfuse_jax.data.core import Dataset, Split, lengths_to_mask
from mmfuse_jax.training.experiment import build_experiment, first_batch, init_state

MOSEI_SHAPES = {"text": (50, 300), "audio": (500, 74), "vision": (500, 35)}


def make_data(n: int, shapes, valid_fraction: float, seed: int = 0) -> Dataset:
  rng = np.random.default_rng(seed)
  feats, masks = {}, {}
  for m, (t, d) in shapes.items():
    lengths = np.maximum(1, (rng.uniform(valid_fraction, 1.0, n) * t).astype(int))
    masks[m] = lengths_to_mask(lengths, t)
    feats[m] = np.where(masks[m][..., None], rng.normal(size=(n, t, d)), 0).astype(np.float32)
  split = Split(features=feats, masks=masks, labels=rng.uniform(-3, 3, n).astype(np.float32),
                ids=np.array([f"bench_{i}" for i in range(n)]))
  return Dataset(name="bench", splits={"train": split, "valid": split, "test": split},
                 task="regression", source="bench(random)")


def bench(model: str, args, ds: Dataset) -> dict:
  name = "mica" if model.startswith("mica") else model
  c = config_lib.get_config(name, "bench")
  c.num_devices = 1
  c.batch_size = args.batch
  c.progress = False
  c.net.d_model = args.d
  c.net.num_heads = args.heads
  c.net.num_layers = args.layers
  if name == "mica":
    c.net.mmd_max_elements = args.max_elements
    c.net.tau = 0.3
    if model == "mica_backbone":
      c.net.mmd = False
      c.net.pe = False
  exp = build_experiment(c, ds)
  state = init_state(exp)
  batch = first_batch(exp)
  rng = jax.random.PRNGKey(0)
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  row = {"model": model, "batch": args.batch, "d": args.d, "heads": args.heads,
         "layers": args.layers, "params": int(n_params), "device": str(jax.devices()[0])}
  t0 = time.perf_counter()
  step = exp.train_step.lower(state, batch, rng).compile()
  row["compile_s"] = time.perf_counter() - t0
  mem = step.memory_analysis()
  if mem is not None:  # XLA's buffer assignment: what one step needs besides its inputs
    row["temp_gib"] = getattr(mem, "temp_size_in_bytes", 0) / 2**30
  if args.compile_only:
    return row
  t0 = time.perf_counter()
  state, m = step(state, batch, rng)
  jax.block_until_ready(m)
  row["first_step_s"] = time.perf_counter() - t0
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, m = step(state, batch, rng)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  return {**row, "steps": args.steps, "step_s_median": float(np.median(times)),
          "step_s_min": float(np.min(times)),
          "metrics": {k: float(v) for k, v in jax.device_get(m).items()}}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--d", type=int, default=40)
  p.add_argument("--heads", type=int, default=10)
  p.add_argument("--layers", type=int, default=6)
  p.add_argument("--max-elements", type=int, default=512,
                 help="MICA net.mmd_max_elements (elements per side in each MMD)")
  p.add_argument("--valid-fraction", type=float, default=1.0,
                 help="valid lengths drawn uniformly in [fraction * T, T]")
  p.add_argument("--time-scale", type=float, default=1.0,
                 help="multiply the MOSEI sequence lengths (e.g. 0.2 for a quick check)")
  p.add_argument("--models", default="mica,mica_backbone,mult")
  p.add_argument("--compile-only", action="store_true",
                 help="compile and report compile time and XLA temp memory, run no step")
  args = p.parse_args(argv)
  shapes = {m: (max(1, int(round(t * args.time_scale))), d) for m, (t, d) in MOSEI_SHAPES.items()}
  ds = make_data(args.batch, shapes, args.valid_fraction)
  rows = []
  for model in args.models.split(","):
    row = bench(model.strip(), args, ds)
    row["shapes"] = {m: list(s) for m, s in shapes.items()}
    rows.append(row)
    print(json.dumps(row), flush=True)
  print(f"\n{'model':<14} {'step s (median)':>16} {'compile s':>10} {'temp GiB':>9} "
        f"{'params':>9}")
  for r in rows:
    print(f"{r['model']:<14} {r.get('step_s_median', float('nan')):>16.3f} "
          f"{r['compile_s']:>10.1f} {r.get('temp_gib', float('nan')):>9.2f} {r['params']:>9}")


if __name__ == "__main__":
  main()
