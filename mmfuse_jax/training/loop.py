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

The parts: experiment.py builds the experiment (data, model, method, compiled steps),
scan.py runs compiled epochs, evaluation.py evaluates a split, results.py writes the run's
preprocessing.json, results.json and summary.json.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from mmfuse_jax import config as config_lib
from mmfuse_jax.data.core import Dataset
from mmfuse_jax.training import metrics as metrics_lib
from mmfuse_jax.training.checkpoint import Checkpoints, abstract_like
from mmfuse_jax.training.evaluation import evaluate_split
from mmfuse_jax.training.experiment import build_experiment, init_state
from mmfuse_jax.training.feeding import make_feed
from mmfuse_jax.training.mesh import maybe_initialize_distributed
from mmfuse_jax.training.results import save_preprocessing, summarize, write_json_atomic
from mmfuse_jax.training.rng import check_resumed_impl, resolve_prng_impl, seed_key
from mmfuse_jax.training.run_log import RunLog, learning_rate, now_iso
from mmfuse_jax.training.scan import resolve_train_loop, scan_epoch, scan_epoch_device
from mmfuse_jax.training.workdir import prepare_workdir, replay_early_stopping

log = logging.getLogger(__name__)


def selection_rule(config, task: str) -> tuple[str, str]:
  """(metric, 'min'|'max') used to select the checkpoint on validation; select_metric='last'
  keeps the final epoch (for data whose validation split cannot be trusted)."""
  metric, mode = metrics_lib.SELECTION_DEFAULTS[task]
  return config.select_metric or metric, config.select_mode or mode


def train_and_evaluate(config, workdir: str, *, dataset: Dataset | None = None,
                       data_stats: dict | None = None,
                       epoch_observer: Callable[[int, Any, Any], None] | None = None) -> dict:
  """Trains, selects on validation, evaluates the selected checkpoint on test.

  Rerunning with the same workdir resumes from the latest checkpoint; a finished run of the
  same config returns its results.json unchanged, one whose epochs were raised continues;
  a workdir holding a different config is an error (training/workdir.py).

  epoch_observer(epoch, experiment, state), if given, is called after each epoch's
  validation with the 1-based epoch number. It is for analysis only (a reproduction
  script's per-epoch test trajectory, printed as a labelled upper bound): what it returns
  is ignored, and it runs after this epoch's selection decision, so it cannot influence
  selection, the schedule or the next epoch.
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
    if epoch_observer is not None:
      epoch_observer(epoch + 1, exp, state)
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
    write_json_atomic(results_path, results)
  writers.finish(results)
  return results


def train_seeds(config, workdir: str, seeds: list[int], *, epoch_observer_for=None,
                **kwargs) -> dict:
  """Runs one seed per sub-workdir (seed_<s>) and writes summary.json with mean +- std of
  the selected checkpoints' validation and test metrics. `epoch_observer_for(seed)`, if
  given, makes each seed's `epoch_observer` (analysis only, as in train_and_evaluate)."""
  runs = []
  for s in seeds:
    c = config.copy_and_resolve_references()
    c.seed = s
    observer = epoch_observer_for(s) if epoch_observer_for else None
    runs.append(train_and_evaluate(c, os.path.join(workdir, f"seed_{s}"),
                                   epoch_observer=observer, **kwargs))
  summary = summarize(runs)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    write_json_atomic(os.path.join(workdir, "summary.json"), summary)
  return summary
