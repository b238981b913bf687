"""Standardisation fitted on train, batching with explicit seeds, buckets, and sharding."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding

from mmfuse_jax.data.core import Batch, Dataset, Split


def fit_standardizer(split: Split, eps: float = 1e-6) -> dict[str, dict[str, np.ndarray]]:
  """Per-feature mean and std over the valid steps of the train split."""
  stats = {}
  for m, x in split.features.items():
    valid = x[split.masks[m]].astype(np.float64)
    if valid.size == 0:
      mean = np.zeros(x.shape[-1]); std = np.ones(x.shape[-1])
    else:
      mean = valid.mean(0); std = valid.std(0)
    std = np.where(std < eps, 1.0, std)
    stats[m] = {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}
  return stats


def apply_standardizer(split: Split, stats: dict[str, dict[str, np.ndarray]]) -> Split:
  """Standardises valid steps; padded steps stay exactly zero."""
  feats = {}
  for m, x in split.features.items():
    z = (x - stats[m]["mean"]) / stats[m]["std"]
    feats[m] = np.where(split.masks[m][..., None], z, 0.0).astype(np.float32)
  return dataclasses.replace(split, features=feats)


def standardize(ds: Dataset, modalities=None) -> tuple[Dataset, dict]:
  """Fits on train only and applies to every split. Returns the dataset and the stats."""
  stats = fit_standardizer(ds.splits["train"])
  if modalities is not None:
    stats = {m: s for m, s in stats.items() if m in modalities}
  splits = {}
  for name, s in ds.splits.items():
    keep = {m: stats[m] for m in s.features if m in stats}
    ident = {m: {"mean": np.zeros(x.shape[-1], np.float32), "std": np.ones(x.shape[-1], np.float32)}
             for m, x in s.features.items() if m not in stats}
    splits[name] = apply_standardizer(s, {**keep, **ident})
  return dataclasses.replace(ds, splits=splits), stats


def bucket_index(needed: int, full: int, num_buckets: int) -> int:
  """Smallest k in 1..num_buckets whose length ceil(full * k / num_buckets) holds `needed`
  steps (1 with num_buckets <= 1: the full length)."""
  if num_buckets <= 1:
    return 1
  for k in range(1, num_buckets + 1):
    if int(np.ceil(full * k / num_buckets)) >= needed:
      return k
  return num_buckets


def _length_of(full: int, k: int, num_buckets: int) -> int:
  return full if num_buckets <= 1 else int(np.ceil(full * k / num_buckets))


def bucket_length(needed: int, full: int, num_buckets: int) -> int:
  """Smallest of `num_buckets` evenly spaced lengths up to `full` that holds `needed` steps."""
  return _length_of(full, bucket_index(needed, full, num_buckets), num_buckets)


def batch_lengths(needed: dict[str, int], full: dict[str, int], num_buckets: int
                  ) -> dict[str, int]:
  """Time length of each modality in one batch: ONE bucket index k shared by all modalities
  (the largest any modality needs), each cut to ceil(full_m * k / num_buckets). A model thus
  sees at most `num_buckets` batch shapes, not num_buckets ** (number of modalities)."""
  if num_buckets <= 1:
    return dict(full)
  k = max(bucket_index(needed[m], full[m], num_buckets) for m in full)
  return {m: _length_of(full[m], k, num_buckets) for m in full}


def last_valid_steps(split: Split) -> dict[str, np.ndarray]:
  """Per modality, (N,) int: 1 + the index of each row's last valid step (0 when none), so
  a batch's bucket needs only these numbers, not the features."""
  out = {}
  for m, mk in split.masks.items():
    t = mk.shape[1]
    out[m] = np.where(mk.any(1), t - np.argmax(mk[:, ::-1], axis=1), 0).astype(np.int64)
  return out


def needed_steps(last_valid: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, int]:
  """Steps each modality needs to hold every valid step of `rows` (at least 1)."""
  return {m: max(1, int(v[rows].max())) if len(rows) else 1 for m, v in last_valid.items()}


