"""One process of the multi-host test (tests/test_multihost.py), started as a subprocess:

    python -m tests.multihost_worker PORT PROCESS_ID NUM_PROCESSES OUT.npz

Joins a localhost coordinator with jax.distributed, trains the shared tiny run (`setup`)
for one epoch with each input feed and writes, per feed, the rows this process fed at each
step, the step metrics and the final parameters, plus the validation metrics.
"""

import sys

import jax
import numpy as np

from mmfuse_jax.training import feeding
from mmfuse_jax.training.evaluation import evaluate_split
from mmfuse_jax.training.experiment import build_experiment, init_state
from tests.helpers import tiny_config, tiny_synthetic
from tests.test_baselines import TINY_NET


def setup(num_devices: int):
  """(experiment, initial state) of the tiny run both the workers and the 1-process
  reference train: LMF on two modalities, global batch 8, 20 rows (3 steps, 4 filler)."""
  ds = tiny_synthetic(7, n_train=20, n_valid=10, n_test=4, modalities=("text", "audio"))
  c = tiny_config("lmf", batch_size=8, eval_batch_size=8, num_devices=num_devices,
                  **{**{f"net.{k}": v for k, v in TINY_NET["lmf"].items()},
                     "data.modalities": "text,audio", "optim.lr": 1e-2})
  exp = build_experiment(c, ds)
  return exp, init_state(exp)


def run_epoch(exp, state, kind: str):
  """One epoch with input feed `kind`: (state, rows fed here per step, metrics per step)."""
  split = exp.dataset.splits["train"]
  if kind == "device":
    feed = feeding.DeviceFeed(exp.config, split, exp.batch_sharding, exp.state_sharding)
    plans = feed.plans(0)
    rows = [p.rows[feed.local][p.valid[feed.local]] for p in plans]
    batches = [feed.batch(p) for p in plans]
  else:
    feed = feeding.HostFeed(exp.config, split, exp.batch_sharding)
    rows = [b.index[b.index >= 0] for b in feed.host_batches(0)]
    batches = list(feed.epoch(0))
  rng = jax.random.PRNGKey(5)
  metrics = []
  for b in batches:
    state, m = exp.train_step(state, b, rng)
    metrics.append(jax.device_get(m))
  return state, rows, metrics


def main(port: int, process_id: int, num_processes: int, out: str) -> None:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"localhost:{port}", num_processes, process_id)
  exp, state0 = setup(0)
  arrays = {"local_devices": np.array(jax.local_device_count()),
            "global_devices": np.array(jax.device_count())}
  for kind in ("device", "host"):
    state = jax.tree_util.tree_map(lambda x: x.copy(), state0)
    state, rows, metrics = run_epoch(exp, state, kind)
    for i, r in enumerate(rows):
      arrays[f"{kind}/rows/{i}"] = np.asarray(r)
    arrays[f"{kind}/loss"] = np.array([m["loss"] for m in metrics])
    leaves = jax.tree_util.tree_leaves(jax.device_get(state.params))
    arrays[f"{kind}/params"] = np.concatenate([np.ravel(x) for x in leaves])
  valid = evaluate_split(exp, state, exp.dataset.splits["valid"])
  arrays["valid_mae"] = np.array(valid["mae"])
  np.savez(out, **arrays)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
