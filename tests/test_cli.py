"""The command-line interfaces: flags, overrides, errors, train -> evaluate round trip."""

import json
import os
import subprocess
import sys

import pytest

from mmfuse_jax import config as config_lib
from mmfuse_jax import evaluate, train
from mmfuse_jax.cli import parse_flags
from mmfuse_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_lists_models_datasets_fields(capsys):
  assert train.main(["--help"]) == 0
  out = capsys.readouterr().out
  assert "mult" in out and "synthetic" in out and "optim.lr" in out


def test_home_paths_expanded_in_flags_and_overrides(monkeypatch):
  """`--data_dir=~/data`: the shell leaves `~` after `=` alone, the CLI expands it."""
  monkeypatch.setenv("HOME", "/home/someone")
  flags, overrides = parse_flags(["--data_dir=~/data/mosi", "--workdir", "~/runs/a",
                                  "--data.file=~/x.pkl", "--net.d_model=30"],
                                 {"data_dir": None, "workdir": None})
  assert flags == {"data_dir": "/home/someone/data/mosi", "workdir": "/home/someone/runs/a"}
  assert overrides == {"data.file": "/home/someone/x.pkl", "net.d_model": "30"}


def test_unknown_model_lists_valid_ones(capsys):
  assert train.main(["--model=nope"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: unknown model 'nope'") and "mult" in err
  assert "Traceback" not in err


def test_unknown_field_and_bad_value(capsys):
  assert train.main(["--model=mult", "--optim.lrr=0.1"]) == 2
  err = capsys.readouterr().err
  assert "unknown config field 'optim.lrr'" in err and "optim.lr" in err
  assert train.main(["--model=mult", "--epochs=many"]) == 2
  assert "expects an integer" in capsys.readouterr().err
  assert train.main(["--model=mult", "--dataset=nope"]) == 2
  assert "unknown dataset 'nope'" in capsys.readouterr().err


def test_overrides_are_typed():
  c = config_lib.get_config("mult")
  config_lib.apply_overrides(c, {"optim.lr": "3e-4", "net.causal": "true", "epochs": "7",
                                 "data.modalities": "text,audio"})
  assert c.optim.lr == 3e-4 and c.net.causal is True and c.epochs == 7
  assert config_lib.modalities(c) == ("text", "audio")
  with pytest.raises(ConfigError, match="optim.schedule"):
    c.optim.schedule = "sometimes"
    config_lib.validate_config(c)


def test_train_then_evaluate_round_trip(tmp_path, capsys):
  work = str(tmp_path / "w")
  rc = train.main([f"--config={ROOT}/configs/mult.py:tiny", "--epochs=1", f"--workdir={work}",
                   "--num_devices=1", "--progress=false", "--data.modalities=text,audio"])
  assert rc == 0
  out = capsys.readouterr().out
  assert "selected epoch 1" in out and "test :" in out
  results = json.load(open(os.path.join(work, "results.json")))
  assert evaluate.main([f"--workdir={work}", "--json", "--plots"]) == 0
  again = json.loads(capsys.readouterr().out)
  for split in ("valid", "test"):
    for k, v in results[split].items():
      assert again[split][k] == pytest.approx(v, rel=1e-5, abs=1e-6)
  names = {os.path.basename(p) for p in again["plots"]}
  assert {"learning_curves.png", "embedding_tsne.png", "attention_audio_to_text.png"} <= names
  import matplotlib.image
  for path in again["plots"]:
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    h, w = matplotlib.image.imread(path).shape[:2]
    assert h >= 200 and w >= 300
  # Modality-drop robustness (MDM Sec. 5.3) of the same checkpoint.
  assert evaluate.main([f"--workdir={work}", "--drop=zero:text,remove:audio",
                        "--plots", "--json"]) == 0
  table = json.loads(capsys.readouterr().out)
  assert table["clean"]["mae"] == pytest.approx(results["test"]["mae"], rel=1e-5)
  assert set(table["drops"]) == {"zero:text", "remove:audio"}
  assert table["drops"]["zero:text"]["metrics"]["mae"] != table["clean"]["mae"]
  assert os.path.exists(os.path.join(work, "modality_drop.png"))
  assert os.path.exists(os.path.join(work, "modality_drop_test.json"))


def test_evaluate_without_workdir_is_a_clear_error(tmp_path, capsys):
  assert evaluate.main([f"--workdir={tmp_path}"]) == 2
  assert "not a training workdir" in capsys.readouterr().err


def test_module_entry_point_runs():
  out = subprocess.run([sys.executable, "-m", "mmfuse_jax.train", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and "models:" in out.stdout


def test_every_config_setting_loads_and_validates():
  """configs/<method>.py:<setting>: each builds a valid config of the model the file names."""
  import glob
  files = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
  assert len(files) >= 6
  for path in files:
    for setting in config_lib.config_settings(path):
      c = config_lib.load_config_file(f"{path}:{setting}")
      config_lib.validate_config(c)
      method = os.path.basename(path)[:-len(".py")]
      assert c.model == method or method == "mdm", (path, setting, c.model)


def test_help_of_a_model_lists_its_own_net_fields(capsys):
  for argv in (["--model=rerd", "--help"], ["--help", "--model", "rerd"]):
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    listed = {line.strip()[2:].split("=", 1)[0] for line in out.splitlines()
              if line.strip().startswith("--net.")}
    expected = {f"net.{k}" for k in config_lib.get_config("rerd").net.keys()}
    assert "net (rerd):" in out and listed == expected
    assert listed != {f"net.{k}" for k in config_lib.get_config("mult").net.keys()}


def test_evaluate_plots_without_matplotlib_fails_before_evaluating(tmp_path, capsys,
                                                                    monkeypatch):
  def no_eval(*a, **k):
    raise AssertionError("evaluated before checking the plot packages")
  monkeypatch.setattr(evaluate, "evaluate_workdir", no_eval)
  monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
  assert evaluate.main([f"--workdir={tmp_path}", "--plots"]) == 2
  err = capsys.readouterr().err
  assert "matplotlib" in err and 'pip install ".[plots]"' in err


def test_console_scripts_point_at_mains():
  """pyproject's console scripts name functions that exist."""
  import importlib
  import tomllib
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    scripts = tomllib.load(f)["project"]["scripts"]
  assert {"mmfuse-train", "mmfuse-evaluate", "mmfuse-export", "mmfuse-sweep"} <= set(scripts)
  for target in scripts.values():
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func)), target
  extras = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))
  assert "plots" in extras["project"]["optional-dependencies"]
