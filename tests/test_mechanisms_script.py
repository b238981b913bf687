"""scripts/mechanisms.py: the design's runs, the statistic and decisions on hand-made run
records, the filled Results section, and (slow) a tiny end-to-end run of one hypothesis."""

import json
import math
import os

import numpy as np
import pytest

from tests.helpers import load_script, shared_compilation_cache

M = load_script("mechanisms")
DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "mechanisms.md")


def test_design_has_the_preregistered_115_runs():
  runs = M.planned_runs(list(M.METHODS), M.DESIGN_SEEDS)
  assert len(runs) == 2 * 2 * 4 * 5 + 2 * 2 * 5 + 3 * 5
  count = lambda **kw: sum(all(r[k] == v for k, v in kw.items()) for r in runs)  # noqa: E731
  assert count(method="mcer", arm="ablation") == 5
  assert count(method="mcer", condition="n1200_h1", arm="ablation") == 0
  assert count(method="mdm", condition="n1200_h1") == 10
  assert len(M.planned_runs(["mdm"], (0, 1), exploratory=True)) == 8
  assert M.select_methods("H3,mcer, h1") == ["rerd", "mdm", "mcer"]
  c = M.run_config({"method": "mcer", "model": "mcer", "arm": "ablation",
                    "condition": "noisy_audio", "seed": 3})
  # the command block: preset on synthetic_shared, arm switch, condition knobs, seed twice
  assert (c.dataset, c.preset, c.seed, c.data.synthetic_seed) == (
      "synthetic_shared", "synthetic", 3, 3)
  assert (c.data.synthetic_train, c.data.shared_noise_audio, c.net.tasks) == (1200, 3.0, "m")
  assert (c.epochs, c.batch_size) == (10, 64)  # MCER's preset; its 4800 samples replaced
  assert M.run_workdir("W", {"model": "mcer", "arm": "ablation", "condition": "noisy_audio",
                             "seed": 3}) == os.path.join("W", "mcer", "ablation",
                                                         "noisy_audio", "seed_3")


def test_t_interval_and_decisions():
  d = [0.3, 0.1, 0.25, 0.2, 0.15]
  ci = M.t_interval(d)
  half = 2.776445 * np.std(d, ddof=1) / math.sqrt(5)     # t(0.975, 4) (the doc: 2.776)
  assert ci["mean"] == pytest.approx(0.2)
  assert ci["lo"] == pytest.approx(0.2 - half, rel=1e-4)
  assert ci["hi"] == pytest.approx(0.2 + half, rel=1e-4)
  assert M.decide(ci) == "holds"
  assert M.decide(M.t_interval([-x for x in d])) == "reversed"
  assert M.decide(M.t_interval([0.3, -0.2, 0.1, -0.1, 0.0])) == "not supported"
  three = M.t_interval([1.0, 2.0, 3.0])                   # t(0.975, 2) = 4.303
  assert three["hi"] - three["mean"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)


def _records(seeds=M.DESIGN_SEEDS, fail=None):
  """Hand-made records of every run: mechanism MAE 1 + 0.01 S; the ablation is worse by
  0.1 (n200_h1), 0.02 (n1200_h1) and 0.05 otherwise, plus a seed wobble; drops add 0.2
  (mechanism) or 0.3 + 0.01 S (ablation); MCER's g changes by 0.1 (S - 1) with noisy audio."""
  out = []
  for r in M.planned_runs(list(M.METHODS), seeds):
    s, cond = r["seed"], r["condition"]
    mae = 1.0 + 0.01 * s
    if r["arm"] == "ablation":
      mae += {"n200_h1": 0.1, "n1200_h1": 0.02}.get(cond, 0.05) + 0.004 * (s - 2)
    inc = 0.2 if r["arm"] == "mechanism" else 0.3 + 0.01 * s
    g = 0.5 + (0.1 * (s - 1) if cond == "noisy_audio" else 0.0)
    out.append({**r, "status": "ok", "clean_mae": mae,
                "drop_mae": {spec: mae + inc for spec in M.DROPS},
                "noise_mae": {spec: mae + 0.1 for spec in M.NOISE},
                "shift_mae": {spec: mae + 0.2 for spec in M.SHIFT},
                "check": {"g": g, "D_text": 0.1, "D_audio": g + 0.1, "D_vision": 0.1,
                          "msd": 1.0, "msd_shuffled": 2.0, "mmd2": 0.1, "a_distance": 1.0,
                          "dependency_fresh": 0.1, "dependency_trained": 0.2,
                          "probe_accuracy": 0.5, "discriminator_accuracy": 0.6}})
  if fail:
    for rec in out:
      if all(rec[k] == v for k, v in fail.items()):
        rec.update(status="failed", error="non-finite test MAE")
        del rec["clean_mae"]
  return out


