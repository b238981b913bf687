"""Input feeding: device-resident split and host prefetch give the batches of
`iterate_batches`; the loop choice; the device memory budget."""

import threading
import types

import jax
import numpy as np
import pytest

from mmfuse_jax.data.pipeline import iterate_batches
from mmfuse_jax.training import feeding
from mmfuse_jax.training import scan as scan_lib
from mmfuse_jax.training.experiment import build_experiment
from mmfuse_jax.training.mesh import batch_sharding, make_data_mesh, replicated
from tests.helpers import tiny_config, tiny_synthetic
from tests.test_baselines import TINY_NET

LMF = {**{f"net.{k}": v for k, v in TINY_NET["lmf"].items()},
       "data.modalities": "text,audio", "optim.lr": 1e-2}


def _split(n=22):
  ds = tiny_synthetic(5, n_train=n, n_valid=8, n_test=8, modalities=("text", "audio"),
                      lengths={"text": 8, "audio": 12})
  split = ds.splits["train"]
  split.extras["position"] = np.arange(n, dtype=np.int32) * 3
  return ds, split


def _assert_batches_equal(got, want):
  flat_g, tree_g = jax.tree_util.tree_flatten(jax.device_get(got))
  flat_w, tree_w = jax.tree_util.tree_flatten(want)
  assert tree_g == tree_w
  for g, w in zip(flat_g, flat_w):
    assert np.shape(g) == np.shape(w)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w).astype(np.asarray(g).dtype))


@pytest.mark.parametrize("kind", ["device", "host"])
def test_feeds_give_the_host_batches(kind):
  # 22 rows in batches of 8: a last batch with 2 filler rows; 3 buckets; each batch also
  # carries the next 2 batches (MDM); extras gathered like the rest.
  _, split = _split()
  c = tiny_config("lmf", batch_size=8, seed=3, **{"data.num_buckets": 3})
  mesh = make_data_mesh(1)
  if kind == "device":
    feed = feeding.DeviceFeed(c, split, batch_sharding(mesh), replicated(mesh), 2)
  else:
    feed = feeding.HostFeed(c, split, batch_sharding(mesh), 2)
  for epoch in (0, 1):
    want = list(iterate_batches(split, 8, shuffle=True, seed=3, epoch=epoch, num_buckets=3,
                                extra_batches=2))
    got = list(feed.epoch(epoch))
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
      _assert_batches_equal(g, w)
  assert {w.weights.sum() for w in want} == {8.0, 6.0}


def test_shared_bucket_index_bounds_shapes_and_keeps_valid_steps():
  ds = tiny_synthetic(0, n_train=64, n_valid=8, n_test=8,
                      lengths={"text": 16, "audio": 32, "vision": 24})
  split = ds.splits["train"]
  full = {m: x.shape[1] for m, x in split.features.items()}
  for i, m in enumerate(full):   # rows 0-31: shorter sequences, cut at varying quarters
    split.masks[m][:32, (i + 1) * full[m] // 4:] = False
  shapes = set()
  for batch in iterate_batches(split, 4, num_buckets=4):
    rows = batch.index[batch.index >= 0]
    # Independent: the smallest k whose lengths ceil(full * k / 4) hold every valid step.
    need = {m: np.nonzero(split.masks[m][rows].any(0))[0].max() + 1 for m in full}
    k = min(k for k in range(1, 5) if all(-(-full[m] * k // 4) >= need[m] for m in full))
    lengths = {m: x.shape[1] for m, x in batch.features.items()}
    assert lengths == {m: -(-full[m] * k // 4) for m in full}
    shapes.add(tuple(sorted(lengths.items())))
    for m in full:   # nothing valid is cut off
      assert batch.masks[m][:len(rows)].sum() == split.masks[m][rows].sum()
  assert 1 < len(shapes) <= 4


def test_prefetch_keeps_order_and_reports_errors():
  assert list(feeding.prefetch(iter(range(7)), 2)) == list(range(7))

  def broken():
    yield 1
    raise ValueError("bad row")
  with pytest.raises(ValueError, match="bad row"):
    list(feeding.prefetch(broken(), 2))
  # Stopping early ends the producer thread.
  before = threading.active_count()
  it = feeding.prefetch(iter(range(1000)), 2)
  assert next(it) == 0
  it.close()
  for _ in range(50):
    if threading.active_count() <= before:
      break
    threading.Event().wait(0.05)
  assert threading.active_count() <= before


def test_device_memory_budget_and_feed_choice(monkeypatch):
  _, split = _split()
  need = feeding.split_bytes(split)
  assert need == sum(x.size * 4 + split.masks[m].size for m, x in split.features.items()) \
      + split.labels.nbytes + split.extras["position"].nbytes
  fake = types.SimpleNamespace(memory_stats=lambda: {"bytes_limit": 10_000, "bytes_in_use": 2_000})
  monkeypatch.setattr(feeding.jax, "local_devices", lambda: [fake])
  assert feeding.device_memory_budget(123) == 4_000
  c = tiny_config("lmf")
  c.scan_max_bytes = 1   # not used: the device reports its memory
  assert feeding.choose_feed(c, split) == ("device" if need <= 4_000 else "host")
  fake.memory_stats = lambda: {"bytes_limit": need // 2, "bytes_in_use": 0}
  assert feeding.choose_feed(c, split) == "host"
  c.input_feed = "device"
  assert feeding.choose_feed(c, split) == "device"
  fake.memory_stats = lambda: None   # CPU: the configured fallback
  assert feeding.device_memory_budget(123) == 123


def test_auto_loop_is_step_on_cpu_and_scan_with_device_input():
  ds, _ = _split()
  exp = build_experiment(tiny_config("lmf", batch_size=8, **LMF), ds)
  assert exp.config.train_loop == "auto" and exp.config.input_feed == "auto"
  assert scan_lib.resolve_train_loop(exp) == "step"          # CPU
  exp.mesh = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform="tpu")]))
  assert scan_lib.resolve_train_loop(exp, "device") == "scan"
  assert scan_lib.resolve_train_loop(exp, "host") == "step"
  exp.config.train_loop = "step"
  assert scan_lib.resolve_train_loop(exp, "device") == "step"
