"""Writes the notebooks in colab/ from the cell sources below.

Edit the cells here and run `python colab/make_notebooks.py`: the .ipynb files are written
without outputs, so their diffs stay readable. tests/test_notebooks.py checks that the
committed notebooks match this script and executes each one on tiny settings.
"""

from __future__ import annotations

import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

INSTALL = '''\
# Install: runs only on Colab (elsewhere: `pip install ".[plots]"` in a checkout, see
# docs/installation.md). MMFUSE_SOURCE says where the library comes from:
#   - a wheel: on your machine, in a checkout, run `pip wheel . -w dist --no-deps` and copy
#     dist/mmfuse_jax-*.whl to Drive, into the folder named here (the newest wheel there is
#     installed); copy the checkout's configs/ folder next to it for the paper settings;
#   - a git URL of the repository, e.g. "https://github.com/OWNER/mmfuse_jax" (cloned to
#     /content/mmfuse_jax, configs/ included);
#   - a folder holding a checkout (e.g. on Drive).
# KEEP_COLAB_JAX: keep Colab's preinstalled jax/jaxlib (built for its GPU/TPU); False lets
#   pip choose (then on a GPU runtime: pip install -U "jax[cuda12]", restart the runtime).
# DRIVE_WORKDIR: the notebook works in this Drive folder, so runs/ (checkpoints, metrics)
#   survive a disconnect and a rerun resumes; "" keeps them on the VM (lost on disconnect).
import os, subprocess, sys
MMFUSE_SOURCE = os.environ.get("MMFUSE_SOURCE", "/content/drive/MyDrive/mmfuse_jax")
KEEP_COLAB_JAX = True
DRIVE_WORKDIR = "/content/drive/MyDrive/mmfuse_runs"
if "google.colab" in sys.modules:
    import glob, importlib.metadata
    if "/content/drive" in MMFUSE_SOURCE + DRIVE_WORKDIR:
        from google.colab import drive
        drive.mount("/content/drive")
    source, repo = MMFUSE_SOURCE, ""
    if source.startswith(("https://", "git@", "git+")):
        repo = "/content/mmfuse_jax"
        if not os.path.isdir(repo):
            subprocess.run(["git", "clone", "--depth=1", source.removeprefix("git+"), repo],
                           check=True)
        source = repo
    elif os.path.isdir(source) and not os.path.exists(os.path.join(source, "pyproject.toml")):
        wheels = sorted(glob.glob(os.path.join(source, "mmfuse_jax-*.whl")),
                        key=os.path.getmtime)
        if not wheels:
            raise FileNotFoundError(f"no mmfuse_jax-*.whl in {source}: build one with "
                                    f"`pip wheel . -w dist --no-deps` and copy it there, or set "
                                    f"MMFUSE_SOURCE to a git URL")
        repo, source = source, wheels[-1]
    elif os.path.isdir(source):
        repo = source
    elif not os.path.isfile(source):
        raise FileNotFoundError(f"MMFUSE_SOURCE {source!r} not found (see the comments above)")
    if repo and os.path.isdir(os.path.join(repo, "configs")):
        os.environ["MMFUSE_REPO"] = os.path.abspath(repo)  # configs/ for the paper settings
    pins = []
    if KEEP_COLAB_JAX:  # a constraints file holding jax and jaxlib at the installed versions
        with open("/tmp/keep_colab_jax.txt", "w") as f:
            for name in ("jax", "jaxlib"):
                try:
                    f.write(f"{name}=={importlib.metadata.version(name)}\\n")
                except importlib.metadata.PackageNotFoundError:
                    pass
        pins = ["-c", "/tmp/keep_colab_jax.txt"]
    target = f"mmfuse_jax[plots] @ file://{os.path.abspath(source)}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", target] + pins, check=True)
    if DRIVE_WORKDIR:
        os.makedirs(DRIVE_WORKDIR, exist_ok=True)
        os.chdir(DRIVE_WORKDIR)
        print("working in", DRIVE_WORKDIR)'''


CACHE = '''
import jax
if compilation_cache:  # JAX's persistent compilation cache: reruns load compiled steps from disk
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(compilation_cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)'''


def md(text: str):
  return new_markdown_cell(text.strip())


def code(text: str, tags: tuple[str, ...] = ()):
  cell = new_code_cell(text.strip())
  if tags:
    cell.metadata["tags"] = list(tags)
  return cell


def params(text: str):
  return code(text, tags=("parameters",))


# ----------------------------------------------------------------------------- 01 quickstart

