"""CMU Multimodal SDK computational sequences (`.csd`, HDF5) and the 'sdk' dataset.

File layout (h5py): one root group named after the sequence (e.g. 'Opinion Segment
Labels'), holding
  data/<video_id>/features   (n, d) float   one row per interval
  data/<video_id>/intervals  (n, 2) float   [start, end] in seconds
  metadata/<field>           (1,) str       description, dimension names, citation, ...
`read_csd(path)` returns {video_id: (features (n, d) float32, intervals (n, 2) float64)}.

Dataset 'sdk' (segment-level sequences from raw SDK files in data_dir):
  - feature files: --data.sdk_features='text=WORDS.csd,audio=COVAREP.csd,vision=FACET.csd'
    (names inside data_dir, or paths); empty: one .csd per requested modality guessed by name
    (text: word/glove/text/bert, audio: covarep/audio/opensmile, vision: facet/openface/visual).
  - label file: --data.sdk_labels=FILE.csd; empty: the .csd whose name contains 'label'. One
    labelled segment per row; its label is column --data.label_key (default 0, sentiment).
  - folds: --data.folds_file=FILE.json; empty: the *folds*.json in data_dir. Either
    {'train': [videos], 'valid': [...], 'test': [...]} or {'mosi': {...}, 'mosei': {...}}
    (then the entry sharing most videos with the label file is used).
  For each labelled segment [s, e) the feature rows whose interval overlaps it
  (start < e and end > s; a zero-length row at t counts when s <= t < e; a zero-length
  segment at t takes the rows with start <= t <= end) form that segment's
  (k, d) sequence, in file order, cut to the first --data.max_steps rows when > 0. Sequences are
  padded at the back to the longest one; masks mark the k real rows. Segments of a video
  missing from a feature file, or with no overlapping row in some modality, are dropped (the
  counts are logged and kept in Dataset.info). ids are '<video>[<row>]', groups the video.
"""

from __future__ import annotations

import glob
import json
import logging
import os

import numpy as np

from mmfuse_jax.data.core import Dataset, Split
from mmfuse_jax.data.mult_pickle import config_modalities
from mmfuse_jax.errors import ConfigError, DataError
from mmfuse_jax.registry import DATASETS

log = logging.getLogger(__name__)

NAME_HINTS = {"text": ("word", "glove", "text", "bert", "language"),
              "audio": ("covarep", "audio", "opensmile", "acoustic"),
              "vision": ("facet", "openface", "visual", "vision", "video")}


def _open_h5(path: str):
  import h5py
  if not os.path.isfile(path):
    raise DataError(f"{path}: .csd file not found")
  try:
    return h5py.File(path, "r")
  except OSError as e:
    raise DataError(f"{path}: file is truncated or not an HDF5 .csd file ({e})") from None


def _root(f, path: str):
  roots = [k for k in f.keys() if hasattr(f[k], "keys") and "data" in f[k]]
  if len(roots) != 1:
    found = {k: sorted(f[k].keys()) if hasattr(f[k], "keys") else "dataset" for k in f.keys()}
    raise DataError(f"{path}: expected one root group holding 'data' (root -> data -> video "
                    f"-> features/intervals); found {found or 'nothing'}")
  return f[roots[0]]


