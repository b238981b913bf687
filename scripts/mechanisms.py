"""The mechanism benchmark of docs/mechanisms.md in one command: every pre-registered run,
its test-time condition tables and mechanism-acts check, then the paired differences, 95%
t-intervals and decisions, printed as the Markdown tables of the document's Results section
and written as JSON.

  python scripts/mechanisms.py [--workdir runs/mechanisms] [--seeds 0,1,2,3,4]
      [--only H1,H3 | rerd,mdm] [--conditions n200_h1,n1200_h1] [--exploratory]
      [--fill_doc [--doc docs/mechanisms.md]] [--json PATH] [--dry_run]

For every (method, arm, condition, seed) of the design it runs, in this process, what the
document's "Command per run" block runs: training (`train_and_evaluate`; a workdir that
already holds the finished run of the same config returns its results without training, one
holding another config is an error), the modality-drop table (`modality_drop_test.json`)
and the noise and shift tables (`noise_test.json`, `shift_test.json`) of the
validation-selected checkpoint on the test split, then the run's mechanism-acts check
(mmfuse_jax/training/mechanism_checks.py). Each run's tables and check are kept in its
workdir (`mechanisms_run.json`) and reused while its results.json is unchanged (--recompute
redoes them). Workdirs: WORKDIR/MODEL/ARM/CONDITION/seed_S.

The design's statistic: per seed a paired difference d_S signed so that a positive value is
what the hypothesis predicts, mean(d) +- t(0.975, n - 1) sd(d) / sqrt(n) (2.776 for the 5
seeds); a hypothesis holds when the interval lies above 0, is reversed when it lies below 0,
and is not supported otherwise. A run that fails (an exception, or a non-finite test MAE) is
reported as failed and never rerun; a contrast that needs a failed mechanism-arm run fails,
and its d uses the seeds whose runs all succeeded.

--only picks hypotheses (H1..H5) or methods (rerd, mica, mdm, argf, mcer); --conditions
restricts the conditions (timing, partial reruns); --exploratory adds the pre-registered
exploratory runs of H3/H4 in n200_h1. --fill_doc writes the filled tables into the Results
section of --doc (nothing above that section changes); it needs the full design (no --only,
--conditions, --tiny, --set; seeds 0-4) unless --doc names another file. --tiny and --set
shrink the runs for testing the script, never for results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
import traceback

import numpy as np
from scipy import stats

from mmfuse_jax import config as config_lib
from mmfuse_jax.data import load_dataset
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import compile_cache, conditions, mechanism_checks, robustness
from mmfuse_jax.training.loop import train_and_evaluate

DATASET = "synthetic_shared"
DESIGN_SEEDS = (0, 1, 2, 3, 4)
CONDITIONS = {  # docs/mechanisms.md, Design: name -> config overrides
    "n200_h0": {"data.synthetic_train": 200, "data.shared_heterogeneity": 0.0},
    "n200_h1": {"data.synthetic_train": 200, "data.shared_heterogeneity": 1.0},
    "n1200_h0": {"data.synthetic_train": 1200, "data.shared_heterogeneity": 0.0},
    "n1200_h1": {"data.synthetic_train": 1200, "data.shared_heterogeneity": 1.0},
    "noisy_audio": {"data.synthetic_train": 1200, "data.shared_heterogeneity": 1.0,
                    "data.shared_noise_audio": 3.0},
}
NOISE_LABEL = {"n1200_h1": "noise 1, 1, 1", "noisy_audio": "noise 1, 3, 1"}
ALIGNMENT_CONDITIONS = ("n200_h0", "n200_h1", "n1200_h0", "n1200_h1")
ARMS = ("mechanism", "ablation")
# method -> hypothesis, display name, model, arm overrides, conditions per arm
METHODS = {
    "rerd": dict(hypothesis="H1", name="RERD", model="rerd",
                 arms={"mechanism": {}, "ablation": {"net.use_msd": False}},
                 runs={"mechanism": ALIGNMENT_CONDITIONS, "ablation": ALIGNMENT_CONDITIONS}),
    "mica": dict(hypothesis="H2", name="MICA", model="mica",
                 arms={"mechanism": {}, "ablation": {"net.mmd": False, "net.pe": False}},
                 runs={"mechanism": ALIGNMENT_CONDITIONS, "ablation": ALIGNMENT_CONDITIONS}),
    "mdm": dict(hypothesis="H3", name="EF-LSTM L_W vs L_none", model="ef_lstm",
                arms={"mechanism": {"net.mdm": "w"}, "ablation": {"net.mdm": "none"}},
                runs={"mechanism": ("n1200_h1",), "ablation": ("n1200_h1",)}),
    "argf": dict(hypothesis="H4", name="ARGF vs w/o adversarial", model="argf",
                 arms={"mechanism": {}, "ablation": {"net.adversarial": False}},
                 runs={"mechanism": ("n1200_h1",), "ablation": ("n1200_h1",)}),
    "mcer": dict(hypothesis="H5", name="MCER", model="mcer",
                 arms={"mechanism": {}, "ablation": {"net.tasks": "m"}},
                 runs={"mechanism": ("n1200_h1", "noisy_audio"), "ablation": ("noisy_audio",)}),
}
EXPLORATORY_DROP_CONDITION = "n200_h1"     # H3/H4 in n200_h1: reported, no decision
DROPS = ("zero:text", "zero:audio", "zero:vision")
NOISE = ("text:1", "audio:1", "vision:1")
SHIFT = ("text:offset:1", "audio:offset:1", "vision:offset:1")
# The check values reported per method (mechanism_checks.py says what each means).
# MCER's check (D_m, g) is the H5 table itself.
CHECK_KEYS = {"rerd": ("msd", "msd_shuffled"), "mica": ("mmd2", "a_distance"),
              "mdm": ("dependency_fresh", "dependency_trained"),
              "argf": ("probe_accuracy", "discriminator_accuracy")}
# --tiny: runs of seconds, to test the script (never for results).
TINY_TRAIN = {200: 48, 1200: 64}
TINY = {"epochs": 1, "data.synthetic_valid": 48, "data.synthetic_test": 48}
TINY_NET = {"ef_lstm": {"net.hidden": 8, "net.num_layers": 1, "net.mdm_unroll": 1},
            "argf": {"net.hidden": 8, "net.fusion": "concat"},
            "rerd": {"net.fusion_layers": 1, "net.distill_layers": 1},
            "mica": {"net.num_layers": 1, "net.memory_layers": 1},
            "mcer": {}}
TINY_CRITIC_STEPS = 20
RUN_FILE = "mechanisms_run.json"


# ----------------------------------------------------------------------------------------
# Which runs
# ----------------------------------------------------------------------------------------
def select_methods(only: str) -> list[str]:
  """--only: hypotheses (H1..H5) or method names (rerd, mica, mdm or ef_lstm, argf, mcer)."""
  if not only.strip():
    return list(METHODS)
  by_hypothesis = {v["hypothesis"].lower(): k for k, v in METHODS.items()}
  picked = []
  for token in (t.strip().lower() for t in only.split(",") if t.strip()):
    name = by_hypothesis.get(token) or {"ef_lstm": "mdm"}.get(token, token)
    if name not in METHODS:
      raise SystemExit(f"--only: unknown {token!r}; valid: H1..H5 or {', '.join(METHODS)}")
    if name not in picked:
      picked.append(name)
  return [m for m in METHODS if m in picked]


def planned_runs(methods, seeds, only_conditions=(), exploratory: bool = False) -> list[dict]:
  """Every (method, arm, condition, seed) of the design for these methods, grouped by
  (model, arm) so that a model's programs compile once and then come from the cache."""
  runs = []
  for method in methods:
    spec = METHODS[method]
    for arm in ARMS:
      conds = list(spec["runs"][arm])
      if exploratory and method in ("mdm", "argf"):
        conds.append(EXPLORATORY_DROP_CONDITION)
      for cond in conds:
        if only_conditions and cond not in only_conditions:
          continue
        for seed in seeds:
          runs.append({"method": method, "model": spec["model"], "arm": arm,
                       "condition": cond, "seed": seed})
  return runs


