"""Standardisation, batching, buckets and sharding."""

import jax
import numpy as np
import pytest

from mmfuse_jax.data import iterate_batches, make_batch, shard_batch
from mmfuse_jax.data.pipeline import batch_orders, bucket_length, standardize
from mmfuse_jax.training.mesh import batch_sharding, make_data_mesh
from tests.helpers import tiny_synthetic


def test_standardize_fits_on_train_only():
  ds = tiny_synthetic(0, n_train=64, n_valid=32, n_test=32)
  shifted = tiny_synthetic(0, n_train=64, n_valid=32, n_test=32)
  for m in shifted.splits["valid"].features:  # changing valid/test must not change the stats
    shifted.splits["valid"].features[m] *= 100.0
  a, stats_a = standardize(ds)
  b, stats_b = standardize(shifted)
  for m in stats_a:
    np.testing.assert_allclose(stats_a[m]["mean"], stats_b[m]["mean"])
    x = ds.splits["train"].features[m][ds.splits["train"].masks[m]]
    np.testing.assert_allclose(stats_a[m]["mean"], x.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats_a[m]["std"], x.std(0), rtol=1e-4)
    z = a.splits["train"].features[m]
    mask = a.splits["train"].masks[m]
    np.testing.assert_allclose(z[mask].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z[mask].std(0), 1, atol=1e-3)
    assert np.all(z[~mask] == 0)  # padding stays zero


def test_seeded_shuffle_and_filler_rows():
  a = batch_orders(10, 4, shuffle=True, seed=1, epoch=0, drop_last=False)
  b = batch_orders(10, 4, shuffle=True, seed=1, epoch=0, drop_last=False)
  c = batch_orders(10, 4, shuffle=True, seed=1, epoch=1, drop_last=False)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))
  assert sorted(np.concatenate(a)) == list(range(10))
  ds = tiny_synthetic(0, n_train=10, n_valid=4, n_test=4)
  batches = list(iterate_batches(ds.splits["train"], 4))
  last = batches[-1]
  assert last.weights.tolist() == [1, 1, 0, 0]
  assert last.index.tolist()[:2] == [8, 9] and last.index.tolist()[2:] == [-1, -1]
  assert not last.masks["text"][2:].any()  # filler rows are fully masked


def test_extra_batches_are_the_next_batches_of_the_epoch():
  """extra_batches = K: batch j carries batches j+1..j+K of the same epoch (cyclically), at
  full length with the batch axis first, identical to the batches themselves."""
  ds = tiny_synthetic(0, n_train=10, n_valid=4, n_test=4)
  split = ds.splits["train"]
  kw = dict(shuffle=True, seed=3, epoch=2, num_buckets=2)
  plain = list(iterate_batches(split, 4, **kw))
  batches = list(iterate_batches(split, 4, extra_batches=4, **kw))
  full = [make_batch(split, r, 4) for r in batch_orders(10, 4, shuffle=True, seed=3, epoch=2,
                                                        drop_last=False)]
  assert len(batches) == 3 and all(b.more is None for b in plain)
  for j, b in enumerate(batches):
    np.testing.assert_array_equal(b.index, plain[j].index)   # the batch itself is unchanged
    assert b.more.weights.shape == (4, 4)
    for k in range(4):
      nxt = full[(j + 1 + k) % 3]
      np.testing.assert_array_equal(b.more.index[:, k], nxt.index)
      np.testing.assert_array_equal(b.more.weights[:, k], nxt.weights)
      for m in split.features:
        np.testing.assert_array_equal(b.more.features[m][:, k], nxt.features[m])
        np.testing.assert_array_equal(b.more.masks[m][:, k], nxt.masks[m])


def test_buckets_bound_the_number_of_shapes():
  assert [bucket_length(n, 40, 4) for n in (1, 10, 11, 31, 40)] == [10, 10, 20, 40, 40]
  assert bucket_length(3, 40, 1) == 40
  ds = tiny_synthetic(0, n_train=64, n_valid=8, n_test=8,
                      lengths={"text": 16, "audio": 32, "vision": 24})
  split = ds.splits["train"]
  shapes = set()
  for batch in iterate_batches(split, 4, num_buckets=4):
    for m, x in batch.features.items():
      shapes.add((m, x.shape[1]))
      assert x.shape[1] in {bucket_length(k, split.features[m].shape[1], 4) for k in range(1, 33)}
      # nothing valid is cut off
      rows = batch.index[batch.index >= 0]
      assert batch.masks[m][:len(rows)].sum() == split.masks[m][rows].sum()
  assert len(shapes) <= 12


def test_shard_batch_over_eight_devices():
  if len(jax.devices()) < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
  mesh = make_data_mesh(8)
  ds = tiny_synthetic(0, n_train=16, n_valid=8, n_test=8)
  batch = make_batch(ds.splits["train"], np.arange(16), 16)
  sharded = shard_batch(batch, batch_sharding(mesh))
  x = sharded.features["audio"]
  assert len(x.addressable_shards) == 8
  assert x.addressable_shards[0].data.shape[0] == 2
  np.testing.assert_array_equal(np.asarray(x), batch.features["audio"])
