"""MICA Table 6 analysis: how far apart are the queries and keys of the last crossmodal
layer, with and without the alignment losses?

For each trained workdir (e.g. the MICA backbone and the full model from
`scripts/run_table.py --table mica`), restores the validation-selected checkpoint, runs the
model on a split, and for every direction s -> t pools the valid queries (target steps)
and keys (source steps) of the LAST layer over the split (heads concatenated), then
reports two distances between the two sets:

- MMD^2 with a multi-bandwidth Gaussian kernel (losses/mmd.py; median heuristic on the
  pooled sets, so the number does not depend on the overall scale of q and k);
- the proxy A-distance 2 (1 - 2 err) (Ben-David et al.), err the held-out error of a
  linear least-squares classifier telling queries from keys (balanced classes, 50/50
  split); 0: indistinguishable, 2: linearly separable.

  python scripts/mica_alignment_analysis.py --workdir backbone=/tmp/t/backbone/seed_0 \
      --workdir full=/tmp/t/full/seed_0 [--split test] [--max_elements 1500]
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np


def last_layer_sets(workdir: str, split_name: str, data_dir: str | None = None) -> dict:
  """{direction: (queries (n, d), keys (m, d))} of the last layer over a split."""
  from mmfuse_jax.data import iterate_batches, shard_batch
  from mmfuse_jax.training.experiment import load_workdir_config, restore_selected
  from mmfuse_jax.training.evaluation import analysis_outputs
  from mmfuse_jax.training.experiment import build_experiment
  config = load_workdir_config(workdir, data_dir)
  if config.model != "mica":
    raise SystemExit(f"{workdir} is a {config.model!r} run, not mica")
  exp = build_experiment(config)
  state, _ = restore_selected(workdir, exp)
  split = exp.dataset.splits[split_name]
  sets: dict = {}
  for batch in iterate_batches(split, config.eval_batch_size,
                               num_buckets=config.data.num_buckets):
    _, _, aux = analysis_outputs(exp, state, shard_batch(batch, exp.batch_sharding))
    cross = jax.device_get(aux["crossmodal"])
    keep = np.asarray(batch.weights) > 0
    for direction, d in cross.items():
      s, t = direction.split("->")
      q = np.asarray(d["q"][-1])                     # (B, T_t, H, d_h)
      k = np.asarray(d["k"][-1])                     # (B, T_s, H, d_h)
      qm = np.asarray(batch.masks[t]) & keep[:, None]
      km = np.asarray(batch.masks[s]) & keep[:, None]
      qs, ks = sets.setdefault(direction, ([], []))
      qs.append(q.reshape(*q.shape[:2], -1)[qm])
      ks.append(k.reshape(*k.shape[:2], -1)[km])
  return {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in sets.items()}


def proxy_a_distance(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> float:
  """2 (1 - 2 err) of a ridge-regularised linear classifier, x vs y, held-out half."""
  n = min(len(x), len(y))
  x = x[rng.permutation(len(x))[:n]]; y = y[rng.permutation(len(y))[:n]]
  feats = np.concatenate([x, y]); labels = np.concatenate([np.ones(n), -np.ones(n)])
  order = rng.permutation(2 * n); feats, labels = feats[order], labels[order]
  half = n
  mu, sd = feats[:half].mean(0), feats[:half].std(0) + 1e-6
  a = np.concatenate([(feats - mu) / sd, np.ones((2 * n, 1))], axis=1)
  w = np.linalg.solve(a[:half].T @ a[:half] + 1e-3 * np.eye(a.shape[1]),
                      a[:half].T @ labels[:half])
  err = float(np.mean(np.sign(a[half:] @ w) != labels[half:]))
  return 2.0 * (1.0 - 2.0 * min(err, 0.5))


def distances(sets: dict, max_elements: int, seed: int = 0) -> dict:
  from mmfuse_jax.losses.mmd import mmd2
  rng = np.random.default_rng(seed)
  out = {}
  for direction, (q, k) in sorted(sets.items()):
    qs = q[rng.permutation(len(q))[:max_elements]]
    ks = k[rng.permutation(len(k))[:max_elements]]
    out[direction] = {"mmd2": float(mmd2(qs, ks, bandwidth="median")),
                      "a_distance": proxy_a_distance(q, k, rng),
                      "n_queries": int(len(q)), "n_keys": int(len(k))}
  out["mean"] = {m: float(np.mean([v[m] for v in out.values()]))
                 for m in ("mmd2", "a_distance")}
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", action="append", required=True, metavar="NAME=DIR")
  p.add_argument("--split", default="test")
  p.add_argument("--data_dir", default=None)
  p.add_argument("--max_elements", type=int, default=1500)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  results = {}
  for item in args.workdir:
    name, _, wd = item.partition("=")
    results[name] = distances(last_layer_sets(wd, args.split, args.data_dir),
                              args.max_elements)
  directions = [d for d in next(iter(results.values())) if d != "mean"]
  print(f"last-layer queries vs keys on the {args.split} split: MMD^2 (median bandwidth) / "
        "proxy A-distance")
  print("| direction | " + " | ".join(results) + " |")
  print("|---" * (len(results) + 1) + "|")
  for d in directions + ["mean"]:
    print(f"| {d} | " + " | ".join(f"{r[d]['mmd2']:.4f} / {r[d]['a_distance']:.3f}"
                                    for r in results.values()) + " |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
