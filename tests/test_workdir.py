"""A workdir answers only for its own config; raising epochs continues a finished run;
default workdir names carry a hash of the changed fields; metrics.jsonl/csv columns."""

import csv
import json
import os

import pytest

from mmfuse_jax import config as config_lib
from mmfuse_jax import train
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import loop as loop_lib
from mmfuse_jax.training import workdir as workdir_lib
from mmfuse_jax.training.loop import train_and_evaluate
from tests.helpers import shared_compilation_cache, tiny_config, tiny_synthetic
from tests.test_baselines import TINY_NET

LMF = {**{f"net.{k}": v for k, v in TINY_NET["lmf"].items()},
       "data.modalities": "text,audio", "optim.lr": 1e-2}
TIMING = ("wall_time_s", "compile_s", "train_steps_per_s", "config")


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """The runs of this module share their programs: compile them once."""
  with shared_compilation_cache(tmp_path_factory.mktemp("xla_cache")):
    yield


def test_stop_epoch_by_hand():
  sel = [True, False, False, True, False]
  # patience 2: epochs since the last improvement are 0, 1, 2 -> stops after epoch 3.
  assert workdir_lib.stop_epoch(sel, epochs=10, patience=2) == 3
  # patience 3: 0, 1, 2, 0, 1 never reaches 3 -> would train past the 5 epochs seen.
  assert workdir_lib.stop_epoch(sel, epochs=10, patience=3) is None
  assert workdir_lib.stop_epoch(sel, epochs=4, patience=0) == 4
  assert workdir_lib.stop_epoch(sel, epochs=5, patience=0) == 5
  assert workdir_lib.stop_epoch(sel, epochs=6, patience=0) is None
  assert workdir_lib.stop_epoch([], epochs=1, patience=0) is None


def test_replay_early_stopping_recounts_for_new_patience():
  history = [{"selected": s} for s in (True, False, True, False, False)]
  loop = {"history": history, "since_best": 99, "stopped_early": True, "epoch": 5}
  c = tiny_config("lmf", epochs=9, patience=3)
  out = workdir_lib.replay_early_stopping(loop, c)
  assert out["since_best"] == 2 and out["stopped_early"] is False
  c.patience = 2  # 2 epochs without improvement after epoch 5: stops there
  out = workdir_lib.replay_early_stopping(loop, c)
  assert out["since_best"] == 2 and out["stopped_early"] is True
  c.patience = 1  # would have stopped after epoch 2 (the first epoch without improvement)
  with pytest.raises(ConfigError, match="stopped after epoch 2"):
    workdir_lib.replay_early_stopping(loop, c)


def test_config_differences_name_fields_and_skip_resumable():
  c = config_lib.get_config("mult")
  saved = json.loads(config_lib.to_json(c))
  new = config_lib.get_config("mult")
  config_lib.apply_overrides(new, {"optim.lr": "3e-4", "net.num_layers": "3", "epochs": "40",
                                   "progress": "false"})
  diff = workdir_lib.config_differences(saved, new)
  assert diff == {"optim.lr": (c.optim.lr, 3e-4), "net.num_layers": (c.net.num_layers, 3)}
  # A field the saved file lacks (added to the library later) counts only if not default.
  del saved["data"]["max_steps"]
  assert "data.max_steps" not in workdir_lib.config_differences(saved, c)
  c.data.max_steps = 7
  assert workdir_lib.config_differences(saved, c)["data.max_steps"] == (None, 7)


def test_default_workdir_carries_hash_of_changed_fields():
  base = train.build_config(dict(train.KNOWN), {})
  assert workdir_lib.default_workdir(base) == os.path.join("runs", "mult-synthetic-seed0")
  flags = dict(train.KNOWN)
  changed = train.build_config(flags, {"optim.lr": "3e-4", "net.num_layers": "3"})
  reordered = train.build_config(flags, {"net.num_layers": "3", "optim.lr": "3e-4"})
  other = train.build_config(flags, {"optim.lr": "1e-4", "net.num_layers": "3"})
  name = workdir_lib.default_workdir(changed)
  assert name.startswith(os.path.join("runs", "mult-synthetic-seed0-"))
  suffix = name.rsplit("-", 1)[1]
  assert len(suffix) == 8 and int(suffix, 16) >= 0
  assert workdir_lib.default_workdir(reordered) == name
  assert workdir_lib.default_workdir(other) != name
  # Resumable fields (epochs) and the named fields keep the name.
  more = train.build_config({**flags, "epochs": "40", "seed": "3"}, {})
  assert workdir_lib.default_workdir(more) == os.path.join("runs", "mult-synthetic-seed3")


