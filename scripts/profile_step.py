"""Where a model's train step spends its time: an XLA op profile grouped three ways.

    python scripts/profile_step.py --model=mult --shapes=mosi_unaligned --batch=8 --steps=2
    python scripts/profile_step.py --model=rerd --batch=16 --depth=3 --json=rerd_profile.json
    python scripts/profile_step.py --model=mult --batch=8 --torch-ref=~/refs   # + the original

Traces `--steps` compiled train steps (after one compile-and-warm-up step) with
jax.profiler, reads the trace back (jax.profiler.ProfileData) and takes the *self* time of
every executed HLO op on every thread (a while loop's time excludes its body's ops), then
attributes each op through the compiled module's metadata (the JAX `op_name`, e.g.
`jit(train_step)/transpose(jvp(MulTModel))/cross_audio_to_text/layers/.../dot_general`) to

* a pass: forward (`jvp`), backward (`transpose`), or other (optimiser, loss glue);
* a kind: dropout random bits (ops under a `Dropout` module or `jax.random`), matmul
  (`dot_general`), or the op's JAX primitive (exp, reduce_max, select_n, ...);
* a module path: the first `--depth` Flax module names (e.g. `MulTModel/cross_audio_to_text`).

Shares are of the summed op time over all threads (CPU time, not wall time), so they stay
meaningful on a shared machine. With --torch-ref the original PyTorch model (MulT, RERD;
scripts/torch_ref.py) is profiled on the same shapes with torch.profiler (self CPU time per
aten op) in the same run. Timings here are profiles, not benchmarks: use bench_train.py
for step times.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile

import jax

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_train import SHAPES, setup_step  # noqa: E402

from mmfuse_jax import config as config_lib  # noqa: E402

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"\s([a-z][a-z0-9_\-]*)\(")
_OP_NAME = re.compile(r"op_name=\"([^\"]*)\"")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_WRAPPER = re.compile(r"^(?:jvp|transpose|vmap|checkpoint|remat|pjit|jit)\((.*)\)$")
_RANDOM = ("Dropout", "_bernoulli", "_uniform", "threefry", "random_bits", "random_split",
           "random_fold_in", "_gumbel", "_normal")


def hlo_ops(compiled_text: str) -> dict[str, tuple[str, bool, str]]:
  """HLO instruction name -> (JAX op_name, whether it computes a matmul: a dot or
  convolution, or a fusion whose computation holds one, result type such as
  `f32[8,5,500,500]{3,2,1,0}`), from a compiled module's text."""
  ops, calls, has_dot, comp = {}, {}, collections.defaultdict(bool), ""
  for line in compiled_text.splitlines():
    head = _COMPUTATION.match(line)
    if head:
      comp = head.group(1)
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, rest = m.group(1), m.group(2)
    op = _OPCODE.search(rest)
    opcode = op.group(1) if op else ""
    meta = _OP_NAME.search(rest)
    ops[name] = (meta.group(1) if meta else "", opcode in ("dot", "convolution"),
                 rest[:op.start()].strip() if op else "")
    if opcode in ("dot", "convolution"):
      has_dot[comp] = True
    called = _CALLS.search(rest)
    if opcode == "fusion" and called:
      calls[name] = called.group(1)
  for name, target in calls.items():
    ops[name] = (ops[name][0], ops[name][1] or has_dot[target], ops[name][2])
  return ops


