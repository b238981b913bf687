"""Time one ARGF train step (UCLN update + the four ARGF updates) on the current backend.

Shapes follow utterance-level MOSI: text 100, audio 73, vision 100 features per utterance,
each sample carrying its video's utterance sequence (--utterances, MOSI's longest video has
about 30), batch 32, the paper's widths (d = 50, k = 50). Prints the compile time (first
call) and the median of --steps timed steps, and the same for the eval step.

  python scripts/bench_argf_step.py [--batch 32] [--utterances 30] [--steps 20] [--no_ucln]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--utterances", type=int, default=30)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--no_ucln", action="store_true")
  p.add_argument("--fusion", default="graph")
  args = p.parse_args(argv)

  from mmfuse_jax import config as config_lib
  from mmfuse_jax.data import make_batch
  from mmfuse_jax.data.core import Dataset, Split
  from mmfuse_jax.methods.argf import ARGFMethod
  from mmfuse_jax.models.base import DataInfo
  from mmfuse_jax.catalog import MODELS

  dims = {"text": 100, "audio": 73, "vision": 100}
  u, b = args.utterances, args.batch
  rng = np.random.default_rng(0)
  lengths = rng.integers(max(1, u // 3), u + 1, size=b)
  masks = np.arange(u)[None, :] < lengths[:, None]
  feats = {m: np.where(masks[..., None], rng.normal(size=(b, u, d)), 0).astype(np.float32)
           for m, d in dims.items()}
  split = Split(features=feats, masks={m: masks for m in dims},
                labels=rng.integers(0, 2, size=b).astype(np.int32),
                ids=np.array([str(i) for i in range(b)]),
                extras={"position": (rng.integers(0, 10 ** 6, size=b) % lengths).astype(np.int32)})
  ds = Dataset("bench", {"train": split, "valid": split, "test": split}, task="classification",
               num_classes=2)
  c = config_lib.get_config("argf", "synthetic", preset=False)
  c.data.context = not args.no_ucln
  c.net.ucln = not args.no_ucln
  c.net.fusion = args.fusion
  info = DataInfo(ds.modalities, ds.feature_dims, ds.max_lengths, ds.task, ds.num_classes)
  spec = MODELS.get("argf")
  method = ARGFMethod(c, spec.build(c.net, info), spec, info, steps_per_epoch=40)
  batch = jax.device_put(make_batch(split, np.arange(b), b))
  state = jax.jit(method.init_state)(jax.random.PRNGKey(0), batch)
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  step = jax.jit(method.train_step, donate_argnums=(0,))
  key = jax.random.PRNGKey(1)

  t0 = time.perf_counter()
  state, m = step(state, batch, key)
  jax.block_until_ready((state, m))
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, m = step(state, batch, key)
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t0)
  ev = jax.jit(method.eval_step)
  t0 = time.perf_counter()
  jax.block_until_ready(ev(state, batch))
  eval_compile = time.perf_counter() - t0
  ev_times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    jax.block_until_ready(ev(state, batch))
    ev_times.append(time.perf_counter() - t0)
  out = {"backend": jax.default_backend(), "device": str(jax.devices()[0]), "batch": b,
         "utterances": u, "ucln": not args.no_ucln, "fusion": args.fusion,
         "params": int(n_params), "updates": ["ucln"] * (not args.no_ucln) + list(method.updates),
         "train_compile_s": round(compile_s, 3),
         "train_step_median_ms": round(1e3 * float(np.median(times)), 3),
         "eval_compile_s": round(eval_compile, 3),
         "eval_step_median_ms": round(1e3 * float(np.median(ev_times)), 3),
         "loss": float(m["loss"])}
  print(json.dumps(out, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
