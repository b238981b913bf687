"""Evaluation metrics with the MMSA / MulT conventions (numpy, host side).

Conventions of MMSA's metricsTop.py (docs/metrics.md). Rounding for Acc-7
and Acc-5 is numpy's round-half-to-even, as in MMSA.
"""

from __future__ import annotations

import numpy as np


def _as1d(x) -> np.ndarray:
  return np.asarray(x, dtype=np.float64).reshape(-1)


def accuracy(pred_labels, true_labels) -> float:
  pred_labels = np.asarray(pred_labels); true_labels = np.asarray(true_labels)
  if true_labels.size == 0:
    return float("nan")
  return float(np.mean(pred_labels == true_labels))


def weighted_f1(pred_labels, true_labels) -> float:
  """F1 averaged over the classes present in the truth, weighted by their support
  (scikit-learn's average='weighted')."""
  pred_labels = np.asarray(pred_labels); true_labels = np.asarray(true_labels)
  if true_labels.size == 0:
    return float("nan")
  classes = np.unique(np.concatenate([true_labels, pred_labels]))
  total = 0.0
  for c in classes:
    tp = np.sum((pred_labels == c) & (true_labels == c))
    fp = np.sum((pred_labels == c) & (true_labels != c))
    fn = np.sum((pred_labels != c) & (true_labels == c))
    denom = 2 * tp + fp + fn
    f1 = 0.0 if denom == 0 else 2 * tp / denom
    total += f1 * np.sum(true_labels == c)
  return float(total / true_labels.size)


def pearson(pred, truth) -> float:
  pred = _as1d(pred); truth = _as1d(truth)
  if pred.size < 2 or np.std(pred) == 0 or np.std(truth) == 0:
    return 0.0
  return float(np.corrcoef(pred, truth)[0, 1])


def mosi_metrics(pred, truth) -> dict[str, float]:
  """MOSI / MOSEI regression metrics (MMSA metricsTop conventions).

  acc2_has0 / f1_has0: negative (< 0) vs non-negative (>= 0) over all samples.
  acc2_non0 / f1_non0: samples with truth == 0 dropped, then > 0 vs < 0 (<= 0 for pred).
  acc7: clip to [-3, 3], round half to even, exact match; acc5: clip to [-2, 2].
  mae unclipped; corr Pearson.
  """
  pred = _as1d(pred); truth = _as1d(truth)
  out = {}
  nz = truth != 0
  out["acc2_non0"] = accuracy(pred[nz] > 0, truth[nz] > 0)
  out["f1_non0"] = weighted_f1(pred[nz] > 0, truth[nz] > 0)
  out["acc2_has0"] = accuracy(pred >= 0, truth >= 0)
  out["f1_has0"] = weighted_f1(pred >= 0, truth >= 0)
  out["acc7"] = accuracy(np.round(np.clip(pred, -3, 3)), np.round(np.clip(truth, -3, 3)))
  out["acc5"] = accuracy(np.round(np.clip(pred, -2, 2)), np.round(np.clip(truth, -2, 2)))
  out["mae"] = float(np.mean(np.abs(pred - truth)))
  out["corr"] = pearson(pred, truth)
  return out


def _bin(x, edges) -> np.ndarray:
  """Class index of x among bins (edges[i], edges[i+1]], first bin closed on the left."""
  x = np.clip(x, edges[0], edges[-1])
  idx = np.searchsorted(np.asarray(edges[1:-1]), x, side="left")
  return idx


def sims_metrics(pred, truth) -> dict[str, float]:
  """CH-SIMS metrics: clip to [-1, 1]; Acc-2 bins [-1, 0], (0, 1]; Acc-3 with the neutral
  class (-0.1, 0.1]; Acc-5 edges -0.7, -0.1, 0.1, 0.7; weighted F1 on the Acc-2 classes."""
  pred = np.clip(_as1d(pred), -1, 1); truth = np.clip(_as1d(truth), -1, 1)
  out = {}
  for name, edges in (("acc2", [-1.01, 0.0, 1.01]),
                      ("acc3", [-1.01, -0.1, 0.1, 1.01]),
                      ("acc5", [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01])):
    out[name] = accuracy(_bin(pred, edges), _bin(truth, edges))
  out["f1"] = weighted_f1(_bin(pred, [-1.01, 0.0, 1.01]), _bin(truth, [-1.01, 0.0, 1.01]))
  out["mae"] = float(np.mean(np.abs(pred - truth)))
  out["corr"] = pearson(pred, truth)
  return out


def iemocap_metrics(logits, labels, emotions=("neutral", "happy", "sad", "angry")
                    ) -> dict[str, float]:
  """MulT protocol: logits (N, 4, 2), labels (N, 4) in {0, 1}; per-emotion accuracy and
  weighted F1 of argmax over the two logits, plus their means."""
  logits = np.asarray(logits); labels = np.asarray(labels).astype(int)
  pred = logits.argmax(-1)
  out = {}
  for k, e in enumerate(emotions):
    out[f"{e}_acc"] = accuracy(pred[:, k], labels[:, k])
    out[f"{e}_f1"] = weighted_f1(pred[:, k], labels[:, k])
  out["mean_acc"] = float(np.mean([out[f"{e}_acc"] for e in emotions]))
  out["mean_f1"] = float(np.mean([out[f"{e}_f1"] for e in emotions]))
  return out


def classification_metrics(logits, labels) -> dict[str, float]:
  """Accuracy and weighted F1 of argmax(logits) against integer class labels."""
  pred = np.asarray(logits).argmax(-1); labels = np.asarray(labels).astype(int)
  return {"acc": accuracy(pred, labels), "f1": weighted_f1(pred, labels)}


def task_metrics(task: str, predictions, labels) -> dict[str, float]:
  if task == "regression":
    return mosi_metrics(predictions, labels)
  if task == "sims":
    return sims_metrics(predictions, labels)
  if task == "iemocap":
    return iemocap_metrics(predictions, labels)
  if task == "classification":
    return classification_metrics(predictions, labels)
  raise ValueError(f"unknown task {task!r}")


def constant_baseline(task: str, train_labels, labels) -> tuple[str, dict[str, float]]:
  """(name, metrics) of the best constant predictor fitted on the train labels, scored on
  `labels`: the train label mean for regression tasks, the majority class otherwise (per
  emotion for IEMOCAP). A model that does not beat it has learned nothing."""
  train_labels = np.asarray(train_labels); n = len(labels)
  if task in ("regression", "sims"):
    mean = float(np.mean(train_labels))
    return "train label mean", task_metrics(task, np.full(n, mean), labels)
  if task == "iemocap":
    positive = np.asarray(train_labels).mean(0) >= 0.5              # (4,)
    logits = np.broadcast_to(np.eye(2)[positive.astype(int)], (n, 4, 2))
    return "majority class per emotion", task_metrics(task, logits, labels)
  classes = np.bincount(train_labels.astype(int).reshape(-1))
  logits = np.broadcast_to(np.eye(len(classes))[int(np.argmax(classes))], (n, len(classes)))
  return "majority class", task_metrics(task, logits, labels)


# Metric used for model selection and whether larger is better, per task.
SELECTION_DEFAULTS = {"regression": ("mae", "min"), "sims": ("mae", "min"),
                      "iemocap": ("loss", "min"), "classification": ("loss", "min")}
