"""The import graph of mmfuse_jax, read from the source with `ast` (nothing is imported).

Imports go one way, from the bottom up:

  foundation (errors, registry, cli, config_base) -> data, layers -> losses -> models
  -> methods -> catalog, config (and convert/) -> training -> entry points (train,
  evaluate, export, plots, sweep, inference)

A module may import its own layer or a lower one, never a higher one; every import of the
package sits at the top of its module (no function-local import that would hide a cycle);
the module-level imports form no cycle. docs/concepts.md opens with a picture of the same
layers: the files it names exist and sit in the layer of their row.
"""

from __future__ import annotations

import ast
import functools
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "mmfuse_jax")

# Bottom first. A module belongs to the first entry whose name equals it or is a prefix
# of it ('mmfuse_jax.data' holds mmfuse_jax.data.core, ...).
LAYERS = (
    ("foundation", ("mmfuse_jax", "mmfuse_jax.errors", "mmfuse_jax.registry",
                    "mmfuse_jax.cli", "mmfuse_jax.config_base")),
    ("data, layers", ("mmfuse_jax.data", "mmfuse_jax.layers")),
    ("losses", ("mmfuse_jax.losses",)),
    ("models", ("mmfuse_jax.models",)),
    ("methods", ("mmfuse_jax.methods",)),
    ("catalog, config", ("mmfuse_jax.catalog", "mmfuse_jax.config",
                         "mmfuse_jax.convert")),   # convert/: official weights -> ours
    ("training", ("mmfuse_jax.training",)),
    ("entry points", ("mmfuse_jax.train", "mmfuse_jax.evaluate", "mmfuse_jax.export",
                      "mmfuse_jax.plots", "mmfuse_jax.sweep", "mmfuse_jax.inference")),
)

# Third-party packages a function may import on first use: optional extras, or heavy ones
# needed by one code path only.
LAZY_ALLOWED = ("matplotlib", "sklearn", "tensorboardX", "h5py", "wandb")


def module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[:-len(".py")].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def all_modules() -> dict[str, str]:
  """module name -> file path of every module of the package."""
  out = {}
  for folder, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(folder, f)
        out[module_name(path)] = path
  return out


MODULES = all_modules()


def layer_of(module: str) -> int:
  """Index in LAYERS of the longest name that equals `module` or is a package above it."""
  best, best_len = None, -1
  for rank, (_, names) in enumerate(LAYERS):
    for name in names:
      inside = name != "mmfuse_jax" and module.startswith(name + ".")  # the root: itself only
      if (module == name or inside) and len(name) > best_len:
        best, best_len = rank, len(name)
  if best is None:
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
  return best


