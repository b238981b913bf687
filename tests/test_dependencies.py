"""pyproject.toml declares what the package imports, with floors the installed versions meet.

Installs nothing: reads pyproject.toml (tomllib), the installed versions
(importlib.metadata) and the package's import statements (ast)."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import os
import re
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "mmfuse_jax")
# Declared but never imported by name, and why.
INDIRECT = {"flatbuffers": "jax.export serialization imports it; jax does not declare it"}
# Modules that only run with an extra installed: top-level imports there may come from it.
EXTRA_MODULES = {os.path.join("data", "tfds_builders.py"): "tfds"}


def normalize(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def project() -> dict:
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]


def requirements(group: str | None = None) -> dict[str, Requirement]:
  p = project()
  reqs = p["dependencies"] if group is None else p["optional-dependencies"][group]
  return {normalize(r.name): r for r in map(Requirement, reqs)}


def imports() -> dict[str, dict[str, bool]]:
  """Third-party top-level module -> {file: imported at module level (not inside a def)}."""
  found: dict[str, dict[str, bool]] = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(folder, name)
      tree = ast.parse(open(path).read(), path)
      top_level = {id(n) for n in tree.body}
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
          mods = [node.module]
        else:
          continue
        for mod in mods:
          top = mod.split(".")[0]
          if top in sys.stdlib_module_names or top == "mmfuse_jax":
            continue
          rel = os.path.relpath(path, PACKAGE)
          entry = found.setdefault(top, {})
          entry[rel] = entry.get(rel, False) or id(node) in top_level
  return found


@functools.lru_cache(maxsize=1)
def module_distributions() -> dict[str, list[str]]:
  return importlib.metadata.packages_distributions()  # scans every installed package: once


def distribution(module: str) -> str:
  dists = module_distributions().get(module)
  if not dists:
    pytest.fail(f"module {module!r} is imported by mmfuse_jax but not installed")
  return normalize(dists[0])


def test_installed_versions_meet_the_floors():
  for name, req in requirements().items():
    installed = Version(importlib.metadata.version(req.name))
    assert req.specifier.contains(installed, prereleases=True), (
        f"{req.name} {installed} installed, pyproject.toml asks {req.specifier}")


def test_floors_cover_the_recent_apis():
  """The APIs that set the floors exist in the installed versions (and the floors are not
  below the releases that introduced them: jax 0.5.3, optax 0.2.5)."""
  import jax.sharding
  import optax
  assert hasattr(jax.sharding.AxisType, "Auto") and callable(optax.tree.norm)
  base = requirements()
  assert Version("0.5.3") in base["jax"].specifier
  assert Version("0.5.2") not in base["jax"].specifier
  assert Version("0.2.4") not in base["optax"].specifier


def test_every_runtime_import_is_declared():
  base = set(requirements())
  extras = {g: set(requirements(g)) for g in project()["optional-dependencies"]}
  for module, files in imports().items():
    dist = distribution(module)
    top_level_in = [f for f, top in files.items() if top and f not in EXTRA_MODULES]
    if top_level_in:
      assert dist in base, (f"{module} ({dist}) is imported at module level by "
                            f"{top_level_in} but is not in [project].dependencies")
    else:  # lazy imports and extra-only modules: an extra must provide it
      groups = {EXTRA_MODULES[f] for f in files if f in EXTRA_MODULES}
      where = groups or set(extras)
      assert dist in base or any(dist in extras[g] for g in where), (
          f"{module} ({dist}) imported by {sorted(files)} is declared in no extra {where}")


def test_every_declared_dependency_is_used():
  used = {distribution(m) for m in imports()}
  for name in requirements():
    assert name in used or name in INDIRECT, (
        f"{name} is declared in pyproject.toml but mmfuse_jax never imports it")