def test_contrasts_on_hand_made_records():
  runs = M.Runs(_records(), M.DESIGN_SEEDS)
  c = M.compute_contrasts(runs, list(M.METHODS))
  wobble = [0.004 * (s - 2) for s in M.DESIGN_SEEDS]
  np.testing.assert_allclose(c["H1a"]["d"], [0.1 + w for w in wobble])
  np.testing.assert_allclose(c["H2b"]["d"], [0.08] * 5)    # the wobble cancels
  np.testing.assert_allclose(c["H1c"]["d"], [0.05] * 5)
  assert c["H1a"]["decision"] == "holds"
  np.testing.assert_allclose(c["H3"]["d"], [0.1 + 0.01 * s for s in M.DESIGN_SEEDS])
  np.testing.assert_allclose(c["H5a"]["d"], [0.1 * (s - 1) for s in M.DESIGN_SEEDS])
  assert c["H5a"]["decision"] == "not supported"           # mean 0.1, half-width 0.196
  np.testing.assert_allclose(c["H5b"]["d"], [0.05 + w for w in wobble])
  assert "H3 (n200_h1)" not in c                           # exploratory runs not made
  # a failed mechanism run fails its contrasts; the d uses the seeds that succeeded
  runs = M.Runs(_records(fail={"method": "rerd", "arm": "mechanism",
                               "condition": "n200_h1", "seed": 2}), M.DESIGN_SEEDS)
  c = M.compute_contrasts(runs, ["rerd"])
  assert c["H1a"]["decision"].startswith("fails") and c["H1a"]["n"] == 4
  assert c["rerd:d:n1200_h1"]["decision"] == "holds" and c["rerd:d:n1200_h1"]["n"] == 5
  table = M.tables(runs, c, ["rerd"])["alignment"]
  assert "(1 failed)" in next(line for line in table if "`n200_h1`" in line)


def test_fill_results_replaces_only_the_results_tables():
  runs = M.Runs(_records(), M.DESIGN_SEEDS)
  filled = M.tables(runs, M.compute_contrasts(runs, list(M.METHODS)), list(M.METHODS))
  with open(DOC) as f:
    doc = f.read()
  out = M.fill_results(doc, filled, "**Filled in** by a test.")
  cut = doc.index("\n## Results")
  assert out[:cut] == doc[:cut]                      # the pre-registered part is unchanged
  results = out[cut:]
  assert "**Not run yet.**" not in results and "**Filled in** by a test." in results
  assert "## Results (not yet filled in)" not in results
  for name in ("alignment", "alignment_hypotheses", "drop", "mcer_labels",
               "mcer_hypotheses", "exploratory", "checks"):
    block = "\n".join(filled[name])
    assert block in results, name                    # every table's header is the doc's
  assert "| H1a | RERD d(`n200_h1`) | 0.100 [" in results
  # filling again (a rerun) replaces the filled tables and the status line
  again = M.fill_results(out, filled, "**Filled in** again.")
  assert again.count("**Filled in**") == 1 and again.count("| H1a | RERD d(") == 1


@pytest.mark.slow
def test_script_end_to_end_tiny(tmp_path):
  """--only H3 with 2 seeds on --tiny runs: trains 4 EF-LSTM runs, writes every table, the
  check and the JSON, reuses everything on a second call, fills a copy of the doc."""
  doc = tmp_path / "mechanisms.md"
  with open(DOC) as f:
    doc.write_text(f.read())
  argv = ["--only", "H3", "--seeds", "0,1", "--tiny", "--workdir", str(tmp_path / "w"),
          "--compile_cache", "none", "--fill_doc", "--doc", str(doc)]
  with shared_compilation_cache(tmp_path / "cache"):
    assert M.main(argv) == 0
  out = json.loads((tmp_path / "w" / "mechanisms.json").read_text())
  assert len(out["runs"]) == 4 and all(r["status"] == "ok" for r in out["runs"])
  wd = tmp_path / "w" / "ef_lstm" / "mechanism" / "n1200_h1" / "seed_1"
  for name in ("results.json", "modality_drop_test.json", "noise_test.json",
               "shift_test.json", M.RUN_FILE):
    assert (wd / name).exists(), name
  rec = next(r for r in out["runs"] if r["arm"] == "mechanism" and r["seed"] == 1)
  results = json.loads((wd / "results.json").read_text())
  assert rec["clean_mae"] == pytest.approx(results["test"]["mae"], rel=1e-5)
  assert results["config"]["net"]["mdm"] == "w" and results["data"]["sizes"]["train"] == 64
  drop = json.loads((wd / "modality_drop_test.json").read_text())
  assert rec["drop_mae"]["zero:audio"] == drop["drops"]["zero:audio"]["metrics"]["mae"]
  assert math.isfinite(rec["check"]["dependency_trained"])
  ablation = next(r for r in out["runs"] if r["arm"] == "ablation")
  assert math.isnan(ablation["check"]["dependency_trained"])
  assert math.isfinite(ablation["check"]["dependency_fresh"])
  d = [M.drop_increase(next(r for r in out["runs"] if r["arm"] == "ablation"
                            and r["seed"] == s))
       - M.drop_increase(next(r for r in out["runs"] if r["arm"] == "mechanism"
                              and r["seed"] == s)) for s in (0, 1)]
  assert out["contrasts"]["H3"]["d"] == pytest.approx(d)
  text = doc.read_text()
  assert "| H3: EF-LSTM L_W vs L_none | " in text and "**Filled in**" in text
  # a second call trains nothing and evaluates nothing
  with shared_compilation_cache(tmp_path / "cache"):
    assert M.main(argv[:-3]) == 0
  again = json.loads((tmp_path / "w" / "mechanisms.json").read_text())
  assert all(r.get("reused") for r in again["runs"])
  assert again["contrasts"]["H3"]["mean"] == pytest.approx(out["contrasts"]["H3"]["mean"])