def resolve(node: ast.AST) -> list[str]:
  """The package modules an import statement loads: `from a.b import c` loads a.b.c when
  that is a module, else a.b."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names if a.name.split(".")[0] == "mmfuse_jax"]
  if node.module is None or node.module.split(".")[0] != "mmfuse_jax":
    return []
  out = []
  for a in node.names:
    sub = f"{node.module}.{a.name}"
    out.append(sub if sub in MODULES else node.module)
  return sorted(set(out))


@functools.lru_cache(maxsize=None)
def parse(path: str) -> ast.Module:
  return ast.parse(open(path).read(), path)


def imports(path: str):
  """(imported module, line, at module top) for each package import of one file; an
  import inside a top-level `try`/`if` counts as top."""
  tree = parse(path)
  top = set()
  for stmt in tree.body:
    for node in ast.walk(stmt) if isinstance(stmt, (ast.Try, ast.If)) else [stmt]:
      top.add(id(node))
  out = []
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      for target in resolve(node):
        out.append((target, node.lineno, id(node) in top))
  return out


def lazy_third_party(path: str):
  """(name, line) of third-party imports inside functions that LAZY_ALLOWED lacks."""
  tree = parse(path)
  out = []
  for fn in ast.walk(tree):
    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for node in ast.walk(fn):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
          if name.split(".")[0] not in LAZY_ALLOWED + ("mmfuse_jax",):
            out.append((name, node.lineno))
  return out


def test_every_module_has_a_layer():
  for module in MODULES:
    layer_of(module)


def test_imports_point_down_and_sit_at_the_top():
  upward, local = [], []
  for module, path in sorted(MODULES.items()):
    for target, line, at_top in imports(path):
      rel = f"{os.path.relpath(path, ROOT)}:{line}"
      if layer_of(target) > layer_of(module):
        upward.append(f"{rel} ({LAYERS[layer_of(module)][0]}) imports {target} "
                      f"({LAYERS[layer_of(target)][0]})")
      if not at_top:
        local.append(f"{rel} imports {target} inside a function")
  assert not upward, "upward imports:\n" + "\n".join(upward)
  assert not local, "function-local package imports:\n" + "\n".join(local)


def test_third_party_imports_at_the_top():
  found = [f"{os.path.relpath(p, ROOT)}:{line} {name}" for p in sorted(MODULES.values())
           for name, line in lazy_third_party(p)]
  assert not found, ("imports inside functions (move them to the top, or add an optional "
                     "package to LAZY_ALLOWED):\n" + "\n".join(found))


def test_module_imports_form_no_cycle():
  graph = {m: sorted({t for t, _, top in imports(p) if top and t != m})
           for m, p in MODULES.items()}
  state: dict[str, int] = {}   # 1: on the current path, 2: done

  def visit(m, path):
    state[m] = 1
    for t in graph.get(m, ()):
      if state.get(t) == 1:
        raise AssertionError("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
      if t not in state:
        visit(t, path + [t])
    state[m] = 2
  for m in sorted(graph):
    if m not in state:
      visit(m, [m])


def concepts_picture() -> list[tuple[str, list[str]]]:
  """(layer label, files) per row of the picture that opens docs/concepts.md: the first
  code block; a row's label is its text before two spaces, continuation rows have none."""
  text = open(os.path.join(ROOT, "docs", "concepts.md")).read()
  block = text.split("```", 2)[1].splitlines()[1:]
  rows = []
  for line in block[2:]:            # the header and its rule
    label = line[:17].strip()
    files = re.findall(r"[\w/]+\.py", line[17:60])
    if label:
      rows.append((label, files))
    else:
      rows[-1][1].extend(files)
  return rows


def test_concepts_picture_names_real_files_in_their_layers():
  """The picture's rows are the layers, top to bottom, and each file it names exists and
  belongs to its row's layer."""
  rows = concepts_picture()
  assert [label for label, _ in rows] == [name for name, _ in reversed(LAYERS)]
  for rank, (label, files) in zip(reversed(range(len(LAYERS))), rows):
    assert files or label == "foundation", label
    for f in files:
      module = module_name(os.path.join(PACKAGE, f))
      assert module in MODULES, f"docs/concepts.md names {f}, which does not exist"
      assert layer_of(module) == rank, (
          f"docs/concepts.md puts {f} in {label!r}; it belongs to {LAYERS[layer_of(module)][0]!r}")


@pytest.mark.parametrize("source,expect_upward", [
    ("from mmfuse_jax.training.loop import build_experiment\n", True),
    ("from mmfuse_jax.layers.dropout import Dropout\n", False),
])
def test_the_check_sees_an_upward_import(tmp_path, monkeypatch, source, expect_upward):
  """The check itself: a losses module importing training is caught, a layers import not."""
  path = tmp_path / "mmfuse_jax" / "losses" / "probe.py"
  path.parent.mkdir(parents=True)
  path.write_text(source)
  monkeypatch.setitem(globals(), "ROOT", str(tmp_path))
  (target, _, at_top), = imports(str(path))
  assert at_top
  assert (layer_of(target) > layer_of(module_name(str(path)))) == expect_upward