def self_times(profile) -> dict[str, float]:
  """Summed self time (ns) per executed HLO op over all threads of a jax.profiler trace.

  Op events nest on one thread (a while loop encloses its body's ops); each op's time
  excludes the op events inside it."""
  out: dict[str, float] = collections.defaultdict(float)
  for plane in profile.planes:
    for line in plane.lines:
      events = []
      for e in line.events:
        stats = dict(e.stats)
        if "hlo_op" in stats:
          events.append((e.start_ns, e.end_ns, str(stats["hlo_op"])))
      events.sort(key=lambda x: (x[0], -x[1]))
      stack: list[list] = []   # [end, name, child_time]
      def close(entry):
        end, name, child, start = entry
        out[name] += max(0.0, (end - start) - child)
        if stack:
          stack[-1][2] += end - start
      for start, end, name in events:
        while stack and stack[-1][0] <= start:
          close(stack.pop())
        stack.append([end, name, 0.0, start])
      while stack:
        close(stack.pop())
  return dict(out)


def classify(op_name: str, matmul: bool, depth: int) -> tuple[str, str, str]:
  """(pass, kind, module path) of one HLO op from its JAX op_name and whether it computes a
  matmul (see the module docstring)."""
  parts = op_name.split("/")
  if parts and parts[0].startswith("jit(") and parts[0].endswith(")"):
    parts = parts[1:]
  the_pass = "other"
  if any(p.startswith("transpose(") for p in parts):
    the_pass = "backward"
  elif any(p.startswith("jvp(") for p in parts):
    the_pass = "forward"
  clean = []
  for p in parts:
    while True:
      m = _WRAPPER.match(p)
      if not m:
        break
      p = m.group(1)
    clean.append(p)
  prim = clean[-1] if clean else "?"
  if any(any(r in p for r in _RANDOM) for p in clean):
    kind = "dropout/random bits"
  elif matmul or prim in ("dot_general", "conv_general_dilated"):
    kind = "matmul"
  elif not op_name:
    kind = "(no metadata: copies, layout)"
  else:
    kind = prim
  modules = []
  for p in clean[:-1]:
    if "(" in p or p in ("while", "body", "cond", "closed_call", "checkpoint", "rematted_computation"):
      break
    modules.append(p)
  module = "/".join(modules[:depth]) or "(outside modules)"
  return the_pass, kind, module


def profile_jax(model: str, shape: str, batch: int, steps: int, overrides: dict,
                depth: int, trace_dir: str) -> dict:
  _, _, exp, state, b, rng = setup_step(model, shape, batch, overrides)
  # One compile: the executable whose HLO names the ops is the one that runs and is traced.
  step = exp.train_step.lower(state, b, rng).compile()
  ops = hlo_ops(step.as_text())
  state, _ = step(state, b, rng)
  jax.block_until_ready(state)
  with jax.profiler.trace(trace_dir):
    for _ in range(steps):
      state, _ = step(state, b, rng)
    jax.block_until_ready(state)
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True),
                 key=os.path.getmtime)
  if not files:
    raise RuntimeError(f"jax.profiler wrote no *.xplane.pb under {trace_dir}")
  times = self_times(jax.profiler.ProfileData.from_file(files[-1]))
  return summarise(times, ops, depth, steps)


def summarise(times: dict[str, float], ops: dict[str, tuple[str, bool, str]], depth: int,
              steps: int) -> dict:
  """Shares of the total op time by pass, kind, module and pass x kind; the top ops."""
  total = sum(times.values())
  groups = {"pass": collections.Counter(), "kind": collections.Counter(),
            "module": collections.Counter(), "pass x kind": collections.Counter()}
  top = []
  for op, t in times.items():
    name, matmul, result = ops.get(op, ("", False, ""))
    the_pass, kind, module = classify(name, matmul, depth)
    groups["pass"][the_pass] += t
    groups["kind"][kind] += t
    groups["module"][module] += t
    groups["pass x kind"][f"{the_pass}: {kind}"] += t
    top.append((t, op, name, result))
  top.sort(reverse=True)
  share = lambda c: [(k, v / total) for k, v in c.most_common()]
  return {"op_time_s_per_step": total / 1e9 / steps, "steps": steps,
          "groups": {k: share(v) for k, v in groups.items()},
          "top_ops": [(op, t / total, name, result) for t, op, name, result in top[:40]]}


