"""mmfuse_jax.sweep: argument parsing, grid and random combinations, a tiny resumable sweep."""

import csv
import json
import os

import numpy as np
import pytest

from mmfuse_jax import config as config_lib
from mmfuse_jax import sweep
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import loop as loop_lib
from tests.helpers import shared_compilation_cache
from tests.test_baselines import TINY_NET


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  with shared_compilation_cache(tmp_path_factory.mktemp("xla_cache")):
    yield


def test_split_and_parse_grid_and_range():
  rest, found = sweep.split_repeated(["--model=lmf", "--grid", "net.rank=2,4", "--epochs=3",
                                      "--grid=optim.lr=1e-3,3e-4", "--range", "x=1:2:log"])
  assert rest == ["--model=lmf", "--epochs=3"]
  assert found == {"grid": ["net.rank=2,4", "optim.lr=1e-3,3e-4"], "range": ["x=1:2:log"]}
  assert sweep.parse_grid("data.modalities=text,audio;text") == (
      "data.modalities", ["text,audio", "text"])
  assert sweep.parse_range("optim.lr=1e-4:1e-2:log") == ("optim.lr", 1e-4, 1e-2, True)
  for bad in ("optim.lr=1e-2:1e-4", "optim.lr=0:1:log", "optim.lr=1:2:lin"):
    with pytest.raises(ConfigError, match="--range"):
      sweep.parse_range(bad)
  with pytest.raises(ConfigError, match="--seeds"):
    sweep.parse_grid("seed=1,2")


def test_grid_combinations_order():
  combos = sweep.grid_combinations([("a", ["1", "2"]), ("b", ["x", "y", "z"])])
  assert combos == [{"a": a, "b": b} for a in ("1", "2") for b in ("x", "y", "z")]
  assert sweep.combination_name(combos[0]) == "a=1_b=x"


def test_random_combinations_reproducible_and_in_range():
  base = config_lib.get_config("lmf")
  grids = [("net.rank", ["2", "4", "8"])]
  ranges = [("optim.lr", 1e-4, 1e-2, True), ("net.text_hidden", 8.0, 12.0, False)]
  five = sweep.random_combinations(grids, ranges, 5, 0, base)
  assert sweep.random_combinations(grids, ranges, 3, 0, base) == five[:3]  # prefix kept
  for p in five:
    assert p["net.rank"] in ("2", "4", "8")
    assert 1e-4 <= float(p["optim.lr"]) <= 1e-2
    assert p["net.text_hidden"] in {str(i) for i in range(8, 13)}  # an integer field
  # Trial 0 by hand: numpy's generator seeded [0, 0] draws the choice, then the log-uniform.
  rng = np.random.default_rng([0, 0])
  rank = ["2", "4", "8"][int(rng.integers(3))]
  lr = float(np.exp(rng.uniform(np.log(1e-4), np.log(1e-2))))
  assert five[0]["net.rank"] == rank and float(five[0]["optim.lr"]) == lr
  assert sweep.combination_name(five[0], 0).startswith(f"trial000_net.rank={rank}_optim.lr=")


def test_plan_rejects_bad_values_before_training():
  flags = {**sweep.KNOWN, "model": "lmf"}
  base = config_lib.get_config("lmf")
  with pytest.raises(ConfigError, match="unknown config field"):
    sweep.plan_sweep(base, {"grid": ["net.nope=1,2"], "range": []}, flags, {})
  with pytest.raises(ConfigError, match="both set"):
    sweep.plan_sweep(base, {"grid": ["optim.lr=1,2"], "range": []}, flags, {"optim.lr": "1"})
  with pytest.raises(ConfigError, match="--trials"):
    sweep.plan_sweep(base, {"grid": [], "range": ["optim.lr=1e-4:1e-2"]}, flags, {})


def test_tiny_sweep_selects_on_validation_and_reuses_runs(tmp_path, capsys, monkeypatch):
  work = str(tmp_path / "sweep")
  net = [f"--net.{k}={v}" for k, v in TINY_NET["lmf"].items()]
  argv = ["--model=lmf", "--epochs=1", f"--workdir={work}", "--num_devices=1",
          "--progress=false", "--data.modalities=text,audio", "--data.synthetic_train=64",
          "--data.synthetic_valid=32", "--data.synthetic_test=32", *net,
          "--optim.lr=1e-2", "--grid", "data.synthetic_seed=0,1", "--seeds=1,2"]
  assert sweep.main(argv) == 0
  out = capsys.readouterr().out
  assert "2 combination(s) x 2 seed(s) = 4 runs" in out and "**selected**" in out
  # The swept field changes the data, not the compiled program: one compile for all 4 runs.
  runs = {}
  for v in ("0", "1"):
    runs[v] = [json.load(open(os.path.join(work, f"data.synthetic_seed={v}", f"seed_{s}",
                                           "results.json"))) for s in (1, 2)]
  means = {v: np.mean([r["valid"]["mae"] for r in rs]) for v, rs in runs.items()}
  best = min(means, key=means.get)
  table = list(csv.DictReader(open(os.path.join(work, "sweep.csv"))))
  chosen = [r for r in table if r["selected"] == "1"]
  assert len(chosen) == 1 and chosen[0]["data.synthetic_seed"] == best
  assert float(chosen[0]["valid_mae_mean"]) == pytest.approx(means[best])
  assert float(chosen[0]["test_mae_mean"]) == pytest.approx(
      np.mean([r["test"]["mae"] for r in runs[best]]))
  assert all(r["test_mae_mean"] == "" for r in table if r["selected"] == "0")
  # Rerunning the same sweep trains nothing: every run's config matches its workdir.
  def no_build(*a, **k):
    raise AssertionError("a finished sweep must reuse its runs")
  monkeypatch.setattr(loop_lib, "build_experiment", no_build)
  assert sweep.main(argv) == 0
  again = list(csv.DictReader(open(os.path.join(work, "sweep.csv"))))
  assert again == table
