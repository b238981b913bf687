"""The notebooks' install cell, run as on Colab: a fake `google.colab` module, pip and git
replaced by a recorder, Drive paths moved into tmp_path."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import types

import pytest

pytest.importorskip("nbformat")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def install_source() -> str:
  spec = importlib.util.spec_from_file_location(
      "_make_notebooks", os.path.join(ROOT, "colab", "make_notebooks.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.INSTALL


def run_cell(tmp_path, monkeypatch, source_value: str, keep_jax: bool = True):
  """Executes the install cell with MMFUSE_SOURCE / DRIVE_WORKDIR set to test values;
  returns the recorded subprocess commands."""
  calls, mounted = [], []
  colab = types.ModuleType("google.colab")
  colab.drive = types.SimpleNamespace(mount=mounted.append)
  monkeypatch.setitem(sys.modules, "google.colab", colab)
  monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd))
  for name in ("MMFUSE_SOURCE", "MMFUSE_REPO"):  # the cell sets them: restored after the test
    monkeypatch.setenv(name, "")
    monkeypatch.delenv(name)
  monkeypatch.chdir(tmp_path)
  workdir = tmp_path / "drive_runs"
  code = install_source()
  code = code.replace('MMFUSE_SOURCE = os.environ.get("MMFUSE_SOURCE", '
                      '"/content/drive/MyDrive/mmfuse_jax")', f"MMFUSE_SOURCE = {source_value!r}")
  code = code.replace('DRIVE_WORKDIR = "/content/drive/MyDrive/mmfuse_runs"',
                      f"DRIVE_WORKDIR = {str(workdir)!r}")
  code = code.replace("KEEP_COLAB_JAX = True", f"KEEP_COLAB_JAX = {keep_jax}")
  assert str(workdir) in code and repr(source_value) in code  # the replacements happened
  exec(compile(code, "install-cell", "exec"), {})
  return calls, mounted, workdir


def test_wheel_folder_keeps_colab_jax_and_works_on_drive(tmp_path, monkeypatch):
  folder = tmp_path / "wheels"
  (folder / "configs").mkdir(parents=True)
  wheel = folder / "mmfuse_jax-0.1.0-py3-none-any.whl"
  wheel.write_bytes(b"")
  calls, mounted, workdir = run_cell(tmp_path, monkeypatch, str(folder))
  assert mounted == []  # nothing under /content/drive here
  (pip,) = calls
  assert pip[pip.index("install") + 2] == f"mmfuse_jax[plots] @ file://{wheel}"
  constraints = open(pip[pip.index("-c") + 1]).read().split()
  assert f"jax=={importlib.metadata.version('jax')}" in constraints
  assert os.environ["MMFUSE_REPO"] == str(folder)
  assert os.getcwd() == str(workdir) and workdir.is_dir()


def test_git_url_is_cloned_and_jax_may_move(tmp_path, monkeypatch):
  calls, _, _ = run_cell(tmp_path, monkeypatch, "https://github.com/OWNER/mmfuse_jax",
                         keep_jax=False)
  clone, pip = calls
  assert clone[:3] == ["git", "clone", "--depth=1"]
  assert clone[3] == "https://github.com/OWNER/mmfuse_jax"
  assert pip[-1] == "mmfuse_jax[plots] @ file:///content/mmfuse_jax" and "-c" not in pip


def test_missing_wheel_says_how_to_build_one(tmp_path, monkeypatch):
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match=r"pip wheel \. -w dist --no-deps"):
    run_cell(tmp_path, monkeypatch, str(tmp_path / "empty"))