def profile_torch(model: str, path: str, shape: str, batch: int, steps: int, overrides: dict,
                  threads: int) -> dict:
  """Self CPU time per aten op of the original model's train step (torch.profiler)."""
  import torch_ref
  ckout, msg = torch_ref.resolve(model, path)
  if ckout is None:
    return {"skipped": msg}
  msg = torch_ref.torch_missing()
  if msg:
    return {"skipped": msg}
  if model == "argf":
    return {"skipped": "profiling the ARGF original is not wired (its step has 4 updates)"}
  import warnings
  import torch
  from mmfuse_jax.models.base import output_dim
  lengths, dims = SHAPES[shape]
  c = config_lib.get_config(model, preset=False)
  c.batch_size = batch
  config_lib.apply_overrides(c, overrides)
  torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
  torch.manual_seed(0)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    step, _, _ = torch_ref.make_step(model, ckout, c, dims, lengths, output_dim("regression", 1),
                                     batch)
    step()
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
      for _ in range(steps):
        step()
  rows = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
  total = sum(t for _, t in rows)
  rows.sort(key=lambda r: -r[1])
  return {"op_time_s_per_step": total / 1e6 / steps, "threads": torch.get_num_threads(),
          "top_ops": [(k, t / total) for k, t in rows[:25]]}


def print_report(title: str, r: dict, top: int) -> None:
  print(f"\n== {title}: {1000 * r['op_time_s_per_step']:.1f} ms of op time per step "
        f"(summed over threads, {r['steps']} traced steps)")
  for group, rows in r["groups"].items():
    print(f"-- by {group}")
    for k, s in rows[:top]:
      print(f"  {100 * s:5.1f}%  {k}")
  print("-- top ops")
  for op, s, name, result in r["top_ops"][:top]:
    print(f"  {100 * s:5.1f}%  {op:28s} {result.split('{')[0]:22s} {name[-90:]}")


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--model", default="mult")
  p.add_argument("--shapes", default="mosi_unaligned", choices=sorted(SHAPES))
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--steps", type=int, default=2, help="traced steps after one warm-up step")
  p.add_argument("--depth", type=int, default=2, help="module path depth for grouping")
  p.add_argument("--top", type=int, default=12, help="rows printed per group")
  p.add_argument("--set", action="append", default=[], help="config override key=value")
  p.add_argument("--trace_dir", default="", help="keep the raw trace here (TensorBoard/xprof)")
  p.add_argument("--torch-ref", "--torch_ref", dest="torch_ref", default="",
                 help="checkout(s) of the original code: also profile it (torch.profiler)")
  p.add_argument("--torch_threads", type=int, default=0)
  p.add_argument("--json", default="")
  args = p.parse_args(argv)
  overrides = dict(kv.split("=", 1) for kv in args.set)
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="mmfuse_profile_")
  r = profile_jax(args.model, args.shapes, args.batch, args.steps, overrides, args.depth,
                  trace_dir)
  print_report(f"{args.model} ({jax.devices()[0].platform}, batch {args.batch}, "
               f"{args.shapes})", r, args.top)
  out = {"model": args.model, "shape": args.shapes, "batch": args.batch, "jax": r,
         "jax_version": jax.__version__, "device": str(jax.devices()[0])}
  if args.torch_ref:
    t = profile_torch(args.model, args.torch_ref, args.shapes, args.batch, args.steps,
                      overrides, args.torch_threads)
    out["torch"] = t
    if "skipped" in t:
      print(f"\nSKIPPED torch reference: {t['skipped']}")
    else:
      print(f"\n== original (PyTorch, {t['threads']} threads): "
            f"{1000 * t['op_time_s_per_step']:.1f} ms of self CPU time per step")
      for k, s in t["top_ops"][:args.top]:
        print(f"  {100 * s:5.1f}%  {k}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=2)
  return out


if __name__ == "__main__":
  main()
