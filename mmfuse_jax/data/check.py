"""python -m mmfuse_jax.data.check --dataset=NAME [--data_dir=DIR] [--data.FIELD=VALUE ...]

Reads a dataset through the same reader training uses (`--dataset`, `--data_dir`,
`--data.file`, `--data.modalities`, `--data.aligned`, ... mean the same) and prints what a
model would see: the file read, per split the sample count, per modality the array shape,
the valid lengths (min / mean / max of the mask), the padding side and the NaN/inf count,
and the label range. It then names every problem it found:

- ERROR (exit status 1): NaN/inf features while `--data.nan_policy=error` (the default;
  training would stop on them), non-finite labels, sentiment labels outside the task's
  range ([-3, 3]; CH-SIMS [-1, 1]), or a failed validation (shapes, empty split);
- WARNING (exit status 0): samples with no valid step in a modality, NaN/inf that
  `--data.nan_policy=zero` will replace, split sizes that differ from the public release's
  (`EXPECTED_SIZES`), e.g. a subset or another split.

A file that cannot be read at all (missing, truncated, wrong keys or shapes) is the reader's
own error: one `error: ...` line on stderr and exit status 2, as for training.
Nothing is standardised or written; the data are read once.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from mmfuse_jax import config_base as config_lib
from mmfuse_jax.cli import parse_flags, run_main
from mmfuse_jax.data import DATASETS
from mmfuse_jax.data.core import Dataset, select_modalities, validate_dataset
from mmfuse_jax.data.mult_pickle import config_modalities, requested_modalities
from mmfuse_jax.errors import ConfigError, DataError

# Public releases: (train, valid, test) samples. MulT and MMSA ship the same CMU-SDK
# standard folds for MOSI and MOSEI; IEMOCAP is MulT's four-emotion split; CH-SIMS is
# MMSA's unaligned_39.pkl; mosi_utterance is the utterance npz with --data.split=standard
# (the default 'poria' split carves validation out of train by video: 1150 / 297 / 752
# with the default valid_fraction 0.2 and split_seed 0).
EXPECTED_SIZES = {
    "mosi": (1284, 229, 686),
    "mosi_mmsa": (1284, 229, 686),
    "mosei": (16326, 1871, 4659),
    "mosei_mmsa": (16326, 1871, 4659),
    "iemocap": (2717, 798, 938),
    "sims": (1368, 456, 457),
    "mosi_utterance": (1284, 229, 686),
}
LABEL_RANGES = {"regression": (-3.0, 3.0), "sims": (-1.0, 1.0)}
FLAGS = {"dataset": None, "data_dir": "", "config": ""}


@dataclasses.dataclass
class Report:
  """What `check_dataset` found: printable lines, then errors and warnings."""
  lines: list[str] = dataclasses.field(default_factory=list)
  errors: list[str] = dataclasses.field(default_factory=list)
  warnings: list[str] = dataclasses.field(default_factory=list)

  def text(self) -> str:
    out = list(self.lines)
    out += [f"ERROR: {e}" for e in self.errors] + [f"WARNING: {w}" for w in self.warnings]
    verdict = ("FAILED: " + f"{len(self.errors)} error(s)" if self.errors
               else "OK" + (f" ({len(self.warnings)} warning(s))" if self.warnings else ""))
    return "\n".join(out + [verdict])


def padding_side(mask: np.ndarray) -> str:
  """'front', 'back', 'none' (every step valid) or 'mixed', from the (N, T) mask."""
  partial = mask[(mask.sum(1) > 0) & (mask.sum(1) < mask.shape[1])]
  if partial.size == 0:
    return "none"
  if partial[:, -1].all():
    return "front"
  if partial[:, 0].all():
    return "back"
  return "mixed"


def _label_summary(labels: np.ndarray) -> str:
  y = np.asarray(labels)
  if y.dtype.kind == "f":
    finite = y[np.isfinite(y)]
    if finite.size == 0:
      return f"labels {y.shape} {y.dtype}: no finite value"
    return (f"labels {y.shape} {y.dtype}: min {finite.min():.3f} mean {finite.mean():.3f} "
            f"max {finite.max():.3f}")
  if y.ndim == 2:  # multi-label ids (IEMOCAP): positives per column
    return f"labels {y.shape} {y.dtype}: positives per column {y.sum(0).tolist()}"
  values, counts = np.unique(y, return_counts=True)
  return f"labels {y.shape} {y.dtype}: counts " + ", ".join(
      f"{v}: {c}" for v, c in zip(values.tolist(), counts.tolist()))


def _check_labels(ds: Dataset, split: str, report: Report) -> None:
  y = np.asarray(ds.splits[split].labels)
  if y.dtype.kind != "f":
    return
  bad = int((~np.isfinite(y)).sum())
  if bad:
    report.errors.append(f"split {split!r}: {bad} labels are NaN/inf")
  low, high = LABEL_RANGES.get(ds.task, (-np.inf, np.inf))
  finite = y[np.isfinite(y)]
  outside = int(((finite < low) | (finite > high)).sum())
  if outside:
    report.errors.append(f"split {split!r}: {outside} labels outside [{low:g}, {high:g}] "
                         f"(task {ds.task!r}); wrong label key or scale?")


def check_dataset(config) -> Report:
  """Reads the configured dataset with its reader and reports shapes, lengths, NaN/inf and
  labels per split (see the module doc for what counts as an error)."""
  mods = requested_modalities(config_modalities(config))
  ds = select_modalities(DATASETS.get(config.dataset)(config), mods)
  report = Report()
  r = report.lines
  r.append(f"dataset {config.dataset!r} ({ds.info.get('format', 'built in')}): {ds.source}")
  r.append(f"task {ds.task}" + (f", {ds.num_classes} classes" if ds.num_classes else "")
           + f"; modalities {', '.join(ds.modalities)}; nan_policy {config.data.nan_policy}")
  for split, s in ds.splits.items():
    r.append(f"{split}: {len(s)} samples" + (
        f", {len(np.unique(s.groups))} videos" if s.groups is not None else ""))
    for m in ds.modalities:
      x, mask = s.features[m], s.masks[m]
      lengths = mask.sum(1)
      nonfinite = int((~np.isfinite(x)).sum())
      r.append(f"  {m:6s} {str(x.shape):18s} valid steps min {lengths.min()} mean "
               f"{lengths.mean():.1f} max {lengths.max()}; padding {padding_side(mask)}; "
               f"NaN/inf {nonfinite}")
      if nonfinite and config.data.nan_policy != "zero":
        report.errors.append(
            f"split {split!r} modality {m!r}: {nonfinite} NaN/inf values; training stops on "
            f"them: pass --data.nan_policy=zero to replace them by 0")
      elif nonfinite:
        report.warnings.append(f"split {split!r} modality {m!r}: {nonfinite} NaN/inf values "
                               f"will be replaced by 0 (--data.nan_policy=zero)")
      empty = int((lengths == 0).sum())
      if empty:
        report.warnings.append(f"split {split!r} modality {m!r}: {empty} of {len(s)} samples "
                               f"have no valid step (all padding)")
    r.append(f"  {_label_summary(s.labels)}")
    _check_labels(ds, split, report)
  expected = EXPECTED_SIZES.get(config.dataset)
  if expected and config.dataset == "mosi_utterance" and (config.data.split or "poria") != \
      "standard":
    expected = None  # the poria split's validation part depends on valid_fraction and seed
  found = tuple(len(ds.splits[k]) for k in ("train", "valid", "test") if k in ds.splits)
  if expected and found != expected:
    report.warnings.append(f"split sizes train/valid/test {found} differ from the public "
                           f"release's {expected}")
  try:  # the checks training runs, on a copy (validation may replace NaN/inf in place)
    copy = dataclasses.replace(ds, splits={k: dataclasses.replace(
        s, features={m: x.copy() for m, x in s.features.items()})
        for k, s in ds.splits.items()})
    validate_dataset(copy, nan_policy="zero")
  except DataError as e:
    report.errors.append(str(e))
  return report


def _main(argv: list[str]) -> int:
  flags, overrides = parse_flags(argv, FLAGS)
  if flags["config"]:
    config = config_lib.load_config_file(flags["config"])
  else:
    config = config_lib.base_config()
  if flags["dataset"]:
    config.dataset = flags["dataset"]
  elif not flags["config"]:
    raise ConfigError("pass --dataset=NAME (one of " + ", ".join(DATASETS.names()) + ")")
  if flags["data_dir"]:
    config.data_dir = flags["data_dir"]
  config_lib.apply_overrides(config, overrides)
  config_lib.validate_config(config)
  report = check_dataset(config)
  print(report.text())
  return 1 if report.errors else 0


def main(argv: list[str] | None = None) -> int:
  return run_main(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
