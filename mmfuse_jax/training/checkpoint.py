"""Orbax checkpoints: `latest` (resume) and `best` (validation-selected), each keeping one.

Each checkpoint holds the TrainState and a JSON `meta` with the loop's state (epoch,
history, best value, plateau counters), so a resumed run continues bit-for-bit.
Orbax writes to a temporary directory and renames it: a killed run never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def _manager(directory: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                           enable_async_checkpointing=False))


class Checkpoints:
  def __init__(self, workdir: str):
    root = os.path.join(workdir, "checkpoints")
    self.latest = _manager(os.path.join(root, "latest"))
    self.best = _manager(os.path.join(root, "best"))

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
