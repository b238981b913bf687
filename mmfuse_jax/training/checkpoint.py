"""Orbax checkpoints: `latest` (resume) and `best` (validation-selected), each keeping one.

Each checkpoint holds the TrainState and a JSON `meta` with the loop's state (epoch,
history, best value, plateau counters), so a resumed run continues bit-for-bit.
Orbax writes to a temporary directory and renames it: a killed run never leaves a
half-written checkpoint behind.

The TrainState is written packed: its leaves (params, optimizer moments, method state: a
thousand arrays for MCER) are concatenated into one flat array per dtype, with a JSON
layout (each leaf's tree path, dtype, shape and offset). Orbax spends a few milliseconds
per array whatever its size, so one array per dtype instead of one per leaf makes a save
faster: 34x for MCER's 1219 arrays, 11x for MulT's 517 (`scripts/bench_checkpoint.py`), and
the loop saves up to twice per epoch. The state is replicated over the mesh, so every
process holds all of it and packs the same arrays.
Checkpoints written unpacked by earlier versions (an item `state`) are still restored.

Paths go through etils.epath, as in Orbax: a workdir may be a local directory or a
cloud URL such as gs://bucket/run (with the matching file-system package installed).
On several hosts every process constructs `Checkpoints` on the SAME directory (shared file
system or bucket) and calls save/restore together: Orbax writes each process's shards and
process 0 commits the checkpoint.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from mmfuse_jax.errors import ConfigError


def checkpoint_dir(workdir: str, *names: str) -> epath.Path:
  """`workdir/names...` as an epath.Path: local paths made absolute (Orbax wants them so),
  URLs such as gs://bucket/run kept as they are."""
  path = epath.Path(workdir)
  if "://" not in str(workdir):
    path = epath.Path(os.path.abspath(workdir))
  return path.joinpath(*names)


def _host_value(x) -> np.ndarray:
  """The full value of a replicated array as numpy (typed PRNG keys as their key data)."""
  if isinstance(x, jax.Array):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    return np.asarray(x.addressable_shards[0].data)
  return np.asarray(x)


def pack_state(state) -> tuple[dict[str, np.ndarray], list[dict]]:
  """(one flat array per dtype, layout): every leaf of `state` raveled into the array of
  its dtype, in tree order. layout[i] = {path, dtype, shape, offset[, key_impl]} of leaf i."""
  chunks: dict[str, list[np.ndarray]] = {}
  sizes: dict[str, int] = {}
  layout = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    value = _host_value(leaf)
    name = value.dtype.name
    entry = {"path": jax.tree_util.keystr(path), "keys": [_key_name(k) for k in path],
             "dtype": name, "shape": list(value.shape), "offset": sizes.get(name, 0)}
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      entry["key_impl"] = str(jax.random.key_impl(leaf))
    chunks.setdefault(name, []).append(value.reshape(-1))
    sizes[name] = entry["offset"] + value.size
    layout.append(entry)
  arrays = {name: np.concatenate(parts) for name, parts in chunks.items()}
  return arrays, layout


def _leaf(arrays: dict[str, np.ndarray], entry: dict) -> np.ndarray:
  size = int(np.prod(entry["shape"], dtype=np.int64))
  flat = arrays[entry["dtype"]][entry["offset"]:entry["offset"] + size]
  return flat.reshape(entry["shape"])


def unpack_state(arrays: dict[str, np.ndarray], layout: list[dict], abstract_state,
                 where: str = "checkpoint"):
  """Inverse of `pack_state` onto the tree of `abstract_state` (ShapeDtypeStructs with
  shardings, `abstract_like`): each leaf placed with its sharding. A checkpoint of another
  model or config (different paths, shapes or dtypes) is an error naming the first leaf
  that differs."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_state)
  if len(leaves) != len(layout):
    raise ConfigError(f"{where}: holds {len(layout)} arrays, the model and config of this "
                      f"run have {len(leaves)}: it was written by a different model or config")
  out = []
  for (path, spec), entry in zip(leaves, layout):
    name = jax.tree_util.keystr(path)
    value = _leaf(arrays, entry)
    if "key_impl" in entry:
      value = jax.random.wrap_key_data(value, impl=entry["key_impl"])
    if entry["path"] != name or tuple(value.shape) != tuple(spec.shape) or \
        value.dtype != spec.dtype:
      raise ConfigError(f"{where}: array {entry['path']} has shape {tuple(entry['shape'])} "
                        f"{entry['dtype']}; this run expects {name} with shape "
                        f"{tuple(spec.shape)} {spec.dtype}: it was written by a different "
                        f"model or config")
    sharding = getattr(spec, "sharding", None)
    if sharding is None:
      out.append(jax.numpy.asarray(value))
    else:
      out.append(jax.make_array_from_callback(value.shape, sharding,
                                              lambda index, v=value: v[index]))
  return jax.tree_util.tree_unflatten(treedef, out)


def unpack_nested(arrays: dict[str, np.ndarray], layout: list[dict]) -> dict:
  """Inverse of `pack_state` without a template: nested dicts keyed by the path entries
  (attribute and dict names, sequence indices), e.g. out['params']['proj_text']['kernel']."""
  root: dict = {}
  for entry in layout:
    keys = entry["keys"]
    node = root
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = _leaf(arrays, entry)
  return root


def _key_name(key):
  """A tree path entry as JSON: a dict key or attribute name, or a sequence index."""
  for field in ("key", "name", "idx"):
    if hasattr(key, field):
      return getattr(key, field)
  raise ValueError(f"unexpected tree path entry {key!r}")


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
    arrays, layout = pack_state(state)
    manager.save(step, args=ocp.args.Composite(packed=ocp.args.StandardSave(arrays),
                                               layout=ocp.args.JsonSave(layout),
                                               meta=ocp.args.JsonSave(meta)))
    manager.wait_until_finished()

  def save_latest(self, step: int, state, meta: dict) -> None:
    self._save(self.latest, step, state, meta)

  def save_best(self, step: int, state, meta: dict) -> None:
    self._save(self.best, step, state, meta)

  @staticmethod
  def _is_packed(manager, step: int) -> bool:
    return (manager.directory / str(step) / "packed").exists()

  @classmethod
  def _read(cls, manager, abstract_state=None):
    """(state, meta) of the manager's newest step, None if it has none. With a template
    the state comes back as `abstract_state` describes it; without one (abstract_state
    None) as nested dicts of numpy arrays."""
    step = manager.latest_step()
    if step is None:
      return None
    if not cls._is_packed(manager, step):  # written unpacked (earlier versions)
      out = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
      return out.state, out.meta
    out = manager.restore(step, args=ocp.args.Composite(
        packed=ocp.args.StandardRestore(), layout=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    if abstract_state is None:
      return unpack_nested(out.packed, out.layout), out.meta
    where = str(manager.directory / str(step))
    return unpack_state(out.packed, out.layout, abstract_state, where), out.meta

  def restore_latest(self, abstract_state):
    return self._read(self.latest, abstract_state)

  def restore_best(self, abstract_state):
    return self._read(self.best, abstract_state)

  def restore_best_untyped(self):
    """(state as nested dicts and numpy arrays, meta) of the best checkpoint, read without
    a template (export: no experiment to build one); None if there is none."""
    return self._read(self.best)

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def abstract_like(state, sharding):
  """ShapeDtypeStructs of `state` placed with `sharding` (for restore)."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
