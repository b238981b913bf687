"""Every model's train step on whatever accelerator JAX sees: one command, one table.

    python scripts/bench_device.py --out=bench_device.json
    python scripts/bench_device.py --torch-ref=~/refs --out=bench_device.json   # + PyTorch MulT
    python scripts/bench_device.py --models=lmf --shapes=mosi_unaligned --steps=2 --batch=4

For every model at the MOSI and MOSEI unaligned shapes of scripts/bench_train.py (models
built for utterance vectors, ARGF, at its utterance shape instead, once), in float32 and
in bf16 (--precisions), each model at its default training batch (or --batch):

* compile_s: ahead-of-time compile of the jitted train step (trace, lower, compile);
* step_ms / steps_per_s: median of --steps calls after --warmup, each synchronised;
* loop_steps_per_s, scan_steps_per_s (--loops with 'scan'): an epoch of --steps steps on
  fresh batches fed from the device, the per-step loop dispatching back to back vs one
  compiled lax.scan (bench_train.bench_epoch), and their ratio;
* flops: XLA's cost analysis of the compiled step (`compiled.cost_analysis()['flops']`);
  XLA counts a loop body once, so for steps holding loops (layer scans, LSTMs over time,
  fori_loops) it is a lower bound (flops_lower_bound, '>=' in the table);
  tflops_per_s = flops / median step time;
* temp_bytes: XLA's temporary buffers of the compiled step (`memory_analysis()`);
  peak_bytes: the device's high-water mark so far in this process
  (`device.memory_stats()['peak_bytes_in_use']`; None where the backend reports nothing,
  as on CPU): a running maximum over the rows printed so far, not per row.

--torch-ref=PATH also times the official PyTorch model of MulT (and RERD, ARGF when their
checkouts are found; scripts/torch_ref.py) on the same device, shapes and batch, in
float32. The whole matrix stops starting new rows after --budget_s seconds (default 420,
so a run ends within about 8 minutes on one GPU); rows left out are listed as skipped.
Writes --out (JSON: env, arguments, one row per configuration) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402  (scripts/ is not a package)
import torch_ref  # noqa: E402

from mmfuse_jax import config as config_lib  # noqa: E402
from mmfuse_jax.data import make_synthetic  # noqa: E402
from mmfuse_jax.catalog import MODELS  # noqa: E402

DEFAULT_SHAPES = ("mosi_unaligned", "mosei_unaligned")


def xla_flops(compiled) -> tuple[float | None, bool]:
  """(flops of one call from XLA's cost analysis, whether that is a lower bound because
  the module holds while loops, whose bodies XLA counts once)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):          # older JAX: one dict per module
    cost = cost[0] if cost else None
  flops = None if not cost or cost.get("flops") is None else float(cost["flops"])
  return flops, bool(re.search(r"\bwhile\(", compiled.as_text() or ""))


def peak_device_bytes(device=None) -> int | None:
  """The device's peak bytes in use so far (memory_stats), None where not reported."""
  stats = (device or jax.devices()[0]).memory_stats()
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return int(stats["peak_bytes_in_use"])


def plan(models: list[str], shapes: list[str], precisions: list[str]) -> list[tuple]:
  """(model, shape, precision) rows in order: shape by shape, every model, each precision
  next to the other. Utterance models run at 'utterance' once, with the first shape."""
  rows = []
  for i, shape in enumerate(shapes):
    for model in models:
      use = shape
      if MODELS.get(model).input_kind == "utterance":
        if i:
          continue
        use = "utterance"
      rows.extend((model, use, p) for p in precisions)
  return rows


def bench_row(model: str, shape: str, precision: str, batch: int, steps: int, warmup: int,
              loops: tuple[str, ...], overrides: dict) -> dict:
  """One configuration: compile, step timing, cost and memory analysis, optional scan."""
  c, _, exp, state, b, rng = bench_train.setup_step(
      model, shape, batch, {**overrides, "precision": precision})
  t0 = time.perf_counter()
  compiled = exp.train_step.lower(state, b, rng).compile()   # the jit reuses it below
  compile_s = time.perf_counter() - t0
  flops, lower_bound = xla_flops(compiled)
  memory = compiled.memory_analysis()
  step_s, state = bench_train.median_step_s(exp, state, b, rng, steps, 1 + warmup)
  row = {"model": model, "shape": shape, "precision": precision, "batch": batch,
         "compile_s": compile_s, "step_ms": 1e3 * step_s, "steps_per_s": 1.0 / step_s,
         "flops": flops, "flops_lower_bound": lower_bound,
         "tflops_per_s": None if flops is None else flops / step_s / 1e12,
         "temp_bytes": None if memory is None else int(memory.temp_size_in_bytes),
         "params": int(sum(x.size for x in jax.tree_util.tree_leaves(state.params)))}
  if "scan" in loops:
    epoch, state = bench_train.bench_epoch(exp, state, rng, steps, shape)
    row.update(epoch)
  jax.block_until_ready(state)
  row["peak_bytes"] = peak_device_bytes()
  return row


def torch_row(model: str, shape: str, batch: int, steps: int, warmup: int, path: str,
              overrides: dict) -> dict:
  """The official PyTorch model (float32) on the same device, shapes and batch."""
  lengths, dims = bench_train.SHAPES[shape]
  ds = make_synthetic(0, sizes={"train": batch, "valid": batch, "test": batch}, dims=dims,
                      lengths=lengths)
  c = config_lib.apply_overrides(config_lib.get_config(model, preset=False), overrides)
  c.batch_size = batch
  r = bench_train._torch_ref(model, path, c, ds, lengths, dims, batch, steps, warmup, 0)
  return {"model": f"{model} (PyTorch)", "shape": shape, "precision": "float32",
          "batch": batch, "torch_ref": r,
          **({"step_ms": 1e3 * r["step_s_median"], "steps_per_s": r["steps_per_s"]}
             if "step_s_median" in r else {})}


