"""Fused dropout masks (layers/dropout.py) vs jax.random.bernoulli, side by side.

    python scripts/bench_dropout.py                       # masks at MulT attention shapes
    python scripts/bench_dropout.py --model=mult --batch=8 --steps=3   # + whole train steps

Part 1 times dropout alone, forward and forward+backward, on (batch, heads, T_q, T_k)
attention scores: flax.linen.Dropout (jax.random.bernoulli) against
mmfuse_jax.layers.dropout.Dropout (the same masks, checked equal here). Part 2 (--model)
times the model's train step at MOSI unaligned shapes (--model_shapes) (scripts/bench_train.py) three times
in one process: `flax` (masks from jax.random.bernoulli, stored for the backward pass, i.e.
what flax.linen.Dropout does), `fused_saved` (fused masks, stored) and `fused_redrawn`
(fused masks redrawn in the backward pass: the library's default). Prints medians and ratios;
--json writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mmfuse_jax.layers import dropout as dropout_lib  # noqa: E402


def median_time(fn, *args, repeats: int) -> float:
  """Median seconds of `fn(*args)` (blocked until ready) over `repeats` calls after one
  untimed call (compile and warm-up)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def bench_masks(shape, rate: float, repeats: int) -> dict:
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  key = jax.random.PRNGKey(1)
  row = {"shape": list(shape), "rate": rate}
  outs = {}
  for name, layer in (("flax", nn.Dropout), ("fused", dropout_lib.Dropout)):
    apply = lambda x, k, layer=layer: layer(rate).apply({}, x, deterministic=False,
                                                        rngs={"dropout": k})
    fwd = jax.jit(apply)
    grad = jax.jit(jax.grad(lambda x, k, apply=apply: jnp.sum(apply(x, k) ** 2)))
    outs[name] = np.asarray(fwd(x, key))
    row[f"{name}_forward_s"] = median_time(fwd, x, key, repeats=repeats)
    row[f"{name}_grad_s"] = median_time(grad, x, key, repeats=repeats)
  row["masks_equal"] = bool(np.array_equal(outs["flax"], outs["fused"]))
  row["forward_speedup"] = row["flax_forward_s"] / row["fused_forward_s"]
  row["grad_speedup"] = row["flax_grad_s"] / row["fused_grad_s"]
  return row


VARIANTS = {  # name -> (mask generator, dropout function)
    "flax": ("jax.random.bernoulli", "dropout_saving_mask"),
    "fused_saved": ("fused_bernoulli", "dropout_saving_mask"),
    "fused_redrawn": ("fused_bernoulli", "dropout"),   # the library's default
}


def bench_model(model: str, batch: int, steps: int, warmup: int, overrides: dict,
                shape: str = "mosi_unaligned") -> dict:
  """The model's train step under each of VARIANTS, in one process (the library's
  functions swapped for the run, restored after)."""
  import bench_train
  originals = {"fused_bernoulli": dropout_lib.fused_bernoulli, "dropout": dropout_lib.dropout}
  generators = {"jax.random.bernoulli": lambda key, p, shape: jax.random.bernoulli(key, p, shape),
                "fused_bernoulli": originals["fused_bernoulli"]}
  functions = {"dropout_saving_mask": dropout_lib.dropout_saving_mask,
               "dropout": originals["dropout"]}
  row = {"model": model, "batch": batch, "shape": shape}
  try:
    for name, (gen, fn) in VARIANTS.items():
      dropout_lib.fused_bernoulli = generators[gen]
      dropout_lib.dropout = functions[fn]
      r = bench_train.bench(model, shape, batch, steps, warmup, overrides)
      row[f"{name}_step_s"] = r["step_s_median"]
      row[f"{name}_compile_s"] = r["compile_s"]
  finally:
    dropout_lib.fused_bernoulli = originals["fused_bernoulli"]
    dropout_lib.dropout = originals["dropout"]
  for name in VARIANTS:
    row[f"{name}_speedup_vs_flax"] = row["flax_step_s"] / row[f"{name}_step_s"]
  return row


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--shapes", default="8,5,500,500;8,5,50,375",
                 help="';'-separated mask shapes")
  p.add_argument("--rate", type=float, default=0.1)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--model", default="", help="also time this model's train step both ways")
  p.add_argument("--model_shapes", default="mosi_unaligned",
                 help="bench_train.py shape set for --model")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--set", action="append", default=[], help="config override key=value")
  p.add_argument("--json", default="")
  args = p.parse_args(argv)
  out = {"device": str(jax.devices()[0]), "jax": jax.__version__, "masks": []}
  for s in args.shapes.split(";"):
    shape = tuple(int(v) for v in s.split(","))
    r = bench_masks(shape, args.rate, args.repeats)
    out["masks"].append(r)
    print(f"mask {str(shape):22s} flax fwd {1000 * r['flax_forward_s']:8.2f} ms  fused fwd "
          f"{1000 * r['fused_forward_s']:8.2f} ms  ({r['forward_speedup']:.2f}x)   flax grad "
          f"{1000 * r['flax_grad_s']:8.2f} ms  fused grad {1000 * r['fused_grad_s']:8.2f} ms  "
          f"({r['grad_speedup']:.2f}x)  same masks: {r['masks_equal']}", flush=True)
  if args.model:
    overrides = dict(kv.split("=", 1) for kv in args.set)
    r = bench_model(args.model, args.batch, args.steps, args.warmup, overrides,
                    args.model_shapes)
    out["model"] = r
    for name, (gen, fn) in VARIANTS.items():
      print(f"{args.model} train step, batch {args.batch}, {name:13s} ({gen} + {fn}): "
            f"{r[name + '_step_s']:.3f} s  ({r[name + '_speedup_vs_flax']:.2f}x flax)  "
            f"compile {r[name + '_compile_s']:.1f} s", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=2)
  return out


if __name__ == "__main__":
  main()