QUICKSTART = [
    md('''
# mmfuse_jax quickstart: train, evaluate, plot

This notebook trains MulT (the Multimodal Transformer) on the built-in synthetic dataset,
prints its metrics, re-evaluates the selected checkpoint and shows the library's plots.
No data files are needed. The synthetic data mimics CMU-MOSI: three unaligned modalities
(text, audio, vision) of different lengths, with padding, and a sentiment score in [-3, 3]
that depends on all three and on a text x audio interaction.

With the default parameters it takes a few minutes on a CPU and well under a minute on a GPU.
'''),
    code(INSTALL),
    md('''
## Parameters

Every knob of this notebook is in the next cell (CI runs it with tiny values).
'''),
    params('''
model = "mult"                        # a registered model: mult, rerd, mica, argf, ...
epochs = 12
seed = 0
modalities = "text,audio,vision"
synthetic_sizes = (1200, 300, 300)    # train, valid, test samples of the synthetic data
net = {}                              # model hyper-parameters, e.g. {"num_layers": 2}
num_devices = 0                       # 0: all local devices
compilation_cache = "runs/jax_cache"  # reuse compiled steps when re-evaluating; "": off
workdir = "runs/quickstart"
'''),
    md('''
## 1. Configuration

`get_config(model)` returns the defaults: the library's, then the model's own (`net.*`).
Fields are the same as the CLI flags (`--epochs`, `--net.num_layers`, ...);
`apply_overrides` rejects unknown names, as the CLI does. The compilation cache lets step 5
load the compiled evaluation step instead of compiling it again.
'''),
    code('''
import os
from mmfuse_jax import config as config_lib
''' + CACHE + '''

config = config_lib.get_config(model)
config.epochs, config.seed, config.num_devices = epochs, seed, num_devices
config.data.modalities = modalities
config.data.synthetic_train, config.data.synthetic_valid, config.data.synthetic_test = synthetic_sizes
config_lib.apply_overrides(config, {f"net.{k}": str(v) for k, v in net.items()})
config_lib.validate_config(config)
print(f"model {config.model} on {config.dataset}: {config.epochs} epochs, batch {config.batch_size}")
print("net:", dict(config.net))
'''),
    md('''
## 2. Data

`load_dataset` reads (here: generates), checks and standardises the data with statistics
fitted on the train split only. Each split holds `features[m]` of shape (N, T_m, D_m) and
boolean `masks[m]` of shape (N, T_m) marking the valid steps.
'''),
    code('''
from mmfuse_jax.data import load_dataset

dataset, stats = load_dataset(config)
for name, split in dataset.splits.items():
    shapes = {m: x.shape for m, x in split.features.items()}
    print(f"{name:5s} N={len(split):5d}  {shapes}")
'''),
    md('''
## 3. Train

`train_and_evaluate` compiles one training step, trains for `epochs`, evaluates the
validation split after every epoch and keeps the best checkpoint by validation MAE.
The test split is evaluated once, for that checkpoint. Everything lands in `workdir`:
`config.json`, `metrics.jsonl`, checkpoints, TensorBoard logs and `results.json`.
Running the cell again with the same workdir resumes (or, when finished, returns the saved
results).
'''),
    code('''
from mmfuse_jax.training.loop import train_and_evaluate

results = train_and_evaluate(config, workdir, dataset=dataset, data_stats=stats)
print(f"selected epoch {results['selected_epoch']} of {results['epochs_run']}, "
      f"compile {results['compile_s']:.1f}s, wall {results['wall_time_s']:.1f}s")
'''),
    md('''
## 4. Metrics

Regression metrics (docs/metrics.md): binary accuracy and F1 with and without the neutral
class (`acc2_non0`, `acc2_has0`), 7- and 5-class accuracy, MAE and Pearson correlation.
'''),
    code('''
print(f"{'metric':12s} {'valid':>8s} {'test':>8s}")
for k in results["test"]:
    print(f"{k:12s} {results['valid'][k]:8.4f} {results['test'][k]:8.4f}")
'''),
    md('''
## 5. Evaluate the workdir and plot

`evaluate_workdir` rebuilds the experiment from `config.json`, restores the
validation-selected checkpoint and evaluates it again (the numbers match `results.json`).
`plots=True` writes PNGs into the workdir. The same from a shell:
`python -m mmfuse_jax.evaluate --workdir=runs/quickstart --plots`.
'''),
    code('''
from mmfuse_jax.evaluate import evaluate_workdir

out = evaluate_workdir(workdir, plots=True)
print("test MAE again:", round(out["test"]["mae"], 4), "(results.json:", round(results["test"]["mae"], 4), ")")
for path in out["plots"]:
    print(os.path.basename(path))
'''),
    md('''
**Learning curves**: train and validation loss per epoch (left) and the validation
selection metric with the selected epoch (right).
'''),
    code('''
from IPython.display import Image, display
display(Image(filename=os.path.join(workdir, "learning_curves.png")))
'''),
    md('''
**t-SNE of the fused representation** on the test split, coloured by the label. A model
that learned the task orders the points by sentiment.
'''),
    code('''
display(Image(filename=os.path.join(workdir, "embedding_tsne.png")))
'''),
    md('''
## Next

- `02_bring_your_own_data.ipynb`: train on the MulT / MMSA pickles or the utterance npz.
- `03_reproduce_paper_setting.ipynb`: a paper setting from `configs/` over several seeds.
- `04_export_and_benchmark.ipynb`: export the model and time inference.
- `05_multi_device.ipynb`: data-parallel training on several devices.
'''),
]


