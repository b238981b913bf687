"""`train_and_evaluate(config, workdir)`: the training loop every method shares.

One jit-compiled train step over a 1-D device mesh (batch sharded on 'data', state
replicated), or with train_loop='scan' the epoch's steps in one compiled lax.scan (same
batches, order and results; train_loop='auto' picks scan on GPU/TPU when the train split fits
on the device, the step loop on CPU). The input comes from `training.feeding`: the train
split on device and only row indices shipped per epoch, or host batches prefetched two
ahead; on several hosts each process feeds only its own rows. Epochs of seeded
shuffles, validation after every epoch, selection and early stopping on the validation
split only, Orbax checkpoints (latest + best) with automatic resume in a workdir that
answers only for its own config (workdir.py), metrics to metrics.jsonl/metrics.csv,
TensorBoard and optionally W&B (run_log.py), and results.json at the end with the selected
checkpoint's validation and test metrics. The test split is evaluated once, for the selected
checkpoint, and never used to choose anything.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from mmfuse_jax import config as config_lib
from mmfuse_jax.data import iterate_batches, load_dataset, shard_batch
from mmfuse_jax.data.core import Dataset, Split
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.models.base import DataInfo, check_model_modalities
from mmfuse_jax.registry import METHODS, MODELS
from mmfuse_jax.training import metrics as metrics_lib
from mmfuse_jax.training.checkpoint import Checkpoints, abstract_like
from mmfuse_jax.training.feeding import DeviceFeed, choose_feed, gather_batch, make_feed
from mmfuse_jax.training.mesh import (batch_sharding, make_data_mesh,
                                      maybe_initialize_distributed, replicated)
from mmfuse_jax.training.rng import check_resumed_impl, resolve_prng_impl, seed_key
from mmfuse_jax.training.run_log import RunLog, learning_rate, now_iso
from mmfuse_jax.training.workdir import prepare_workdir, replay_early_stopping

log = logging.getLogger(__name__)

@dataclasses.dataclass
class Experiment:
  """Everything built from a config: data, model, method, mesh and compiled steps."""
  config: Any
  dataset: Dataset
  data_stats: dict
  info: DataInfo
  spec: Any
  model: Any
  method: Any
  mesh: Any
  batch_sharding: Any
  state_sharding: Any
  train_step: Any
  eval_step: Any
  init_fn: Any
  train_scan: Any = None          # (state, stacked batches, rng) -> (state, stacked metrics)
  train_scan_masked: Any = None   # the same with a (steps,) bool `live` mask (padded runs)
  stacked_sharding: Any = None    # stacked batches: steps axis replicated, batch axis on 'data'
  train_scan_rows: Any = None     # (state, device split, stacked row plans, rng, lengths)
  train_scan_rows_masked: Any = None  # the same with a `live` mask before `lengths`
  scan_cache: dict = dataclasses.field(default_factory=dict)  # compiled scans by shapes
  analysis_cache: dict = dataclasses.field(default_factory=dict)  # jitted analysis steps

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size


def _round_up(n: int, k: int) -> int:
  return ((n + k - 1) // k) * k


def build_experiment(config, dataset: Dataset | None = None, data_stats: dict | None = None
                     ) -> Experiment:
  """Loads data (unless given), builds model and method, and jit-compiles the steps."""
  from mmfuse_jax import methods, models  # noqa: F401  (fill the registries)
  config_lib.validate_config(config)
  spec = MODELS.get(config.model)
  method_cls = METHODS.get(config.method or spec.method)
  check_model_modalities(spec, config_lib.modalities(config) if dataset is None
                         else dataset.modalities)
  if dataset is None:
    dataset, data_stats = load_dataset(config)
  info = DataInfo(modalities=dataset.modalities, feature_dims=dataset.feature_dims,
                  max_lengths=dataset.max_lengths, task=dataset.task,
                  num_classes=dataset.num_classes)
  mesh = make_data_mesh(config.num_devices)
  ndev = mesh.devices.size
  if config.batch_size % ndev:
    raise ConfigError(f"batch_size={config.batch_size} must be a multiple of the "
                      f"{ndev} devices in the mesh")
  steps_per_epoch = -(-len(dataset.splits["train"]) // config.batch_size)
  model = spec.build(config.net, info)
  method = method_cls(config, model, spec, info, steps_per_epoch)
  method.set_train_split(dataset.splits["train"])
  b_sh, r_sh = batch_sharding(mesh), replicated(mesh)
  train_step = jax.jit(method.train_step, in_shardings=(r_sh, b_sh, r_sh),
                       out_shardings=(r_sh, r_sh), donate_argnums=(0,))
  eval_step = jax.jit(method.eval_step, in_shardings=(r_sh, b_sh), out_shardings=r_sh)
  init_fn = jax.jit(method.init_state, in_shardings=(r_sh, b_sh), out_shardings=r_sh)
  s_sh = NamedSharding(mesh, P(None, "data"))
  train_scan = jax.jit(lambda st, xs, rng: scan_steps(method, st, xs, rng),
                       in_shardings=(r_sh, s_sh, r_sh), out_shardings=(r_sh, r_sh),
                       donate_argnums=(0,))
  train_scan_masked = jax.jit(lambda st, xs, rng, live: scan_steps(method, st, xs, rng, live),
                              in_shardings=(r_sh, s_sh, r_sh, r_sh),
                              out_shardings=(r_sh, r_sh), donate_argnums=(0,))
  # Epoch scans over a device-resident split: each step gathers its batch from row indices.
  def rows_scan(st, split, xs, rng, lengths, live=None):
    return scan_steps(method, st, xs, rng, live,
                      to_batch=lambda x: gather_batch(split, x, lengths))
  train_scan_rows = jax.jit(rows_scan, static_argnums=(4,), in_shardings=(r_sh, r_sh, s_sh, r_sh),
                            out_shardings=(r_sh, r_sh), donate_argnums=(0,))
  train_scan_rows_masked = jax.jit(rows_scan, static_argnums=(4,),
                                   in_shardings=(r_sh, r_sh, s_sh, r_sh, r_sh),
                                   out_shardings=(r_sh, r_sh), donate_argnums=(0,))
  return Experiment(config, dataset, data_stats or {}, info, spec, model, method, mesh, b_sh,
                    r_sh, train_step, eval_step, init_fn, train_scan, train_scan_masked, s_sh,
                    train_scan_rows, train_scan_rows_masked)


# --- compiled epochs (train_loop='scan') ------------------------------------------------
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


def train_batches(config, split: Split, epoch: int, extra_batches: int = 0):
  """The host batches of one training epoch (the seeded shuffle of both loops); with
  extra_batches = K each also carries the next K batches of the epoch (`Batch.more`)."""
  return iterate_batches(split, config.batch_size, shuffle=True, seed=config.seed,
                         epoch=epoch, num_buckets=config.data.num_buckets,
                         extra_batches=extra_batches)


def _shapes(tree) -> tuple:
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return treedef, tuple((x.shape, str(x.dtype)) for x in leaves)


def stack_runs(batches, pad: bool):
  """Consecutive batches of equal shapes stacked on a new leading axis, in epoch order:
  yields (stacked host batch, live mask or None, number of real steps). With pad, a run is
  padded to the next power of two (repeating its last batch, live=False) so a bucketed
  epoch compiles at most log2(steps) scan lengths per shape instead of one per run length."""
  runs = []
  for b in batches:
    sig = _shapes(b)
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


def scan_executable(exp: Experiment, state, xs, rng, live=None, *, split=None, lengths=None):
  """The compiled scan for these stacked shapes (cached on exp); (executable, seconds spent
  compiling now, 0 when cached). Compiling ahead of time keeps compile_s separate from the
  measured training time. With `split` (a device-resident split), xs holds stacked row
  plans and `lengths` the run's static time lengths; the executable then takes
  (state, split, xs, rng[, live])."""
  key = (live is None, lengths, _shapes(xs))
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


def scan_epoch(exp: Experiment, state, batches, rng):
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


def scan_epoch_device(exp: Experiment, feed: DeviceFeed, state, plans, rng):
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


def scan_bytes_bound(exp: Experiment) -> int:
  """Upper bound of one epoch's stacked batches in bytes: full-length batches (with the
  method's extra batches) times the steps, twice that with bucketing (runs are padded to a
  power of two)."""
  from mmfuse_jax.data.pipeline import make_batch
  split = exp.dataset.splits["train"]
  rows = np.arange(min(len(split), exp.config.batch_size))
  one = make_batch(split, rows, exp.config.batch_size, 1,
                   more_rows=[rows] * exp.method.extra_batches)
  per = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(one))
  steps = exp.method.steps_per_epoch
  return per * steps * (2 if exp.config.data.num_buckets > 1 else 1)


def resolve_train_loop(exp: Experiment, feed_kind: str | None = None) -> str:
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


def aux_batch_axis(path, ndim: int) -> int | None:
  """The batch axis of one aux array: 0, except for layer-stacked crossmodal arrays (MICA:
  aux['crossmodal'][dir][name] of shape (D, B, ...); MulT's per-layer lists keep the batch
  first); None for a scalar."""
  if ndim == 0:
    return None
  keys = [getattr(k, "key", None) for k in path]
  stacked = (keys and keys[0] == "crossmodal"
             and not any(isinstance(k, jax.tree_util.SequenceKey) for k in path))
  return 1 if stacked and ndim >= 2 else 0


def _valid_rows(path, value, n: int) -> np.ndarray:
  """The first n (valid) samples of one aux array (along `aux_batch_axis`)."""
  value = np.asarray(value)
  axis = aux_batch_axis(path, value.ndim)
  if axis is None:
    return value
  return value[:, :n] if axis == 1 else value[:n]


def aux_shardings(mesh, aux_shapes):
  """A NamedSharding per aux array: split over 'data' along its batch axis, replicated when
  it has none or that axis does not divide over the devices."""
  ndev = mesh.devices.size

  def one(path, x):
    axis = aux_batch_axis(path, len(x.shape))
    if axis is None or x.shape[axis] % ndev:
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, P(*([None] * axis + ["data"])))
  return jax.tree_util.tree_map_with_path(one, aux_shapes)


def analysis_outputs(exp: Experiment, state, batch):
  """(pred, per-sample loss, aux) of a device batch, for plots and analysis. A separate
  compiled function (`Method.analysis_step`, compiled per batch shapes), so that the eval
  step of the training loop never returns the aux; the aux stays split over the batch
  axis on the devices (each holds its own rows' attention maps)."""
  key = _shapes(batch)
  fn = exp.analysis_cache.get(key)
  if fn is None:
    _, _, aux_shapes = jax.eval_shape(exp.method.analysis_step, state, batch)
    fn = jax.jit(exp.method.analysis_step, in_shardings=(exp.state_sharding,
                                                         exp.batch_sharding),
                 out_shardings=(exp.state_sharding, exp.state_sharding,
                                aux_shardings(exp.mesh, aux_shapes)))
    exp.analysis_cache[key] = fn
  return fn(state, batch)


def _to_host(tree):
  """Device arrays to numpy; across processes (batch-sharded aux) gathered first."""
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)


