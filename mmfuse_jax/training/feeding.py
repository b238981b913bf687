"""Input feeding for the training loop: what crosses from host to device each step.

Two feeds give the same batches, in the same order, as `data.pipeline.iterate_batches`:

- `DeviceFeed` ('device'): the standardised train split is placed on the mesh once
  (replicated); an epoch ships only its row permutation (a few KiB of int32) and each batch
  is gathered on device (`gather_batch`). With train_loop='scan' the gather runs inside the
  compiled epoch, so nothing is stacked on the host.
- `HostFeed` ('host'): batches are assembled on the host with numpy, as before, but in a
  background thread that keeps two batches ahead on the device, so the step loop does not
  wait on batch assembly or on the transfer. For splits larger than the device budget.

On several hosts each process builds and feeds only its own rows of every global batch
(`pipeline.process_rows`): no row is fed twice and no process ships the whole batch.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from typing import Any, Iterator

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.data.core import Batch, Split
from mmfuse_jax.data.pipeline import (batch_lengths, batch_orders, last_valid_steps,
                                      make_batch, needed_steps, pad_rows, process_rows,
                                      shard_batch)

log = logging.getLogger(__name__)

FEEDS = ("auto", "device", "host")
# 'auto' places the split on device when it takes at most this share of the free memory.
DEVICE_MEMORY_SHARE = 0.5


@flax.struct.dataclass
class DeviceSplit:
  """A split's arrays on the device (features float32 (N, T, D), masks bool (N, T), labels,
  extras), replicated over the mesh."""
  features: dict[str, Any]
  masks: dict[str, Any]
  labels: Any
  extras: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class BatchPlan:
  """What the host decides about one batch: its padded global rows, which are real, its
  time lengths (a static shape) and the rows of the further batches it carries."""
  rows: np.ndarray                  # (B,) int32 row of each sample (filler repeats row 0)
  valid: np.ndarray                 # (B,) bool, False for filler
  lengths: tuple                    # ((modality, length), ...)
  more_rows: np.ndarray | None      # (B, K) int32 or None
  more_valid: np.ndarray | None     # (B, K) bool or None


def split_bytes(split: Split) -> int:
  """Bytes the split takes on the device (features as float32)."""
  n = sum(x.size * 4 for x in split.features.values())
  n += sum(x.nbytes for x in split.masks.values()) + split.labels.nbytes
  return n + sum(v.nbytes for v in split.extras.values())


def device_memory_budget(fallback: int) -> int:
  """Bytes the input may take on one device: DEVICE_MEMORY_SHARE of what is free according
  to `device.memory_stats()` (GPU, TPU), or `fallback` where the backend reports nothing
  (CPU)."""
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # noqa: BLE001  (some backends raise instead of returning None)
    stats = None
  if not stats or "bytes_limit" not in stats:
    return int(fallback)
  free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  return int(DEVICE_MEMORY_SHARE * max(free, 0))


def choose_feed(config, split: Split) -> str:
  """'device' or 'host' for config.input_feed ('auto': device when the split fits
  `device_memory_budget(config.scan_max_bytes)`)."""
  kind = config.get("input_feed", "auto")
  if kind != "auto":
    return kind
  need, budget = split_bytes(split), device_memory_budget(config.scan_max_bytes)
  if need > budget:
    log.info("input_feed='auto': train split %.1f MiB > budget %.1f MiB; host feed",
             need / 2 ** 20, budget / 2 ** 20)
    return "host"
  return "device"


def put_split(split: Split, sharding) -> DeviceSplit:
  """The split onto the mesh, replicated (each process passes its full host copy)."""
  tree = DeviceSplit(features={m: np.asarray(x, np.float32) for m, x in split.features.items()},
                     masks=dict(split.masks), labels=split.labels, extras=dict(split.extras))
  if jax.process_count() > 1:
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)
  return jax.device_put(tree, sharding)


def _gather_one(split: DeviceSplit, rows, valid, lengths: dict) -> Batch:
  """The Batch of `rows` ((B,) or (B, K)); the same values as `pipeline.make_batch`:
  padded steps and filler rows zero, weights 1/0, index -1 for filler."""
  feats, masks = {}, {}
  for m, x in split.features.items():
    length = lengths[m]
    mk = split.masks[m][rows][..., :length] & valid[..., None]
    feats[m] = jnp.where(mk[..., None], x[rows][..., :length, :], 0.0)
    masks[m] = mk
  return Batch(features=feats, masks=masks, labels=split.labels[rows],
               weights=valid.astype(jnp.float32),
               index=jnp.where(valid, rows, -1).astype(jnp.int32),
               extras={k: v[rows] for k, v in split.extras.items()})


def gather_batch(split: DeviceSplit, xs: dict, lengths: tuple) -> Batch:
  """Device Batch from a plan's arrays xs = {rows, valid[, more_rows, more_valid]};
  `lengths` ((modality, length), ...) is static."""
  lengths = dict(lengths)
  batch = _gather_one(split, xs["rows"], xs["valid"], lengths)
  if "more_rows" in xs:
    full = {m: x.shape[1] for m, x in split.features.items()}
    batch = batch.replace(more=_gather_one(split, xs["more_rows"], xs["more_valid"], full))
  return batch


class DeviceFeed:
  """The train split on device; each batch ships only its rows (see module doc)."""
  kind = "device"

  def __init__(self, config, split: Split, mesh_batch_sharding, replicated_sharding,
               extra_batches: int = 0):
    self.config, self.extra = config, extra_batches
    self.batch_size, self.num_buckets = config.batch_size, config.data.num_buckets
    self.num_rows = len(split)
    self.last_valid = last_valid_steps(split)
    self.full = {m: x.shape[1] for m, x in split.features.items()}
    self.batch_sharding, self.replicated = mesh_batch_sharding, replicated_sharding
    self.local = process_rows(mesh_batch_sharding, self.batch_size)
    self.split = put_split(split, replicated_sharding)
    self.gather = jax.jit(gather_batch, static_argnums=(2,),
                          in_shardings=(replicated_sharding, mesh_batch_sharding),
                          out_shardings=mesh_batch_sharding)

  def plans(self, epoch: int) -> list[BatchPlan]:
    """The epoch's batches as plans: same seeded order, filler and buckets as the host."""
    orders = batch_orders(self.num_rows, self.batch_size, shuffle=True, seed=self.config.seed,
                          epoch=epoch, drop_last=False)
    return [self.plan(rows, [orders[(j + 1 + k) % len(orders)] for k in range(self.extra)])
            for j, rows in enumerate(orders)]

  def plan(self, rows: np.ndarray, more_rows=()) -> BatchPlan:
    """The plan of one batch of `rows` (and of the further batches `more_rows`)."""
    rows_p, valid = pad_rows(rows, self.batch_size)
    lengths = batch_lengths(needed_steps(self.last_valid, np.asarray(rows)), self.full,
                            self.num_buckets)
    more_r = more_v = None
    if len(more_rows):
      more = [pad_rows(r, self.batch_size) for r in more_rows]
      more_r = np.stack([r for r, _ in more], 1).astype(np.int32)
      more_v = np.stack([v for _, v in more], 1)
    return BatchPlan(rows_p.astype(np.int32), valid, tuple(sorted(lengths.items())), more_r,
                     more_v)

  @staticmethod
  def plan_arrays(plan: BatchPlan) -> dict:
    xs = {"rows": plan.rows, "valid": plan.valid}
    if plan.more_rows is not None:
      xs.update(more_rows=plan.more_rows, more_valid=plan.more_valid)
    return xs

  def put_rows(self, xs: dict, sharding, axis: int = 0) -> dict:
    """Host index arrays onto the mesh, the batch on `axis`; on several hosts each process
    passes only its own rows."""
    if jax.process_count() == 1:
      return jax.device_put(xs, sharding)
    index = (slice(None),) * axis + (self.local,)
    return {k: jax.make_array_from_process_local_data(sharding, v[index], v.shape)
            for k, v in xs.items()}

  def batch(self, plan: BatchPlan) -> Batch:
    return self.gather(self.split, self.put_rows(self.plan_arrays(plan), self.batch_sharding),
                       plan.lengths)

  def epoch(self, epoch: int) -> Iterator[Batch]:
    for plan in self.plans(epoch):
      yield self.batch(plan)