def _fmt(value, spec: str, empty: str = "-") -> str:
  return empty if value is None else format(value, spec)


def _mib(n) -> str:
  return "-" if n is None else f"{n / 2 ** 20:.0f}"


def markdown(rows: list[dict]) -> str:
  """The rows as a markdown table (skipped and failed rows say why)."""
  head = ("| model | shape | precision | batch | compile s | step ms | steps/s | loop steps/s "
          "| scan steps/s | scan/loop | GFLOP/step | TFLOP/s | temp MiB | peak MiB |")
  lines = [head, "|" + "---|" * 14]
  for r in rows:
    key = f"| {r['model']} | {r['shape']} | {r['precision']} | {r.get('batch', '-')} "
    if "skipped" in r or "error" in r:
      lines.append(key + f"| {r.get('skipped') or r.get('error')} |" + " |" * 9)
      continue
    if "torch_ref" in r and "step_ms" not in r:
      t = r["torch_ref"]
      lines.append(key + f"| {t.get('skipped') or t.get('error')} |" + " |" * 9)
      continue
    ge = ">=" if r.get("flops_lower_bound") else ""
    gflop = _fmt(None if r.get("flops") is None else r["flops"] / 1e9, ".2f")
    tflops = _fmt(r.get("tflops_per_s"), ".3f")
    lines.append(
        key + f"| {_fmt(r.get('compile_s'), '.1f')} | {r['step_ms']:.2f} "
        f"| {r['steps_per_s']:.1f} | {_fmt(r.get('loop_steps_per_s'), '.1f')} "
        f"| {_fmt(r.get('scan_steps_per_s'), '.1f')} | {_fmt(r.get('scan_speedup'), '.2f')} "
        f"| {ge if gflop != '-' else ''}{gflop} | {ge if tflops != '-' else ''}{tflops} "
        f"| {_mib(r.get('temp_bytes'))} | {_mib(r.get('peak_bytes'))} |")
  return "\n".join(lines)


def environment() -> dict:
  d = jax.devices()[0]
  return {"device": str(d), "device_kind": getattr(d, "device_kind", ""),
          "platform": d.platform, "num_devices": len(jax.devices()), "jax": jax.__version__,
          "python": platform.python_version(), "machine": platform.machine()}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="all", help="comma list or 'all'")
  p.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                 help=f"comma list of {list(bench_train.SHAPES)}")
  p.add_argument("--precisions", default="float32,bf16")
  p.add_argument("--loops", default="step,scan", help="'step' or 'step,scan'")
  p.add_argument("--batch", type=int, default=0, help="0: each model's default batch")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--budget_s", type=float, default=420.0,
                 help="start no new row after this many seconds (0: no limit)")
  p.add_argument("--set", action="append", default=[], help="config override key=value")
  p.add_argument("--torch-ref", "--torch_ref", dest="torch_ref", default="",
                 help="checkout(s) of the official PyTorch code (scripts/torch_ref.py)")
  p.add_argument("--out", default="", help="JSON file to write")
  args = p.parse_args(argv)
  models = MODELS.names() if args.models == "all" else args.models.split(",")
  shapes = args.shapes.split(",")
  precisions = args.precisions.split(",")
  loops = tuple(args.loops.split(","))
  for name, values, valid in (("--shapes", shapes, bench_train.SHAPES),
                              ("--precisions", precisions, ("float32", "bf16")),
                              ("--loops", loops, ("step", "scan"))):
    bad = [v for v in values if v not in valid]
    if bad:
      p.error(f"{name}: unknown {bad}; valid: {', '.join(valid)}")
  overrides = dict(kv.split("=", 1) for kv in args.set)
  overrides.setdefault("num_devices", "1")
  env = environment()
  print(f"device: {env['device']} ({env['platform']}, {env['device_kind']}), jax {env['jax']}",
        flush=True)
  start = time.perf_counter()
  rows = []
  todo = plan(models, shapes, precisions)
  if args.torch_ref:
    todo += [(m, s, "torch") for m, s, p_ in plan(models, shapes, precisions[:1])
             if m in torch_ref.REPOS]
  for model, shape, precision in todo:
    batch = args.batch or config_lib.get_config(model, preset=False).batch_size
    if args.budget_s and time.perf_counter() - start > args.budget_s:
      rows.append({"model": model, "shape": shape, "precision": precision, "batch": batch,
                   "skipped": f"time budget ({args.budget_s:.0f} s) spent"})
    else:
      try:
        if precision == "torch":
          rows.append(torch_row(model, shape, batch, args.steps, args.warmup, args.torch_ref,
                                overrides))
        else:
          rows.append(bench_row(model, shape, precision, batch, args.steps, args.warmup, loops,
                                overrides))
      except Exception as e:  # noqa: BLE001  (report and continue with the other rows)
        rows.append({"model": model, "shape": shape, "precision": precision, "batch": batch,
                     "error": f"{type(e).__name__}: {e}"[:300]})
    print(json.dumps(rows[-1], default=str), flush=True)
  out = {"env": env, "args": vars(args), "wall_s": time.perf_counter() - start, "rows": rows}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1, default=str)
  print(markdown(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