# ----------------------------------------------------------------------------- 02 data

BYOD = [
    md('''
# Bring your own data

The library reads three file formats of multimodal sentiment data (docs/data.md):

| format | file | `dataset` |
|---|---|---|
| MulT pickle (Tsai et al. 2019) | `mosi_data_noalign.pkl`, `mosei_senti_data_noalign.pkl`, `iemocap_data_noalign.pkl` | `mosi`, `mosei`, `iemocap` |
| MMSA pickle (thuiar/MMSA) | `unaligned_50.pkl`, `aligned_50.pkl`, `unaligned_39.pkl` | `mosi_mmsa`, `mosei_mmsa`, `sims` |
| utterance-level MOSI npz | `mosi_utterance_real.npz` | `mosi_utterance` |

This notebook writes a small fake file in each format (so you see the exact layout), loads
it through the same `load_dataset(config)` the training CLI uses, shows the checks and their
error messages on broken files, and loads your real data when you point to it.

**Pickle safety.** Unpickling runs code chosen by whoever wrote the file. Only load pickles
you made or got from a source you trust (the MulT and MMSA releases). The library opens only
the file you name with `data_dir` / `data.file`; the npz reader uses `allow_pickle=False`.
'''),
    code(INSTALL),
    params('''
workdir = "runs/byod"            # the fake files and the short run go here
n_per_split = (24, 8, 8)         # train, valid, test samples of the fake files
train_epochs = 1                 # a short run on the fake MulT file; 0: only load the files
train_modalities = "text,audio,vision"
net = {"d_model": 16, "num_heads": 2, "num_layers": 1}
real_data_dir = ""               # folder of the utterance-level npz; empty: $MMFUSE_MOSI_DIR
'''),
    md('''
## Helpers

`load(dataset, data_dir)` builds the config exactly as
`python -m mmfuse_jax.train --dataset=... --data_dir=...` does, and loads the data.
`describe` prints what the reader produced.
'''),
    code('''
import json, os, pickle
import numpy as np
from mmfuse_jax import config as config_lib
from mmfuse_jax.data import load_dataset
from mmfuse_jax.errors import DataError

rng = np.random.default_rng(0)
data_root = os.path.abspath(os.path.join(workdir, "data"))
SPLITS = ("train", "valid", "test")
summary = {}  # what this notebook found, saved as byod_summary.json at the end

def load(dataset, data_dir, **data):
    config = config_lib.get_config("mult", dataset)
    config.data_dir = data_dir
    for key, value in data.items():
        config.data[key] = value
    return load_dataset(config)

def describe(ds):
    print(f"{ds.name}: task {ds.task}, source {ds.source}")
    for name, s in ds.splits.items():
        shapes = {m: x.shape for m, x in s.features.items()}
        steps = {m: round(float(k.sum(1).mean()), 1) for m, k in s.masks.items()}
        print(f"  {name:5s} N={len(s):4d} {shapes} mean valid steps {steps}")
    return {name: len(s) for name, s in ds.splits.items()}
'''),
    md('''
## 1. MulT pickle

A dict `{'train', 'valid', 'test'}`; each split a dict of `text` (N, T_t, 300),
`audio` (N, T_a, 5 or 74), `vision` (N, T_v, 20 or 35), `labels` (N, 1, 1) and an
optional `id` (N, 3) `[video, start, end]`. The files carry no lengths: padding is exact
zeros **at the front**, and the reader marks a step valid when any feature is nonzero.
'''),
    code('''
def front_padded(n, t, d):
    x = np.zeros((n, t, d), np.float32)
    for i, k in enumerate(rng.integers(1, t + 1, size=n)):
        x[i, t - k:] = rng.normal(size=(k, d))
    return x

def mult_split(n):
    return {"text": front_padded(n, 10, 300), "audio": front_padded(n, 20, 5),
            "vision": front_padded(n, 15, 20),
            "labels": rng.uniform(-3, 3, size=(n, 1, 1)).astype(np.float32),
            "id": np.array([[f"video{i // 4}", f"{i}.0", f"{i + 1}.0"] for i in range(n)])}

mult_dir = os.path.join(data_root, "MulT")
os.makedirs(mult_dir, exist_ok=True)
mult = {s: mult_split(n) for s, n in zip(SPLITS, n_per_split)}
with open(os.path.join(mult_dir, "mosi_data_noalign.pkl"), "wb") as f:
    pickle.dump(mult, f)

mosi, mosi_stats = load("mosi", mult_dir)
summary["mosi"] = describe(mosi)
'''),
    md('''
## 2. MMSA pickle

Same split dict, different keys: `text` (N, T_t, 768) BERT features with `text_bert`
(N, 3, T_t) token ids / input mask / segment ids, `audio` and `vision` padded **at the
back** with `audio_lengths` / `vision_lengths`, `regression_labels`, and ids
`'video$_$clip'`. MMSA keeps its files under `MOSI/Processed/`; the reader looks there.
'''),
    code('''
def back_padded(n, t, d):
    lengths = rng.integers(1, t + 1, size=n)
    x = rng.normal(size=(n, t, d)).astype(np.float32)
    x[np.arange(t)[None, :] >= lengths[:, None]] = 0.0
    return x, lengths

def mmsa_split(n):
    text, text_len = back_padded(n, 12, 768)
    text_bert = np.zeros((n, 3, 12), np.int64)
    text_bert[:, 1] = np.arange(12)[None, :] < text_len[:, None]          # input mask
    text_bert[:, 0] = text_bert[:, 1] * rng.integers(1000, 2000, size=(n, 12))  # token ids
    audio, audio_len = back_padded(n, 30, 5)
    vision, vision_len = back_padded(n, 25, 20)
    y = rng.uniform(-3, 3, size=n).astype(np.float32)
    return {"text": text, "text_bert": text_bert, "audio": audio, "vision": vision,
            "audio_lengths": audio_len, "vision_lengths": vision_len,
            "regression_labels": y, "classification_labels": (y >= 0).astype(np.int64),
            "id": np.array([f"video{i // 4}$_${i % 4}" for i in range(n)]),
            "raw_text": np.array(["a sentence"] * n)}

mmsa_dir = os.path.join(data_root, "MMSA")
os.makedirs(os.path.join(mmsa_dir, "MOSI", "Processed"), exist_ok=True)
with open(os.path.join(mmsa_dir, "MOSI", "Processed", "unaligned_50.pkl"), "wb") as f:
    pickle.dump({s: mmsa_split(n) for s, n in zip(SPLITS, n_per_split)}, f)

mosi_mmsa, _ = load("mosi_mmsa", mmsa_dir)
summary["mosi_mmsa"] = describe(mosi_mmsa)
print("mask rule per modality:", mosi_mmsa.info["mask_rule"])
print("extras:", sorted(mosi_mmsa.splits["train"].extras))
'''),
    md('''
## 3. Utterance-level npz

One row per utterance, no pickles: `label` (N,), per-modality vectors `text_cnn` (N, 100),
`audio_opensmile` (N, 73), `video_3dcnn` (N, 100), and the ids and split columns. Each
modality becomes a sequence of length 1. The default split (`poria`) carves validation out
of train **by video**, so no video is in two splits.
'''),
    code('''
n_videos, per_video = 10, 6
n = n_videos * per_video
video = np.repeat([f"vid{v:02d}" for v in range(n_videos)], per_video)
index = np.tile(np.arange(per_video), n_videos)
label = rng.uniform(-3, 3, size=n).astype(np.float32)
utterance = {
    "segment_id": np.array([f"{v}_{i}" for v, i in zip(video, index)]),
    "video_id": video, "segment_index": index, "label": label,
    "label_binary_poria": (label >= 0).astype(np.int8),
    "split_standard": np.array(["train", "valid", "test"])[np.arange(n) % 3],
    "split_poria": np.where(np.arange(n) < 7 * per_video, "train", "test"),
    "text_cnn": rng.normal(size=(n, 100)).astype(np.float32),
    "audio_opensmile": rng.normal(size=(n, 73)).astype(np.float32),
    "video_3dcnn": rng.normal(size=(n, 100)).astype(np.float32),
}
utt_dir = os.path.join(data_root, "utterance")
os.makedirs(utt_dir, exist_ok=True)
np.savez(os.path.join(utt_dir, "mosi_utterance_real.npz"), **utterance)

utt, _ = load("mosi_utterance", utt_dir)
summary["mosi_utterance"] = describe(utt)
print("validation videos:", utt.info["valid_videos"])
'''),
    md('''
## 4. Checking your files

`load_dataset` checks every split before anything trains: the keys, shapes (N, T, D), the
same D in every split, sample counts, empty splits and NaN/inf values. Each problem is one
`DataError` naming the file, split, key and the expected shape; the CLI prints it as one
`error:` line and exits with status 2, before it writes a workdir.

To look inside a pickle before training (only one you trust), print its layout and compare
it with the tables in docs/data.md:
'''),
    code('''
def inspect_pickle(path):
    with open(path, "rb") as f:
        data = pickle.load(f)  # runs code from the file: trusted files only
    for split, d in data.items():
        print(split, {k: (np.shape(v), np.asarray(v).dtype.str) for k, v in d.items()})

inspect_pickle(os.path.join(mult_dir, "mosi_data_noalign.pkl"))
'''),
    md('''
Now three broken files and the errors they give: a feature dimension that differs between
splits, NaN values, and a truncated file.
'''),
    code('''
def broken_copy(name, change):
    data = {s: dict(d) for s, d in mult.items()}
    change(data)
    folder = os.path.join(data_root, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "mosi_data_noalign.pkl"), "wb") as f:
        pickle.dump(data, f)
    return folder

def expect_error(folder, **data):
    try:
        load("mosi", folder, **data)
    except DataError as e:
        print("DataError:", e, "\\n")
        return str(e)
    raise AssertionError("this file should not load")

def wrong_dim(d):
    d["valid"]["audio"] = front_padded(n_per_split[1], 20, 7)

def with_nan(d):
    x = d["train"]["vision"].copy()
    x[0, -1, :3] = np.nan
    d["train"]["vision"] = x

errors = {"wrong_dim": expect_error(broken_copy("wrong_dim", wrong_dim)),
          "nan": expect_error(broken_copy("nan", with_nan))}
truncated = os.path.join(data_root, "truncated")
os.makedirs(truncated, exist_ok=True)
with open(os.path.join(mult_dir, "mosi_data_noalign.pkl"), "rb") as f:
    head = f.read(1000)
with open(os.path.join(truncated, "mosi_data_noalign.pkl"), "wb") as f:
    f.write(head)
errors["truncated"] = expect_error(truncated)
summary["errors"] = errors
'''),
    md('''
The public MOSI/MOSEI pickles really contain `-inf` audio values. `data.nan_policy="zero"`
(`--data.nan_policy=zero`) replaces them with 0 and reports the count:
'''),
    code('''
_, nan_stats = load("mosi", os.path.join(data_root, "nan"), nan_policy="zero")
print("replaced:", nan_stats["nan_replaced"])
summary["nan_replaced"] = nan_stats["nan_replaced"]
'''),
    md('''
## 5. Your real data

Point `real_data_dir` (or the environment variable `MMFUSE_MOSI_DIR`) at a folder holding
`mosi_utterance_real.npz`. For the pickles use the same `load(...)` with their dataset name,
e.g. `load("mosi", "/path/to/MulT", nan_policy="zero")`. The cell is skipped when no
folder is found.
'''),
    code('''
real_dir = real_data_dir or os.environ.get("MMFUSE_MOSI_DIR", "")
if os.path.exists(os.path.join(real_dir, "mosi_utterance_real.npz")):
    real, _ = load("mosi_utterance", real_dir)
    summary["real"] = describe(real)
else:
    print(f"no mosi_utterance_real.npz in {real_dir!r}: skipped")
'''),
    md('''
## 6. Train on the file

`train_and_evaluate(config, workdir)` reads the file named by the config, exactly as
`python -m mmfuse_jax.train --model=mult --dataset=mosi --data_dir=FOLDER` does
(pass `dataset=` to reuse data you already loaded).
'''),
    code('''
from mmfuse_jax.training.loop import train_and_evaluate

if train_epochs:
    config = config_lib.get_config("mult", "mosi")
    config.data_dir, config.epochs, config.batch_size = mult_dir, train_epochs, 8
    config.data.modalities = train_modalities
    config_lib.apply_overrides(config, {f"net.{k}": str(v) for k, v in net.items()})
    results = train_and_evaluate(config, os.path.join(workdir, "run_mosi"))
    print("test:", {k: round(v, 3) for k, v in results["test"].items()})
    summary["trained_test_mae"] = results["test"]["mae"]

with open(os.path.join(workdir, "byod_summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
'''),
]


