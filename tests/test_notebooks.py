"""The colab/ notebooks run top to bottom on tiny settings.

Each notebook is executed with nbclient in a kernel of this interpreter (sys.executable),
with cwd = colab/ and a cell injected after its "parameters" cell (as papermill does) that
sets tiny values and a temporary workdir. The test then checks what the notebook wrote.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "colab")
CELL_TIMEOUT_S = 300
# Wall-clock budget per notebook (kernel start included). Override with
# MMFUSE_NOTEBOOK_BUDGET_S on a heavily shared machine.
BUDGET_S = float(os.environ.get("MMFUSE_NOTEBOOK_BUDGET_S", "120"))

TINY_NET = {"d_model": 8, "num_heads": 2, "num_layers": 1}
TINY_SIZES = (128, 64, 64)


def _kernel_manager(tmp_path):
  """A kernel manager whose only kernelspec runs ipykernel under sys.executable."""
  from jupyter_client.kernelspec import KernelSpecManager
  from jupyter_client.manager import AsyncKernelManager
  spec_dir = tmp_path / "kernels" / "mmfuse-test"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "mmfuse test", "language": "python"}))
  ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
  return AsyncKernelManager(kernel_name="mmfuse-test", kernel_spec_manager=ksm)


def run_notebook(name: str, params: dict, tmp_path) -> tuple[nbformat.NotebookNode, float]:
  nb = nbformat.read(os.path.join(COLAB, name), as_version=4)
  tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(tagged) == 1, f"{name}: expected one cell tagged 'parameters'"
  source = "# injected by tests/test_notebooks.py\n" + "\n".join(
      f"{k} = {v!r}" for k, v in params.items())
  nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(
      source, metadata={"tags": ["injected-parameters"]}))
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device unless the notebook sets the flag itself
  env["JAX_PLATFORMS"] = "cpu"
  client = nbclient.NotebookClient(nb, km=_kernel_manager(tmp_path), timeout=CELL_TIMEOUT_S,
                                   resources={"metadata": {"path": COLAB}})
  start = time.perf_counter()
  client.execute(env=env)
  return nb, time.perf_counter() - start


def _outputs(nb) -> str:
  text = []
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      text.append(out.get("text", "") or "".join(out.get("data", {}).get("text/plain", "")))
  return "\n".join(text)


def _png_size(path: str) -> tuple[int, int]:
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
  return struct.unpack(">II", head[16:24])


def _cell_seconds(nb) -> list[tuple[float, int]]:
  """(seconds, cell index) per executed code cell, slowest first (nbclient's timestamps)."""
  from datetime import datetime
  out = []
  for i, cell in enumerate(nb.cells):
    ex = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" in ex and "shell.execute_reply" in ex:
      t0, t1 = (datetime.fromisoformat(ex[k].replace("Z", "+00:00"))
                for k in ("iopub.execute_input", "shell.execute_reply"))
      out.append(((t1 - t0).total_seconds(), i))
  return sorted(out, reverse=True)


def _check_budget(name: str, nb, seconds: float) -> None:
  slowest = ", ".join(f"cell {i}: {s:.0f}s" for s, i in _cell_seconds(nb)[:3])
  print(f"{name}: {seconds:.1f}s ({slowest})")
  assert seconds < BUDGET_S, (f"{name} took {seconds:.0f}s (budget {BUDGET_S:.0f}s; slowest "
                              f"{slowest})")


def test_notebooks_match_generator():
  """colab/make_notebooks.py is the source of the notebooks; they must be in sync."""
  sys.path.insert(0, COLAB)
  try:
    import make_notebooks
  finally:
    sys.path.remove(COLAB)
  for name in make_notebooks.NOTEBOOKS:
    with open(os.path.join(COLAB, name)) as f:
      committed = json.load(f)
    expected = json.loads(make_notebooks.render(name))
    for nb in (committed, expected):
      nb.pop("nbformat_minor")  # may differ between nbformat versions
    assert committed == expected, (
        f"colab/{name} differs from colab/make_notebooks.py: run "
        f"`python colab/make_notebooks.py`")


def test_quickstart(tmp_path):
  work = str(tmp_path / "quickstart")
  nb, seconds = run_notebook("01_quickstart.ipynb", {
      "epochs": 2, "synthetic_sizes": TINY_SIZES, "net": TINY_NET,
      "modalities": "text,audio", "num_devices": 1,
      "compilation_cache": str(tmp_path / "jax_cache"), "workdir": work}, tmp_path)
  results = json.load(open(os.path.join(work, "results.json")))
  assert results["epochs_run"] == 2 and results["test"]["mae"] > 0
  for png in ("learning_curves.png", "embedding_tsne.png"):
    width, height = _png_size(os.path.join(work, png))
    assert width > 100 and height > 100
  assert sum("image/png" in o.get("data", {}) for c in nb.cells
             for o in c.get("outputs", [])) == 2
  _check_budget("01_quickstart", nb, seconds)


@pytest.mark.slow
def test_bring_your_own_data(tmp_path):
  work = str(tmp_path / "byod")
  nb, seconds = run_notebook("02_bring_your_own_data.ipynb", {
      "n_per_split": (16, 8, 8), "train_epochs": 1, "train_modalities": "text,audio",
      "net": TINY_NET, "workdir": work},
      tmp_path)
  summary = json.load(open(os.path.join(work, "byod_summary.json")))
  assert summary["mosi"] == {"train": 16, "valid": 8, "test": 8}
  assert summary["mosi_mmsa"] == {"train": 16, "valid": 8, "test": 8}
  assert sum(summary["mosi_utterance"].values()) == 60
  errors = summary["errors"]
  assert "feature dimension 7" in errors["wrong_dim"] and "'valid'" in errors["wrong_dim"]
  assert "NaN/inf" in errors["nan"] and "nan_policy=zero" in errors["nan"]
  assert "truncated" in errors["truncated"]
  assert summary["nan_replaced"]["train"] == {"vision": 3}
  assert summary["trained_test_mae"] > 0
  _check_budget("02_bring_your_own_data", nb, seconds)


@pytest.mark.slow
def test_reproduce_paper_setting(tmp_path):
  work = str(tmp_path / "reproduce")
  nb, seconds = run_notebook("03_reproduce_paper_setting.ipynb", {
      "config_file": "configs/mult.py:tiny", "seeds": [1, 2], "epochs": 1,
      "overrides": {"num_devices": 1, "data.modalities": "text,audio",
                    "data.synthetic_train": TINY_SIZES[0], "data.synthetic_valid": TINY_SIZES[1],
                    "data.synthetic_test": TINY_SIZES[2], "net.d_model": 8},
      "compilation_cache": str(tmp_path / "jax_cache"), "workdir": work}, tmp_path)
  summary = json.load(open(os.path.join(work, "summary.json")))
  assert summary["seeds"] == [1, 2] and len(summary["test"]["mae"]["values"]) == 2
  assert "+-" in _outputs(nb)
  _check_budget("03_reproduce_paper_setting", nb, seconds)


@pytest.mark.slow
def test_export_and_benchmark(tmp_path):
  work = str(tmp_path / "export")
  nb, seconds = run_notebook("04_export_and_benchmark.ipynb", {
      "epochs": 1, "synthetic_sizes": TINY_SIZES, "net": TINY_NET, "modalities": "text,audio",
      "latency_iters": 5, "throughput_batch": 64, "throughput_iters": 2,
      "compilation_cache": str(tmp_path / "jax_cache"), "workdir": work},
      tmp_path)
  for name in ("params.msgpack", "inference.jax.bin", "metadata.json", "orbax"):
    assert os.path.exists(os.path.join(work, "exported", name))
  bench = json.load(open(os.path.join(work, "bench.json")))
  assert bench["max_abs_diff"] < 1e-3
  assert bench["latency_ms_median"] > 0 and bench["throughput_samples_per_s"] > 0
  _check_budget("04_export_and_benchmark", nb, seconds)


@pytest.mark.slow
def test_multi_device(tmp_path):
  work = str(tmp_path / "multi")
  nb, seconds = run_notebook("05_multi_device.ipynb", {
      "simulated_cpu_devices": 8, "num_devices": 0, "per_device_batch": 4, "epochs": 1,
      "synthetic_sizes": (64, 32, 32), "net": TINY_NET, "modalities": "text,audio",
      "workdir": work}, tmp_path)
  results = json.load(open(os.path.join(work, "results.json")))
  assert results["num_devices"] == 8 and results["config"]["batch_size"] == 32
  assert "8 devices x 4 rows = global batch 32" in _outputs(nb)
  _check_budget("05_multi_device", nb, seconds)