def _strip(r):
  return {k: v for k, v in r.items() if k not in TIMING}


def test_finished_run_same_config_returns_changed_errors_epochs_continue(tmp_path,
                                                                        monkeypatch):
  ds = tiny_synthetic(4, n_train=64, n_valid=32, n_test=32, modalities=("text", "audio"))
  c2 = tiny_config("lmf", epochs=2, **LMF)
  work = str(tmp_path / "w")
  r2 = train_and_evaluate(c2, work, dataset=ds)

  # Same config: the saved results, without building anything.
  def no_build(*a, **k):
    raise AssertionError("a finished run of the same config must not train again")
  monkeypatch.setattr(loop_lib, "build_experiment", no_build)
  assert train_and_evaluate(tiny_config("lmf", epochs=2, progress=True, **LMF), work,
                            dataset=ds) == r2
  # A different config: an error naming the field, before any results are returned.
  changed = tiny_config("lmf", epochs=2, **{**LMF, "optim.lr": 3e-4})
  with pytest.raises(ConfigError, match=r"optim\.lr: 0\.01 -> 0\.0003"):
    train_and_evaluate(changed, work, dataset=ds)
  monkeypatch.undo()

  # Raising epochs continues the finished run, exactly as one 3-epoch run.
  c3 = tiny_config("lmf", epochs=3, **LMF)
  continued = train_and_evaluate(c3, work, dataset=ds)
  fresh = train_and_evaluate(c3, str(tmp_path / "fresh"), dataset=ds)
  assert continued["epochs_run"] == 3 and _strip(continued) == _strip(fresh)
  rows = [json.loads(line) for line in open(os.path.join(work, "metrics.jsonl"))]
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  # Lowering epochs below what the run trained cannot answer for the config.
  with pytest.raises(ConfigError, match="stopped after epoch 1"):
    train_and_evaluate(tiny_config("lmf", epochs=1, **LMF), work, dataset=ds)

  # metrics.csv mirrors metrics.jsonl; rows carry lr, wall-clock time and epoch seconds.
  table = list(csv.DictReader(open(os.path.join(work, "metrics.csv"))))
  assert [int(t["epoch"]) for t in table] == [1, 2, 3]
  for row, line in zip(rows, table):
    assert row["lr"] == pytest.approx(1e-2) and row["epoch_s"] > 0
    assert row["time"].endswith("+00:00") and line["time"] == row["time"]
    assert float(line["valid/mae"]) == pytest.approx(row["valid"]["mae"])
    assert float(line["lr"]) == pytest.approx(row["lr"])


def test_cli_refuses_stale_workdir_with_exit_2(tmp_path, capsys):
  """The reported case: a finished default run, then new overrides in the same workdir."""
  work = str(tmp_path / "w")
  os.makedirs(work)
  old = train.build_config(dict(train.KNOWN), {})
  with open(os.path.join(work, "config.json"), "w") as f:
    f.write(config_lib.to_json(old))
  fake = {"selected_epoch": 1, "epochs_run": old.epochs, "select_metric": "mae",
          "valid": {"mae": 1.0}, "test": {"mae": 2.0}}
  with open(os.path.join(work, "results.json"), "w") as f:
    json.dump(fake, f)
  with open(os.path.join(work, "metrics.jsonl"), "w") as f:
    for e in range(old.epochs):
      f.write(json.dumps({"epoch": e + 1, "selected": e == 0}) + "\n")
  rc = train.main(["--model=mult", "--optim.lr=3e-4", "--net.num_layers=3",
                   f"--workdir={work}"])
  err = capsys.readouterr().err
  assert rc == 2 and "optim.lr" in err and "net.num_layers" in err and "Traceback" not in err
  assert train.main(["--model=mult", f"--workdir={work}"]) == 0
  assert "mae=2.0000" in capsys.readouterr().out


