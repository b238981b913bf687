"""Times one RERD train step at CMU-MOSEI unaligned shapes and prints JSON.

Shapes (paper appendix B): text 50 x 300 (GloVe), audio 500 x 74 (COVAREP), vision 500 x 35
(Facet), batch 32; the model is configs/rerd.py:mosei (Table IX). Reports the first call
(compile + one step) and the median of `--steps` steady-state steps, each ended with
jax.block_until_ready. Random inputs with random valid lengths (masks exercised).

  python scripts/bench_rerd_step.py [--steps 10] [--batch 32] [--msd 1] [--config PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = {"text": (50, 300), "audio": (500, 74), "vision": (500, 35)}


def make_batch(batch: int, seed: int = 0):
  from mmfuse_jax.data.core import Batch
  rng = np.random.default_rng(seed)
  feats, masks = {}, {}
  for m, (t, d) in SHAPES.items():
    valid = rng.integers(t // 4, t + 1, size=batch)
    mask = np.arange(t)[None] < valid[:, None]
    feats[m] = np.where(mask[..., None], rng.normal(size=(batch, t, d)), 0).astype(np.float32)
    masks[m] = mask
  return Batch(features=feats, masks=masks, labels=rng.normal(size=batch).astype(np.float32),
               weights=np.ones(batch, np.float32), index=np.arange(batch, dtype=np.int32))


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--msd", type=int, default=1, help="1: with the Sinkhorn regulariser")
  p.add_argument("--config", default=os.path.join(HERE, "..", "configs", "rerd.py") + ":mosei")
  args = p.parse_args(argv)

  from mmfuse_jax.config import load_config_file
  from mmfuse_jax.models.base import DataInfo
  from mmfuse_jax.catalog import METHODS, MODELS

  config = load_config_file(args.config)
  config.net.use_msd = bool(args.msd)
  spec = MODELS.get("rerd")
  info = DataInfo(modalities=tuple(SHAPES), feature_dims={m: d for m, (_, d) in SHAPES.items()},
                  max_lengths={m: t for m, (t, _) in SHAPES.items()}, task="regression")
  model = spec.build(config.net, info)
  method = METHODS.get(config.method or spec.method)(config, model, spec, info,
                                                     steps_per_epoch=100)
  batch = jax.device_put(make_batch(args.batch))
  state = jax.jit(method.init_state)(jax.random.PRNGKey(0), batch)
  jax.block_until_ready(state)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.params))
  step = jax.jit(method.train_step, donate_argnums=(0,))
  rng = jax.random.PRNGKey(1)
  t0 = time.perf_counter()
  state, metrics = step(state, batch, rng)
  jax.block_until_ready((state, metrics))
  first = time.perf_counter() - t0
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, metrics = step(state, batch, rng)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  out = {
      "model": "rerd", "config": os.path.relpath(args.config), "batch": args.batch,
      "shapes": {m: list(s) for m, s in SHAPES.items()}, "msd": bool(args.msd),
      "params": n_params, "device": str(jax.devices()[0].device_kind),
      "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
      "host": platform.node(), "jax": jax.__version__,
      "compile_plus_first_step_s": round(first, 3),
      "step_median_s": round(statistics.median(times), 4),
      "step_min_s": round(min(times), 4), "steps_timed": len(times),
      "last_metrics": metrics,
  }
  print(json.dumps(out, indent=2))
  return out


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
