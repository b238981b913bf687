"""MCER case study (paper Table VI): generated labels of a few training samples.

Restores a finished MCER run's validation-selected checkpoint (its training state holds
the label memory) and prints, per chosen train row, the m-label (the human label y_m),
the s-labels (t/a/v, SLGM) and the c-labels (m_t/m_a/m_v, CLGM):

  python scripts/mcer_case_study.py --workdir runs/mcer_mosi --data_dir DIR
  python scripts/mcer_case_study.py --workdir RUN --rows 0,5,9      # chosen train rows
  python scripts/mcer_case_study.py --workdir RUN --n 6 --json out.json

Without --rows it picks --n rows spread over the label range (most negative to most
positive m-label), the way the paper picks its examples. --checkpoint=latest reads the
last epoch's labels instead of the selected epoch's.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np


def spread_rows(y_m: np.ndarray, seen: np.ndarray, n: int) -> list[int]:
  """n row indices with evenly spaced ranks of y_m among the rows that were trained on."""
  rows = np.flatnonzero(seen > 0)
  if len(rows) == 0:
    raise SystemExit("no train row has generated labels yet (no finished epoch)")
  order = rows[np.argsort(y_m[rows], kind="stable")]
  picks = np.unique(np.linspace(0, len(order) - 1, num=min(n, len(order))).round().astype(int))
  return [int(order[i]) for i in picks]


def load_state(workdir: str, data_dir: str | None, checkpoint: str, dataset=None):
  """(experiment, state, meta) of a finished MCER run; dataset: the Dataset the run was
  trained on when it did not come from the run's config (tests)."""
  from mmfuse_jax.training.experiment import load_workdir_config, restore_selected
  from mmfuse_jax.training.checkpoint import Checkpoints, abstract_like
  from mmfuse_jax.training.experiment import build_experiment, init_state
  config = load_workdir_config(workdir, data_dir)
  if config.model != "mcer":
    raise SystemExit(f"{workdir} is a {config.model!r} run, not mcer")
  exp = build_experiment(config, dataset)
  if checkpoint == "selected":
    state, meta = restore_selected(workdir, exp)
  else:
    ckpt = Checkpoints(workdir)
    restored = ckpt.restore_latest(abstract_like(init_state(exp), exp.state_sharding))
    ckpt.close()
    if restored is None:
      raise SystemExit(f"{workdir} has no checkpoint in checkpoints/latest")
    state, meta = restored
  return exp, state, meta


def case_study(workdir: str, rows=None, *, n: int = 5, data_dir: str | None = None,
               checkpoint: str = "selected", dataset=None) -> tuple[str, dict]:
  """(printable Table VI, JSON record) of a run's generated labels for train rows `rows`
  (None: n rows spread over the m-label range)."""
  from mmfuse_jax.methods.mcer import label_case_study
  exp, state, meta = load_state(workdir, data_dir, checkpoint, dataset)
  extras = jax.device_get(state.extras)
  if "labels" not in extras or not extras["labels"]:
    raise SystemExit(f"{workdir}: this MCER run has no unimodal or cross-modal tasks "
                     "(net.tasks), so there are no generated labels")
  if rows is None:
    rows = spread_rows(np.asarray(extras["y_m"]), np.asarray(extras["seen"]), n)
  ids = exp.dataset.splits["train"].ids
  limit = min(len(np.asarray(extras["y_m"])), len(ids))
  bad = [r for r in rows if not 0 <= r < limit]
  if bad:
    raise SystemExit(f"rows {bad}: the train split has {len(ids)} rows")
  text = (f"{workdir}: {checkpoint} checkpoint (epoch {meta.get('epoch')})\n"
          + label_case_study(state, rows, ids))
  record = {"epoch": meta.get("epoch"), "rows": [
      {"row": int(r), "id": str(ids[r]), "m": float(extras["y_m"][r]),
       **{k: float(v[r]) for k, v in extras["labels"].items()}} for r in rows]}
  return text, record


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True)
  p.add_argument("--data_dir", default=None)
  p.add_argument("--rows", default="", help="comma-separated train row indices")
  p.add_argument("--n", type=int, default=5, help="rows to pick when --rows is not given")
  p.add_argument("--checkpoint", choices=("selected", "latest"), default="selected")
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  rows = [int(r) for r in args.rows.split(",") if r.strip()] if args.rows else None
  text, record = case_study(args.workdir, rows, n=args.n, data_dir=args.data_dir,
                            checkpoint=args.checkpoint)
  print(text)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(record, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