class _FakeWandbRun:
  def __init__(self, calls):
    self.calls, self.summary = calls, {}

  def log(self, data, step):
    self.calls.append(("log", step, dict(data)))

  def finish(self):
    self.calls.append(("finish",))


class _FakeWandb:
  def __init__(self):
    self.calls = []

  def init(self, **kwargs):
    self.calls.append(("init", kwargs))
    self.run = _FakeWandbRun(self.calls)
    return self.run


def test_wandb_logging_with_a_fake_module(tmp_path, monkeypatch):
  import sys
  from mmfuse_jax.training.run_log import RunLog
  fake = _FakeWandb()
  monkeypatch.setitem(sys.modules, "wandb", fake)
  c = tiny_config("lmf", wandb="my-project")
  work = str(tmp_path / "sweep" / "seed_1")
  os.makedirs(work)
  history = [{"epoch": 1, "lr": 0.1, "lr_scale": 1.0, "selected": True,
              "train": {"loss": 2.0}, "valid": {"mae": 1.5}}]
  log = RunLog(work, history, c)
  log.write({"epoch": 2, "lr": 0.05, "lr_scale": 0.5, "selected": False,
             "train": {"loss": 1.0}, "valid": {"mae": 1.25}})
  log.finish({"selected_epoch": 1, "valid": {"mae": 1.5}, "test": {"mae": 1.75}})
  (kind, init), (_, step, data), (end,) = fake.calls
  assert kind == "init" and init["project"] == "my-project" and init["name"] == "sweep/seed_1"
  assert init["config"]["wandb"] == "my-project" and init["resume"] == "allow"
  assert step == 2 and data == {"lr": 0.05, "lr_scale": 0.5, "train/loss": 1.0,
                                "valid/mae": 1.25, "epoch": 2}
  assert end == "finish" and fake.run.summary["selected/test/mae"] == 1.75
  # A resumed run logs to the same W&B run id; its csv is rewritten from its history.
  RunLog(work, history, c).finish()
  assert fake.calls[3][1]["id"] == init["id"]
  table = list(csv.DictReader(open(os.path.join(work, "metrics.csv"))))
  assert [t["epoch"] for t in table] == ["1"]  # rewritten from the (resumed) history


def test_wandb_missing_is_a_clear_cli_error(capsys, monkeypatch):
  import sys
  monkeypatch.setitem(sys.modules, "wandb", None)
  assert train.main(["--model=lmf", "--wandb=proj", "--epochs=1"]) == 2
  assert "pip install wandb" in capsys.readouterr().err


def test_learning_rate_matches_schedules_by_hand():
  from mmfuse_jax.training.run_log import learning_rate
  optim = tiny_config("lmf").optim
  optim.lr, optim.schedule, optim.step_epochs, optim.step_factor = 0.1, "step", 2, 0.5
  # 3 steps per epoch: steps 0-5 at 0.1, 6-11 at 0.05 (one decay every 2 epochs)
  assert learning_rate(optim, 3, 5, 1.0) == pytest.approx(0.1)
  assert learning_rate(optim, 3, 6, 1.0) == pytest.approx(0.05)
  assert learning_rate(optim, 3, 12, 0.1) == pytest.approx(0.0025)
  optim.schedule, optim.cyclic_max_lr, optim.cyclic_half_period_epochs = "cyclic", 0.5, 1.0
  # half period 3 steps: 0.1 at step 0, up to 0.5 at step 3, 0.1 + 0.4 / 3 at step 1
  assert learning_rate(optim, 3, 0, 1.0) == pytest.approx(0.1)
  assert learning_rate(optim, 3, 3, 1.0) == pytest.approx(0.5)
  assert learning_rate(optim, 3, 1, 1.0) == pytest.approx(0.1 + 0.4 / 3)
