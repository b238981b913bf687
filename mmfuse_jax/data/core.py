"""In-memory data contract: `Split` and `Dataset` (numpy, host side) and `Batch` (device side).

Every reader returns a `Dataset`; every model consumes a `Batch`. Features are float32
(N, T, D) per modality with a (N, T) bool mask of valid steps (padding may sit anywhere:
MulT pickles pad at the front, MMSA pickles at the back).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import numpy as np

from mmfuse_jax.errors import DataError

MODALITIES = ("text", "audio", "vision")
TASKS = ("regression", "sims", "iemocap", "classification")
IEMOCAP_EMOTIONS = ("neutral", "happy", "sad", "angry")


@flax.struct.dataclass
class Batch:
  """One batch on device.

  features: modality -> (B, T_m, D_m) float32; masks: modality -> (B, T_m) bool (True = valid).
  labels: (B,) float32 for regression, (B,) int32 class ids, or (B, K) int32 for IEMOCAP.
  weights: (B,) float32, 0 for filler rows that pad a batch to a multiple of the devices.
  index: (B,) int32 row of each sample in its split (-1 for filler): ids, generated labels.
  extras: name -> (B, ...) per-sample arrays a reader adds (e.g. 'position' of an utterance
  in its video context, unimodal labels); {} when none.
  more: None, or K further batches for a train step that needs fresh data in an inner loop
  (MDM's critic updates, Algorithm 1), as one Batch whose arrays are stacked on axis 1:
  (B, K, ...), so the batch axis stays first and is sharded like the rest
  (`Method.extra_batches`, `pipeline.make_batch(..., more_rows=...)`).
  """
  features: dict[str, Any]
  masks: dict[str, Any]
  labels: Any
  weights: Any
  index: Any
  extras: dict[str, Any] = flax.struct.field(default_factory=dict)
  more: Any = None

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(self.features)

  @property
  def size(self) -> int:
    return self.weights.shape[0]


@dataclasses.dataclass
class Split:
  """One split in host memory."""
  features: dict[str, np.ndarray]
  masks: dict[str, np.ndarray]
  labels: np.ndarray
  ids: np.ndarray
  groups: np.ndarray | None = None  # e.g. video id per utterance, for context models
  extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # (N, ...) each

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  def subset(self, rows: np.ndarray) -> "Split":
    return Split(
        features={m: x[rows] for m, x in self.features.items()},
        masks={m: x[rows] for m, x in self.masks.items()},
        labels=self.labels[rows],
        ids=self.ids[rows],
        groups=None if self.groups is None else self.groups[rows],
        extras={k: v[rows] for k, v in self.extras.items()})


@dataclasses.dataclass
class Dataset:
  """Train/valid/test splits plus what a model needs to know about them."""
  name: str
  splits: dict[str, Split]
  task: str = "regression"
  num_classes: int | None = None
  source: str = "<memory>"
  info: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(self.splits["train"].features)

  @property
  def feature_dims(self) -> dict[str, int]:
    return {m: int(x.shape[-1]) for m, x in self.splits["train"].features.items()}

  @property
  def max_lengths(self) -> dict[str, int]:
    return {m: max(int(s.features[m].shape[1]) for s in self.splits.values())
            for m in self.modalities}


def lengths_to_mask(lengths: np.ndarray, max_len: int, pad_front: bool = False) -> np.ndarray:
  """(N,) valid lengths -> (N, T) bool mask, valid steps at the back if pad_front."""
  steps = np.arange(max_len)[None, :]
  lengths = np.asarray(lengths)[:, None]
  if pad_front:
    return steps >= (max_len - lengths)
  return steps < lengths


def validate_split(split: Split, *, split_name: str, source: str, nan_policy: str = "error",
                   expected_dims: dict[str, int] | None = None) -> dict[str, int]:
  """Checks shapes, emptiness and non-finite values in place.

  nan_policy 'error' raises naming file, split, modality and count; 'zero' replaces
  NaN/inf by 0 and returns the counts replaced per modality.
  """
  n = len(split)
  if n == 0:
    raise DataError(f"{source}: split {split_name!r} is empty (0 samples)")
  replaced = {}
  for m, x in split.features.items():
    if x.ndim != 3:
      raise DataError(f"{source}: split {split_name!r} modality {m!r} must have shape "
                      f"(N, T, D), got {x.shape}")
    if x.shape[0] != n:
      raise DataError(f"{source}: split {split_name!r} modality {m!r} has {x.shape[0]} samples "
                      f"but the labels have {n}")
    if expected_dims is not None and m in expected_dims and x.shape[2] != expected_dims[m]:
      raise DataError(f"{source}: split {split_name!r} modality {m!r} has feature dimension "
                      f"{x.shape[2]}, expected {expected_dims[m]} (shape (N, T, "
                      f"{expected_dims[m]}))")
    mask = split.masks[m]
    if mask.shape != x.shape[:2]:
      raise DataError(f"{source}: split {split_name!r} mask of {m!r} has shape {mask.shape}, "
                      f"expected {x.shape[:2]}")
    bad = ~np.isfinite(x)
    count = int(bad.sum())
    if count:
      if nan_policy == "zero":
        x[bad] = 0.0
        replaced[m] = count
      else:
        raise DataError(
            f"{source}: split {split_name!r} modality {m!r} contains {count} NaN/inf values "
            f"(pass --data.nan_policy=zero to replace them by 0 and log the count)")
  labels = np.asarray(split.labels)
  if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
    raise DataError(f"{source}: split {split_name!r} labels contain "
                    f"{int((~np.isfinite(labels)).sum())} NaN/inf values")
  return replaced


def validate_dataset(ds: Dataset, nan_policy: str = "error") -> dict[str, dict[str, int]]:
  """Validates every split against the train split's feature dimensions."""
  for required in ("train", "valid", "test"):
    if required not in ds.splits:
      raise DataError(f"{ds.source}: missing split {required!r}; found {sorted(ds.splits)}")
  dims = {m: x.shape[-1] for m, x in ds.splits["train"].features.items()}
  mods = set(dims)
  counts = {}
  for name, split in ds.splits.items():
    if set(split.features) != mods:
      raise DataError(f"{ds.source}: split {name!r} has modalities {sorted(split.features)}, "
                      f"expected {sorted(mods)}")
    counts[name] = validate_split(split, split_name=name, source=ds.source,
                                  nan_policy=nan_policy, expected_dims=dims)
  return counts


def select_modalities(ds: Dataset, modalities: tuple[str, ...]) -> Dataset:
  """Keeps only the named modalities; a missing one is an error naming the ones present."""
  missing = [m for m in modalities if m not in ds.modalities]
  if missing:
    raise DataError(f"{ds.source}: modalities {missing} requested but the data has "
                    f"{list(ds.modalities)}")
  splits = {}
  for name, s in ds.splits.items():
    splits[name] = dataclasses.replace(
        s, features={m: s.features[m] for m in modalities},
        masks={m: s.masks[m] for m in modalities})
  return dataclasses.replace(ds, splits=splits)


def to_device_tree(batch: Batch) -> Batch:
  return jax.tree_util.tree_map(np.asarray, batch)
