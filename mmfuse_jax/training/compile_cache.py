"""JAX's persistent compilation cache for the command-line tools (on by default).

XLA compilation of a model's train and eval steps takes seconds to minutes; the cache stores
each compiled program on disk, keyed by the program and the JAX/XLA version and device, so a
second run of the same shapes and settings (a resumed run, the next seed of a sweep, a
re-evaluation) loads it instead of compiling. Programs that JAX compiles in under
`jax_persistent_cache_min_compile_time_secs` (default 1 s) are not stored.

Default directory: $MMFUSE_COMPILE_CACHE if set, else $XDG_CACHE_HOME/mmfuse_jax/jax, else
~/.cache/mmfuse_jax/jax. `--compile_cache=PATH` moves it; `--compile_cache=none` disables it.
"""

from __future__ import annotations

import logging
import os

import jax

from mmfuse_jax.errors import ConfigError

log = logging.getLogger(__name__)

_OFF = ("none", "off", "false", "0", "")


def default_cache_dir() -> str:
  """$XDG_CACHE_HOME/mmfuse_jax/jax, or ~/.cache/mmfuse_jax/jax."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "mmfuse_jax", "jax")


def resolve(flag: str | None) -> str | None:
  """The cache directory a `--compile_cache` value asks for (None: disabled). Without the
  flag, $MMFUSE_COMPILE_CACHE (a path or 'none') decides, then `default_cache_dir()`."""
  value = flag if flag is not None else os.environ.get("MMFUSE_COMPILE_CACHE")
  if value is None or value.strip().lower() in ("true", "on", "default"):
    return default_cache_dir()
  if value.strip().lower() in _OFF:
    return None
  return os.path.abspath(os.path.expanduser(value))


def enable(flag: str | None) -> str | None:
  """Points JAX's persistent compilation cache at `resolve(flag)` (creating it); returns the
  directory, or None when disabled (then JAX's setting is left as it is). Call before the
  first compilation of the process."""
  path = resolve(flag)
  if path is None:
    return None
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--compile_cache={path}: cannot create the directory ({e}); pass "
                      f"another path or --compile_cache=none") from None
  if not os.access(path, os.W_OK):
    raise ConfigError(f"--compile_cache={path} is not writable; pass another path or "
                      f"--compile_cache=none")
  jax.config.update("jax_compilation_cache_dir", path)
  log.info("persistent compilation cache: %s", path)
  return path