def predict_split(exp: Experiment, state, split: Split, *, with_aux: bool = False):
  """Deterministic predictions and per-sample task losses on every row of a split; with
  with_aux also the model's aux per batch (valid rows only; `analysis_outputs`)."""
  bs = _round_up(exp.config.eval_batch_size, exp.num_devices)
  preds, losses, auxes = [], [], []
  for batch in iterate_batches(split, bs, num_buckets=exp.config.data.num_buckets):
    n = int(batch.weights.sum())
    device_batch = shard_batch(batch, exp.batch_sharding)
    if with_aux:
      pred, loss, aux = analysis_outputs(exp, state, device_batch)
      auxes.append(jax.tree_util.tree_map_with_path(lambda p, a: _valid_rows(p, a, n),
                                                    _to_host(aux)))
    else:
      pred, loss = exp.eval_step(state, device_batch)
    pred, loss = jax.device_get((pred, loss))
    preds.append(np.asarray(pred)[:n]); losses.append(np.asarray(loss)[:n])
  out = (np.concatenate(preds), np.concatenate(losses))
  return out + (auxes,) if with_aux else out


def evaluate_split(exp: Experiment, state, split: Split) -> dict[str, float]:
  preds, losses = predict_split(exp, state, split)
  m = metrics_lib.task_metrics(exp.info.task, preds, split.labels)
  m["loss"] = float(np.mean(losses))
  return m


