"""Sweep results as a table: mean +- std over seeds per combination, selected on validation.

Pure functions of the runs' results.json dicts (no JAX), used by `mmfuse_jax.sweep`:
`combination_row` aggregates the seeds of one combination (metrics in sorted order),
`select_combination` picks the best validation mean of the selection metric,
`markdown_table` / `csv_table` render them.
The standard deviation is the population one (numpy's default, ddof=0), as in summary.json.
Test metrics appear for the selected combination only: each run evaluated its test split
once, for its validation-selected checkpoint, and nothing is chosen on them.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np


def mean_std(values) -> tuple[float, float]:
  """(mean, population std) of a list of numbers."""
  arr = np.asarray(values, dtype=np.float64)
  return float(arr.mean()), float(arr.std())


def combination_row(name: str, params: dict, runs: list[dict]) -> dict:
  """One combination: its parameters, seeds and mean/std of each validation and test
  metric over its runs (results.json dicts, one per seed)."""
  row = {"name": name, "params": dict(params), "seeds": [r["seed"] for r in runs]}
  for split in ("valid", "test"):
    # Sorted, as results.json stores them: a rerun that reads the files gives the same table.
    keys = sorted(k for k in runs[0][split] if all(k in r[split] for r in runs))
    row[split] = {k: mean_std([r[split][k] for r in runs]) for k in keys}
  return row


def select_combination(rows: list[dict], metric: str, mode: str) -> int:
  """Index of the row with the best validation mean of `metric` ('min' or 'max'); the first
  on ties; a NaN mean never wins."""
  if mode not in ("min", "max"):
    raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
  best, best_value = None, None
  for i, row in enumerate(rows):
    value = row["valid"][metric][0]
    if math.isnan(value):
      continue
    if best is None or (value < best_value if mode == "min" else value > best_value):
      best, best_value = i, value
  if best is None:
    raise ValueError(f"no combination has a finite validation {metric}")
  return best


def _fmt(mean_std_pair, digits: int = 4) -> str:
  mean, std = mean_std_pair
  return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _param_keys(rows: list[dict]) -> list[str]:
  keys: list[str] = []
  for row in rows:
    keys += [k for k in row["params"] if k not in keys]
  return keys


def _metric_keys(rows: list[dict], split: str) -> list[str]:
  keys: list[str] = []
  for row in rows:
    keys += [k for k in row[split] if k not in keys]
  return keys


def markdown_table(rows: list[dict], selected: int, metric: str, mode: str) -> str:
  """The sweep table in Markdown: one line per combination with the validation mean ± std
  of every metric, the selected one marked; then the selected combination's test metrics."""
  params, metrics = _param_keys(rows), _metric_keys(rows, "valid")
  head = ["", *params, "seeds", *[f"valid {m}" for m in metrics]]
  lines = [f"Selection: the best validation {metric} ({mode}) mean over seeds; "
           f"mean ± std (population) over seeds.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for i, row in enumerate(rows):
    cells = ["**selected**" if i == selected else "",
             *[str(row["params"].get(k, "")) for k in params], str(len(row["seeds"])),
             *[_fmt(row["valid"][m]) if m in row["valid"] else "" for m in metrics]]
    lines.append("| " + " | ".join(cells) + " |")
  chosen = rows[selected]
  desc = ", ".join(f"{k}={v}" for k, v in chosen["params"].items()) or "(base config)"
  lines += ["", f"Selected: {desc}. Test metrics of its runs (each evaluated once, for the "
            f"validation-selected checkpoint; seeds {chosen['seeds']}):", "",
            "| " + " | ".join(f"test {m}" for m in chosen["test"]) + " |",
            "|" + "---|" * len(chosen["test"]),
            "| " + " | ".join(_fmt(v) for v in chosen["test"].values()) + " |"]
  return "\n".join(lines) + "\n"


def csv_table(rows: list[dict], selected: int) -> str:
  """The sweep table as CSV: parameters, seeds, selected (0/1), valid_<m>_mean/_std for every
  metric, and test_<m>_mean/_std filled for the selected combination only."""
  params = _param_keys(rows)
  valid, test = _metric_keys(rows, "valid"), _metric_keys(rows, "test")
  columns = ["name", *params, "seeds", "selected"]
  columns += [f"valid_{m}_{s}" for m in valid for s in ("mean", "std")]
  columns += [f"test_{m}_{s}" for m in test for s in ("mean", "std")]
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
  writer.writeheader()
  for i, row in enumerate(rows):
    out = {"name": row["name"], "seeds": " ".join(str(s) for s in row["seeds"]),
           "selected": int(i == selected), **{k: row["params"].get(k, "") for k in params}}
    for m, (mean, std) in row["valid"].items():
      out[f"valid_{m}_mean"], out[f"valid_{m}_std"] = mean, std
    if i == selected:
      for m, (mean, std) in row["test"].items():
        out[f"test_{m}_mean"], out[f"test_{m}_std"] = mean, std
    writer.writerow(out)
  return buf.getvalue()
