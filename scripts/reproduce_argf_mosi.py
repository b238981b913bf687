"""Reproduce ARGF on utterance-level CMU-MOSI, binary sentiment (paper Table 1 and 5).

Trains --seeds seeds with configs/argf.py:mosi_utterance (Poria split, validation carved
out of train by video, UCLN on the video context), selects each seed's checkpoint on
the validation loss only (the validation videos are label-leaky for the text and vision
features: see configs/argf.py:mosi_utterance), and prints test Acc / F1 (mean +- std) next to the paper's
ARGF (a, v -> l) 81.38 / 81.52 (best run, selected on test in its public code) and the
ridge-regression baseline on the three concatenated feature sets (Acc-2 77.9, data README).
--ablations adds Table 5's rows (without adversarial training / classifier / decoder).

  python scripts/reproduce_argf_mosi.py --data_dir ~/data/mosi-utterance \
      --workdir /tmp/argf_mosi [--seeds 5] [--epochs 50] [--ablations] [--set net.adv_lambda=0.3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PAPER = {"full": (81.38, 81.52), "adversarial": (80.11, 80.23), "classifier": (80.92, 80.98),
         "decoder": (79.72, 79.76)}
BASELINE = ("ridge, all features (data README)", 77.9, float("nan"))


def _config(args, ablation: str | None):
  from mmfuse_jax import config as config_lib
  c = config_lib.load_config_file(os.path.join(HERE, "..", "configs", "argf.py") +
                                  ":mosi_utterance")
  c.data_dir = args.data_dir
  c.progress = False
  if args.epochs:
    c.epochs = args.epochs
  if args.num_devices:
    c.num_devices = args.num_devices
  overrides = dict(kv.split("=", 1) for kv in args.set)
  config_lib.apply_overrides(c, overrides)
  if ablation:
    c.net[ablation] = False
  return c


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  default_dir = os.path.join(HERE, "..", "..", "shared", "data", "mosi-utterance")
  p.add_argument("--data_dir", default=os.environ.get("MMFUSE_MOSI_DIR", default_dir))
  p.add_argument("--workdir", default="/tmp/argf_mosi")
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--epochs", type=int, default=0, help="0: the config's (50)")
  p.add_argument("--num_devices", type=int, default=0)
  p.add_argument("--ablations", action="store_true", help="also Table 5's three ablations")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="config override, e.g. --set net.adv_lambda=0.3 (repeatable)")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  from mmfuse_jax.training.loop import train_seeds

  rows = [("full", None)]
  if args.ablations:
    rows += [(a, a) for a in ("adversarial", "classifier", "decoder")]
  seeds = list(range(args.seeds))
  table = {}
  for name, ablation in rows:
    c = _config(args, ablation)
    wd = os.path.join(args.workdir, name)
    summary = train_seeds(c, wd, seeds)
    table[name] = summary
    t = summary["test"]
    print(f"[{name}] seeds {seeds}: test acc {100 * t['acc']['mean']:.2f} +- "
          f"{100 * t['acc']['std']:.2f}, F1 {100 * t['f1']['mean']:.2f} +- "
          f"{100 * t['f1']['std']:.2f} (valid acc {100 * summary['valid']['acc']['mean']:.2f})",
          flush=True)

  print("\nCMU-MOSI (utterance level, Poria split), binary: test Acc / F1, mean +- std over "
        f"{len(seeds)} seeds, selection on validation {c.select_metric or 'loss'}")
  print(f"{'setting':38s} {'ours Acc':>16s} {'ours F1':>16s} {'paper Acc':>10s} {'paper F1':>9s}")
  labels = {"full": "ARGF (a, v -> l)", "adversarial": "ARGF without adversarial training",
            "classifier": "ARGF without classifier", "decoder": "ARGF without decoder"}
  for name, summary in table.items():
    t = summary["test"]
    pa, pf = PAPER[name]
    print(f"{labels[name]:38s} {100 * t['acc']['mean']:9.2f} +- {100 * t['acc']['std']:4.2f} "
          f"{100 * t['f1']['mean']:9.2f} +- {100 * t['f1']['std']:4.2f} {pa:10.2f} {pf:9.2f}")
  print(f"{BASELINE[0]:38s} {'':>16s} {'':>16s} {BASELINE[1]:10.2f} {BASELINE[2]:9.2f}")
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "table.json"), "w") as f:
    json.dump({k: v["test"] for k, v in table.items()}, f, indent=2, default=float)
  return 0


if __name__ == "__main__":
  sys.exit(main())
