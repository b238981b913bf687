"""python -m mmfuse_jax.evaluate --workdir=DIR [--data_dir=PATH] [--splits=valid,test] [--plots]

Re-evaluates the validation-selected checkpoint of a finished or running workdir on the
same data (standardisation refitted on train, exactly as in training) and prints the
metrics. --data_dir points at the data when it moved since training. --plots writes PNG
plots into the workdir (mmfuse_jax/plots.py). --drop=SPEC[,SPEC] (or --drop=paper) evaluates
the selected checkpoint with modalities zeroed or removed ('zero:text', 'remove:audio+vision')
and reports Acc-2(corrupt) / Acc-2 (MDM Sec. 5.3); --splits then names the split.
--noise=MOD:LEVEL[,MOD:LEVEL] adds Gaussian noise of LEVEL standard deviations to one
modality's standardised features (seeded by --noise_seed, default 0), and
--shift=MOD:KIND:AMOUNT[,...] shifts one modality's distribution (KIND scale: about the
train mean; offset: by AMOUNT standard deviations); each writes a table like --drop's
(noise_SPLIT.json, shift_SPLIT.json in the workdir; mmfuse_jax/training/conditions.py).
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from mmfuse_jax.cli import parse_flags, run_main
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.plots import plot_bars, plot_workdir
from mmfuse_jax.training import conditions, robustness
from mmfuse_jax.training.evaluation import evaluate_split
from mmfuse_jax.training.experiment import (build_experiment, load_workdir_config,
                                            restore_selected)

KNOWN = {"workdir": None, "data_dir": None, "splits": "valid,test", "help": None,
         "json": None, "plots": None, "drop": None, "noise": None, "shift": None,
         "noise_seed": "0"}


PLOT_PACKAGES = ("matplotlib", "sklearn")  # pyproject's [plots] extra: matplotlib, scikit-learn


def require_plot_packages() -> None:
  """A ConfigError with the install command when a package --plots needs is missing (checked
  before anything is evaluated)."""
  missing = []
  for name in PLOT_PACKAGES:
    try:
      importlib.import_module(name)
    except ImportError:
      missing.append("scikit-learn" if name == "sklearn" else name)
  if missing:
    raise ConfigError(f"--plots needs {' and '.join(missing)}, not installed: install the "
                      f"'plots' extra (pip install \".[plots]\" in the mmfuse_jax checkout) or "
                      f"pip install matplotlib scikit-learn")


def evaluate_workdir(workdir: str, splits=("valid", "test"), data_dir: str | None = None,
                     plots: bool = False) -> dict:
  config = load_workdir_config(workdir, data_dir)
  exp = build_experiment(config)
  state, meta = restore_selected(workdir, exp)
  out = {"selected_epoch": meta["epoch"]}
  for split in splits:
    if split not in exp.dataset.splits:
      raise ConfigError(f"unknown split {split!r}; valid: {sorted(exp.dataset.splits)}")
    out[split] = evaluate_split(exp, state, exp.dataset.splits[split])
  if plots:
    out["plots"] = plot_workdir(workdir, exp, state)
  return out


def _main(argv: list[str]) -> int:
  flags, extra = parse_flags(argv, KNOWN)
  if flags["help"]:
    print(__doc__.strip())
    return 0
  if extra:
    raise ConfigError(f"unknown options {sorted(extra)}; valid: {sorted(KNOWN)}")
  if not flags["workdir"]:
    raise ConfigError("--workdir is required")
  splits = tuple(s.strip() for s in flags["splits"].split(",") if s.strip())
  if flags["plots"]:
    require_plot_packages()
  if flags["noise"] or flags["shift"]:
    _conditions_main(flags)
  if flags["drop"]:
    return _drop_main(flags)
  if flags["noise"] or flags["shift"]:
    return 0
  out = evaluate_workdir(flags["workdir"], splits, flags["data_dir"], plots=bool(flags["plots"]))
  if flags["json"]:
    print(json.dumps(out, indent=2))
  else:
    print(f"selected epoch {out['selected_epoch']}")
    for split in splits:
      print(f"{split:5s}: " + "  ".join(f"{k}={v:.4f}" for k, v in out[split].items()))
    for path in out.get("plots", []):
      print(f"plot: {path}")
  return 0


def _drop_main(flags) -> int:
  """--drop: modality-drop robustness of the selected checkpoint (MDM Sec. 5.3, Fig. 2)."""
  specs = robustness.PAPER_DROPS if flags["drop"] == "paper" else tuple(
      s.strip() for s in flags["drop"].split(",") if s.strip())
  split = flags["splits"].split(",")[-1].strip() or "test"
  if flags["data_dir"]:
    raise ConfigError("--drop reads the data from the workdir's config; --data_dir is not "
                      "supported with it yet")
  table = robustness.modality_drop_table(flags["workdir"], specs, split=split)
  path = os.path.join(flags["workdir"], f"modality_drop_{split}.json")
  robustness.write_table(table, path)
  if flags["json"]:
    print(json.dumps(table, indent=2, default=float))
  else:
    ratio_key = next(k for k in next(iter(table["drops"].values())) if k.endswith("_ratio"))
    print(f"{split}: clean " + "  ".join(f"{k}={v:.4f}" for k, v in table["clean"].items()))
    for spec, row in table["drops"].items():
      print(f"  drop {spec:22s} {ratio_key}={row[ratio_key]:.4f}")
    print(f"table: {path}")
  if flags["plots"]:
    ratio_key = next(k for k in next(iter(table["drops"].values())) if k.endswith("_ratio"))
    plot_bars(flags["workdir"], {s: r[ratio_key] for s, r in table["drops"].items()},
              "modality_drop.png", f"{ratio_key} under modality drop ({split})",
              ylabel="corrupt / clean")
  return 0


def _conditions_main(flags) -> None:
  """--noise / --shift: test-time noise and distribution shift of one modality."""
  split = flags["splits"].split(",")[-1].strip() or "test"
  if flags["data_dir"]:
    raise ConfigError("--noise/--shift read the data from the workdir's config; --data_dir is "
                      "not supported with them yet")
  try:
    seed = int(flags["noise_seed"])
  except ValueError:
    raise ConfigError(f"--noise_seed expects an integer, got {flags['noise_seed']!r}") from None
  specs = {k: tuple(s.strip() for s in (flags[k] or "").split(",") if s.strip())
           for k in ("noise", "shift")}
  for spec in specs["noise"]:  # the form of every spec is checked before anything loads
    conditions.parse_noise(spec)
  for spec in specs["shift"]:
    conditions.parse_shift(spec)
  table = conditions.condition_table(flags["workdir"], split=split, seed=seed, **specs)
  for kind in ("noise", "shift"):
    if not specs[kind]:
      continue
    part = {k: v for k, v in table.items() if k != ("shift" if kind == "noise" else "noise")}
    path = os.path.join(flags["workdir"], f"{kind}_{split}.json")
    robustness.write_table(part, path)
    if not flags["json"]:
      print("\n".join(conditions.format_table(table, kind) + [f"table: {path}"]))
    if flags["plots"]:
      main = "mae" if "mae" in table["clean"] else next(iter(table["clean"]))
      plot_bars(flags["workdir"], {s: r["metrics"][main] for s, r in table[kind].items()},
                f"{kind}.png", f"{main} under test-time {kind} ({split}; clean "
                f"{table['clean'][main]:.3f})", ylabel=main)
  if flags["json"]:  # one object: clean metrics, 'noise' and 'shift' rows
    print(json.dumps(table, indent=2, default=float))


def main(argv: list[str] | None = None) -> int:
  return run_main(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
