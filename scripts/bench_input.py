"""Input pipeline benchmark: host time per training step spent on batch assembly, and the
number of distinct batch shapes (one compile each) per epoch with bucketing.

    python scripts/bench_input.py --shape=mosi_unaligned --train=1284 --batch=24 --epochs=3

Host time per step, over whole epochs of a synthetic split with the given shapes:
  host numpy   numpy gather + pad + bucket (`make_batch`) and a synchronous `device_put`
               of the batch: what the loop did per step before the device feed
  device feed  the epoch's row plans (`DeviceFeed.plans`) plus, per step, shipping the
               row indices and dispatching the on-device gather (returns before the gather
               ends); "until ready" also waits for each gathered batch
Shapes: for data.num_buckets in --buckets, distinct (text, audio, vision) length tuples per
epoch with a bucket chosen per modality (the former rule) and with one bucket index shared
by all modalities (`pipeline.batch_lengths`), and the padded time steps per batch of each
rule relative to the former. Sequence lengths: each sample has one duration fraction
u = min(1, 0.02 + Beta(1, 4)) (skewed: most utterances are short, a few fill the maximum
length) and ceil(u * T_m) valid steps in every modality (a longer utterance is longer in
all streams); --independent draws each modality's fraction separately instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

from mmfuse_jax import config as config_lib
from mmfuse_jax.data import Dataset, Split, shard_batch
from mmfuse_jax.data.pipeline import (batch_orders, batch_lengths, bucket_length,
                                      last_valid_steps, make_batch, needed_steps)
from mmfuse_jax.training.feeding import DeviceFeed
from mmfuse_jax.training.mesh import batch_sharding, make_data_mesh, replicated

SHAPES = {
    "mosi_unaligned": ({"text": 50, "audio": 375, "vision": 500},
                       {"text": 300, "audio": 5, "vision": 20}),
    "mosei_unaligned": ({"text": 50, "audio": 500, "vision": 500},
                        {"text": 300, "audio": 74, "vision": 35}),
}


def synthetic_split(n: int, lengths: dict, dims: dict, independent: bool, seed: int = 0):
  rng = np.random.default_rng(seed)
  def fraction():
    return np.minimum(1.0, 0.02 + rng.beta(1.0, 4.0, size=n))
  u = fraction()
  feats, masks = {}, {}
  for m, t in lengths.items():
    frac = fraction() if independent else u
    valid = np.ceil(frac * t).astype(int)
    mask = np.arange(t)[None, :] < valid[:, None]
    feats[m] = np.where(mask[..., None], rng.normal(size=(n, t, dims[m])), 0).astype(np.float32)
    masks[m] = mask
  return Split(features=feats, masks=masks, labels=rng.normal(size=n).astype(np.float32),
               ids=np.arange(n).astype(str))


def host_times(split, batch, buckets, epochs, sharding):
  per_step = []
  for e in range(epochs):
    orders = batch_orders(len(split), batch, shuffle=True, seed=0, epoch=e, drop_last=False)
    t = time.perf_counter()
    for rows in orders:
      b = shard_batch(make_batch(split, rows, batch, buckets), sharding)
    jax.block_until_ready(b)
    per_step.append((time.perf_counter() - t) / len(orders))
  return statistics.median(per_step)


def device_times(feed, epochs):
  dispatch, ready = [], []
  for e in range(epochs + 1):   # epoch 0 compiles the gathers
    t = time.perf_counter()
    plans = feed.plans(e)
    out = [feed.batch(p) for p in plans]
    t_dispatch = time.perf_counter() - t
    jax.block_until_ready(out)
    t_ready = time.perf_counter() - t
    if e:
      dispatch.append(t_dispatch / len(plans)); ready.append(t_ready / len(plans))
  return statistics.median(dispatch), statistics.median(ready)


def shape_counts(split, batch, buckets, epochs):
  full = {m: x.shape[1] for m, x in split.features.items()}
  last = last_valid_steps(split)
  per_mod, shared, steps_per, steps_sh = set(), set(), [], []
  for e in range(epochs):
    for rows in batch_orders(len(split), batch, shuffle=True, seed=0, epoch=e, drop_last=False):
      need = needed_steps(last, rows)
      own = {m: bucket_length(need[m], full[m], buckets) for m in full}
      one = batch_lengths(need, full, buckets)
      per_mod.add(tuple(sorted(own.items()))); shared.add(tuple(sorted(one.items())))
      steps_per.append(sum(own.values())); steps_sh.append(sum(one.values()))
  return len(per_mod), len(shared), float(np.mean(steps_sh) / np.mean(steps_per))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--shape", default="mosi_unaligned", choices=list(SHAPES))
  p.add_argument("--train", type=int, default=1284, help="train rows (MOSI: 1284)")
  p.add_argument("--batch", type=int, default=24)
  p.add_argument("--epochs", type=int, default=3)
  p.add_argument("--buckets", default="1,2,4,8")
  p.add_argument("--independent", action="store_true")
  p.add_argument("--json", default="")
  args = p.parse_args()
  lengths, dims = SHAPES[args.shape]
  split = synthetic_split(args.train, lengths, dims, args.independent)
  mesh = make_data_mesh(1)
  rows = []
  for nb in (int(b) for b in args.buckets.split(",")):
    c = config_lib.get_config("mult", preset=False)
    c.batch_size, c.data.num_buckets = args.batch, nb
    feed = DeviceFeed(c, split, batch_sharding(mesh), replicated(mesh))
    host = host_times(split, args.batch, nb, args.epochs, batch_sharding(mesh))
    disp, ready = device_times(feed, args.epochs)
    n_per, n_shared, pad_ratio = shape_counts(split, args.batch, nb, args.epochs)
    row = {"num_buckets": nb, "host_numpy_ms": 1e3 * host, "device_dispatch_ms": 1e3 * disp,
           "device_ready_ms": 1e3 * ready, "shapes_per_modality_rule": n_per,
           "shapes_shared_rule": n_shared, "steps_shared_vs_per_modality": pad_ratio}
    rows.append(row)
    print(f"buckets {nb}: host numpy {row['host_numpy_ms']:.3f} ms/step  device feed "
          f"{row['device_dispatch_ms']:.3f} ms/step (until ready {row['device_ready_ms']:.3f})"
          f"  shapes over {args.epochs} epochs: per modality {n_per}, shared {n_shared}"
          f"  (time steps x{pad_ratio:.3f})", flush=True)
  env = {"device": str(jax.devices()[0]), "jax": jax.__version__, "shape": args.shape,
         "train": args.train, "batch": args.batch, "independent": args.independent}
  print(json.dumps(env))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"env": env, "results": rows}, f, indent=2)


if __name__ == "__main__":
  main()
