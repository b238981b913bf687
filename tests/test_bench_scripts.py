"""scripts/bench_infer.py and bench_train.py --torch-ref: fast smoke tests on tiny models."""

import json
import os
import sys

from tests.helpers import load_script

TINY_MULT = ["--set=net.d_model=8", "--set=net.num_heads=2", "--set=net.num_layers=1"]
_load = load_script


def test_bench_infer_tiny_model(tmp_path, capsys):
  out = tmp_path / "infer.json"
  res = _load("bench_infer").main(["--model=mult", "--shapes=tiny", *TINY_MULT, "--batch=8",
                                   "--calls=5", "--batch_calls=2", "--warmup=1",
                                   f"--json={out}"])
  saved = json.loads(out.read_text())
  assert saved["model"] == "mult" and saved["shapes"] == "tiny"
  for key, batch in (("batch1", 1), ("throughput", 8)):
    r = saved[key]
    assert r["batch"] == batch
    assert r["samples_per_s"] > 0 and r["jit_samples_per_s"] > 0
    for kind in ("load_exported", "jit_call"):
      assert r[kind]["calls"] > 0
      assert 0 < r[kind]["median_s"] <= r[kind]["p90_s"]
      assert r[kind]["first_call_s"] > 0
  assert saved["env"]["jax"] and res["batch1"]["batch"] == 1
  assert "latency median" in capsys.readouterr().out


def test_bench_train_torch_ref_missing_path_skips(tmp_path, capsys, monkeypatch):
  missing = str(tmp_path / "no-such-checkout")
  out = tmp_path / "train.json"
  monkeypatch.setattr(sys, "argv", [
      "bench_train.py", "--models=mult", "--shapes=utterance", "--batch=4", "--steps=1",
      "--warmup=0", "--set=num_devices=1", *TINY_MULT, f"--torch-ref={missing}",
      f"--json={out}"])
  _load("bench_train").main()
  text = capsys.readouterr().out
  assert "SKIPPED torch reference" in text and missing in text
  (row,) = json.loads(out.read_text())["results"]
  assert "error" not in row, row
  assert row["step_s_median"] > 0 and row["compile_s"] > 0
  assert "skipped" in row["torch_ref"] and "speedup_vs_torch" not in row


def test_run_table_variants_and_markdown():
  rt = _load("run_table")
  assert rt.parse_variant("w/o MSD:net.use_msd=false; net.msd_weight=0.2") == (
      "w/o MSD", {"net.use_msd": "false", "net.msd_weight": "0.2"})
  assert rt.parse_variant("base:") == ("base", {})
  metric = lambda vals: {"mean": sum(vals) / len(vals), "std": 0.0, "values": vals}
  summary = {"test": {"acc": metric([0.5, 0.7]), "f1": metric([0.4, 0.4]),
                      "loss": metric([1.0, 1.0])}}
  table = rt.markdown([("full", summary)])
  assert table.splitlines()[0] == "| variant | Acc | F1 |"
  assert table.splitlines()[2] == "| full | 60.0 +- 0.0 | 40.0 +- 0.0 |"
  # every preset override names a real config field of its model
  from mmfuse_jax import config as config_lib
  for name, (model, variants) in rt.PRESETS.items():
    c = config_lib.get_config(model or "ef_lstm")
    for _, overrides in variants:
      config_lib.apply_overrides(c.copy_and_resolve_references(),
                                 {k: str(v) for k, v in overrides.items()})


def test_bench_mica_step_tiny(capsys):
  """The MICA/MulT step benchmark runs at scaled-down MOSEI shapes and reports compile time,
  XLA temp memory and step times; --compile-only runs no step."""
  mod = _load("bench_mica_step")
  common = ["--batch=2", "--d=8", "--heads=2", "--layers=1", "--time-scale=0.02",
            "--max-elements=8"]
  mod.main([*common, "--steps=1", "--models=mica"])
  (row,) = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
  assert row["model"] == "mica" and row["step_s_median"] > 0 and row["compile_s"] > 0
  assert row["shapes"]["audio"] == [10, 74] and {"l_m", "l_e"} <= set(row["metrics"])
  mod.main([*common, "--compile-only", "--models=mult"])
  (row,) = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
  assert row["model"] == "mult" and "step_s_median" not in row and row["compile_s"] > 0


def test_bench_order_stats_tiny(tmp_path, capsys):
  """Sort vs bisection: the script checks both give the same values and reports a ratio."""
  out = tmp_path / "order.json"
  assert _load("bench_order_stats").main(["--n=33", "--matrix=2,2,7,9", "--repeats=1",
                                          f"--json={out}"]) == 0
  rows = json.load(open(out))["rows"]
  assert len(rows) == 2 and all(r["ratio"] > 0 for r in rows)
  assert "sort / bisection" in capsys.readouterr().out
