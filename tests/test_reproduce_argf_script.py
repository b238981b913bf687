"""scripts/reproduce_argf_mosi.py without training: protocol configs, the test-selected upper
bound and how the tables label it."""

from __future__ import annotations

import argparse

import pytest

from tests.helpers import load_script

script = load_script("reproduce_argf_mosi")


def _args(**kw):
  base = dict(data_dir="/nowhere", epochs=0, num_devices=0, ucln_epochs=2, set=[])
  base.update(kw)
  return argparse.Namespace(**base)


def test_protocols_set_the_ucln_stage_and_ablations_switch_their_part_off():
  staged = script.make_config(_args(), "staged", None)
  joint = script.make_config(_args(), "joint", None)
  assert staged.net.ucln_epochs == 2 and joint.net.ucln_epochs == 0
  assert staged.epochs == joint.epochs > 2
  longer = script.make_config(_args(ucln_epochs=5, epochs=9), "staged", "decoder")
  assert longer.net.ucln_epochs == 5 and longer.epochs == 9 and not longer.net.decoder
  over = script.make_config(_args(set=["net.adv_lambda=0.3"]), "joint", None)
  assert over.net.adv_lambda == pytest.approx(0.3) and over.net.ucln_epochs == 0


def _trajectory(accs):
  return [{"epoch": e + 1, "test_acc": a, "test_f1": a - 0.01} for e, a in enumerate(accs)]


def test_test_selected_takes_the_best_test_epoch_first_on_ties():
  assert script.test_selected(_trajectory([0.70, 0.80, 0.75, 0.80])) == {
      "epoch": 2, "acc": 0.80, "f1": pytest.approx(0.79)}


def _row(label, accs_by_seed, selected):
  runs = {s: _trajectory(a) for s, a in accs_by_seed.items()}
  test = {"acc": {"mean": 0.77, "std": 0.01}, "f1": {"mean": 0.775, "std": 0.012}}
  return {"label": label, "paper_key": "full", "epochs": 3,
          "trajectories": runs, "summary": {"test": test, "selected_epochs": selected}}


def test_tables_print_the_upper_bound_in_its_own_labelled_block(capsys):
  table = {"staged": _row("ARGF staged", {0: [0.7, 0.8, 0.75], 1: [0.72, 0.74, 0.78]},
                          [3, 2])}
  script.print_tables(table, [0, 1])
  script.print_trajectories(table, [0, 1])
  out = capsys.readouterr().out
  result, bound = out.split("UPPER BOUND, NOT A RESULT")
  assert "77.00 +- 1.00" in result and "[3, 2]" in result and "81.38" in result
  # upper bound: mean of the per-seed best test accuracies 80 and 78, best seed 80
  assert "79.00 +- 1.00" in bound and "80.00" in bound and "[2, 3]" in bound
  # per-epoch means over the seeds
  assert "71.0" in bound and "77.0" in bound and "76.5" in bound


def test_upper_bound_is_withheld_when_a_seed_has_no_trajectory(capsys):
  table = {"joint": _row("ARGF joint", {0: [0.7, 0.8, 0.75]}, [2, 2])}
  script.print_tables(table, [0, 1])
  out = capsys.readouterr().out.split("UPPER BOUND, NOT A RESULT")[1]
  assert "not recorded for every seed" in out and "80.00" not in out
