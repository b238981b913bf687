"""Compiled epochs (train_loop='scan'): an epoch's train steps as one lax.scan.

`scan_steps` runs `method.train_step` over stacked batches; `scan_rows` does the same over
a split held on the device, gathering each step's batch from row indices. An epoch whose
batches all have one shape is ONE scan; with bucketing (data.num_buckets > 1) each run of
equal shapes is a scan of its own, padded to a power of two (`stack_runs`, `plan_runs`), so
few scan lengths compile. Executables are compiled ahead of time and cached per shapes on
the experiment (`scan_executable`), which keeps compile time out of the measured training
time. `resolve_train_loop` decides between this and the per-step loop. The functions here
take the `Experiment` of training/experiment.py as `exp`; the steps, order and results are
those of the per-step loop (tests/test_scan_loop.py).
"""

from __future__ import annotations

import functools
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.data import make_batch
from mmfuse_jax.training.feeding import DeviceFeed, choose_feed, gather_batch

log = logging.getLogger(__name__)


def scan_steps(method, state, batches, rng, live=None, to_batch=None):
  """`method.train_step` over the leading (steps) axis of stacked `batches` under
  lax.scan; returns (state, metrics stacked per step). Steps whose `live` flag is False
  (padding of a bucketed run) leave the state unchanged and report zero metrics.
  to_batch: maps each step's slice to its Batch (row indices gathered on device)."""
  def step(s, b):
    if to_batch is not None:
      b = to_batch(b)
    return method.train_step(s, b, rng)
  if live is None:
    return jax.lax.scan(step, state, batches)

  def body(s, xs):
    b, ok = xs
    _, m_shape = jax.eval_shape(step, s, b)
    def skip(s):
      return s, jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), m_shape)
    return jax.lax.cond(ok, lambda s: step(s, b), skip, s)
  return jax.lax.scan(body, state, (batches, live))


def scan_rows(method, state, split, plans, rng, lengths, live=None):
  """`scan_steps` over a device-resident split (`feeding.DeviceFeed`): each step gathers
  its batch on device from its stacked row plan; `lengths` (the run's time lengths) is
  static."""
  return scan_steps(method, state, plans, rng, live,
                    to_batch=functools.partial(gather_batch, split, lengths=lengths))


def shape_signature(tree) -> tuple:
  """(tree structure, ((shape, dtype), ...)): what a compiled function is specialised on."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return treedef, tuple((x.shape, str(x.dtype)) for x in leaves)


def stack_runs(batches, pad: bool):
  """Consecutive batches of equal shapes stacked on a new leading axis, in epoch order:
  yields (stacked host batch, live mask or None, number of real steps). With pad, a run is
  padded to the next power of two (repeating its last batch, live=False) so a bucketed
  epoch compiles at most log2(steps) scan lengths per shape instead of one per run length."""
  runs = []
  for b in batches:
    sig = shape_signature(b)
    if runs and runs[-1][0] == sig:
      runs[-1][1].append(b)
    else:
      runs.append((sig, [b]))
  for _, run in runs:
    n = len(run)
    live = None
    if pad:
      length = 1 << (n - 1).bit_length()
      run = run + [run[-1]] * (length - n)
      live = np.arange(length) < n
    yield jax.tree_util.tree_map(lambda *xs: np.stack(xs), *run), live, n


def put_stacked(tree, sharding, global_batch: int | None = None):
  """Stacked host batches onto the mesh (axis 1, the batch axis, split over 'data'). On
  several hosts `tree` holds this process's rows of a global batch of `global_batch` rows."""
  if jax.process_count() > 1:
    def put(x):
      x = np.asarray(x)
      return jax.make_array_from_process_local_data(
          sharding, x, x.shape[:1] + (global_batch or x.shape[1],) + x.shape[2:])
    return jax.tree_util.tree_map(put, tree)
  return jax.device_put(tree, sharding)


def scan_executable(exp, state, xs, rng, live=None, *, split=None, lengths=None):
  """The compiled scan for these stacked shapes (cached on exp); (executable, seconds spent
  compiling now, 0 when cached). Compiling ahead of time keeps compile_s separate from the
  measured training time. With `split` (a device-resident split), xs holds stacked row
  plans and `lengths` the run's static time lengths; the executable then takes
  (state, split, xs, rng[, live])."""
  key = (live is None, lengths, shape_signature(xs))
  if key in exp.scan_cache:
    return exp.scan_cache[key], 0.0
  t = time.perf_counter()
  if split is not None:
    if live is None:
      fn = exp.train_scan_rows.lower(state, split, xs, rng, lengths).compile()
    else:
      fn = exp.train_scan_rows_masked.lower(state, split, xs, rng, lengths, live).compile()
  elif live is None:
    fn = exp.train_scan.lower(state, xs, rng).compile()
  else:
    fn = exp.train_scan_masked.lower(state, xs, rng, live).compile()
  exp.scan_cache[key] = fn
  return fn, time.perf_counter() - t