# ----------------------------------------------------------------------------- 03 reproduce

REPRODUCE = [
    md('''
# Reproduce a paper setting over several seeds

`configs/<method>.py:<setting>` in the repository holds the paper settings (e.g.
`configs/mult.py:mosi`: MulT on unaligned CMU-MOSI with the public code's hyper-parameters)
and a `tiny` setting per method. This notebook loads one, trains it once per seed and reports
mean +- std of the validation-selected checkpoints, which is what `docs/results.md` reports.
CLI equivalent: `python -m mmfuse_jax.train --config=configs/mult.py:mosi --data_dir=DIR --seeds=1,2,3`.

Paper settings read real files (see `02_bring_your_own_data.ipynb`). Without them this
notebook keeps the setting's model and hyper-parameters but trains on the synthetic
dataset, so the cells still run; such numbers are not comparable with the paper.
'''),
    code(INSTALL),
    params('''
config_file = "configs/mult.py:mosi"  # relative to the repository root
seeds = [1, 2, 3]
epochs = 0                            # 0: the setting's own number of epochs
data_dir = ""                         # the setting's data folder; empty: $MMFUSE_DATA_DIR
overrides = {}                        # any config field, e.g. {"net.num_layers": "3"}
compilation_cache = "runs/jax_cache"  # seeds after the first reuse compiled steps; "": off
workdir = "runs/reproduce"
'''),
    md('''
## 1. Find configs/

`configs/` is part of the repository, not of the installed package. The notebook looks in
`$MMFUSE_REPO` (on Colab the install cell sets it to the clone, the checkout, or the Drive
folder holding the wheel and a copy of `configs/`), the parent folder (notebooks run from
`colab/`), the current folder, and `/content/mmfuse_jax`.
'''),
    code('''
import os
from mmfuse_jax import config as config_lib

def find_repo():
    for cand in (os.environ.get("MMFUSE_REPO", ""), "..", ".", "/content/mmfuse_jax"):
        if cand and os.path.isdir(os.path.join(cand, "configs")):
            return os.path.abspath(cand)
    raise FileNotFoundError("configs/ not found: run the install cell (Colab), start Jupyter "
                            "inside the repository, or set MMFUSE_REPO to a checkout")

repo = find_repo()
path = os.path.join(repo, config_file)              # FILE:SETTING
file_path, setting = config_lib.split_config_arg(path)
print(path)
print(open(file_path).read().split('"""')[1].strip())  # the file's settings
'''),
    md('''
## 2. Load the setting

`load_config_file` runs the file's `get_config(setting)`. The next cell then applies the
parameters: epochs, data folder, extra overrides.
'''),
    code('''
config = config_lib.load_config_file(path)
if epochs:
    config.epochs = epochs
config_lib.apply_overrides(config, {k: str(v) for k, v in overrides.items()})
if config.dataset != "synthetic":
    config.data_dir = data_dir or os.environ.get("MMFUSE_DATA_DIR", "")
    if not config.data_dir:
        print(f"no data folder for {config.dataset!r}: training on the synthetic data instead "
              f"(set data_dir or MMFUSE_DATA_DIR for the real setting)")
        config.dataset = "synthetic"
config_lib.validate_config(config)
print(f"{config.model} on {config.dataset}: {config.epochs} epochs, batch {config.batch_size}, "
      f"lr {config.optim.lr}, schedule {config.optim.schedule}")
'''),
    md('''
## 3. Train one run per seed

`train_seeds` writes one sub-workdir per seed (`seed_<s>/`, each a normal resumable run)
and `summary.json`. The data is loaded once and shared by the seeds. Each seed builds and
compiles its training step again; JAX's persistent compilation cache lets the seeds after
the first load the compiled step from disk instead (often most of a short run's time).
'''),
    code('''
from mmfuse_jax.data import load_dataset
from mmfuse_jax.training.loop import train_seeds
''' + CACHE + '''

dataset, stats = load_dataset(config)
summary = train_seeds(config, workdir, list(seeds), dataset=dataset, data_stats=stats)
'''),
    md('''
## 4. Mean +- std

Each seed's checkpoint is chosen on the validation split; the test split is evaluated once
for it. The table reports the test metrics as mean +- std over the seeds (population std,
`numpy.std`), and the per-seed values.
'''),
    code('''
import json

print(f"{config.model} on {config.dataset}, seeds {summary['seeds']}")
print(f"{'metric':12s} {'test mean +- std':>20s}   per seed")
for k, v in summary["test"].items():
    values = " ".join(f"{x:.4f}" for x in v["values"])
    print(f"{k:12s} {v['mean']:10.4f} +- {v['std']:.4f}   {values}")
for s in summary["seeds"]:
    with open(os.path.join(workdir, f"seed_{s}", "results.json")) as f:
        r = json.load(f)
    print(f"seed {s}: selected epoch {r['selected_epoch']} of {r['epochs_run']}, "
          f"compile {r['compile_s']:.1f}s, wall {r['wall_time_s']:.1f}s")
'''),
]