def run_config(run: dict, *, tiny: bool = False, sets=()):
  """The config of one run: the model's synthetic preset on synthetic_shared, the arm's
  switches, the condition's knobs and the seed (model and data), as the document's
  command line builds it."""
  c = config_lib.get_config(run["model"], DATASET)
  c.progress = False
  overrides = {**METHODS[run["method"]]["arms"][run["arm"]], **CONDITIONS[run["condition"]],
               "seed": run["seed"], "data.synthetic_seed": run["seed"]}
  if tiny:
    overrides.update(TINY)
    overrides.update(TINY_NET[run["model"]])
    overrides["data.synthetic_train"] = TINY_TRAIN[overrides["data.synthetic_train"]]
  for item in sets:
    key, sep, value = item.partition("=")
    if not sep:
      raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
    overrides[key.strip()] = value.strip()
  config_lib.apply_overrides(c, {k: str(v) for k, v in overrides.items()})
  config_lib.validate_config(c)
  return c


def run_workdir(root: str, run: dict) -> str:
  return os.path.join(root, run["model"], run["arm"], run["condition"], f"seed_{run['seed']}")


# ----------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------
def _results_key(results: dict) -> dict:
  return {"selected_epoch": results.get("selected_epoch"),
          "test_mae": results["test"].get("mae"), "epochs_run": results.get("epochs_run")}


