"""train_loop='scan' (an epoch as one compiled lax.scan) and precision='bf16'."""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.data.pipeline import make_batch
from mmfuse_jax.training import checkpoint as checkpoint_lib
from mmfuse_jax.training import feeding
from mmfuse_jax.training import scan as scan_lib
from mmfuse_jax.training.experiment import build_experiment, init_state
from mmfuse_jax.training.loop import train_and_evaluate
from tests.helpers import shared_compilation_cache, tiny_config, tiny_synthetic
from tests.test_baselines import TINY_NET

TWO = {"data.modalities": "text,audio"}
LMF = {**{f"net.{k}": v for k, v in TINY_NET["lmf"].items()}, **TWO, "optim.lr": 1e-2}
EF = {**{f"net.{k}": v for k, v in TINY_NET["ef_lstm"].items()}, **TWO, "net.num_layers": 1}
_SAVE_LATEST = checkpoint_lib.Checkpoints.save_latest
_SCAN_EXECUTABLE = scan_lib.scan_executable


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """The step and scan runs share their init and eval programs: compile them once."""
  with shared_compilation_cache(tmp_path_factory.mktemp("xla_cache")):
    yield


def _data(seed=0, n_train=80):
  return tiny_synthetic(seed, n_train=n_train, n_valid=32, n_test=32,
                        modalities=("text", "audio"))


def _run(tmp_path, monkeypatch, model, ds, train_loop, **overrides):
  """Trains; returns (results, metrics.jsonl rows, final params, scan compiles+calls)."""
  saved, calls = {}, []

  def capture(self, step, state, meta):
    saved["params"] = jax.device_get(state.params)
    saved["extras"] = jax.device_get(state.extras)
    _SAVE_LATEST(self, step, state, meta)

  def count(exp, *args, **kwargs):
    xs = args[1]   # stacked batches, or stacked row plans with a device-resident split
    calls.append((xs["rows"] if isinstance(xs, dict) else xs.weights).shape)  # (steps, batch)
    return _SCAN_EXECUTABLE(exp, *args, **kwargs)

  monkeypatch.setattr(checkpoint_lib.Checkpoints, "save_latest", capture)
  monkeypatch.setattr(scan_lib, "scan_executable", count)
  c = tiny_config(model, train_loop=train_loop, **overrides)
  work = str(tmp_path / train_loop)
  r = train_and_evaluate(c, work, dataset=ds)
  rows = [json.loads(l) for l in open(os.path.join(work, "metrics.jsonl"))]
  return r, rows, saved, calls