def pad_rows(rows: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(rows padded to batch_size by repeating the first row, (batch_size,) bool valid)."""
  rows = np.asarray(rows, np.int64)
  n, pad = len(rows), batch_size - len(rows)
  rows_p = np.concatenate([rows, np.repeat(rows[:1], pad)]) if pad > 0 else rows
  return rows_p, np.arange(len(rows_p)) < n


def process_rows(sharding, n: int) -> slice:
  """Rows [lo, hi) of a global batch of n rows that this process's devices hold under
  `sharding` (batch on the leading axis): what this process builds and feeds. All rows
  with one process."""
  if jax.process_count() == 1:
    return slice(0, n)
  spans = set()
  for index in sharding.addressable_devices_indices_map((n,)).values():
    s = index[0]
    spans.add((s.start or 0, n if s.stop is None else s.stop))
  spans = sorted(spans)
  lo, hi = spans[0][0], spans[-1][1]
  if sum(b - a for a, b in spans) != hi - lo:
    raise ValueError(f"process {jax.process_index()} holds rows {spans} of the batch: not one "
                     f"contiguous block (order the mesh devices by process)")
  return slice(lo, hi)


def batch_orders(n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
                 drop_last: bool) -> list[np.ndarray]:
  """Row indices of each batch; the shuffle depends only on (seed, epoch)."""
  if shuffle:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
  else:
    order = np.arange(n)
  batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
  if drop_last and batches and len(batches[-1]) < batch_size:
    batches = batches[:-1]
  return batches


def make_batch(split: Split, rows: np.ndarray, batch_size: int, num_buckets: int = 1,
               more_rows=(), local: slice | None = None) -> Batch:
  """Gathers rows into a host Batch padded to `batch_size` rows with zero-weight filler.

  With num_buckets > 1 the time axes are cut to the smallest bucket (one bucket index for
  all modalities, `batch_lengths`) that holds every valid step of the batch, so a model
  compiles at most num_buckets shapes.
  more_rows: the rows of K further batches, carried in `Batch.more` with their arrays
  stacked on axis 1 ((B, K, ...); full length, so their shape does not depend on the data).
  local: only these rows of the padded global batch are built (a process's own rows on
  several hosts, `process_rows`); the bucket still follows the whole global batch.
  """
  batch = _gather(split, rows, batch_size, num_buckets, local)
  if len(more_rows):
    more = [_gather(split, np.asarray(r), batch_size, 1, local) for r in more_rows]
    batch = batch.replace(more=jax.tree_util.tree_map(lambda *xs: np.stack(xs, axis=1), *more))
  return batch


def _gather(split: Split, rows: np.ndarray, batch_size: int, num_buckets: int,
            local: slice | None = None) -> Batch:
  rows = np.asarray(rows, np.int64)
  rows_p, valid = pad_rows(rows, batch_size)
  full = {m: x.shape[1] for m, x in split.features.items()}
  if num_buckets > 1:
    needed = {m: max(1, int(np.nonzero(split.masks[m][rows].any(0))[0].max(initial=-1)) + 1)
              for m in full}
    lengths = batch_lengths(needed, full, num_buckets)
  else:
    lengths = full
  local = local or slice(None)
  sel, ok = rows_p[local], valid[local]
  feats, masks = {}, {}
  for m, x in split.features.items():
    length = lengths[m]
    mk = split.masks[m][sel, :length] & ok[:, None]
    feats[m] = np.where(mk[..., None], x[sel, :length], 0.0).astype(np.float32)
    masks[m] = mk
  labels = split.labels[sel]
  weights = ok.astype(np.float32)
  index = np.where(ok, rows_p[local], -1).astype(np.int32)
  extras = {k: v[sel] for k, v in split.extras.items()}
  return Batch(features=feats, masks=masks, labels=labels, weights=weights, index=index,
               extras=extras)


def iterate_batches(split: Split, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                    epoch: int = 0, drop_last: bool = False, num_buckets: int = 1,
                    extra_batches: int = 0, local: slice | None = None) -> Iterator[Batch]:
  """Host batches of exactly `batch_size` rows (filler rows carry weight 0).

  extra_batches = K > 0: batch j also carries (in `Batch.more`) the K batches that follow
  it in this epoch's order, cyclically (j+1, ..., j+K modulo the number of batches), so
  an inner loop sees fresh rows at every iteration; like the order itself they depend only
  on (seed, epoch). local: build only these rows of each batch (`make_batch`)."""
  orders = batch_orders(len(split), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                        drop_last=drop_last)
  for j, rows in enumerate(orders):
    more = [orders[(j + 1 + k) % len(orders)] for k in range(extra_batches)]
    yield make_batch(split, rows, batch_size, num_buckets, more_rows=more, local=local)


def shard_batch(batch: Batch, sharding: NamedSharding, global_size: int | None = None) -> Batch:
  """Places a batch on the mesh, split along the leading (batch) axis over 'data'.

  global_size None: `batch` is the whole global batch; on several hosts each process passes
  only its own rows of it (`process_rows`), never the whole batch. global_size = B: `batch`
  already holds only this process's rows of a global batch of B rows (`make_batch(local=)`).
  """
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  n = global_size or int(np.shape(batch.weights)[0])
  local = process_rows(sharding, n)

  def put(x):
    x = np.asarray(x)
    if global_size is None:
      x = x[local]
    return jax.make_array_from_process_local_data(sharding, x, (n,) + x.shape[1:])
  return jax.tree_util.tree_map(put, batch)
