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

The computation is `mmfuse_jax.training.mechanism_checks` (`last_layer_sets`,
`query_key_distances`), which the mechanism benchmark (scripts/mechanisms.py) shares.

  python scripts/mica_alignment_analysis.py --workdir backbone=/tmp/t/backbone/seed_0 \
      --workdir full=/tmp/t/full/seed_0 [--split test] [--max_elements 1500]
"""

from __future__ import annotations

import argparse
import json
import sys

from mmfuse_jax.training import mechanism_checks
from mmfuse_jax.training.experiment import (build_experiment, load_workdir_config,
                                            restore_selected)


def last_layer_sets(workdir: str, split_name: str, data_dir: str | None = None) -> dict:
  """{direction: (queries (n, d), keys (m, d))} of the last layer over a split
  (`mechanism_checks.last_layer_sets` of the workdir's selected checkpoint)."""
  config = load_workdir_config(workdir, data_dir)
  if config.model != "mica":
    raise SystemExit(f"{workdir} is a {config.model!r} run, not mica")
  exp = build_experiment(config)
  state, _ = restore_selected(workdir, exp)
  return mechanism_checks.last_layer_sets(exp, state, exp.dataset.splits[split_name])


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
    results[name] = mechanism_checks.query_key_distances(
        last_layer_sets(wd, args.split, args.data_dir), args.max_elements)
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