def scan_epoch(exp, state, batches, rng):
  """Runs the given host batches as compiled scans: ONE scan when they all have one shape
  (num_buckets=1), else one per run of equal shapes (data.num_buckets > 1). Returns
  (state, per-step metrics as host dicts in step order, seconds spent compiling)."""
  pad = exp.config.data.num_buckets > 1
  outs, compile_s = [], 0.0
  for stacked, live, n in stack_runs(batches, pad):
    xs = put_stacked(stacked, exp.stacked_sharding, exp.config.batch_size)
    args = (state, xs, rng)
    if live is not None:
      args += (jax.device_put(live, exp.state_sharding),)
    fn, dt = scan_executable(exp, *args)
    compile_s += dt
    state, m = fn(*args)
    outs.append((m, n))
  outs = jax.device_get(outs)
  rows = [{k: v[i] for k, v in m.items()} for m, n in outs for i in range(n)]
  return state, rows, compile_s


def plan_runs(plans, pad: bool):
  """Consecutive plans of equal lengths stacked on a new leading axis, in epoch order:
  yields (lengths, stacked index arrays, live mask or None, number of real steps); with pad
  a run is padded to the next power of two like `stack_runs`."""
  runs = []
  for p in plans:
    if runs and runs[-1][0] == p.lengths:
      runs[-1][1].append(p)
    else:
      runs.append((p.lengths, [p]))
  for lengths, run in runs:
    n, live = len(run), None
    if pad:
      size = 1 << (n - 1).bit_length()
      run = run + [run[-1]] * (size - n)
      live = np.arange(size) < n
    arrays = [DeviceFeed.plan_arrays(p) for p in run]
    yield lengths, {k: np.stack([a[k] for a in arrays]) for k in arrays[0]}, live, n


def scan_epoch_device(exp, feed: DeviceFeed, state, plans, rng):
  """Like `scan_epoch` for the batch `plans` (`DeviceFeed.plans(epoch)`), each batch
  gathered on device inside the scan from the split that `feed` holds there: the host
  ships (steps, batch) row indices, nothing else."""
  outs, compile_s = [], 0.0
  for lengths, xs, live, n in plan_runs(plans, exp.config.data.num_buckets > 1):
    xs = feed.put_rows(xs, exp.stacked_sharding, axis=1)
    args = (state, xs, rng)
    if live is not None:
      args += (jax.device_put(live, exp.state_sharding),)
    fn, dt = scan_executable(exp, *args, split=feed.split, lengths=lengths)
    compile_s += dt
    state, m = fn(state, feed.split, *args[1:])   # `lengths` is compiled in
    outs.append((m, n))
  outs = jax.device_get(outs)
  rows = [{k: v[i] for k, v in m.items()} for m, n in outs for i in range(n)]
  return state, rows, compile_s


def scan_bytes_bound(exp) -> int:
  """Upper bound of one epoch's stacked batches in bytes: full-length batches (with the
  method's extra batches) times the steps, twice that with bucketing (runs are padded to a
  power of two)."""
  split = exp.dataset.splits["train"]
  rows = np.arange(min(len(split), exp.config.batch_size))
  one = make_batch(split, rows, exp.config.batch_size, 1,
                   more_rows=[rows] * exp.method.extra_batches)
  per = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(one))
  steps = exp.method.steps_per_epoch
  return per * steps * (2 if exp.config.data.num_buckets > 1 else 1)


def resolve_train_loop(exp, feed_kind: str | None = None) -> str:
  """'scan' or 'step' for config.train_loop.

  'auto': the step loop on CPU (a scan gains nothing there and compiles longer); on GPU/TPU
  the scan when the train split lives on the device (input feed 'device', which 'auto'
  chooses when the split fits the device's free memory, `feeding.device_memory_budget`),
  else the step loop with host batches prefetched. 'scan': the scan; with host-fed input
  the epoch is stacked on the host first, and above scan_max_bytes it falls back to 'step'
  with a warning."""
  config = exp.config
  loop = config.get("train_loop", "auto")
  if loop == "step":
    return "step"
  kind = feed_kind or choose_feed(config, exp.dataset.splits["train"])
  if loop == "auto":
    if exp.mesh.devices.flat[0].platform == "cpu":
      return "step"
    return "scan" if kind == "device" else "step"
  if kind == "device":
    return "scan"   # the split is already on the device; the scan adds only row indices
  bound = scan_bytes_bound(exp)
  if bound > config.scan_max_bytes:
    log.warning("train_loop='scan': a stacked epoch may take %.1f MiB > scan_max_bytes "
                "(%.1f MiB); using the per-step loop", bound / 2 ** 20,
                config.scan_max_bytes / 2 ** 20)
    return "step"
  return "scan"
