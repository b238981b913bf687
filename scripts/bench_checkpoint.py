"""Checkpoint save time: the TrainState packed (one array per dtype, how the training loop
saves it) against the same state saved leaf by leaf (one Orbax array per leaf, how it was
saved before), side by side in one process.

    python scripts/bench_checkpoint.py [--models=mcer,mult] [--repeats=5]

For each model, the state of its default config (synthetic preset, default data sizes) is
saved `--repeats` times each way into a fresh temporary directory through the same Orbax
CheckpointManager settings; prints the median seconds per save, the ratio, the number of
leaves and bytes. The loop saves up to two checkpoints per epoch (latest and, when the
validation metric improves, best).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from mmfuse_jax import config as config_lib
from mmfuse_jax.data import make_synthetic, shard_batch
from mmfuse_jax.data.pipeline import make_batch
from mmfuse_jax.training.checkpoint import Checkpoints, checkpoint_dir
from mmfuse_jax.training.experiment import build_experiment


def default_state(model: str):
  """The initial TrainState of `model`'s default config on sequence synthetic data of the
  preset's training size (MCER's label memory grows with it)."""
  c = config_lib.get_config(model)
  c.progress = False
  ds = make_synthetic(0, sizes={"train": c.data.synthetic_train, "valid": 32, "test": 32})
  exp = build_experiment(c, ds)
  rows = np.arange(c.batch_size)
  more = [np.roll(rows, k + 1) for k in range(exp.method.extra_batches)]
  batch = shard_batch(make_batch(ds.splits["train"], rows, c.batch_size, more_rows=more),
                      exp.batch_sharding)
  return exp.init_fn(jax.random.PRNGKey(0), batch)


def time_saves(save, repeats: int) -> float:
  times = []
  for step in range(1, repeats + 1):
    t = time.perf_counter()
    save(step)
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def bench(model: str, repeats: int) -> dict:
  state = default_state(model)
  leaves = jax.tree_util.tree_leaves(state)
  with tempfile.TemporaryDirectory() as root:
    packed = Checkpoints(root)
    packed_s = time_saves(lambda step: packed.save_latest(step, state, {"epoch": step}),
                          repeats)
    packed.close()
    manager = ocp.CheckpointManager(
        checkpoint_dir(root, "leafwise"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                             enable_async_checkpointing=False))

    def save_leafwise(step):
      manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave({"epoch": step})))
      manager.wait_until_finished()
    leafwise_s = time_saves(save_leafwise, repeats)
    manager.close()
  return {"model": model, "leaves": len(leaves), "bytes": sum(x.nbytes for x in leaves),
          "leafwise_s": leafwise_s, "packed_s": packed_s, "ratio": leafwise_s / packed_s}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="mcer,mult")
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args(argv)
  print("| model | leaves | MiB | leaf by leaf | packed | ratio |")
  print("|---|---|---|---|---|---|")
  for model in args.models.split(","):
    r = bench(model.strip(), args.repeats)
    print(f"| `{r['model']}` | {r['leaves']} | {r['bytes'] / 2**20:.1f} | "
          f"{r['leafwise_s']:.2f} s | {r['packed_s']:.2f} s | {r['ratio']:.1f}x |", flush=True)


if __name__ == "__main__":
  main()