def read_csd(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{video_id: (features (n, d) float32, intervals (n, 2) float64)} of a .csd file."""
  with _open_h5(path) as f:
    data = _root(f, path)["data"]
    out = {}
    try:
      for video in data.keys():
        g = data[video]
        if not hasattr(g, "keys") or "features" not in g or "intervals" not in g:
          found = sorted(g.keys()) if hasattr(g, "keys") else "a dataset"
          raise DataError(f"{path}: video {video!r} should hold 'features' and 'intervals'; "
                          f"found {found}")
        x = np.asarray(g["features"][()])
        iv = np.asarray(g["intervals"][()])
        if x.ndim == 1:
          x = x[:, None]
        if x.ndim != 2 or x.dtype.kind not in "fiub":
          raise DataError(f"{path}: video {video!r} 'features' has shape {x.shape} "
                          f"({x.dtype}); expected (n, d) numeric")
        if iv.shape != (x.shape[0], 2):
          raise DataError(f"{path}: video {video!r} 'intervals' has shape {iv.shape}; "
                          f"expected ({x.shape[0]}, 2) to match features {x.shape}")
        out[str(video)] = (x.astype(np.float32), iv.astype(np.float64))
    except (OSError, RuntimeError, KeyError) as e:
      raise DataError(f"{path}: file is truncated or corrupt ({type(e).__name__}: {e})") \
          from None
  return out


def csd_metadata(path: str) -> dict[str, str]:
  """The metadata strings of a .csd file (description, dimension names, ...)."""
  with _open_h5(path) as f:
    root = _root(f, path)
    out = {}
    if "metadata" in root:
      for k in root["metadata"].keys():
        v = root["metadata"][k][()]
        v = v[0] if np.ndim(v) else v
        out[k] = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
  return out


def read_folds(path: str, videos=None) -> dict[str, list[str]]:
  """{'train', 'valid', 'test'} -> video ids from a folds JSON (see the module doc)."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: folds file not found")
  try:
    with open(path) as f:
      raw = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: folds file is not valid JSON ({e})") from None

  def as_folds(d, where):
    folds = {}
    for split, names in (("train", ("train",)), ("valid", ("valid", "dev", "val")),
                         ("test", ("test",))):
      key = next((k for k in names if k in d), None)
      if key is None or not isinstance(d[key], list):
        raise DataError(f"{path}: {where} needs lists 'train', 'valid', 'test' of video ids; "
                        f"keys found: {sorted(d)}")
      folds[split] = [str(v) for v in d[key]]
    return folds

  if not isinstance(raw, dict):
    raise DataError(f"{path}: expected a JSON object with train/valid/test lists")
  if "train" in raw:
    return as_folds(raw, "the file")
  entries = {k: v for k, v in raw.items() if isinstance(v, dict) and "train" in v}
  if not entries:
    raise DataError(f"{path}: no train/valid/test folds found; keys found: {sorted(raw)}")
  if len(entries) == 1 or videos is None:
    if len(entries) > 1:
      raise DataError(f"{path}: several fold sets {sorted(entries)}; cannot choose without "
                      f"the label videos")
    name = next(iter(entries))
  else:
    videos = set(videos)
    overlap = {k: sum(len(videos & set(map(str, v.get(s, []))))
                      for s in ("train", "valid", "dev", "test"))
               for k, v in entries.items()}
    name = max(overlap, key=overlap.get)
    if overlap[name] == 0:
      raise DataError(f"{path}: none of the fold sets {sorted(entries)} names a video of the "
                      f"label file")
  log.info("%s: using fold set %r", path, name)
  return as_folds(entries[name], f"fold set {name!r}")


def overlapping_rows(intervals: np.ndarray, start: float, end: float) -> np.ndarray:
  """Row indices whose [s, e) overlaps [start, end); zero-length rows count when inside.

  A zero-length segment (start == end, as a few SDK labels are) takes the rows that contain
  its time point (s <= start <= e).
  """
  s, e = intervals[:, 0], intervals[:, 1]
  if end <= start:
    return np.nonzero((s <= start) & (e >= start))[0]
  hit = (s < end) & (e > start)
  point = (s == e) & (s >= start) & (s < end)
  return np.nonzero(hit | point)[0]


def build_sdk_dataset(features: dict[str, str], labels: str, folds: dict[str, list[str]], *,
                      label_column: int = 0, max_steps: int = 0, name: str = "sdk",
                      folds_path: str = "<folds>") -> Dataset:
  """Segment-level sequences from SDK files (see the module doc for the rule)."""
  label_seq = read_csd(labels)
  feats = {m: read_csd(p) for m, p in features.items()}
  dims = {}
  for m, d in feats.items():
    found = {x.shape[1] for x, _ in d.values()}
    if len(found) > 1:
      raise DataError(f"{features[m]}: videos have different feature dimensions "
                      f"{sorted(found)} (modality {m!r})")
    if not found:
      raise DataError(f"{features[m]}: holds no videos (modality {m!r})")
    dims[m] = found.pop()
  skipped = {"video_not_in_labels": 0, "video_missing_features": 0, "segment_no_rows": 0}
  rows_per_split = {}
  for split, videos in folds.items():
    rows = []
    for video in videos:
      if video not in label_seq:
        skipped["video_not_in_labels"] += 1
        continue
      y, y_iv = label_seq[video]
      if label_column >= y.shape[1]:
        raise DataError(f"{labels}: video {video!r} has {y.shape[1]} label column(s); "
                        f"data.label_key asks for column {label_column}")
      if any(video not in feats[m] for m in feats):
        skipped["video_missing_features"] += len(y)
        continue
      for i in np.argsort(y_iv[:, 0], kind="stable"):
        seqs = {}
        for m in feats:
          x, iv = feats[m][video]
          r = overlapping_rows(iv, y_iv[i, 0], y_iv[i, 1])
          if max_steps > 0:
            r = r[:max_steps]
          seqs[m] = x[r]
        if any(len(s) == 0 for s in seqs.values()):
          skipped["segment_no_rows"] += 1
          continue
        rows.append((f"{video}[{i}]", video, float(y[i, label_column]), seqs))
    rows_per_split[split] = rows
  for k, v in skipped.items():
    if v:
      log.warning("%s: dropped %d %s", labels, v, k.replace("_", " "))
  longest = {m: max([len(r[3][m]) for rows in rows_per_split.values() for r in rows] or [1])
             for m in feats}
  splits = {}
  for split, rows in rows_per_split.items():
    if not rows:
      raise DataError(f"{labels}: split {split!r} is empty (0 labelled segments from the "
                      f"{len(folds[split])} videos of {folds_path} with rows in every "
                      f"feature file)")
    n = len(rows)
    x = {m: np.zeros((n, longest[m], dims[m]), np.float32) for m in feats}
    mk = {m: np.zeros((n, longest[m]), bool) for m in feats}
    for j, (_, _, _, seqs) in enumerate(rows):
      for m, s in seqs.items():
        x[m][j, :len(s)] = s
        mk[m][j, :len(s)] = True
    splits[split] = Split(features=x, masks=mk,
                          labels=np.array([r[2] for r in rows], np.float32),
                          ids=np.array([r[0] for r in rows]),
                          groups=np.array([r[1] for r in rows]))
  return Dataset(name=name, splits=splits, task="regression", source=labels,
                 info={"format": "sdk_csd", "labels": labels, "features": dict(features),
                       "folds": folds_path, "skipped": skipped, "max_steps": max_steps})