# ----------------------------------------------------------------------------- 04 export

EXPORT = [
    md('''
# Export a model and benchmark inference

`mmfuse_jax.export` writes the validation-selected model of a workdir as portable
parameters (msgpack and Orbax) plus a serialized inference function (`jax.export`,
StableHLO) with the train-fitted standardisation inside and a symbolic batch size.
`mmfuse_jax.inference.load_exported` runs it with only JAX and numpy: no model code.

This notebook trains a small model, exports it, checks that the exported function gives the
same predictions as the in-process model, and times batch-1 latency and large-batch
throughput.
'''),
    code(INSTALL),
    params('''
model = "mult"
epochs = 4
synthetic_sizes = (600, 150, 150)     # train, valid, test samples of the synthetic data
net = {"d_model": 32, "num_layers": 2}
modalities = "text,audio,vision"
num_devices = 1                       # the in-process comparison runs on one device
latency_iters = 100                   # batch-1 calls timed
throughput_batch = 512
throughput_iters = 10
compilation_cache = "runs/jax_cache"  # reuse compiled steps in the in-process check; "": off
workdir = "runs/export"
'''),
    md('''
## 1. Train (or reuse) a run
'''),
    code('''
import os
from mmfuse_jax import config as config_lib
from mmfuse_jax.training.loop import train_and_evaluate
''' + CACHE + '''

config = config_lib.get_config(model)
config.epochs, config.num_devices = epochs, num_devices
config.data.modalities = modalities
config.data.synthetic_train, config.data.synthetic_valid, config.data.synthetic_test = synthetic_sizes
config_lib.apply_overrides(config, {f"net.{k}": str(v) for k, v in net.items()})
run_dir = os.path.join(workdir, "run")
results = train_and_evaluate(config, run_dir)
print("test MAE", round(results["test"]["mae"], 4))
'''),
    md('''
## 2. Export

The same as `python -m mmfuse_jax.export --workdir=runs/export/run --out=runs/export/exported`.
By default the function is exported for the current platform; pass
`platforms=("cpu", "cuda")` to run one file on both.
'''),
    code('''
from mmfuse_jax.export import export_workdir

out = os.path.join(workdir, "exported")
meta = export_workdir(run_dir, out)
for name in sorted(os.listdir(out)):
    p = os.path.join(out, name)
    size = os.path.getsize(p) if os.path.isfile(p) else sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(p) for f in fs)
    print(f"{name:20s} {size / 1024:8.1f} KiB")
print({k: meta[k] for k in ("model", "selected_epoch", "modalities", "feature_dims",
                            "max_lengths", "task", "platforms")})
'''),
    md('''
## 3. Load it and compare with the in-process model

`load_exported` returns `predict(features, masks)` on **raw** features (B, T_m, D_m) and
boolean masks (B, T_m); T_m are the lengths in `metadata.json` (pad shorter sequences and
mark the padding False). The in-process side restores the same checkpoint and predicts on
the standardised test split.
'''),
    code('''
import numpy as np
from mmfuse_jax.data import load_dataset
from mmfuse_jax.inference import load_exported
from mmfuse_jax.training.evaluation import predict_split
from mmfuse_jax.training.experiment import build_experiment, restore_selected

predict = load_exported(out)
raw, _ = load_dataset(config, standardize_features=False)
test = raw.splits["test"]
exported_pred = predict(test.features, test.masks)

exp = build_experiment(config)
state, _ = restore_selected(run_dir, exp)
inprocess_pred, _ = predict_split(exp, state, exp.dataset.splits["test"])
max_diff = float(np.max(np.abs(exported_pred - inprocess_pred)))
print(f"{len(test)} test samples, max |exported - in-process| = {max_diff:.2e}")
np.testing.assert_allclose(exported_pred, inprocess_pred, rtol=1e-4, atol=1e-5)
'''),
    md('''
## 4. Latency and throughput

A plain timing loop: a few warm-up calls (the first call compiles for the batch shape),
then `latency_iters` batch-1 calls and `throughput_iters` calls on `throughput_batch` rows.
`predict` returns numpy arrays, so each call includes the device-to-host copy.
'''),
    code('''
import json, time

def batch_of(size):
    rows = np.arange(size) % len(test)
    return ({m: x[rows] for m, x in test.features.items()},
            {m: k[rows] for m, k in test.masks.items()})

def time_calls(size, iters, warmup=3):
    feats, masks = batch_of(size)
    for _ in range(warmup):
        predict(feats, masks)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        predict(feats, masks)
        times.append(time.perf_counter() - t0)
    return np.array(times)

lat = time_calls(1, latency_iters)
thr = time_calls(throughput_batch, throughput_iters)
bench = {"device": str(jax.devices()[0]),
         "latency_ms_median": 1e3 * float(np.median(lat)),
         "latency_ms_p90": 1e3 * float(np.percentile(lat, 90)),
         "throughput_batch": throughput_batch,
         "throughput_samples_per_s": throughput_batch / float(np.median(thr)),
         "max_abs_diff": max_diff}
print(json.dumps(bench, indent=2))
with open(os.path.join(workdir, "bench.json"), "w") as f:
    json.dump(bench, f, indent=2)
'''),
    md('''
On a GPU, export with `platforms=("cuda",)` (or both) and make sure JAX sees the GPU
(`jax.devices()`); throughput grows with the batch until the device is busy.
'''),
]


