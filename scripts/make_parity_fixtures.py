"""Writes tests/fixtures/parity_<model>.npz: the official PyTorch model at tiny widths with
random weights, its inputs, eval-mode outputs and parameter gradients (the records of
scripts/torch_parity.py --size=tiny), for tests/test_parity.py, which runs without torch.

    python scripts/make_parity_fixtures.py --torch-ref=PATH [--models=mult,argf] [--check]

The records are data (random weights and what the official code computes from them), no
code of the official repositories. --check also runs the comparison here.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_parity  # noqa: E402  (scripts/ is not a package)

from mmfuse_jax.convert import parity  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "tests", "fixtures")


def fixture_path(model: str) -> str:
  return os.path.join(FIXTURES, f"parity_{model}.npz")


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--torch-ref", required=True, help="checkout(s) of the official code")
  ap.add_argument("--models", default=",".join(sorted(torch_parity.BUILDERS)))
  ap.add_argument("--check", action="store_true", help="compare with ours after writing")
  args = ap.parse_args(argv)
  os.makedirs(FIXTURES, exist_ok=True)
  ok = True
  for model in [m.strip() for m in args.models.split(",") if m.strip()]:
    record = torch_parity.official_record(model, os.path.expanduser(args.torch_ref), "tiny")
    path = fixture_path(model)
    parity.save_record(path, record)
    print(f"{path}: {os.path.getsize(path) / 1024:.0f} KiB, {len(record)} arrays")
    if args.check:
      res = parity.check(parity.load_record(path))
      torch_parity.print_result(model, res)
      ok &= res["ok"]
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