def _assert_same(a, b, rtol=1e-5, atol=1e-6):
  """Two (results, rows, saved) runs agree: history metrics, final params and extras."""
  (ra, rows_a, sa), (rb, rows_b, sb) = a, b
  assert len(rows_a) == len(rows_b)
  for x, y in zip(rows_a, rows_b):
    for split in ("train", "valid"):
      assert x[split].keys() == y[split].keys()
      for k in x[split]:
        np.testing.assert_allclose(y[split][k], x[split][k], rtol=rtol, atol=atol,
                                   err_msg=f"epoch {x['epoch']} {split} {k}")
  jax.tree_util.tree_map(
      lambda p, q: np.testing.assert_allclose(q, p, rtol=rtol, atol=atol), sa, sb)
  assert ra["selected_epoch"] == rb["selected_epoch"]
  for k, v in ra["test"].items():
    assert rb["test"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k


def test_scan_epoch_matches_step_loop(tmp_path, monkeypatch):
  ds = _data(0)
  step = _run(tmp_path, monkeypatch, "lmf", ds, "step", **LMF)
  scan = _run(tmp_path, monkeypatch, "lmf", ds, "scan", **LMF)
  assert step[0]["train_loop"] == "step" and not step[3]
  assert scan[0]["train_loop"] == "scan"
  assert scan[3] == [(3, 32), (3, 32)]  # one scan of all 3 steps per epoch
  _assert_same(step[:3], scan[:3])
  assert scan[0]["compile_s"] > 0 and scan[0]["train_steps_per_s"] > 0


def test_scan_with_buckets_runs_in_step_order():
  # Rows 0-23 use only the first half of each sequence, rows 24-31 all of it: batches of
  # short rows fall in the short bucket. Epoch S S S L S: runs of 3 (padded to 4), 1 and 1.
  ds = _data(1, n_train=32)
  for m in ("text", "audio"):
    mask = ds.splits["train"].masks[m]
    mask[:24, mask.shape[1] // 2:] = False
    mask[24:, -1] = True
  c = tiny_config("lmf", **{**LMF, "data.num_buckets": 2, "batch_size": 4})
  exp = build_experiment(c, ds)
  split = ds.splits["train"]
  rows = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [24, 25, 0, 1], [12, 13, 14, 15]]
  batches = [make_batch(split, np.array(r), 4, 2) for r in rows]
  shapes = [b.features["text"].shape[1] for b in batches]
  assert shapes[0] == shapes[1] == shapes[2] == shapes[4] < shapes[3]
  runs = [(live is None or len(live), n) for _, live, n in scan_lib.stack_runs(batches, True)]
  assert runs == [(4, 3), (1, 1), (1, 1)]
  rng = jax.random.PRNGKey(1)
  state = init_state(exp)
  step_state, step_m = jax.tree_util.tree_map(jnp.copy, state), []
  for b in batches:
    step_state, m = exp.train_step(step_state, b, rng)
    step_m.append(jax.device_get(m))
  host_state = jax.tree_util.tree_map(jnp.copy, state)   # the scans donate their state
  scan_state, scan_m, compile_s = scan_lib.scan_epoch(exp, host_state, batches, rng)
  assert compile_s > 0 and int(scan_state.step) == 5
  assert len(scan_m) == 5
  for x, y in zip(step_m, scan_m):
    for k in x:
      np.testing.assert_allclose(y[k], x[k], rtol=1e-5, atol=1e-6, err_msg=k)
  jax.tree_util.tree_map(lambda p, q: np.testing.assert_allclose(q, p, rtol=1e-5, atol=1e-6),
                         jax.device_get(step_state.params), jax.device_get(scan_state.params))
  # The first four batches gathered on device inside the scan (runs S S S + pad, L).
  feed = feeding.DeviceFeed(c, split, exp.batch_sharding, exp.state_sharding)
  plans = [feed.plan(np.array(r)) for r in rows[:4]]
  dev_state, dev_m, _ = scan_lib.scan_epoch_device(exp, feed, state, plans, rng)
  assert int(dev_state.step) == 4 and len(dev_m) == 4
  for x, y in zip(step_m, dev_m):
    for k in x:
      np.testing.assert_allclose(y[k], x[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.slow
def test_scan_with_method_state_mdm(tmp_path, monkeypatch):
  ds = _data(2, n_train=64)
  kw = {**EF, "net.mdm": "kl", "net.mdm_unroll": 2, "net.dropout": 0.0}
  step = _run(tmp_path, monkeypatch, "ef_lstm", ds, "step", **kw)
  scan = _run(tmp_path, monkeypatch, "ef_lstm", ds, "scan", **kw)
  assert "mdm_critic_estimate" in scan[1][0]["train"]
  _assert_same(step[:3], scan[:3], rtol=1e-4, atol=1e-5)
  # Each step also receives the next mdm_unroll batches of its epoch (critic updates); they
  # depend only on (seed, epoch), so a run resumed after epoch 1 is the same run.
  calls = []

  def crash_after_one(self, step, state, meta):
    _SAVE_LATEST(self, step, state, meta)
    calls.append(step)
    if len(calls) == 1:
      raise KeyboardInterrupt("simulated kill")

  monkeypatch.setattr(checkpoint_lib.Checkpoints, "save_latest", crash_after_one)
  c = tiny_config("ef_lstm", train_loop="scan", **kw)
  work = str(tmp_path / "resumed")
  with pytest.raises(KeyboardInterrupt):
    train_and_evaluate(c, work, dataset=ds)
  resumed = train_and_evaluate(c, work, dataset=ds)
  for k, v in scan[0]["test"].items():
    assert resumed["test"][k] == pytest.approx(v, rel=1e-6, abs=1e-7), k


def test_scan_falls_back_to_steps_over_the_memory_budget(caplog):
  c = tiny_config("lmf", train_loop="scan", scan_max_bytes=1000, **LMF)
  exp = build_experiment(c, _data(0))
  with caplog.at_level(logging.WARNING, logger=scan_lib.__name__):
    assert scan_lib.resolve_train_loop(exp) == "step"
  assert "scan_max_bytes" in caplog.text
  c.scan_max_bytes = 2 ** 31
  assert scan_lib.resolve_train_loop(build_experiment(c, _data(0))) == "scan"


def test_bf16_trains_with_float32_params():
  ds = _data(3)
  batch = make_batch(ds.splits["train"], np.arange(32), 32)
  exps = {p: build_experiment(tiny_config("lmf", precision=p, **LMF), ds)
          for p in ("float32", "bf16")}
  state = init_state(exps["bf16"])
  # The same float32 params give nearly the same predictions in both precisions.
  p32, _ = exps["float32"].eval_step(state, batch)
  p16, loss16 = exps["bf16"].eval_step(state, batch)
  assert p16.dtype == jnp.float32 and loss16.dtype == jnp.float32
  np.testing.assert_allclose(p16, p32, rtol=0.05, atol=0.05)
  losses = []
  for _ in range(12):
    state, m = exps["bf16"].train_step(state, batch, jax.random.PRNGKey(0))
    losses.append(float(m["loss"]))
  assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
  for leaf in jax.tree_util.tree_leaves((state.params, state.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