def _csd_files(data_dir: str) -> list[str]:
  return sorted(glob.glob(os.path.join(data_dir, "*.csd")))


def _in_dir(data_dir: str, name: str, what: str) -> str:
  path = name if os.path.isabs(name) else os.path.join(data_dir, name)
  if not os.path.isfile(path):
    raise DataError(f"dataset 'sdk': {what} {path!r} not found")
  return path


def sdk_files(config, mods: tuple[str, ...]) -> tuple[dict[str, str], str, str]:
  """(modality -> feature .csd, label .csd, folds JSON) from the config (module doc)."""
  d = config.data
  data_dir = str(config.data_dir or "")
  if not data_dir or not os.path.isdir(data_dir):
    raise DataError(f"dataset 'sdk' needs --data_dir=FOLDER holding the feature .csd files, a "
                    f"label .csd and a folds JSON; got {data_dir!r}"
                    + (" (does not exist)" if data_dir and not os.path.exists(data_dir) else ""))
  files = _csd_files(data_dir)
  if d.sdk_labels:
    labels = _in_dir(data_dir, d.sdk_labels, "data.sdk_labels")
  else:
    cands = [p for p in files if "label" in os.path.basename(p).lower()]
    if len(cands) != 1:
      raise DataError(f"dataset 'sdk': need exactly one label .csd (name containing 'label') "
                      f"in {data_dir}, found {[os.path.basename(p) for p in cands]} among "
                      f"{[os.path.basename(p) for p in files]}; pass --data.sdk_labels=FILE")
    labels = cands[0]
  features = {}
  if d.sdk_features:
    for part in d.sdk_features.split(","):
      if "=" not in part:
        raise ConfigError(f"data.sdk_features expects 'modality=FILE.csd,...', got "
                          f"{d.sdk_features!r}")
      m, name = (s.strip() for s in part.split("=", 1))
      features[m] = _in_dir(data_dir, name, f"data.sdk_features {m!r}")
    missing = [m for m in mods if m not in features]
    if missing:
      raise ConfigError(f"data.sdk_features names {sorted(features)} but modalities {missing} "
                        f"are requested (data.modalities={','.join(mods)})")
  else:
    rest = [p for p in files if p != labels]
    for m in mods:
      hints = NAME_HINTS.get(m, (m,))
      cands = [p for p in rest if any(h in os.path.basename(p).lower() for h in hints)]
      if len(cands) != 1:
        raise DataError(f"dataset 'sdk': cannot tell which .csd holds modality {m!r} (found "
                        f"{[os.path.basename(p) for p in cands]} by name among "
                        f"{[os.path.basename(p) for p in rest]}); pass "
                        f"--data.sdk_features='text=A.csd,audio=B.csd,vision=C.csd'")
      features[m] = cands[0]
  if d.folds_file:
    folds = _in_dir(data_dir, d.folds_file, "data.folds_file")
  else:
    cands = sorted(glob.glob(os.path.join(data_dir, "*folds*.json")))
    if len(cands) != 1:
      raise DataError(f"dataset 'sdk': need one folds JSON (*folds*.json) in {data_dir}, found "
                      f"{[os.path.basename(p) for p in cands]}; pass --data.folds_file=FILE")
    folds = cands[0]
  return features, labels, folds


@DATASETS.register("sdk")
def load_sdk(config) -> Dataset:
  """Segment-level sequences from SDK .csd files in config.data_dir (module doc)."""
  key = config.data.label_key or "0"
  if not key.isdigit():
    raise ConfigError(f"data.label_key for dataset 'sdk' is a label column index (0 = "
                      f"sentiment), got {key!r}")
  if config.data.max_steps < 0:
    raise ConfigError(f"data.max_steps must be >= 0, got {config.data.max_steps}")
  features, labels, folds_path = sdk_files(config, config_modalities(config))
  log.info("reading SDK labels %s, features %s, folds %s", labels, features, folds_path)
  folds = read_folds(folds_path, videos=list(read_csd(labels)))
  return build_sdk_dataset(features, labels, folds, label_column=int(key),
                           max_steps=int(config.data.max_steps), folds_path=folds_path)


__all__ = ["read_csd", "csd_metadata", "read_folds", "build_sdk_dataset", "overlapping_rows"]