def selection_rule(config, task: str) -> tuple[str, str]:
  """(metric, 'min'|'max') used to select the checkpoint on validation; select_metric='last'
  keeps the final epoch (for data whose validation split cannot be trusted)."""
  metric, mode = metrics_lib.SELECTION_DEFAULTS[task]
  return config.select_metric or metric, config.select_mode or mode


def _first_batch(exp: Experiment):
  split = exp.dataset.splits["train"]
  rows = np.arange(min(len(split), exp.config.batch_size))
  from mmfuse_jax.data.pipeline import make_batch
  return shard_batch(make_batch(split, rows, exp.config.batch_size,
                                exp.config.data.num_buckets), exp.batch_sharding)


def init_state(exp: Experiment):
  init_rng, _ = jax.random.split(seed_key(exp.config))
  return exp.init_fn(init_rng, _first_batch(exp))


def save_preprocessing(workdir: str, exp: Experiment) -> None:
  """What inference needs besides params: data shapes and train-fitted standardisation."""
  info = dataclasses.asdict(exp.info)
  info["modalities"] = list(info["modalities"])
  stats = exp.data_stats.get("standardize", {})
  _write_json_atomic(os.path.join(workdir, "preprocessing.json"), {
      "data_info": info, "standardize": {m: {k: np.asarray(v).tolist() for k, v in s.items()}
                                         for m, s in stats.items()},
      "context": bool(exp.config.data.context)})


