"""Two processes on localhost (jax.distributed, CPU, one device each) train like one
process with two devices: each process feeds only its own rows of every global batch."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from mmfuse_jax.training.evaluation import evaluate_split
from tests.multihost_worker import run_epoch, setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_feed_disjoint_rows_and_match_one_process(tmp_path):
  if len(jax.devices()) < 2:
    pytest.skip("the 1-process reference needs 2 devices (XLA_FLAGS device count)")
  port = _free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
         "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  outs = [str(tmp_path / f"p{i}.npz") for i in range(2)]
  procs = [subprocess.Popen([sys.executable, "-m", "tests.multihost_worker", str(port), str(i),
                             "2", outs[i]], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  # Meanwhile the reference: one process, two devices, the same global batches.
  exp, state0 = setup(2)
  ref = {}
  for kind in ("device", "host"):
    state = jax.tree_util.tree_map(lambda x: x.copy(), state0)
    state, rows, metrics = run_epoch(exp, state, kind)
    ref[kind] = (rows, np.array([m["loss"] for m in metrics]),
                 np.concatenate([np.ravel(x) for x in
                                 jax.tree_util.tree_leaves(jax.device_get(state.params))]))
  try:
    logs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  got = [np.load(o) for o in outs]
  assert [int(g["global_devices"]) for g in got] == [2, 2]
  assert [int(g["local_devices"]) for g in got] == [1, 1]
  for kind in ("device", "host"):
    ref_rows, ref_loss, ref_params = ref[kind]
    for step, rows in enumerate(ref_rows):
      mine = [g[f"{kind}/rows/{step}"] for g in got]
      both = np.concatenate(mine)
      assert len(both) == len(set(both.tolist())), (kind, step, mine)   # no row twice
      assert sorted(both.tolist()) == sorted(rows.tolist())             # the global batch
      assert all(len(m) <= exp.config.batch_size // 2 for m in mine)    # only its half
    # Parameters identical across processes, and the same as the 1-process run.
    np.testing.assert_array_equal(got[0][f"{kind}/params"], got[1][f"{kind}/params"])
    for g in got:
      np.testing.assert_allclose(g[f"{kind}/loss"], ref_loss, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(g[f"{kind}/params"], ref_params, rtol=1e-5, atol=1e-6)
  # Evaluation: each process feeds its rows of every eval batch; metrics agree too.
  valid = evaluate_split(exp, state, exp.dataset.splits["valid"])
  for g in got:
    assert float(g["valid_mae"]) == pytest.approx(valid["mae"], rel=1e-5)
