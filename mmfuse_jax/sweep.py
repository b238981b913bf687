"""python -m mmfuse_jax.sweep --model=NAME --grid FIELD=V1,V2 [--grid FIELD=...] [--seeds=1,2,3]
[--trials=N [--range FIELD=LO:HI[:log]] [--grid FIELD=A,B]] [--sweep_seed=0] [--workdir=DIR]
[--compile_cache=PATH|none] [any flag or --config.field=V of mmfuse_jax.train]

Hyper-parameter sweep over any config fields. Grid search (default): every combination of the
--grid values (values separated by ',', or by ';' when a value itself holds commas, e.g.
--grid "data.modalities=text,audio;text,audio,vision"). Random search (--trials=N): trial i
draws each --grid field uniformly from its values and each --range field uniformly between
LO and HI (log-uniformly with ':log'; integers for integer fields) from a generator seeded by
(--sweep_seed, i), so adding trials keeps the earlier ones.

Each combination and seed trains in WORKDIR/<combination>/seed_<s> with the library's own
loop; rerunning the command reuses every finished run (their configs match) and resumes the
interrupted one. Combinations are compared on VALIDATION only: the mean over seeds of the
runs' selection metric (--select_metric/--select_mode; task default: MAE for regression,
loss otherwise). WORKDIR/sweep.md and sweep.csv hold mean ± std over seeds per combination
with the selected one marked, and the selected combination's test metrics (each run
evaluated its test split once, for its validation-selected checkpoint). Without --workdir
the sweep goes to runs/sweep-MODEL-DATASET[-HASH of the fields changed from --model's
defaults].
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time

import numpy as np

from mmfuse_jax import config as config_lib
from mmfuse_jax import train
from mmfuse_jax.cli import parse_flags, run_main
from mmfuse_jax.data import load_dataset
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import compile_cache, summary
from mmfuse_jax.training import metrics as metrics_lib
from mmfuse_jax.training.loop import train_and_evaluate
from mmfuse_jax.training.run_log import import_wandb
from mmfuse_jax.training.workdir import run_hash

KNOWN = {**train.KNOWN, "trials": None, "sweep_seed": "0"}
_REPEATED = ("grid", "range")


def split_repeated(argv: list[str]) -> tuple[list[str], dict[str, list[str]]]:
  """Takes the repeatable --grid/--range arguments ('--grid K=V' or '--grid=K=V') out of
  argv; returns (the other arguments, {'grid': [...], 'range': [...]})."""
  rest, found = [], {k: [] for k in _REPEATED}
  i = 0
  while i < len(argv):
    arg = argv[i]
    name = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
    if name in _REPEATED:
      if "=" in arg:
        found[name].append(arg.split("=", 1)[1])
      elif i + 1 < len(argv):
        found[name].append(argv[i + 1]); i += 1
      else:
        raise ConfigError(f"--{name} needs FIELD=VALUES")
    else:
      rest.append(arg)
    i += 1
  return rest, found


def _field_and_text(spec: str, flag: str) -> tuple[str, str]:
  if "=" not in spec:
    raise ConfigError(f"--{flag} {spec!r}: expected FIELD=VALUES")
  key, text = spec.split("=", 1)
  key = key.strip()
  if key in ("seed", "seeds"):
    raise ConfigError(f"--{flag} {key}: give seeds with --seeds=1,2,3")
  return key, text


def parse_grid(spec: str) -> tuple[str, list[str]]:
  """'net.d_model=30,40' -> ('net.d_model', ['30', '40']) (';' separates when present)."""
  key, text = _field_and_text(spec, "grid")
  values = [v.strip() for v in text.split(";" if ";" in text else ",") if v.strip()]
  if not values:
    raise ConfigError(f"--grid {spec!r}: no values")
  if len(set(values)) != len(values):
    raise ConfigError(f"--grid {spec!r}: repeated values")
  return key, values


def parse_range(spec: str) -> tuple[str, float, float, bool]:
  """'optim.lr=1e-4:1e-2:log' -> ('optim.lr', 1e-4, 1e-2, True)."""
  key, text = _field_and_text(spec, "range")
  parts = text.split(":")
  log = len(parts) == 3 and parts[2].strip() == "log"
  if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
    raise ConfigError(f"--range {spec!r}: expected FIELD=LO:HI or FIELD=LO:HI:log")
  try:
    lo, hi = float(parts[0]), float(parts[1])
  except ValueError:
    raise ConfigError(f"--range {spec!r}: LO and HI must be numbers") from None
  if not lo < hi or (log and lo <= 0):
    raise ConfigError(f"--range {spec!r}: needs LO < HI{' and LO > 0 for :log' if log else ''}")
  return key, lo, hi, log


def grid_combinations(grids: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
  """Every combination of the grid values, the first field varying slowest."""
  keys = [k for k, _ in grids]
  return [dict(zip(keys, values)) for values in itertools.product(*[v for _, v in grids])]


def random_combinations(grids, ranges, trials: int, seed: int, base) -> list[dict[str, str]]:
  """`trials` random draws: trial i uses numpy's default_rng([seed, i]) and draws the grid
  fields (uniform choice) then the range fields (uniform or log-uniform; integer fields round
  to an integer in [LO, HI]), each in the order given."""
  out = []
  for i in range(trials):
    rng = np.random.default_rng([seed, i])
    params = {}
    for key, values in grids:
      params[key] = values[int(rng.integers(len(values)))]
    for key, lo, hi, log in ranges:
      u = rng.uniform(math.log(lo), math.log(hi)) if log else rng.uniform(lo, hi)
      value = math.exp(u) if log else u
      current = config_lib.flat_value(base, key) if key in config_lib.all_keys(base) else 0.0
      if isinstance(current, int) and not isinstance(current, bool):
        params[key] = str(int(min(max(round(value), math.ceil(lo)), math.floor(hi))))
      else:
        params[key] = repr(float(value))
    out.append(params)
  return out


def combination_name(params: dict[str, str], trial: int | None = None) -> str:
  """A folder name for one combination: 'net.d_model=30_optim.lr=1e-3' (random trials:
  'trial003_...' with 4 significant digits; the trial number keeps names unique)."""
  def short(v: str) -> str:
    if trial is None:
      return v
    try:
      return f"{float(v):.4g}"
    except ValueError:
      return v
  parts = [f"{k}={short(v)}" for k, v in params.items()]
  if trial is not None:
    parts.insert(0, f"trial{trial:03d}")
  name = "_".join(parts) or "base"
  return "".join(c if c.isalnum() or c in "._=+-," else "-" for c in name)


def plan_sweep(base, found: dict[str, list[str]], flags: dict, overrides: dict
               ) -> list[tuple[str, dict[str, str], list]]:
  """[(name, params, [config per seed])]: every config built and validated up front, so a
  bad value fails before anything trains."""
  grids = [parse_grid(s) for s in found["grid"]]
  ranges = [parse_range(s) for s in found["range"]]
  keys = [k for k, _ in grids] + [r[0] for r in ranges]
  for key in keys:
    if keys.count(key) > 1:
      raise ConfigError(f"{key} is swept twice")
    if key in overrides or (key in ("epochs", "batch_size", "dataset", "data_dir")
                            and flags.get(key) is not None):
      raise ConfigError(f"{key} is both set (--{key}=...) and swept; drop one")
  if flags["trials"] is not None:
    trials = int(flags["trials"])
    if trials < 1:
      raise ConfigError(f"--trials must be >= 1, got {trials}")
    combos = random_combinations(grids, ranges, trials, int(flags["sweep_seed"]), base)
    names = [combination_name(p, i) for i, p in enumerate(combos)]
  else:
    if ranges:
      raise ConfigError("--range draws random values: add --trials=N")
    combos = grid_combinations(grids)
    names = [combination_name(p) for p in combos]
  if len(set(names)) != len(names):
    raise ConfigError("two combinations map to one folder name; make the values distinct")
  seeds = ([int(s) for s in flags["seeds"].split(",") if s.strip()] if flags["seeds"]
           else [base.seed])
  plan = []
  for name, params in zip(names, combos):
    configs = []
    for s in seeds:
      c = base.copy_and_resolve_references()
      config_lib.apply_overrides(c, params)
      c.seed = s
      config_lib.validate_config(c)
      configs.append(c)
    plan.append((name, params, configs))
  return plan


def default_sweep_workdir(base, root: str = "runs") -> str:
  digest = run_hash(base)
  name = f"sweep-{base.model}-{base.dataset}"
  return os.path.join(root, f"{name}-{digest}" if digest else name)


def run_sweep(plan, workdir: str) -> dict:
  """Trains (or reuses) every run of the plan, then writes sweep.md, sweep.csv and
  sweep.json into `workdir`; returns the sweep.json content."""
  start = time.perf_counter()
  datasets: dict[str, tuple] = {}
  rows, results = [], []
  for name, params, configs in plan:
    runs = []
    for c in configs:
      key = json.dumps([c.dataset, c.data_dir, c.data.to_dict()], sort_keys=True, default=str)
      if key not in datasets:
        datasets[key] = load_dataset(c)
      ds, stats = datasets[key]
      run_dir = os.path.join(workdir, name, f"seed_{c.seed}")
      print(f"[{len(results) + 1}/{sum(len(p[2]) for p in plan)}] {run_dir}", flush=True)
      runs.append(train_and_evaluate(c, run_dir, dataset=ds, data_stats=stats))
      results.append(runs[-1])
    rows.append(summary.combination_row(name, params, runs))
  metric, mode = results[0]["select_metric"], results[0]["select_mode"]
  if metric == "last":  # runs keep their last epoch: compare combinations by the task default
    metric, mode = metrics_lib.SELECTION_DEFAULTS[ds.task]
  selected = summary.select_combination(rows, metric, mode)
  out = {"select_metric": metric, "select_mode": mode, "selected": rows[selected]["name"],
         "rows": rows, "wall_time_s": time.perf_counter() - start}
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "sweep.md"), "w") as f:
    f.write(summary.markdown_table(rows, selected, metric, mode))
  with open(os.path.join(workdir, "sweep.csv"), "w") as f:
    f.write(summary.csv_table(rows, selected))
  with open(os.path.join(workdir, "sweep.json"), "w") as f:
    json.dump(out, f, indent=2)
  return out


def _main(argv: list[str]) -> int:
  argv, found = split_repeated(argv)
  flags, overrides = parse_flags(argv, KNOWN)
  if flags["help"]:
    print(__doc__.strip())
    return 0
  base_overrides = dict(overrides)
  base = train.build_config(flags, overrides)
  plan = plan_sweep(base, found, flags, base_overrides)
  if base.wandb:
    import_wandb()
  compile_cache.enable(flags["compile_cache"])
  workdir = flags["workdir"] or default_sweep_workdir(base)
  runs = sum(len(p[2]) for p in plan)
  print(f"sweep: {len(plan)} combination(s) x {len(plan[0][2])} seed(s) = {runs} runs in "
        f"{workdir}", flush=True)
  out = run_sweep(plan, workdir)
  with open(os.path.join(workdir, "sweep.md")) as f:
    print(f.read())
  print(f"table: {os.path.join(workdir, 'sweep.md')} and sweep.csv; wall {out['wall_time_s']:.1f}s")
  return 0


def main(argv: list[str] | None = None) -> int:
  return run_main(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
