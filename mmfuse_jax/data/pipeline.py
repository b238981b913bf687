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


def bucket_length(needed: int, full: int, num_buckets: int) -> int:
  """Smallest of `num_buckets` evenly spaced lengths up to `full` that holds `needed` steps."""
  if num_buckets <= 1:
    return full
  for k in range(1, num_buckets + 1):
    length = int(np.ceil(full * k / num_buckets))
    if length >= needed:
      return length
  return full


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
               more_rows=()) -> Batch:
  """Gathers rows into a host Batch padded to `batch_size` rows with zero-weight filler.

  With num_buckets > 1 each modality's time axis is cut to the smallest bucket that holds
  every valid step of the batch, so a model compiles at most num_buckets shapes per modality.
  more_rows: the rows of K further batches, carried in `Batch.more` with their arrays
  stacked on axis 1 ((B, K, ...); full length, so their shape does not depend on the data).
  """
  batch = _gather(split, rows, batch_size, num_buckets)
  if len(more_rows):
    more = [_gather(split, np.asarray(r), batch_size, 1) for r in more_rows]
    batch = batch.replace(more=jax.tree_util.tree_map(lambda *xs: np.stack(xs, axis=1), *more))
  return batch


def _gather(split: Split, rows: np.ndarray, batch_size: int, num_buckets: int) -> Batch:
  n = len(rows)
  pad = batch_size - n
  rows_p = np.concatenate([rows, np.repeat(rows[:1], pad)]) if pad > 0 else rows
  feats, masks = {}, {}
  for m, x in split.features.items():
    mk = split.masks[m][rows_p]
    if pad > 0:
      mk = mk.copy(); mk[n:] = False
    full = x.shape[1]
    if num_buckets > 1:
      any_valid = mk.any(0)
      needed = int(np.nonzero(any_valid)[0].max()) + 1 if any_valid.any() else 1
      length = bucket_length(needed, full, num_buckets)
    else:
      length = full
    feats[m] = np.where(mk[..., None], x[rows_p], 0.0)[:, :length].astype(np.float32)
    masks[m] = mk[:, :length]
  labels = split.labels[rows_p]
  weights = np.concatenate([np.ones(n, np.float32), np.zeros(max(pad, 0), np.float32)])
  index = np.concatenate([rows, -np.ones(max(pad, 0), np.int64)]).astype(np.int32)
  extras = {k: v[rows_p] for k, v in split.extras.items()}
  return Batch(features=feats, masks=masks, labels=labels, weights=weights, index=index,
               extras=extras)


def iterate_batches(split: Split, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                    epoch: int = 0, drop_last: bool = False, num_buckets: int = 1,
                    extra_batches: int = 0) -> Iterator[Batch]:
  """Host batches of exactly `batch_size` rows (filler rows carry weight 0).

  extra_batches = K > 0: batch j also carries (in `Batch.more`) the K batches that follow
  it in this epoch's order, cyclically (j+1, ..., j+K modulo the number of batches), so
  an inner loop sees fresh rows at every iteration; like the order itself they depend only
  on (seed, epoch)."""
  orders = batch_orders(len(split), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                        drop_last=drop_last)
  for j, rows in enumerate(orders):
    more = [orders[(j + 1 + k) % len(orders)] for k in range(extra_batches)]
    yield make_batch(split, rows, batch_size, num_buckets, more_rows=more)


def shard_batch(batch: Batch, sharding: NamedSharding) -> Batch:
  """Places a host batch on the mesh, split along the leading (batch) axis over 'data'.

  On several hosts each process passes its own rows (jax.make_array_from_process_local_data).
  """
  if jax.process_count() > 1:
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
  return jax.device_put(batch, sharding)
