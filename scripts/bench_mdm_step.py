"""Train-step time of EF-LSTM with and without the MDM penalty (Algorithm 1, Unroll 10).

MOSI-like word-aligned shapes by default: 50 steps, GloVe text 300, COVAREP audio 74,
FACET vision 35 (paper Sec. 4.1), batch 64 (configs/mdm.py:ef_lstm,mosi), MDM paper sizes
for EF-LSTM (hidden 64, 2 layers). Prints one JSON line per setting with the compile time
and the median / mean step time over --steps timed steps (after --warmup).

python scripts/bench_mdm_step.py [--mdm=none,w] [--unroll=10] [--batch=64] [--steps=20]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np

from mmfuse_jax import config as config_lib
from mmfuse_jax.data.pipeline import make_batch
from mmfuse_jax.data.synthetic import make_synthetic
from mmfuse_jax.training.experiment import build_experiment, init_state


def bench(mdm: str, args, ds) -> dict:
  c = config_lib.get_config(args.model, "synthetic", preset=False)
  c.num_devices = 1
  c.progress = False
  c.batch_size = args.batch
  c.net.mdm = mdm
  c.net.mdm_unroll = args.unroll
  c.net.mdm_input = args.input
  exp = build_experiment(c, ds)
  state = init_state(exp)
  rows = np.arange(args.batch)
  # Algorithm 1: every critic update draws its own batch (the loop supplies the next ones).
  batch = make_batch(ds.splits["train"], rows, args.batch,
                     more_rows=[np.roll(rows, k + 1) for k in range(exp.method.extra_batches)])
  rng = jax.random.PRNGKey(0)
  t0 = time.perf_counter()
  state, m = exp.train_step(state, batch, rng)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  for _ in range(args.warmup):
    state, m = exp.train_step(state, batch, rng)
  jax.block_until_ready(m)
  times = []
  for _ in range(args.steps):
    t = time.perf_counter()
    state, m = exp.train_step(state, batch, rng)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return {"model": args.model, "mdm": mdm, "unroll": args.unroll if mdm != "none" else 0,
          "mdm_input": args.input, "batch": args.batch, "seq_len": args.seq_len,
          "compile_s": round(compile_s, 3), "step_ms_median": round(1e3 * np.median(times), 2),
          "step_ms_mean": round(1e3 * np.mean(times), 2), "steps": args.steps,
          "backend": jax.default_backend(), "device": str(jax.devices()[0]),
          "cpu": platform.processor() or platform.machine()}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="ef_lstm")
  p.add_argument("--mdm", default="none,w")
  p.add_argument("--unroll", type=int, default=10)
  p.add_argument("--input", default="fused", choices=("fused", "unimodal"))
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--seq_len", type=int, default=50)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--warmup", type=int, default=2)
  args = p.parse_args()
  ds = make_synthetic(0, sizes={"train": args.batch, "valid": 8, "test": 8},
                      dims={"text": 300, "audio": 74, "vision": 35},
                      lengths={m: args.seq_len for m in ("text", "audio", "vision")})
  for mdm in args.mdm.split(","):
    print(json.dumps(bench(mdm.strip(), args, ds)), flush=True)


if __name__ == "__main__":
  main()