def _write_json_atomic(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=float)
  os.replace(tmp, path)


def train_and_evaluate(config, workdir: str, *, dataset: Dataset | None = None,
                       data_stats: dict | None = None) -> dict:
  """Trains, selects on validation, evaluates the selected checkpoint on test.

  Rerunning with the same workdir resumes from the latest checkpoint; a finished run of the
  same config returns its results.json unchanged, one whose epochs were raised continues;
  a workdir holding a different config is an error (training/workdir.py).
  """
  maybe_initialize_distributed()
  results_path = os.path.join(workdir, "results.json")
  finished = prepare_workdir(workdir, config)
  if finished is not None:
    return finished
  # Everything that can fail on bad input happens before the workdir is touched.
  exp = build_experiment(config, dataset, data_stats)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config_lib.to_json(config))
    save_preprocessing(workdir, exp)
  wall_start = time.perf_counter()
  select_metric, select_mode = selection_rule(config, exp.info.task)
  better = (lambda a, b: a < b) if select_mode == "min" else (lambda a, b: a > b)

  state = init_state(exp)
  ckpt = Checkpoints(workdir)
  loop = {"epoch": 0, "history": [], "best_value": None, "best_epoch": 0,
          "since_best": 0, "plateau_best": None, "plateau_bad": 0, "stopped_early": False,
          "train_time_s": 0.0, "train_steps_timed": 0, "compile_s": 0.0}
  prng_impl = resolve_prng_impl(config.get("prng_impl", "auto"))
  restored = ckpt.restore_latest(abstract_like(state, exp.state_sharding))
  if restored is not None:
    state, loop = restored
    check_resumed_impl(loop.get("prng_impl"), prng_impl, workdir)
    loop = replay_early_stopping(loop, config, workdir)
    log.info("resuming %s after epoch %d", workdir, loop["epoch"])
  loop["prng_impl"] = prng_impl   # recorded with every checkpoint (training/rng.py)
  writers = RunLog(workdir, loop["history"], config)
  train_rng = jax.random.split(seed_key(config))[1]
  train_split, valid_split = exp.dataset.splits["train"], exp.dataset.splits["valid"]
  extra = exp.method.extra_batches   # further batches per step (MDM's critic updates)
  feed = make_feed(config, train_split, exp.batch_sharding, exp.state_sharding, extra)
  train_loop = resolve_train_loop(exp, feed.kind)
  start_epoch = loop["epoch"]

  from tqdm.auto import tqdm
  bar = tqdm(range(loop["epoch"], config.epochs), initial=loop["epoch"], total=config.epochs,
             disable=not config.progress or jax.process_index() != 0, desc=config.model,
             unit="epoch")
  for epoch in bar:
    if loop["stopped_early"]:
      break
    step_metrics = []
    t0 = time.perf_counter()
    first_step_time = None
    if train_loop == "scan":
      # Host batching, transfer and every step are timed; compiling (ahead of time) is not.
      if feed.kind == "device":
        state, step_metrics, compile_t = scan_epoch_device(exp, feed, state, feed.plans(epoch),
                                                             train_rng)
      else:
        state, step_metrics, compile_t = scan_epoch(exp, state, list(feed.host_batches(epoch)),
                                                    train_rng)
      t_train = time.perf_counter() - t0 - compile_t
      n_steps = len(step_metrics)
      if epoch == start_epoch and not loop["compile_s"]:
        loop["compile_s"] = compile_t
    else:
      for batch in feed.epoch(epoch):
        state, m = exp.train_step(state, batch, train_rng)
        step_metrics.append(m)
        if first_step_time is None and epoch == start_epoch and not loop["compile_s"]:
          jax.block_until_ready(state.step)
          first_step_time = time.perf_counter() - t0
      step_metrics = jax.device_get(step_metrics)
      t_train = time.perf_counter() - t0
      n_steps = len(step_metrics)
      if first_step_time is not None:
        loop["compile_s"] = first_step_time
        t_train -= first_step_time; n_steps -= 1
    loop["train_time_s"] += t_train
    loop["train_steps_timed"] += n_steps
    train_m = {k: float(np.mean([s[k] for s in step_metrics])) for k in step_metrics[0]}
    state = exp.method.end_of_epoch(state, epoch)
    valid_m = evaluate_split(exp, state, valid_split)
    if select_metric == "last":  # fixed-epoch protocol: keep the final epoch
      value, improved = float(epoch + 1), True
    else:
      value = valid_m[select_metric]
      improved = loop["best_value"] is None or better(value, loop["best_value"])
    if improved:
      loop.update(best_value=value, best_epoch=epoch + 1, since_best=0)
    else:
      loop["since_best"] += 1
    # Plateau schedule on the validation loss (MulT: ReduceLROnPlateau).
    lr_scale = epoch_lr_scale = float(state.lr_scale)
    if config.optim.schedule == "plateau":
      if loop["plateau_best"] is None or valid_m["loss"] < loop["plateau_best"]:
        loop["plateau_best"], loop["plateau_bad"] = valid_m["loss"], 0
      else:
        loop["plateau_bad"] += 1
        if loop["plateau_bad"] > config.optim.plateau_patience:
          lr_scale *= config.optim.plateau_factor
          loop["plateau_bad"] = 0
          state = state.replace(lr_scale=jax.device_put(np.float32(lr_scale),
                                                        exp.state_sharding))
    row = {"epoch": epoch + 1, "time": now_iso(), "epoch_s": time.perf_counter() - t0,
           "lr": learning_rate(config.optim, exp.method.steps_per_epoch,
                               int(jax.device_get(state.step)) - 1, epoch_lr_scale),
           "train": train_m, "valid": valid_m, "lr_scale": lr_scale, "selected": improved}
    loop["history"].append(row)
    loop["epoch"] = epoch + 1
    if config.patience and loop["since_best"] >= config.patience:
      loop["stopped_early"] = True
    if improved:
      ckpt.save_best(epoch + 1, state, {"epoch": epoch + 1, "valid": valid_m})
    ckpt.save_latest(epoch + 1, state, loop)
    writers.write(row)
    bar.set_postfix({f"valid_{select_metric}": f"{value:.4f}",
                     "best_epoch": loop["best_epoch"]})
  bar.close()

  best = ckpt.restore_best(abstract_like(state, exp.state_sharding))
  ckpt.close()
  best_state, best_meta = best
  valid_final = evaluate_split(exp, best_state, valid_split)
  test_final = evaluate_split(exp, best_state, exp.dataset.splits["test"])
  baseline_name, baseline_test = metrics_lib.constant_baseline(
      exp.info.task, train_split.labels, exp.dataset.splits["test"].labels)
  steps = loop["train_steps_timed"]
  results = {
      "model": config.model, "dataset": config.dataset, "seed": config.seed,
      "selected_epoch": best_meta["epoch"], "select_metric": select_metric,
      "select_mode": select_mode, "epochs_run": loop["epoch"],
      "stopped_early": loop["stopped_early"], "valid": valid_final, "test": test_final,
      "baseline": {"predictor": baseline_name, "test": baseline_test},
      "num_devices": exp.num_devices, "wall_time_s": time.perf_counter() - wall_start,
      "compile_s": loop["compile_s"], "train_loop": train_loop, "input_feed": feed.kind,
      "prng_impl": prng_impl,
      "train_steps_per_s": steps / loop["train_time_s"] if loop["train_time_s"] > 0 else None,
      "config": config.to_dict(),
      "data": {"source": exp.dataset.source,
               "sizes": {k: len(v) for k, v in exp.dataset.splits.items()},
               "nan_replaced": exp.data_stats.get("nan_replaced", {})},
  }
  if jax.process_index() == 0:
    _write_json_atomic(results_path, results)
  writers.finish(results)
  return results


def train_seeds(config, workdir: str, seeds: list[int], **kwargs) -> dict:
  """Runs one seed per sub-workdir (seed_<s>) and writes summary.json with mean +- std of
  the selected checkpoints' validation and test metrics."""
  runs = []
  for s in seeds:
    c = config.copy_and_resolve_references()
    c.seed = s
    runs.append(train_and_evaluate(c, os.path.join(workdir, f"seed_{s}"), **kwargs))
  summary = summarize(runs)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    _write_json_atomic(os.path.join(workdir, "summary.json"), summary)
  return summary


def summarize(runs: list[dict]) -> dict:
  out = {"seeds": [r["seed"] for r in runs], "model": runs[0]["model"],
         "dataset": runs[0]["dataset"]}
  for split in ("valid", "test"):
    keys = runs[0][split].keys()
    out[split] = {k: {"mean": float(np.mean([r[split][k] for r in runs])),
                      "std": float(np.std([r[split][k] for r in runs])),
                      "values": [r[split][k] for r in runs]} for k in keys}
  return out