class HostFeed:
  """Host-assembled batches (this process's rows only), prefetched two ahead on device."""
  kind = "host"

  def __init__(self, config, split: Split, mesh_batch_sharding, extra_batches: int = 0,
               prefetch: int = 2):
    self.config, self.split, self.extra, self.prefetch = config, split, extra_batches, prefetch
    self.batch_sharding = mesh_batch_sharding
    self.local = process_rows(mesh_batch_sharding, config.batch_size)

  def host_batches(self, epoch: int) -> Iterator[Batch]:
    """This process's rows of each batch of the epoch, on the host."""
    c = self.config
    orders = batch_orders(len(self.split), c.batch_size, shuffle=True, seed=c.seed, epoch=epoch,
                          drop_last=False)
    for j, rows in enumerate(orders):
      more = [orders[(j + 1 + k) % len(orders)] for k in range(self.extra)]
      yield make_batch(self.split, rows, c.batch_size, c.data.num_buckets, more_rows=more,
                       local=self.local)

  def epoch(self, epoch: int) -> Iterator[Batch]:
    bs = self.config.batch_size
    return prefetch(
        (shard_batch(b, self.batch_sharding, global_size=bs) for b in self.host_batches(epoch)),
        self.prefetch)


def prefetch(items: Iterator, size: int = 2) -> Iterator:
  """Yields `items` in order while a background thread computes up to `size` ahead (batch
  assembly and device_put overlap the running step). Errors surface at the consumer."""
  if size <= 0:
    yield from items
    return
  q: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()
  done = object()

  def put(entry) -> bool:
    while not stop.is_set():
      try:
        q.put(entry, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for item in items:
        if not put((True, item)):
          return
      put((True, done))
    except BaseException as e:  # noqa: BLE001  (re-raised in the consumer)
      put((False, e))

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      ok, item = q.get()
      if not ok:
        raise item
      if item is done:
        return
      yield item
  finally:
    stop.set()


def make_feed(config, split: Split, batch_sharding, replicated_sharding,
              extra_batches: int = 0):
  """The train feed config.input_feed asks for ('auto': `choose_feed`)."""
  if choose_feed(config, split) == "device":
    return DeviceFeed(config, split, batch_sharding, replicated_sharding, extra_batches)
  return HostFeed(config, split, batch_sharding, extra_batches)