def _write_condition_parts(table: dict, workdir: str) -> None:
  """noise_test.json and shift_test.json, as `evaluate --noise --shift` writes them."""
  for kind, other in (("noise", "shift"), ("shift", "noise")):
    part = {k: v for k, v in table.items() if k != other}
    robustness.write_table(part, os.path.join(workdir, f"{kind}_{table['split']}.json"))


def evaluate_run(workdir: str, method: str, dataset, critic_steps: int) -> dict:
  """The test-time tables of the document's command block and the mechanism check."""
  t0, c0 = time.perf_counter(), time.process_time()
  drop = robustness.modality_drop_table(workdir, DROPS, split="test", dataset=dataset)
  robustness.write_table(drop, os.path.join(workdir, "modality_drop_test.json"))
  cond = conditions.condition_table(workdir, noise=NOISE, shift=SHIFT, split="test",
                                    dataset=dataset, seed=0)
  _write_condition_parts(cond, workdir)
  t1, c1 = time.perf_counter(), time.process_time()
  kwargs = {"dataset": dataset}
  if method == "mdm":
    kwargs["steps"] = critic_steps
  check = mechanism_checks.CHECKS[method](workdir, **kwargs)
  t2, c2 = time.perf_counter(), time.process_time()
  return {"clean_mae": drop["clean"]["mae"],
          "drop_mae": {s: r["metrics"]["mae"] for s, r in drop["drops"].items()},
          "noise_mae": {s: r["metrics"]["mae"] for s, r in cond["noise"].items()},
          "shift_mae": {s: r["metrics"]["mae"] for s, r in cond["shift"].items()},
          "check": check, "conditions_s": t1 - t0, "check_s": t2 - t1,
          "conditions_cpu_s": c1 - c0, "check_cpu_s": c2 - c1}


