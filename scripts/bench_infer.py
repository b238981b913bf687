"""Inference benchmark of an exported model (the function `mmfuse_jax.export` writes).

    python -m mmfuse_jax.export --workdir=RUN --out=exported/
    python scripts/bench_infer.py --export=exported/ [--batch=256] [--json=infer.json]
    python scripts/bench_infer.py --model=mult --shapes=mosi_unaligned     # standalone

Trains nothing. With --model (no --export) it initialises a fresh model of that name (its
library config plus --set overrides, random weights) on --shapes and exports it to a
temporary folder first; the timings depend on shapes, not weights. Measures, through
`mmfuse_jax.inference.load_exported` (numpy in, numpy out, as users call it):
  * latency at batch 1: median and p90 over --calls calls, after --warmup calls;
  * throughput at --batch: samples/s from the median of --batch_calls calls;
and the same two for `jax.jit(exported.call)` on device arrays (no numpy conversion).
Every call ends with block_until_ready (or a numpy copy, which waits as well).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import SHAPES as TRAIN_SHAPES  # noqa: E402

# (lengths, feature dims) per modality: bench_train.py's shapes plus a tiny one for tests.
SHAPES = {
    **TRAIN_SHAPES,
    "tiny": ({"text": 8, "audio": 12, "vision": 10}, {"text": 12, "audio": 6, "vision": 8}),
}


def make_export(model: str, shape: str, out: str, overrides: dict | None = None) -> dict:
  """Writes inference.jax.bin + metadata.json of a freshly initialised `model` to `out`."""
  import jax
  from jax import export

  from mmfuse_jax import config as config_lib
  from mmfuse_jax.data.core import Batch
  from mmfuse_jax.export import inference_function
  from mmfuse_jax.models.base import DataInfo
  from mmfuse_jax.catalog import MODELS

  lengths, dims = SHAPES[shape]
  c = config_lib.get_config(model, preset=False)
  config_lib.apply_overrides(c, overrides or {})
  mods = tuple(lengths)
  info = DataInfo(mods, dict(dims), dict(lengths), "regression", None)
  net = MODELS.get(model).build(c.net, info)
  b = 2
  batch = Batch(features={m: np.zeros((b, lengths[m], dims[m]), np.float32) for m in mods},
                masks={m: np.ones((b, lengths[m]), bool) for m in mods},
                labels=np.zeros((b,), np.float32), weights=np.ones((b,), np.float32),
                index=np.zeros((b,), np.int32))
  rng = jax.random.PRNGKey(0)
  variables = jax.jit(lambda r: net.init({"params": r, "dropout": r}, batch, train=False))(rng)
  fn = inference_function(net, variables, {"standardize": {}})
  (sb,) = export.symbolic_shape("b")
  spec_f = {m: jax.ShapeDtypeStruct((sb, lengths[m], dims[m]), np.float32) for m in mods}
  spec_m = {m: jax.ShapeDtypeStruct((sb, lengths[m]), np.bool_) for m in mods}
  exported = export.export(jax.jit(fn))(spec_f, spec_m)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "inference.jax.bin"), "wb") as f:
    f.write(exported.serialize())
  meta = {"model": model, "selected_epoch": None, "modalities": list(mods),
          "feature_dims": dims, "max_lengths": lengths, "task": "regression",
          "num_classes": None, "platforms": list(exported.platforms), "standardize": {},
          "note": "random weights (scripts/bench_infer.py --model)"}
  with open(os.path.join(out, "metadata.json"), "w") as f:
    json.dump(meta, f, indent=2)
  return meta


def _inputs(meta: dict, batch: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  feats = {m: rng.normal(size=(batch, meta["max_lengths"][m], meta["feature_dims"][m]))
           .astype(np.float32) for m in meta["modalities"]}
  masks = {m: np.ones((batch, meta["max_lengths"][m]), bool) for m in meta["modalities"]}
  return feats, masks


def _timed(fn, calls: int, warmup: int) -> dict:
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(calls):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  times.sort()
  return {"first_call_s": first, "median_s": statistics.median(times),
          "p90_s": times[min(len(times) - 1, int(0.9 * len(times)))], "calls": calls}


def bench_export(path: str, batch: int, calls: int, batch_calls: int, warmup: int) -> dict:
  import jax
  from jax import export

  from mmfuse_jax.inference import load_exported
  predict = load_exported(path)
  meta = predict.metadata
  with open(os.path.join(path, "inference.jax.bin"), "rb") as f:
    exported = export.deserialize(bytearray(f.read()))
  call = jax.jit(exported.call)
  out = {"model": meta["model"], "export": os.path.abspath(path),
         "lengths": meta["max_lengths"], "feature_dims": meta["feature_dims"]}
  for label, b, n in (("batch1", 1, calls), ("throughput", batch, batch_calls)):
    feats, masks = _inputs(meta, b)
    r = _timed(lambda: predict(feats, masks), n, warmup)
    dev = jax.device_put((feats, masks))
    rj = _timed(lambda: jax.block_until_ready(call(*dev)), n, warmup)
    out[label] = {"batch": b, "load_exported": r, "jit_call": rj,
                  "samples_per_s": b / r["median_s"], "jit_samples_per_s": b / rj["median_s"]}
  return out


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--export", default="", help="folder written by python -m mmfuse_jax.export")
  p.add_argument("--model", default="", help="without --export: export a fresh model first")
  p.add_argument("--shapes", default="mosi_unaligned", help=f"with --model: one of {list(SHAPES)}")
  p.add_argument("--set", action="append", default=[], help="with --model: key=value override")
  p.add_argument("--batch", type=int, default=256, help="batch of the throughput measurement")
  p.add_argument("--calls", type=int, default=200, help="timed calls at batch 1")
  p.add_argument("--batch_calls", type=int, default=10, help="timed calls at --batch")
  p.add_argument("--warmup", type=int, default=5)
  p.add_argument("--json", default="", help="also write the results here")
  args = p.parse_args(argv)
  if not args.export and not args.model:
    p.error("give --export=DIR or --model=NAME")
  import jax
  with tempfile.TemporaryDirectory() as tmp:
    path = args.export
    if not path:
      path = tmp
      t0 = time.perf_counter()
      make_export(args.model, args.shapes, tmp, dict(kv.split("=", 1) for kv in args.set))
      print(f"exported a fresh {args.model} ({args.shapes}) in {time.perf_counter() - t0:.1f} s",
            flush=True)
    res = bench_export(path, args.batch, args.calls, args.batch_calls, args.warmup)
  if not args.export:
    res["export"] = None
    res["shapes"] = args.shapes
  res["env"] = {"device": str(jax.devices()[0]), "platform": jax.default_backend(),
                "jax": jax.__version__, "python": platform.python_version(),
                "cpus": len(os.sched_getaffinity(0))}
  b1, tp = res["batch1"], res["throughput"]
  print(f"{res['model']}: batch 1 latency median {1e3 * b1['load_exported']['median_s']:.2f} ms"
        f"  p90 {1e3 * b1['load_exported']['p90_s']:.2f} ms  (jit call: median "
        f"{1e3 * b1['jit_call']['median_s']:.2f} ms, p90 {1e3 * b1['jit_call']['p90_s']:.2f} ms)")
  print(f"{res['model']}: batch {tp['batch']} throughput {tp['samples_per_s']:.1f} samples/s"
        f"  (jit call: {tp['jit_samples_per_s']:.1f} samples/s); first call at batch 1 "
        f"{b1['load_exported']['first_call_s']:.2f} s")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(res, f, indent=2)
  return res


if __name__ == "__main__":
  main()
  sys.exit(0)
