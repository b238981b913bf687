"""Shared test helpers: tiny configs and datasets that train in seconds."""

from __future__ import annotations

import contextlib
import importlib.util
import os

import jax

from mmfuse_jax import config as config_lib
from mmfuse_jax.data import make_synthetic

REAL_MOSI_DIR = None


def tiny_synthetic(seed: int = 0, n_train: int = 256, n_valid: int = 64, n_test: int = 64,
                   lengths=None, modalities=("text", "audio", "vision"), **kwargs):
  """Small synthetic data; fewer modalities make models (and their compiles) smaller."""
  dims = {m: d for m, d in {"text": 12, "audio": 6, "vision": 8}.items() if m in modalities}
  return make_synthetic(seed, sizes={"train": n_train, "valid": n_valid, "test": n_test},
                        dims=dims, lengths=lengths or {"text": 8, "audio": 12, "vision": 10},
                        **kwargs)


def tiny_config(model: str, **overrides):
  """The model's paper defaults (no synthetic preset) made small: one device, no progress
  bar, few epochs."""
  c = config_lib.get_config(model, preset=False)
  c.num_devices = 1
  c.progress = False
  c.epochs = 2
  c.batch_size = 32
  c.eval_batch_size = 64
  for key, value in overrides.items():
    node = c
    parts = key.split(".")
    for p in parts[:-1]:
      node = node[p]
    node[parts[-1]] = value
  return c


def real_mosi_dir() -> str | None:
  """Path of the real utterance-level MOSI files (env MMFUSE_MOSI_DIR or ../shared)."""
  import os
  here = os.path.dirname(os.path.abspath(__file__))
  for cand in (os.environ.get("MMFUSE_MOSI_DIR"),
               os.path.join(here, "..", "..", "shared", "data", "mosi-utterance")):
    if cand and os.path.exists(os.path.join(cand, "mosi_utterance_real.npz")):
      return os.path.abspath(cand)
  return None


SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


def load_script(name: str):
  """Import scripts/NAME.py (the scripts are not a package) as a module."""
  spec = importlib.util.spec_from_file_location(f"_script_{name}",
                                                os.path.join(SCRIPTS, f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@contextlib.contextmanager
def shared_compilation_cache(path):
  """JAX's persistent compilation cache in `path` for every program (no minimum compile
  time), so identical programs within a test module (a run and its resumption, the seeds of
  a sweep) compile once; the previous settings are restored on exit."""
  old = (jax.config.jax_compilation_cache_dir,
         jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  try:
    yield
  finally:
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