def do_run(run: dict, args) -> dict:
  """Trains (or reuses) one run and evaluates it; a failure is recorded, not raised
  (a workdir holding another config is a ConfigError and stops the script)."""
  wd = run_workdir(args.workdir, run)
  record = dict(run, workdir=wd, status="ok")
  config = run_config(run, tiny=args.tiny, sets=args.set)
  dataset, stats_ = load_dataset(config)
  t0, c0 = time.perf_counter(), time.process_time()
  try:
    results = train_and_evaluate(config, wd, dataset=dataset, data_stats=stats_)
  except ConfigError:
    raise
  except Exception as e:  # noqa: BLE001 -- a failed run is reported, never rerun
    record.update(status="failed", error=f"training: {type(e).__name__}: {e}",
                  traceback=traceback.format_exc())
    return record
  # wall and CPU seconds (all threads; a shared machine inflates the wall time, not the CPU)
  record["train_s"], record["train_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
  record["run_wall_s"] = results.get("wall_time_s")
  record["test"] = results["test"]
  if not math.isfinite(results["test"].get("mae", float("nan"))):
    record.update(status="failed", error="non-finite test MAE")
    return record
  path = os.path.join(wd, RUN_FILE)
  key = _results_key(results)
  if not args.recompute and os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved.get("results_key") == key and saved.get("critic_steps") == args.critic_steps:
      record.update(saved["evaluation"], reused=True)
      return record
  try:
    evaluation = evaluate_run(wd, run["method"], dataset, args.critic_steps)
  except ConfigError:
    raise
  except Exception as e:  # noqa: BLE001
    record.update(status="failed", error=f"evaluation: {type(e).__name__}: {e}",
                  traceback=traceback.format_exc())
    return record
  with open(path, "w") as f:
    json.dump({"results_key": key, "critic_steps": args.critic_steps,
               "evaluation": evaluation}, f, indent=1)
  record.update(evaluation)
  return record


# ----------------------------------------------------------------------------------------
# Statistics (docs/mechanisms.md, Statistic and Decision rule)
# ----------------------------------------------------------------------------------------
def t_interval(d) -> dict:
  """mean(d) +- t(0.975, n - 1) sd(d) / sqrt(n) (sd with n - 1); n < 2: no interval."""
  d = np.asarray(d, float)
  n = len(d)
  if n == 0:
    return {"n": 0, "mean": float("nan"), "lo": float("nan"), "hi": float("nan")}
  mean = float(d.mean())
  if n < 2:
    return {"n": 1, "mean": mean, "lo": float("nan"), "hi": float("nan")}
  half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
  return {"n": n, "mean": mean, "lo": mean - half, "hi": mean + half}


def decide(interval: dict) -> str:
  """'holds' (interval above 0), 'reversed' (below 0), 'not supported' (contains 0)."""
  if not (math.isfinite(interval["lo"]) and math.isfinite(interval["hi"])):
    return "no interval (fewer than 2 seeds)" if interval["n"] else "—"
  if interval["lo"] > 0:
    return "holds"
  if interval["hi"] < 0:
    return "reversed"
  return "not supported"


class Runs:
  """The run records indexed by (method, arm, condition, seed)."""

  def __init__(self, records, seeds):
    self.by_key = {(r["method"], r["arm"], r["condition"], r["seed"]): r for r in records}
    self.seeds = list(seeds)

  def get(self, method, arm, cond, seed):
    return self.by_key.get((method, arm, cond, seed))

  def ok(self, method, arm, cond, seed) -> bool:
    r = self.get(method, arm, cond, seed)
    return r is not None and r["status"] == "ok" and "clean_mae" in r

  def values(self, fn, method, arm, cond) -> list[float]:
    return [fn(self.get(method, arm, cond, s)) for s in self.seeds
            if self.ok(method, arm, cond, s)]

  def failed(self, method, arm, cond) -> list[int]:
    return [s for s in self.seeds if (r := self.get(method, arm, cond, s)) is not None
            and r["status"] != "ok"]

  def paired(self, fn, needs) -> tuple[list[float], dict]:
    """d_S = fn(seed) over the seeds where every run of `needs` ((method, arm, cond)...)
    succeeded, and {'failed_mechanism': [...], 'failed_ablation': [...], 'missing': n}."""
    d, info = [], {"failed_mechanism": [], "failed_ablation": [], "missing": 0}
    for s in self.seeds:
      rows = [self.get(m, a, c, s) for m, a, c in needs]
      if any(r is None for r in rows):
        info["missing"] += 1
        continue
      bad = [(a, r) for (_, a, _), r in zip(needs, rows) if r["status"] != "ok"]
      for arm, _ in bad:
        info[f"failed_{arm}"].append(s)
      if not bad:
        d.append(fn(s))
    return d, info


def clean(r):
  return r["clean_mae"]


def drop_increase(r):
  """r_S: mean over the single-modality drops of MAE(drop) - MAE(clean)."""
  return float(np.mean([r["drop_mae"][s] - r["clean_mae"] for s in DROPS]))


def contrast(runs: Runs, fn, needs) -> dict:
  d, info = runs.paired(fn, needs)
  interval = t_interval(d)
  decision = decide(interval)
  if info["failed_mechanism"]:
    decision = f"fails (mechanism run failed: seeds {info['failed_mechanism']})"
  elif info["missing"] and not d:
    decision = "—"
  return {**interval, "d": d, "decision": decision, **info}


def compute_contrasts(runs: Runs, methods) -> dict:
  out = {}
  mae = lambda m, a, c, s: runs.get(m, a, c, s)["clean_mae"]  # noqa: E731

  def d_align(method, cond, s):
    return mae(method, "ablation", cond, s) - mae(method, "mechanism", cond, s)

  for method in ("rerd", "mica"):
    if method not in methods:
      continue
    h = METHODS[method]["hypothesis"]
    both = lambda c, m=method: [(m, "mechanism", c), (m, "ablation", c)]  # noqa: E731
    for cond in ALIGNMENT_CONDITIONS:
      out[f"{method}:d:{cond}"] = contrast(
          runs, lambda s, m=method, c=cond: d_align(m, c, s), both(cond))
    out[f"{h}a"] = contrast(runs, lambda s, m=method: d_align(m, "n200_h1", s),
                            both("n200_h1"))
    out[f"{h}b"] = contrast(
        runs, lambda s, m=method: d_align(m, "n200_h1", s) - d_align(m, "n1200_h1", s),
        both("n200_h1") + both("n1200_h1"))
    out[f"{h}c"] = contrast(
        runs, lambda s, m=method: d_align(m, "n200_h1", s) - d_align(m, "n200_h0", s),
        both("n200_h1") + both("n200_h0"))
  for method in ("mdm", "argf"):
    if method not in methods:
      continue
    h = METHODS[method]["hypothesis"]
    for cond, key in (("n1200_h1", h), (EXPLORATORY_DROP_CONDITION, f"{h} (n200_h1)")):
      if cond == EXPLORATORY_DROP_CONDITION and not any(
          k[0] == method and k[2] == cond for k in runs.by_key):
        continue  # the exploratory runs were not asked for (--exploratory)
      out[key] = contrast(
          runs, lambda s, m=method, c=cond: (drop_increase(runs.get(m, "ablation", c, s))
                                             - drop_increase(runs.get(m, "mechanism", c, s))),
          [(method, "mechanism", cond), (method, "ablation", cond)])
  if "mcer" in methods:
    g = lambda c, s: runs.get("mcer", "mechanism", c, s)["check"]["g"]  # noqa: E731
    out["H5a"] = contrast(runs, lambda s: g("noisy_audio", s) - g("n1200_h1", s),
                          [("mcer", "mechanism", "noisy_audio"),
                           ("mcer", "mechanism", "n1200_h1")])
    out["H5b"] = contrast(runs, lambda s: (mae("mcer", "ablation", "noisy_audio", s)
                                           - mae("mcer", "mechanism", "noisy_audio", s)),
                          [("mcer", "mechanism", "noisy_audio"),
                           ("mcer", "ablation", "noisy_audio")])
  return out


# ----------------------------------------------------------------------------------------
# Tables (the Markdown layout of the document's Results section)
# ----------------------------------------------------------------------------------------
DASH = "—"


def mean_sd(values, digits: int = 3) -> str:
  values = [v for v in values if v is not None and math.isfinite(v)]
  if not values:
    return DASH
  sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return f"{np.mean(values):.{digits}f} +- {sd:.{digits}f}"


def ci_cell(c: dict | None, digits: int = 3) -> str:
  if c is None or not c["n"]:
    return DASH
  if not math.isfinite(c["lo"]):
    return f"{c['mean']:.{digits}f} [n = {c['n']}]"
  note = "" if c["n"] == 5 else f" (n = {c['n']})"
  return f"{c['mean']:.{digits}f} [{c['lo']:.{digits}f}, {c['hi']:.{digits}f}]{note}"


def decision_cell(c: dict | None) -> str:
  return DASH if c is None else c["decision"]


def with_failures(cell: str, runs: Runs, method, arm, cond) -> str:
  failed = runs.failed(method, arm, cond)
  return cell if not failed else f"{cell} ({len(failed)} failed)"


def tables(runs: Runs, contrasts: dict, methods) -> dict[str, list[str]]:
  """{table id: Markdown lines}; the first line of each is the header the Results section
  of docs/mechanisms.md uses, so --fill_doc can find the table it replaces."""
  out = {}
  c = contrasts.get
  # H1, H2
  lines = ["| method | condition | MAE mechanism | MAE ablation | mean d [95% CI] |",
           "|---|---|---|---|---|"]
  for method in ("rerd", "mica"):
    name = METHODS[method]["name"]
    for cond in ALIGNMENT_CONDITIONS:
      cells = [with_failures(mean_sd(runs.values(clean, method, arm, cond)), runs, method,
                             arm, cond) for arm in ARMS]
      lines.append(f"| {name} | `{cond}` | {cells[0]} | {cells[1]} | "
                   f"{ci_cell(c(f'{method}:d:{cond}'))} |")
  out["alignment"] = lines
  lines = ["| hypothesis | contrast | mean [95% CI] | decision |", "|---|---|---|---|"]
  for method in ("rerd", "mica"):
    h, name = METHODS[method]["hypothesis"], METHODS[method]["name"]
    for part, text in (("a", "d(`n200_h1`)"), ("b", "d(`n200_h1`) - d(`n1200_h1`)"),
                       ("c", "d(`n200_h1`) - d(`n200_h0`)")):
      lines.append(f"| {h}{part} | {name} {text} | {ci_cell(c(h + part))} | "
                   f"{decision_cell(c(h + part))} |")
  out["alignment_hypotheses"] = lines
  # H3, H4
  lines = ["| method | clean MAE mechanism | clean MAE ablation | r mechanism | r ablation | "
           "mean d [95% CI] | decision |", "|---|---|---|---|---|---|---|"]
  for method in ("mdm", "argf"):
    h, name = METHODS[method]["hypothesis"], METHODS[method]["name"]
    cells = [mean_sd(runs.values(fn, method, arm, "n1200_h1"))
             for fn in (clean, drop_increase) for arm in ARMS]
    lines.append(f"| {h}: {name} | " + " | ".join(cells) + f" | {ci_cell(c(h))} | "
                 f"{decision_cell(c(h))} |")
  out["drop"] = lines
  # H5
  lines = ["| condition | D_text | D_audio | D_vision | g |", "|---|---|---|---|---|"]
  for cond in ("n1200_h1", "noisy_audio"):
    cells = [mean_sd(runs.values(lambda r, k=k: r["check"][k], "mcer", "mechanism", cond))
             for k in ("D_text", "D_audio", "D_vision", "g")]
    lines.append(f"| `{cond}` ({NOISE_LABEL[cond]}) | " + " | ".join(cells) + " |")
  out["mcer_labels"] = lines
  lines = ["| hypothesis | contrast | mean [95% CI] | decision |", "|---|---|---|---|",
           f"| H5a | g(`noisy_audio`) - g(`n1200_h1`) | {ci_cell(c('H5a'))} | "
           f"{decision_cell(c('H5a'))} |",
           f"| H5b | MAE(`--net.tasks=m`) - MAE(full), `noisy_audio` | {ci_cell(c('H5b'))} | "
           f"{decision_cell(c('H5b'))} |"]
  out["mcer_hypotheses"] = lines
  # Exploratory: test-time conditions
  lines = ["| method | arm | condition | clean | drop text | drop audio | drop vision | "
           "noise 1 (mean of 3) | offset 1 (mean of 3) |", "|---|---|---|---|---|---|---|---|---|"]
  seen = sorted({(r["method"], r["arm"], r["condition"]) for r in runs.by_key.values()},
                key=lambda k: (list(METHODS).index(k[0]), ARMS.index(k[1]),
                               list(CONDITIONS).index(k[2])))
  for method, arm, cond in seen:
    cells = [mean_sd(runs.values(clean, method, arm, cond))]
    cells += [mean_sd(runs.values(lambda r, s=s: r["drop_mae"][s], method, arm, cond))
              for s in DROPS]
    cells += [mean_sd(runs.values(lambda r, k=k, specs=specs: float(np.mean(
        [r[k][s] for s in specs])), method, arm, cond))
        for k, specs in (("noise_mae", NOISE), ("shift_mae", SHIFT))]
    lines.append(f"| {METHODS[method]['name'].split(' ')[0]} ({METHODS[method]['model']}) | "
                 f"{arm} | `{cond}` | " + " | ".join(cells) + " |")
  if not seen:
    lines.append("| " + " | ".join([DASH] * 9) + " |")
  out["exploratory"] = lines
  # Mechanism-acts checks
  lines = ["| method | condition | check | mechanism | ablation |", "|---|---|---|---|---|"]
  for method, arm_conds in ((m, METHODS[m]["runs"]) for m in CHECK_KEYS):
    conds = [cc for cc in CONDITIONS if any(cc in arm_conds[a] for a in ARMS)]
    for cond in conds:
      for key in CHECK_KEYS[method]:
        cells = [mean_sd(runs.values(lambda r, k=key: r["check"][k], method, arm, cond), 4)
                 for arm in ARMS]
        lines.append(f"| {METHODS[method]['name'].split(' ')[0]} | `{cond}` | {key} | "
                     f"{cells[0]} | {cells[1]} |")
  out["checks"] = lines
  if any(k.endswith("(n200_h1)") for k in contrasts):
    lines = ["| exploratory | mean d [95% CI] (n200_h1) | (no decision) |", "|---|---|---|"]
    for method in ("mdm", "argf"):
      h = METHODS[method]["hypothesis"]
      if f"{h} (n200_h1)" in contrasts:
        lines.append(f"| {h}: {METHODS[method]['name']} | {ci_cell(c(f'{h} (n200_h1)'))} | |")
    out["exploratory_drop"] = lines
  return out


# ----------------------------------------------------------------------------------------
# --fill_doc
# ----------------------------------------------------------------------------------------
RESULTS_HEADING = "## Results"


def fill_results(doc: str, filled: dict[str, list[str]], status: str) -> str:
  """The document with each table of its Results section whose header row matches one of
  `filled` replaced (rows up to the first line that does not start with '|'; two tables
  with the same header are told apart by their first row's first cell), the heading
  'Results (not yet filled in)' made 'Results' and the paragraph starting '**Not run yet.**'
  (or a previous '**Filled in**' one) replaced by `status`. Nothing above the Results
  heading changes."""
  start = doc.find("\n" + RESULTS_HEADING)
  if start < 0:
    raise SystemExit(f"the document has no '{RESULTS_HEADING}' section")
  head, lines = doc[:start + 1], doc[start + 1:].split("\n")
  out, i = [], 0
  first_cell = lambda row: row.split("|")[1].strip() if row.count("|") > 1 else ""  # noqa: E731
  by_header: dict[str, list] = {}
  for table in filled.values():
    by_header.setdefault(table[0], []).append(table)

  def match(i):
    """The filled table for the doc table whose header is line i: by header when that is
    unique, else by header and first cell of the first row (two hypothesis tables)."""
    tables_ = by_header.get(lines[i], [])
    if len(tables_) == 1:
      return tables_[0]
    row = lines[i + 2] if i + 2 < len(lines) else ""
    return next((t for t in tables_ if len(t) > 2 and first_cell(t[2]) == first_cell(row)),
                None)

  while i < len(lines):
    line = lines[i]
    if i == 0 and line.startswith(RESULTS_HEADING):
      out.append(RESULTS_HEADING)
    elif line.startswith("**Not run yet.**") or line.startswith("**Filled in"):
      out.append(status)
      while i + 1 < len(lines) and lines[i + 1].strip():   # the rest of the paragraph
        i += 1
    elif line in by_header and match(i) is not None:
      out.extend(match(i))
      while i + 1 < len(lines) and lines[i + 1].startswith("|"):
        i += 1
    else:
      out.append(line)
    i += 1
  return head + "\n".join(out)


# ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="runs/mechanisms")
  p.add_argument("--seeds", default=",".join(map(str, DESIGN_SEEDS)))
  p.add_argument("--only", default="", help="hypotheses (H1..H5) or methods, comma-separated")
  p.add_argument("--conditions", default="", help="restrict to these conditions")
  p.add_argument("--exploratory", action="store_true",
                 help="add the exploratory H3/H4 runs in n200_h1")
  p.add_argument("--json", default="", help="default WORKDIR/mechanisms.json")
  p.add_argument("--fill_doc", action="store_true")
  p.add_argument("--doc", default="", help="default docs/mechanisms.md of this checkout")
  p.add_argument("--recompute", action="store_true",
                 help="redo every run's tables and check (training is still reused)")
  p.add_argument("--critic_steps", type=int, default=mechanism_checks.CRITIC_STEPS,
                 help="AdamW steps of the fresh MDM critic of the check")
  p.add_argument("--compile_cache", default=None,
                 help="persistent compilation cache (default as the train CLI; 'none': off)")
  p.add_argument("--dry_run", action="store_true", help="list the runs and exit")
  p.add_argument("--tiny", action="store_true", help="tiny runs, to test the script only")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="config override for every run (testing only)")
  args = p.parse_args(argv)
  methods = select_methods(args.only)
  seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  only_conditions = tuple(s.strip() for s in args.conditions.split(",") if s.strip())
  bad = [s for s in only_conditions if s not in CONDITIONS]
  if bad:
    raise SystemExit(f"--conditions: unknown {bad}; valid: {', '.join(CONDITIONS)}")
  if args.tiny and args.critic_steps == mechanism_checks.CRITIC_STEPS:
    args.critic_steps = TINY_CRITIC_STEPS
  default_doc = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "docs", "mechanisms.md")
  doc_path = args.doc or default_doc
  full_design = (methods == list(METHODS) and not only_conditions and not args.tiny
                 and not args.set and tuple(seeds) == DESIGN_SEEDS)
  if args.fill_doc and os.path.abspath(doc_path) == default_doc and not full_design:
    raise SystemExit("--fill_doc writes the pre-registered tables: it needs the full design "
                     "(no --only, --conditions, --tiny or --set; seeds 0-4); pass --doc to "
                     "write another file")
  runs_plan = planned_runs(methods, seeds, only_conditions, args.exploratory)
  for r in runs_plan:  # every config is checked before anything runs
    run_config(r, tiny=args.tiny, sets=args.set)
  if args.dry_run:
    for r in runs_plan:
      print(f"{r['method']:5s} {r['arm']:9s} {r['condition']:12s} seed {r['seed']}  "
            f"{run_workdir(args.workdir, r)}")
    print(f"{len(runs_plan)} runs")
    return 0
  cache = compile_cache.enable(args.compile_cache)
  print(f"{len(runs_plan)} runs into {args.workdir} (compilation cache: {cache or 'off'})",
        flush=True)
  records = []
  t_start = time.perf_counter()
  for i, run in enumerate(runs_plan, 1):
    t0, c0 = time.perf_counter(), time.process_time()
    record = do_run(run, args)
    record["total_s"], record["total_cpu_s"] = (time.perf_counter() - t0,
                                                time.process_time() - c0)
    records.append(record)
    what = (f"test MAE {record['clean_mae']:.4f}" if record["status"] == "ok"
            else f"FAILED ({record['error']})")
    print(f"[{i}/{len(runs_plan)}] {run['method']} {run['arm']} {run['condition']} seed "
          f"{run['seed']}: {what}, {record['total_s']:.0f} s ({record['total_cpu_s']:.0f} s CPU)"
          f"{' (reused)' if record.get('reused') else ''}", flush=True)
  runs = Runs(records, seeds)
  contrasts = compute_contrasts(runs, methods)
  filled = tables(runs, contrasts, methods)
  print(f"\nall runs: {time.perf_counter() - t_start:.0f} s\n")
  for name, lines in filled.items():
    print("\n".join(lines) + "\n")
  out_path = args.json or os.path.join(args.workdir, "mechanisms.json")
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  with open(out_path, "w") as f:
    json.dump({"argv": sys.argv[1:] if argv is None else list(argv), "seeds": seeds,
               "methods": methods, "full_design": full_design,
               "runs": [{k: v for k, v in r.items() if k != "traceback"} for r in records],
               "contrasts": contrasts, "tables": filled}, f, indent=1, default=float)
  print(f"json: {out_path}")
  if args.fill_doc:
    date = datetime.date.today().isoformat()
    command = "python scripts/mechanisms.py " + " ".join(
        a for a in (sys.argv[1:] if argv is None else argv) if a != "--fill_doc")
    status = (f"**Filled in** on {date} by `{command.strip()}` (seeds "
              f"{', '.join(map(str, seeds))}; every run of the design above).")
    with open(doc_path) as f:
      doc = f.read()
    with open(doc_path, "w") as f:
      f.write(fill_results(doc, filled, status))
    print(f"filled: {doc_path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
