"""Plots of a training workdir (matplotlib, PNG files written into the workdir).

    python -m mmfuse_jax.evaluate --workdir=DIR --plots

- learning_curves.png: train and validation loss / selection metric per epoch (RERD Fig. 3)
- embedding_tsne.png: t-SNE of the fused representation aux['fused'], coloured by label
  (RERD Fig. 4, ARGF Fig. 5)
- attention_<direction>.png: crossmodal attention maps of one sample, last layer (MICA Fig. 4)
- matrix plots for any (B, T, T') array a model puts in aux under a name ending in
  '_distance' or '_weights' (RERD's Sinkhorn distance matrices, ARGF's vertex weights)
"""

from __future__ import annotations

import json
import os

import numpy as np

from mmfuse_jax.losses.alignment import stack_layers
from mmfuse_jax.training.evaluation import predict_split


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot_learning_curves(workdir: str, metric: str | None = None) -> str:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  if not rows:
    raise ValueError(f"{workdir}/metrics.jsonl has no epochs yet")
  plt = _plt()
  epochs = [r["epoch"] for r in rows]
  metric = metric or next((k for k in ("mae", "acc", "mean_acc") if k in rows[0]["valid"]), "loss")
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  axes[0].plot(epochs, [r["train"]["loss"] for r in rows], label="train loss")
  axes[0].plot(epochs, [r["valid"]["loss"] for r in rows], label="validation loss")
  axes[0].set_xlabel("epoch"); axes[0].legend(); axes[0].set_title("loss")
  axes[1].plot(epochs, [r["valid"][metric] for r in rows], color="C1")
  selected = [r["epoch"] for r in rows if r.get("selected")]
  if selected:
    axes[1].axvline(selected[-1], color="gray", linestyle="--", label="selected epoch")
    axes[1].legend()
  axes[1].set_xlabel("epoch"); axes[1].set_title(f"validation {metric}")
  fig.tight_layout()
  path = os.path.join(workdir, "learning_curves.png")
  fig.savefig(path, dpi=100); plt.close(fig)
  return path


def plot_embedding_tsne(workdir: str, embeddings: np.ndarray, labels: np.ndarray,
                        name: str = "embedding_tsne.png", seed: int = 0) -> str:
  from sklearn.manifold import TSNE
  plt = _plt()
  emb = np.asarray(embeddings).reshape(len(embeddings), -1)
  perplexity = float(min(30, max(2, (len(emb) - 1) // 3)))
  xy = TSNE(n_components=2, perplexity=perplexity, random_state=seed,
            init="pca").fit_transform(emb)
  labels = np.asarray(labels)
  colour = labels if labels.ndim == 1 else labels.argmax(-1)
  fig, ax = plt.subplots(figsize=(5, 5))
  sc = ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap="coolwarm", s=8)
  fig.colorbar(sc, ax=ax, label="label")
  ax.set_title("t-SNE of the fused representation"); ax.set_xticks([]); ax.set_yticks([])
  path = os.path.join(workdir, name)
  fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)
  return path


def plot_matrix(workdir: str, matrix: np.ndarray, name: str, title: str,
                xlabel: str = "", ylabel: str = "") -> str:
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 4))
  im = ax.imshow(np.asarray(matrix), aspect="auto", cmap="viridis")
  fig.colorbar(im, ax=ax)
  ax.set_title(title); ax.set_xlabel(xlabel); ax.set_ylabel(ylabel)
  path = os.path.join(workdir, name)
  fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)
  return path


def plot_bars(workdir: str, values: dict[str, float], name: str, title: str,
              ylabel: str = "") -> str:
  plt = _plt()
  fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(values) + 2), 4))
  ax.bar(list(values), list(values.values()), color="C0")
  ax.set_title(title); ax.set_ylabel(ylabel)
  plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
  path = os.path.join(workdir, name)
  fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)
  return path


def plot_workdir(workdir: str, exp, state, split_name: str = "test", sample: int = 0
                 ) -> list[str]:
  """Every plot the workdir's model supports, from the selected checkpoint."""
  paths = [plot_learning_curves(workdir)]
  split = exp.dataset.splits[split_name]
  _, _, auxes = predict_split(exp, state, split, with_aux=True)
  fused = [a["fused"] for a in auxes if "fused" in a]
  if fused:
    paths.append(plot_embedding_tsne(workdir, np.concatenate(fused), split.labels))
  first = auxes[0]
  for direction, layers in first.get("crossmodal", {}).items():
    last_probs = np.asarray(stack_layers(layers)["probs"])[-1]  # MulT's list or MICA's stack
    probs = last_probs[sample].mean(0)  # mean over heads
    src, tgt = direction.split("->")
    paths.append(plot_matrix(workdir, probs, f"attention_{src}_to_{tgt}.png",
                             f"{direction} attention (last layer, sample {sample})",
                             xlabel=f"{src} step", ylabel=f"{tgt} step"))
  for key, value in first.items():
    if isinstance(value, dict):
      items = value.items()
    else:
      items = [(key, value)]
    for name, arr in items:
      if not (name.endswith("_distance") or name.endswith("_weights") or
              key.endswith("_distance") or key.endswith("_weights")):
        continue
      arr = np.asarray(arr)
      if arr.ndim == 3:
        paths.append(plot_matrix(workdir, arr[sample], f"{key}_{name}.png".replace("/", "_"),
                                 f"{key} {name} (sample {sample})"))
      elif arr.ndim == 2:
        paths.append(plot_matrix(workdir, arr[: min(len(arr), 50)], f"{key}.png",
                                 f"{key} (first samples)", xlabel="vertex", ylabel="sample"))
  return paths
