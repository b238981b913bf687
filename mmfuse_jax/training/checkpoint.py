"""Orbax checkpoints: `latest` (resume) and `best` (validation-selected), each keeping one.

Each checkpoint holds the TrainState and a JSON `meta` with the loop's state (epoch,
history, best value, plateau counters), so a resumed run continues bit-for-bit.
Orbax writes to a temporary directory and renames it: a killed run never leaves a
half-written checkpoint behind.

Paths go through etils.epath, as in Orbax: a workdir may be a local directory or a
cloud URL such as gs://bucket/run (with the matching file-system package installed).
On several hosts every process constructs `Checkpoints` on the SAME directory (shared file
system or bucket) and calls save/restore together: Orbax writes each process's shards and
process 0 commits the checkpoint.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from etils import epath


def checkpoint_dir(workdir: str, *names: str) -> epath.Path:
  """`workdir/names...` as an epath.Path: local paths made absolute (Orbax wants them so),
  URLs such as gs://bucket/run kept as they are."""
  path = epath.Path(workdir)
  if "://" not in str(workdir):
    path = epath.Path(os.path.abspath(workdir))
  return path.joinpath(*names)


def _manager(directory: epath.Path) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                           enable_async_checkpointing=False))


class Checkpoints:
  def __init__(self, workdir: str):
    self.latest = _manager(checkpoint_dir(workdir, "checkpoints", "latest"))
    self.best = _manager(checkpoint_dir(workdir, "checkpoints", "best"))

  @staticmethod
  def _save(manager, step: int, state, meta: dict) -> None:
    if step in manager.all_steps():
      return  # same step re-reached after a resume: deterministic, already saved
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)))
    manager.wait_until_finished()

  def save_latest(self, step: int, state, meta: dict) -> None:
    self._save(self.latest, step, state, meta)

  def save_best(self, step: int, state, meta: dict) -> None:
    self._save(self.best, step, state, meta)

  @staticmethod
  def _restore(manager, abstract_state):
    step = manager.latest_step()
    if step is None:
      return None
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return out.state, out.meta

  def restore_latest(self, abstract_state):
    return self._restore(self.latest, abstract_state)

  def restore_best(self, abstract_state):
    return self._restore(self.best, abstract_state)

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def abstract_like(state, sharding):
  """ShapeDtypeStructs of `state` placed with `sharding` (for restore)."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
