"""Shared command-line parsing: named flags plus any `--dotted.config.field=value`."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from mmfuse_jax.errors import ConfigError, MmfuseError


def parse_flags(argv: list[str], known: dict[str, str | None]) -> tuple[dict, dict]:
  """Splits `--key=value` / `--key value` arguments into known flags and config overrides.
  A value starting with `~` is a path in the user's home (the shell does not expand `~`
  after `--flag=`), so it is expanded here."""
  flags, overrides = dict(known), {}
  i = 0
  while i < len(argv):
    arg = argv[i]
    if not arg.startswith("--"):
      raise ConfigError(f"unexpected argument {arg!r}; use --key=value")
    if "=" in arg:
      key, value = arg[2:].split("=", 1)
    else:
      key = arg[2:]
      if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
        value = argv[i + 1]; i += 1
      else:
        value = "true"
    if value.startswith("~"):
      value = os.path.expanduser(value)
    if key in known:
      flags[key] = value
    else:
      overrides[key] = value
    i += 1
  return flags, overrides


def run_main(fn: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
  """Runs a CLI body; library errors become one line on stderr and exit status 2."""
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  for noisy in ("absl", "orbax", "jax._src", "tensorflow"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  try:
    return fn(sys.argv[1:] if argv is None else argv)
  except MmfuseError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyError as e:  # registry look-ups list the valid names
    if e.args and isinstance(e.args[0], str) and e.args[0].startswith("unknown "):
      print(f"error: {e.args[0]}", file=sys.stderr)
      return 2
    raise
