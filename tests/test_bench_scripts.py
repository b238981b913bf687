"""scripts/bench_infer.py and bench_train.py --torch-ref: fast smoke tests on tiny models."""

import json
import os
import sys

import pytest

from tests.helpers import load_script

TINY_MULT = ["--set=net.d_model=8", "--set=net.num_heads=2", "--set=net.num_layers=1"]
_load = load_script


@pytest.mark.slow
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


@pytest.mark.slow
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
  # without --dataset a model gets its own built-in synthetic data, as `train` does
  args = lambda model, dataset: rt.argparse.Namespace(
      config=None, model=model, dataset=dataset, preset="synthetic", data_dir=None, epochs=0,
      set=[])
  assert rt.build_config(args("argf", None), {}).dataset == "synthetic_utterance"
  assert rt.build_config(args("mult", None), {}).dataset == "synthetic"
  assert rt.build_config(args("argf", "synthetic_shared"), {}).dataset == "synthetic_shared"
  # every preset override names a real config field of its model
  from mmfuse_jax import config as config_lib
  for name, (model, variants) in rt.PRESETS.items():
    c = config_lib.get_config(model or "ef_lstm")
    for _, overrides in variants:
      config_lib.apply_overrides(c.copy_and_resolve_references(),
                                 {k: str(v) for k, v in overrides.items()})


@pytest.mark.slow
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
  assert all(r["ways_ms"]["16"] > 0 for r in rows)     # the 16-way bisection, same values
  assert "sort / bisection" in capsys.readouterr().out


class _Event:
  def __init__(self, start, end, op=None):
    self.start_ns, self.end_ns, self.duration_ns = start, end, end - start
    self.name = op or "ThunkExecutor::Execute"
    self.stats = [("hlo_op", op)] if op else []


class _Line:
  def __init__(self, events):
    self.name, self.events = "thread", events


class _Plane:
  def __init__(self, lines):
    self.name, self.lines, self.stats = "/host:CPU", lines, []


class _Profile:
  def __init__(self, planes):
    self.planes = planes


def test_profile_step_self_times_exclude_nested_ops():
  """A while loop's op time excludes its body's ops; threads add up; non-op events are
  ignored."""
  prof = _load("profile_step")
  thread_1 = _Line([_Event(0, 100), _Event(0, 50, "while.1"), _Event(10, 20, "dot.2"),
                    _Event(25, 45, "fusion.3"), _Event(30, 35, "copy.4"),
                    _Event(60, 70, "dot.2")])
  thread_2 = _Line([_Event(5, 12, "dot.2")])
  got = prof.self_times(_Profile([_Plane([thread_1, thread_2])]))
  assert got == {"while.1": 50 - 10 - 20, "dot.2": 10 + 10 + 7, "fusion.3": 15, "copy.4": 5}


def test_profile_step_attributes_hlo_ops():
  """Compiled-HLO parsing: dots and fusions holding a dot are matmuls; op_names give the
  pass (jvp / transpose), dropout's random bits and the Flax module path."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  prof = _load("profile_step")

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.Dense(8, name="proj")(x)
      return nn.Dropout(0.5, deterministic=False)(jnp.tanh(h)).sum()

  net = Net()
  x = jnp.ones((4, 3))
  params = net.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, x)
  step = jax.jit(jax.grad(lambda p, k: net.apply(p, x, rngs={"dropout": k})))
  ops = prof.hlo_ops(step.lower(params, jax.random.PRNGKey(2)).compile().as_text())
  classes = {prof.classify(name, matmul, 2) for name, matmul, _ in ops.values() if name}
  assert any(result.startswith("f32[4,8]") for _, _, result in ops.values())
  assert ("forward", "matmul", "Net/proj") in classes
  assert ("backward", "matmul", "Net/proj") in classes
  assert any(k == "dropout/random bits" and m == "Net/Dropout_0" for _, k, m in classes)
  assert prof.classify("jit(f)/transpose(jvp(M))/a/b/c/exp", False, 2) == ("backward", "exp",
                                                                            "M/a")
  assert prof.classify("", False, 2)[1].startswith("(no metadata")


@pytest.mark.slow
def test_profile_step_tiny_mult(tmp_path, capsys):
  """The whole script on a tiny MulT: every grouping's shares sum to 1, and the step's
  matmuls, dropout bits, forward and backward are all found."""
  out = tmp_path / "profile.json"
  res = _load("profile_step").main(["--model=mult", "--shapes=utterance", "--batch=4",
                                    "--steps=1", "--set=num_devices=1", *TINY_MULT,
                                    f"--trace_dir={tmp_path / 'trace'}", f"--json={out}"])
  saved = json.loads(out.read_text())
  assert saved["model"] == "mult" and res["jax"]["op_time_s_per_step"] > 0
  groups = saved["jax"]["groups"]
  for rows in groups.values():
    assert abs(sum(s for _, s in rows) - 1.0) < 1e-6
  kinds = dict(groups["kind"])
  assert kinds.get("matmul", 0) > 0 and kinds.get("dropout/random bits", 0) > 0
  assert {"forward", "backward"} <= set(dict(groups["pass"]))
  assert any(m.startswith("MulTModel/") for m, _ in groups["module"])
  assert "by pass x kind" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_dropout_tiny(tmp_path, capsys):
  """Mask timing with an equality check, and a tiny model's step under the three dropout
  variants, with the library's functions restored afterwards."""
  from mmfuse_jax.layers import dropout as dropout_lib
  before = (dropout_lib.fused_bernoulli, dropout_lib.dropout)
  out = tmp_path / "dropout.json"
  res = _load("bench_dropout").main(["--shapes=2,3,17", "--repeats=1", "--model=mult",
                                     "--model_shapes=utterance", "--batch=2", "--steps=1",
                                     "--warmup=0", "--set=num_devices=1", *TINY_MULT, f"--json={out}"])
  assert (dropout_lib.fused_bernoulli, dropout_lib.dropout) == before
  (mask,) = res["masks"]
  assert mask["masks_equal"] and mask["forward_speedup"] > 0
  for name in ("flax", "fused_saved", "fused_redrawn"):
    assert res["model"][f"{name}_step_s"] > 0
  assert json.loads(out.read_text())["model"]["model"] == "mult"
  assert "fused_redrawn" in capsys.readouterr().out


