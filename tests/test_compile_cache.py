"""The CLIs' persistent compilation cache: where it goes, how to move or disable it."""

import os

import jax
import pytest

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import compile_cache
from tests.helpers import load_script


def test_resolve_default_xdg_env_and_none(tmp_path, monkeypatch):
  monkeypatch.delenv("MMFUSE_COMPILE_CACHE", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compile_cache.resolve(None) == str(tmp_path / "xdg" / "mmfuse_jax" / "jax")
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert compile_cache.resolve(None) == str(tmp_path / "home" / ".cache" / "mmfuse_jax" / "jax")
  assert compile_cache.resolve("none") is None and compile_cache.resolve("off") is None
  assert compile_cache.resolve("rel/dir") == os.path.abspath("rel/dir")
  monkeypatch.setenv("MMFUSE_COMPILE_CACHE", "none")
  assert compile_cache.resolve(None) is None
  assert compile_cache.resolve(str(tmp_path / "c")) == str(tmp_path / "c")  # flag wins


def test_enable_sets_jax_cache_dir_or_leaves_it(tmp_path):
  old = jax.config.jax_compilation_cache_dir
  try:
    path = compile_cache.enable(str(tmp_path / "cache"))
    assert path == str(tmp_path / "cache") and os.path.isdir(path)
    assert jax.config.jax_compilation_cache_dir == path
    assert compile_cache.enable("none") is None
    assert jax.config.jax_compilation_cache_dir == path  # disabled: left as it was
  finally:
    jax.config.update("jax_compilation_cache_dir", old)
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(ConfigError, match="--compile_cache"):
    compile_cache.enable(str(blocker / "sub"))


def test_compile_times_script_command_and_table():
  mod = load_script("compile_times")
  cmd = mod.train_command("lmf", "/c", "/w")
  assert cmd[1:3] == ["-m", "mmfuse_jax.train"] and "--compile_cache=/c" in cmd
  assert "--data.synthetic_train=32" in cmd and "--epochs=1" in cmd
  rows = [{"model": "lmf", "cold_first_step_s": 12.0, "warm_first_step_s": 3.0,
           "cold_process_s": 30.0, "warm_process_s": 10.0}]
  assert "| lmf | 12.0 | 3.0 | 4.0x | 30.0 | 10.0 |" in mod.format_table(rows)
