"""Ablation / comparison tables: variants x seeds, mean +- std of the validation-selected
checkpoints, as a Markdown table and JSON.

Each variant is a set of config overrides applied on top of the model's config (or of
--config FILE). Every run goes through the library's own loop (`train_seeds`), so the
selection rule is the config's (validation only); the test split is only reported.

  python scripts/run_table.py --table rerd --seeds 0,1,2 --workdir /tmp/tables
  python scripts/run_table.py --table mdm --model tfn --dataset mosi_utterance \
      --data_dir ~/data/mosi-utterance --set select_metric=mae
  python scripts/run_table.py --model mult --variant "small:net.d_model=20" --variant base:

Presets (--table): rerd (paper Table VII), mica (paper Table 5), mdm (L_none/L_kl/L_f/L_w,
selection on validation MAE as in the paper's A.1.2; pass --model), mcer (Table IV).
--only NAME,NAME runs a subset of the preset's variants.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

PRESETS = {
    "rerd": ("rerd", [
        ("RERD (full)", {}),
        ("w/o MSD", {"net.use_msd": False}),
        ("w/o distillation layers", {"net.encoder": "self_attention"}),
        ("w/o multi-head distillation encoder", {"net.encoder": "none"}),
    ]),
    "mica": ("mica", [
        ("backbone", {"net.mmd": False, "net.pe": False}),
        ("+ MMD", {"net.pe": False}),
        ("+ MMD + PE (full)", {}),
        ("+ MMD + PE w/o propagation", {"net.propagate": False}),
    ]),
    "mdm": (None, [
        ("L_none", {"net.mdm": "none"}),
        ("L_kl", {"net.mdm": "kl"}),
        ("L_f", {"net.mdm": "f"}),
        ("L_w", {"net.mdm": "w"}),
    ]),
    "mcer": ("mcer", [
        ("MCER (full)", {}),
        ("w/o L_m", {"net.alpha": 0.0}),
        ("w/o L_avl", {"net.beta": 0.0}),
        ("w/o L_dc", {"net.gamma": 0.0}),
        ("w/o L_MI", {"net.eta": 0.0}),
    ]),
}
PRESET_SELECT = {"mdm": "mae"}   # the paper's A.1.2: selection on validation MAE

COLUMNS = {
    "regression": [("acc2_non0", "Acc-2 non0", 100), ("acc2_has0", "Acc-2 has0", 100),
                   ("f1_non0", "F1 non0", 100), ("acc7", "Acc-7", 100), ("mae", "MAE", 1),
                   ("corr", "Corr", 1)],
    "binary": [("acc", "Acc", 100), ("f1", "F1", 100)],
    "sims": [("acc2", "Acc-2", 100), ("acc3", "Acc-3", 100), ("f1", "F1", 100),
             ("mae", "MAE", 1), ("corr", "Corr", 1)],
}


def parse_variant(text: str) -> tuple[str, dict]:
  """'name:key=value;key=value' -> (name, {key: value})."""
  name, _, rest = text.partition(":")
  overrides = {}
  for item in filter(None, (s.strip() for s in rest.split(";"))):
    key, sep, value = item.partition("=")
    if not sep:
      raise SystemExit(f"--variant {text!r}: {item!r} is not key=value")
    overrides[key.strip()] = value.strip()
  return name.strip(), overrides


def columns_for(metrics: dict) -> list[tuple[str, str, float]]:
  for cols in COLUMNS.values():
    if all(k in metrics for k, _, _ in cols):
      return cols
  return [(k, k, 1) for k in sorted(metrics)]


def markdown(rows: list[tuple[str, dict]], split: str = "test") -> str:
  cols = columns_for(rows[0][1][split])
  lines = ["| variant | " + " | ".join(c[1] for c in cols) + " |",
           "|---" * (len(cols) + 1) + "|"]
  for name, summary in rows:
    cells = []
    for key, _, scale in cols:
      m = summary[split][key]
      digits = 1 if scale == 100 else 3
      cells.append(f"{scale * m['mean']:.{digits}f} +- {scale * m['std']:.{digits}f}")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def build_config(args, overrides: dict):
  from mmfuse_jax import config as config_lib
  if args.config:
    c = config_lib.load_config_file(args.config)
  else:
    c = config_lib.get_config(args.model, args.dataset, preset=args.preset != "none")
  c.progress = False
  base = {}
  if args.data_dir:
    base["data_dir"] = args.data_dir
  if args.epochs:
    base["epochs"] = args.epochs
  base.update(dict(kv.split("=", 1) for kv in args.set))
  base.update(overrides)
  config_lib.apply_overrides(c, {k: str(v) for k, v in base.items()})
  config_lib.validate_config(c)
  return c


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--table", choices=sorted(PRESETS), help="a preset list of variants")
  p.add_argument("--only", default="", help="comma-separated subset of the preset's names")
  p.add_argument("--variant", action="append", default=[], metavar="NAME:K=V;K=V")
  p.add_argument("--model", default=None)
  p.add_argument("--dataset", default=None,
                 help="default: the model's built-in synthetic data (as `train` without flags)")
  p.add_argument("--preset", choices=("synthetic", "none"), default="synthetic",
                 help="on the built-in synthetic data: the model's synthetic preset "
                      "(default, as `train` without flags) or 'none' (its paper settings)")
  p.add_argument("--data_dir", default=None)
  p.add_argument("--config", default=None, help="a config file instead of --model/--dataset")
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--epochs", type=int, default=0, help="0: the config's")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override for every variant (repeatable)")
  p.add_argument("--workdir", default="/tmp/mmfuse_tables")
  p.add_argument("--split", default="test", choices=["test", "valid"])
  p.add_argument("--compile_cache", default="",
                 help="JAX persistent compilation cache dir (default WORKDIR/.jax_cache; "
                      "'off' disables): seeds of one variant then compile once")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  if args.compile_cache != "off":
    import jax
    jax.config.update("jax_compilation_cache_dir",
                      args.compile_cache or os.path.join(args.workdir, ".jax_cache"))

  variants = [parse_variant(v) for v in args.variant]
  if args.table:
    model, preset = PRESETS[args.table]
    args.model = args.model or model
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    variants += [(n, o) for n, o in preset if not only or n in only]
    if args.table in PRESET_SELECT and not any(s.startswith("select_metric=")
                                               for s in args.set):
      args.set.append(f"select_metric={PRESET_SELECT[args.table]}")
  if not variants:
    p.error("give --table or at least one --variant")
  if not (args.model or args.config):
    p.error("give --model (or --config)")
  seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

  from mmfuse_jax.training.loop import train_seeds
  configs = [(name, build_config(args, o)) for name, o in variants]  # fail fast on typos
  rows, record = [], {"argv": sys.argv[1:] if argv is None else argv, "seeds": seeds,
                      "variants": {}}
  label = args.config or f"{args.model} on {configs[0][1].dataset}"
  for (name, overrides), (_, c) in zip(variants, configs):
    wd = os.path.join(args.workdir, name.replace(" ", "_").replace("/", "-"))
    t0 = time.time()
    summary = train_seeds(c, wd, seeds)
    summary["wall_s"] = time.time() - t0
    summary["overrides"] = {k: str(v) for k, v in overrides.items()}
    rows.append((name, summary))
    record["variants"][name] = summary
    print(f"[{label}] {name}: done in {summary['wall_s']:.0f} s", flush=True)
    print(markdown(rows[-1:], args.split), flush=True)
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "table.json"), "w") as f:
      json.dump(record, f, indent=1)
  table = markdown(rows, args.split)
  with open(os.path.join(args.workdir, "table.md"), "w") as f:
    f.write(table + "\n")
  print(f"\n{label}, {args.split} split, mean +- std over seeds {seeds} "
        f"(validation-selected checkpoints)\n{table}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