def test_bench_attention_tiny(tmp_path, capsys):
  """Every path, plain and rematerialised, timed on a tiny shape and checked against
  `explicit`; the JSON holds one row per (path, remat)."""
  out = tmp_path / "attention.json"
  assert _load("bench_attention").main(["--shapes=2x5x7", "--heads=2", "--head_dim=4",
                                        "--repeats=1", f"--json={out}"]) == 0
  rows = json.loads(out.read_text())["rows"]
  assert {(r["path"], r["remat"]) for r in rows} == {
      (p, r) for p in ("explicit", "xla", "chunked") for r in (False, True)}
  assert all(r["max_abs_diff"] < 1e-4 and r["ms"] > 0 for r in rows)
  assert next(r for r in rows if r["path"] == "explicit")["vs_explicit"] == 1.0
  assert "chunked" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_device_on_cpu_writes_every_field(tmp_path, capsys):
  """scripts/bench_device.py at small options on CPU: a row per configuration with the
  step, scan, cost-analysis and memory fields, utterance models once at their own shape,
  rows past the time budget listed as skipped, and a markdown table."""
  out = tmp_path / "device.json"
  _load("bench_device").main([
      "--models=ef_lstm,argf", "--shapes=utterance,mosi_unaligned", "--precisions=float32",
      "--steps=2", "--warmup=0", "--batch=4", "--budget_s=0.5", "--set=net.hidden=8",
      "--set=net.num_layers=1", f"--out={out}"])
  saved = json.loads(out.read_text())
  assert saved["env"]["platform"] == "cpu" and saved["args"]["batch"] == 4
  first, *rest = saved["rows"]
  # the first row starts within the budget and takes longer than it: the others are skipped
  assert [(r["model"], r["shape"]) for r in rest] == [("argf", "utterance"),
                                                      ("ef_lstm", "mosi_unaligned")]
  assert all("time budget" in r["skipped"] for r in rest)
  assert "error" not in first, first
  assert (first["model"], first["shape"], first["precision"]) == ("ef_lstm", "utterance",
                                                                  "float32")
  assert first["batch"] == 4 and first["compile_s"] > 0
  assert first["step_ms"] > 0 and first["steps_per_s"] == pytest.approx(1e3 / first["step_ms"])
  assert first["flops"] > 0 and first["flops_lower_bound"] is True   # the LSTM: a loop
  assert first["tflops_per_s"] == pytest.approx(first["flops"] / first["step_ms"] / 1e9)
  assert first["temp_bytes"] > 0 and first["peak_bytes"] is None   # CPU: no memory stats
  assert first["epoch_steps"] == 2 and first["loop_steps_per_s"] > 0
  assert first["scan_steps_per_s"] > 0 and first["scan_compile_s"] > 0
  table = capsys.readouterr().out
  assert "| model | shape | precision |" in table
  assert "| ef_lstm | utterance | float32 | 4 |" in table
  assert "| argf | utterance | float32 | 4 | time budget" in table


@pytest.mark.slow
def test_bench_checkpoint_times_both_ways(capsys):
  """Packed and leaf-by-leaf saves of a small model's default state, one table row."""
  _load("bench_checkpoint").main(["--models=lmf", "--repeats=1"])
  row = capsys.readouterr().out.strip().splitlines()[-1]
  assert row.startswith("| `lmf` |") and row.endswith("x |")