# ----------------------------------------------------------------------------- 05 devices

MULTI = [
    md('''
# Multi-device training (data parallel)

The training loop shards every batch over a 1-D device mesh with axis `data`
(`jax.make_mesh`, `NamedSharding`), replicates the parameters, and runs one jit-compiled
step on all devices; gradients are averaged by the compiler. Nothing in the model changes.

On a Colab **GPU** or **TPU** runtime `jax.devices()` lists the accelerators (a TPU
runtime lists its TPU cores). On a CPU the next cells simulate devices with the XLA flag
`--xla_force_host_platform_device_count`, which CI uses too; it must be set before JAX is
imported (restart the runtime after changing it) and only affects the CPU platform, so it is
harmless on GPU/TPU runtimes. For several hosts see `docs/faq.md`.
'''),
    code(INSTALL + '''
# TPU runtime: the preinstalled jax works; otherwise `pip install "jax[tpu]"`.
# GPU runtime: `pip install "jax[cuda12]"` if jax.devices() shows only the CPU.'''),
    params('''
simulated_cpu_devices = 8     # CPU only: split the host into this many devices; 0: off
num_devices = 0               # devices in the mesh; 0: all
per_device_batch = 8          # global batch = per_device_batch * devices in the mesh
model = "mult"
epochs = 4
synthetic_sizes = (1200, 300, 300)
modalities = "text,audio,vision"
net = {}
workdir = "runs/multi_device"
'''),
    code('''
import os
flag = f"--xla_force_host_platform_device_count={simulated_cpu_devices}"
if simulated_cpu_devices and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()

import jax
print(jax.default_backend(), jax.device_count(), "devices:", jax.devices())
'''),
    md('''
## 1. The mesh

`make_data_mesh(num_devices)` is what the training loop builds from `config.num_devices`:
a mesh over the first `num_devices` devices with one axis, `data`.
'''),
    code('''
from mmfuse_jax.training.mesh import batch_sharding, make_data_mesh

mesh = make_data_mesh(num_devices)
n = mesh.devices.size
print(mesh)
'''),
    md('''
## 2. Config: devices and batch

`batch_size` is the **global** batch and must be a multiple of the devices; each device
gets `batch_size / devices` rows. Evaluation batches are rounded up the same way.
'''),
    code('''
from mmfuse_jax import config as config_lib

config = config_lib.get_config(model)
config.epochs, config.num_devices = epochs, n
config.batch_size = per_device_batch * n
config.data.modalities = modalities
config.data.synthetic_train, config.data.synthetic_valid, config.data.synthetic_test = synthetic_sizes
config_lib.apply_overrides(config, {f"net.{k}": str(v) for k, v in net.items()})
config_lib.validate_config(config)
print(f"{n} devices x {per_device_batch} rows = global batch {config.batch_size}")
'''),
    md('''
## 3. A sharded batch

`shard_batch` places a host batch on the mesh: each device holds its slice of the batch
axis.
'''),
    code('''
import numpy as np
from mmfuse_jax.data import load_dataset, make_batch, shard_batch

dataset, stats = load_dataset(config)
train = dataset.splits["train"]
batch = shard_batch(make_batch(train, np.arange(config.batch_size), config.batch_size),
                    batch_sharding(mesh))
x = batch.features["text"]
print("global", x.shape, x.sharding.spec)
for shard in x.addressable_shards[:4]:
    print(" ", shard.device, shard.data.shape)
'''),
    md('''
## 4. Train

The same `train_and_evaluate` as on one device. Metrics do not depend on the device count
(up to float summation order; `tests/test_training.py` checks 8 devices against 1).
'''),
    code('''
from mmfuse_jax.training.loop import train_and_evaluate

results = train_and_evaluate(config, workdir, dataset=dataset, data_stats=stats)
print(f"devices {results['num_devices']}, selected epoch {results['selected_epoch']}, "
      f"test MAE {results['test']['mae']:.4f}")
if results["train_steps_per_s"]:
    print(f"{results['train_steps_per_s']:.2f} steps/s = "
          f"{results['train_steps_per_s'] * config.batch_size:.0f} samples/s "
          f"(compile {results['compile_s']:.1f}s)")
'''),
    md('''
Simulated CPU devices share the same cores, so they show the mechanics, not a speed-up.
On a real multi-GPU or TPU runtime, raise `per_device_batch` until each device is busy.
'''),
]


NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_bring_your_own_data.ipynb": BYOD,
    "03_reproduce_paper_setting.ipynb": REPRODUCE,
    "04_export_and_benchmark.ipynb": EXPORT,
    "05_multi_device.ipynb": MULTI,
}


def build(cells) -> nbformat.NotebookNode:
  nb = new_notebook(cells=cells)
  nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                               "language": "python"}
  nb.metadata["language_info"] = {"name": "python"}
  nb.metadata["colab"] = {"provenance": []}
  for i, cell in enumerate(nb.cells):  # stable ids keep the files byte-identical on rebuild
    cell["id"] = f"cell-{i:02d}"
  return nb


def render(name: str) -> str:
  nb = build(NOTEBOOKS[name])
  nbformat.validate(nb)
  return nbformat.writes(nb) + "\n"


def main() -> int:
  for name in NOTEBOOKS:
    with open(os.path.join(HERE, name), "w") as f:
      f.write(render(name))
    print("wrote", os.path.join(HERE, name))
  return 0


if __name__ == "__main__":
  sys.exit(main())
