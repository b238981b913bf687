"""Sweep tables (training/summary.py) on numbers checked by hand."""

import csv
import io
import math

import pytest

from mmfuse_jax.training import summary


def _run(seed, valid_mae, test_mae, valid_corr=0.5):
  return {"seed": seed, "valid": {"mae": valid_mae, "corr": valid_corr},
          "test": {"mae": test_mae}}


def _rows():
  a = summary.combination_row("lr=1e-3", {"optim.lr": "1e-3"},
                              [_run(1, 1.0, 4.0), _run(2, 3.0, 6.0)])
  b = summary.combination_row("lr=3e-4", {"optim.lr": "3e-4"},
                              [_run(1, 1.5, 2.0, 0.2), _run(2, 1.5, 3.0, 0.4)])
  return [a, b]


def test_mean_and_population_std_by_hand():
  assert summary.mean_std([1.0, 3.0]) == (2.0, 1.0)        # std sqrt(((1-2)^2+(3-2)^2)/2)
  mean, std = summary.mean_std([2.0, 4.0, 9.0])             # mean 5, var (9+1+16)/3
  assert mean == 5.0 and std == pytest.approx(math.sqrt(26 / 3))


def test_combination_row_and_selection_on_validation():
  a, b = _rows()
  assert a["seeds"] == [1, 2] and a["valid"]["mae"] == (2.0, 1.0)
  assert b["valid"]["mae"] == (1.5, 0.0) and b["test"]["mae"] == (2.5, 0.5)
  assert b["valid"]["corr"][0] == pytest.approx(0.3)
  assert summary.select_combination([a, b], "mae", "min") == 1
  # By the largest validation corr, A (0.5) wins although its test MAE is worse.
  assert summary.select_combination([a, b], "corr", "max") == 0
  nan = summary.combination_row("nan", {}, [_run(1, float("nan"), 0.0)])
  assert summary.select_combination([nan, a], "mae", "min") == 1
  tie = summary.combination_row("tie", {}, [_run(1, 2.0, 0.0), _run(2, 2.0, 0.0)])
  assert summary.select_combination([a, tie], "mae", "min") == 0  # first on ties


def test_markdown_marks_selected_and_shows_its_test_only():
  rows = _rows()
  text = summary.markdown_table(rows, 1, "mae", "min")
  lines = text.splitlines()
  row_a = next(l for l in lines if "| 1e-3 |" in l)
  row_b = next(l for l in lines if "| 3e-4 |" in l)
  assert "2.0000 ± 1.0000" in row_a and "**selected**" not in row_a
  assert row_b.startswith("| **selected** |") and "1.5000 ± 0.0000" in row_b
  assert "2.5000 ± 0.5000" in text      # B's test MAE (mean of 2 and 3)
  assert "5.0000" not in text           # A's test MAE (mean of 4 and 6) is never shown


def test_csv_has_test_columns_for_selected_only():
  table = list(csv.DictReader(io.StringIO(summary.csv_table(_rows(), 1))))
  assert [r["optim.lr"] for r in table] == ["1e-3", "3e-4"]
  assert [r["selected"] for r in table] == ["0", "1"]
  assert float(table[0]["valid_mae_mean"]) == 2.0 and float(table[0]["valid_mae_std"]) == 1.0
  assert table[0]["test_mae_mean"] == "" and float(table[1]["test_mae_mean"]) == 2.5
  assert table[1]["seeds"] == "1 2"
