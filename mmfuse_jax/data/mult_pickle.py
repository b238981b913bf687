"""MulT pickles (Tsai et al., 2019): `mosi_data[_noalign].pkl`, `mosei_senti_data[_noalign].pkl`,
`iemocap_data[_noalign].pkl`.

Schema: a dict {'train', 'valid', 'test'}; each split a dict with
  'text'   (N, T, 300) float   GloVe word vectors
  'audio'  (N, T, 74 or 5)     COVAREP (MOSEI/IEMOCAP: 74; MOSI: 5)
  'vision' (N, T, 35 or 20)    FACET (MOSEI/IEMOCAP: 35; MOSI: 20)
  'labels' (N, 1, 1) float     sentiment in [-3, 3] (MOSI, MOSEI), or
           (N, 4, 2) one-hot   {no, yes} per emotion neutral/happy/sad/angry (IEMOCAP),
                               converted to (N, 4) int32 class ids (1 = emotion present)
  'id'     optional, (N,) or (N, 3) [video, start, end]
Aligned files share T across modalities (word-aligned, T = 50 for MOSI/MOSEI); unaligned
(`_noalign`) files have one T per modality (MOSI 50/375/500, MOSEI 50/500/500).

The files carry no lengths. Padding in them is exact zeros (at the front), so a step is
valid when any of its features is nonzero: `mask = np.any(x != 0, axis=-1)`.

SAFETY: pickles run code when they are loaded. These readers open only the file that the
user names (data_dir / data.file); never point them at a pickle you did not make or download
from a source you trust.

This module also holds the helpers the other readers share (file look-up, safe-as-possible
pickle loading with clear errors, array checks).
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any, Sequence

import numpy as np

from mmfuse_jax.data.core import IEMOCAP_EMOTIONS, MODALITIES, Dataset, Split
from mmfuse_jax.errors import ConfigError, DataError
from mmfuse_jax.registry import DATASETS

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"valid": ("valid", "dev", "val", "validation")}

# dataset name -> (unaligned file, aligned file)
MULT_FILES = {
    "mosi": ("mosi_data_noalign.pkl", "mosi_data.pkl"),
    "mosei": ("mosei_senti_data_noalign.pkl", "mosei_senti_data.pkl"),
    "iemocap": ("iemocap_data_noalign.pkl", "iemocap_data.pkl"),
}
MULT_MODALITY_KEYS = {"text": "text", "audio": "audio", "vision": "vision"}


# ----------------------------------------------------------------------------- shared helpers

def resolve_file(config, dataset: str, candidates: Sequence[str],
                 subdirs: Sequence[str] = ("",)) -> str:
  """The data file to read.

  `config.data.file` (a path, or a name inside data_dir) wins; otherwise `config.data_dir`
  may itself be the file; otherwise the first existing `data_dir/<subdir>/<candidate>`.
  A missing file raises a DataError listing every path looked for.
  """
  data_dir = str(config.data_dir or "")
  explicit = str(config.data.get("file", "") or "")
  if explicit:
    paths = [explicit] if os.path.isabs(explicit) or not data_dir else \
        [os.path.join(data_dir, explicit), explicit]
    for p in paths:
      if os.path.isfile(p):
        return p
    raise DataError(f"dataset {dataset!r}: data.file {explicit!r} not found; looked for "
                    f"{', '.join(repr(p) for p in dict.fromkeys(paths))}")
  if not data_dir:
    raise DataError(f"dataset {dataset!r} reads files: pass --data_dir=FOLDER holding one of "
                    f"{', '.join(candidates)} (or --data.file=PATH)")
  if os.path.isfile(data_dir):
    return data_dir
  looked = [os.path.join(data_dir, s, c) if s else os.path.join(data_dir, c)
            for c in candidates for s in subdirs]
  for p in looked:
    if os.path.isfile(p):
      return p
  why = "does not exist" if not os.path.exists(data_dir) else "holds none of them"
  raise DataError(f"dataset {dataset!r}: no data file found; looked for "
                  f"{', '.join(repr(p) for p in looked)} (data_dir {data_dir!r} {why})")


def load_pickle(path: str) -> Any:
  """Unpickles a user-named file; a truncated or non-pickle file is a DataError.

  SAFETY: unpickling runs code chosen by whoever wrote the file. Call this only on paths the
  user gave explicitly, for files from a source they trust.
  """
  try:
    with open(path, "rb") as f:
      try:
        return pickle.load(f)
      except UnicodeDecodeError:  # Python 2 pickles of numpy arrays
        f.seek(0)
        return pickle.load(f, encoding="latin1")
  except OSError as e:
    raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
  except ModuleNotFoundError as e:
    raise DataError(f"{path}: the pickle needs Python module {e.name!r}, which is not "
                    f"installed (these readers expect plain dicts of numpy arrays)") from None
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
          KeyError, ImportError, MemoryError, OverflowError) as e:
    raise DataError(f"{path}: file is truncated or not a pickle "
                    f"({type(e).__name__}: {e})") from None


def get_split(data: Any, split: str, path: str) -> dict:
  """The split's dict (accepting 'dev'/'val' for 'valid'); a missing one lists those found."""
  if not isinstance(data, dict):
    raise DataError(f"{path}: expected a dict with keys {list(SPLITS)}, got "
                    f"{type(data).__name__}")
  for name in SPLIT_ALIASES.get(split, (split,)):
    if name in data:
      value = data[name]
      if not isinstance(value, dict):
        raise DataError(f"{path}: split {split!r} should be a dict of arrays, got "
                        f"{type(value).__name__}")
      return value
  raise DataError(f"{path}: missing split {split!r}; keys found: {_keys(data)}")


def _keys(d: Any) -> list[str]:
  try:
    return sorted(str(k) for k in d.keys())
  except Exception:  # noqa: BLE001
    return []


def requested_modalities(modalities: Sequence[str] | None) -> tuple[str, ...]:
  """The modalities a reader must return (None: all three); unknown names are an error."""
  mods = tuple(MODALITIES if modalities is None else modalities)
  unknown = [m for m in mods if m not in MODALITIES]
  if unknown or not mods:
    raise ConfigError(f"data.modalities must name one or more of {', '.join(MODALITIES)}; "
                      f"got {','.join(mods) or 'nothing'}")
  return mods


def require_modality(d: dict, key: str, modality: str, path: str, split: str,
                     requested: Sequence[str], keys: dict[str, str]) -> Any:
  """The array of a requested modality; a missing one names the modalities the file has."""
  if key in d:
    return d[key]
  present = [m for m, k in keys.items() if k in d]
  hint = (f"; this file has {', '.join(present)}: pass --data.modalities={','.join(present)}"
          if present else "")
  raise DataError(f"{path}: split {split!r} is missing key {key!r} for modality {modality!r} "
                  f"(data.modalities={','.join(requested)}){hint}; keys found: {_keys(d)}")


def require(d: dict, key: str, path: str, split: str, what: str = "") -> Any:
  if key not in d:
    extra = f" ({what})" if what else ""
    raise DataError(f"{path}: split {split!r} is missing key {key!r}{extra}; keys found: "
                    f"{_keys(d)}")
  return d[key]


def as_features(value: Any, *, path: str, split: str, key: str,
                expected_dim: int | None = None) -> np.ndarray:
  """(N, T, D) float32 copy, or a DataError naming file, split, key and the expected shape."""
  shape_txt = f"(N, T, {expected_dim})" if expected_dim else "(N, T, D)"
  try:
    x = np.asarray(value)
    if x.dtype.kind not in "fiub":
      raise TypeError(x.dtype)
    x = x.astype(np.float32)
  except (TypeError, ValueError) as e:
    raise DataError(f"{path}: split {split!r} key {key!r} is not a numeric array "
                    f"({type(e).__name__}: {e}); expected shape {shape_txt}") from None
  if x.ndim != 3:
    raise DataError(f"{path}: split {split!r} key {key!r} has shape {x.shape}; expected "
                    f"{shape_txt}")
  if expected_dim is not None and x.shape[2] != expected_dim:
    raise DataError(f"{path}: split {split!r} key {key!r} has feature dimension {x.shape[2]} "
                    f"but split 'train' has {expected_dim}; expected shape {shape_txt}")
  return x


def check_count(n: int, n_expected: int, *, path: str, split: str, key: str) -> None:
  if n != n_expected:
    raise DataError(f"{path}: split {split!r} key {key!r} has {n} samples but the labels "
                    f"have {n_expected}")


def sample_count(value: Any, *, path: str, split: str, key: str) -> int:
  """N of an (N, ...) array; 0 samples (an empty split) is a DataError."""
  shape = np.shape(value)
  if not shape:
    raise DataError(f"{path}: split {split!r} key {key!r} is a scalar; expected an (N, ...) "
                    f"array")
  check_not_empty(int(shape[0]), path=path, split=split, key=key)
  return int(shape[0])


def check_not_empty(n: int, *, path: str, split: str, key: str) -> None:
  if n == 0:
    raise DataError(f"{path}: split {split!r} is empty (key {key!r} has 0 samples)")


def nonzero_mask(x: np.ndarray) -> np.ndarray:
  """(N, T, D) -> (N, T) bool: a step is valid when any feature is nonzero (NaN counts)."""
  return np.any(x != 0, axis=-1)


def decode_ids(raw: Any, n: int, *, path: str, split: str
               ) -> tuple[np.ndarray, np.ndarray | None]:
  """Sample ids as (N,) str, and video ids (N,) str when the ids carry them.

  Accepts (N,) strings/bytes ('video$_$clip' in MMSA files) or (N, k) rows such as MulT's
  [video, start, end] (joined with '_'; the first column is the video).
  """
  if raw is None:
    return np.array([f"{split}_{i}" for i in range(n)]), None
  arr = np.asarray(raw)
  if arr.shape[:1] != (n,):
    raise DataError(f"{path}: split {split!r} key 'id' has shape {arr.shape}; expected ({n},) "
                    f"or ({n}, k)")

  def text(v) -> str:
    if isinstance(v, bytes):
      return v.decode("utf-8", "replace")
    return str(v)

  if arr.ndim == 1:
    ids = np.array([text(v) for v in arr])
    groups = np.array([s.split("$_$")[0] for s in ids]) if all("$_$" in s for s in ids) \
        else None
    return ids, groups
  rows = arr.reshape(n, -1)
  ids = np.array(["_".join(text(v) for v in row) for row in rows])
  groups = np.array([text(row[0]) for row in rows])
  return ids, groups


def warn_empty_masks(ds: Dataset) -> None:
  for split, s in ds.splits.items():
    for m, mk in s.masks.items():
      k = int((~mk.any(1)).sum())
      if k:
        log.warning("%s: split %r modality %r: %d of %d samples have no valid (nonzero) step",
                    ds.source, split, m, k, len(s))


# ----------------------------------------------------------------------------- MulT reader

def _labels(raw: Any, task: str, n: int, *, path: str, split: str) -> np.ndarray:
  y = np.asarray(raw)
  if y.dtype.kind not in "fiub":
    raise DataError(f"{path}: split {split!r} key 'labels' is not numeric ({y.dtype})")
  if y.shape[:1] != (n,):
    want = f"({n}, 4, 2)" if task == "iemocap" else f"({n}, 1, 1)"
    raise DataError(f"{path}: split {split!r} key 'labels' has shape {y.shape}; expected {want}")
  if task == "iemocap":
    k = len(IEMOCAP_EMOTIONS)
    if y.shape[1:] == (k, 2):
      if not np.all(np.isin(y, (0, 1))):
        raise DataError(f"{path}: split {split!r} key 'labels' (N, 4, 2) should be one-hot "
                        f"over {{no, yes}} per emotion (0/1 values)")
      return np.argmax(y, axis=-1).astype(np.int32)
    if y.shape[1:] in ((k,), (k, 1)):
      return y.reshape(n, k).astype(np.int32)
    raise DataError(f"{path}: split {split!r} key 'labels' has shape {y.shape}; IEMOCAP "
                    f"expects (N, 4, 2) one-hot over {{no, yes}} for "
                    f"{'/'.join(IEMOCAP_EMOTIONS)} (or (N, 4) class ids)")
  if int(np.prod(y.shape[1:], dtype=np.int64)) != 1:
    raise DataError(f"{path}: split {split!r} key 'labels' has shape {y.shape}; expected "
                    f"(N, 1, 1) sentiment scores")
  return y.reshape(n).astype(np.float32)


def read_mult_pickle(path: str, *, task: str = "regression", name: str = "mult",
                     modalities: Sequence[str] | None = None) -> Dataset:
  """Reads a MulT pickle into a Dataset (masks by the nonzero rule; see the module doc).

  task 'iemocap' converts the (N, 4, 2) one-hot labels to (N, 4) int32; anything else reads
  (N, 1, 1) sentiment scores as (N,) float32. modalities: the ones to read (default all
  three); only those must be in the file, so a text-only pickle loads with ('text',).
  SAFETY: unpickles `path` (see module doc).
  """
  mods = requested_modalities(modalities)
  data = load_pickle(path)
  splits, dims = {}, {}
  for split in SPLITS:
    d = get_split(data, split, path)
    y_raw = require(d, "labels", path, split)
    n = sample_count(y_raw, path=path, split=split, key="labels")
    labels = _labels(y_raw, task, n, path=path, split=split)
    feats, masks = {}, {}
    for m in mods:
      key = MULT_MODALITY_KEYS[m]
      raw = require_modality(d, key, m, path, split, mods, MULT_MODALITY_KEYS)
      x = as_features(raw, path=path, split=split, key=key, expected_dim=dims.get(m))
      check_count(x.shape[0], n, path=path, split=split, key=key)
      dims.setdefault(m, x.shape[2])
      feats[m], masks[m] = x, nonzero_mask(x)
    ids, groups = decode_ids(d.get("id"), n, path=path, split=split)
    splits[split] = Split(features=feats, masks=masks, labels=labels, ids=ids, groups=groups)
  ds = Dataset(name=name, splits=splits, task=task,
               num_classes=2 if task == "iemocap" else None, source=path,
               info={"format": "mult_pickle", "file": path, "mask_rule": "nonzero",
                     "aligned": len({x.shape[1] for x in splits["train"].features.values()})
                                == 1})
  warn_empty_masks(ds)
  return ds


def mult_file(config, dataset: str) -> str:
  unaligned, aligned = MULT_FILES[dataset]
  names = (aligned,) if config.data.aligned else (unaligned, aligned)
  path = resolve_file(config, dataset, names)
  if not config.data.aligned and not config.data.file and os.path.basename(path) == aligned:
    log.info("%s: %s not found, reading the aligned file", dataset, unaligned)
  return path


def _check_label_key(config, dataset: str) -> None:
  if config.data.label_key not in ("", "labels"):
    raise ConfigError(f"dataset {dataset!r} (MulT pickle) has one label key, 'labels'; got "
                      f"data.label_key={config.data.label_key!r}")


def config_modalities(config) -> tuple[str, ...]:
  """--data.modalities as a tuple (what the readers are asked for)."""
  return tuple(m.strip() for m in str(config.data.modalities).split(",") if m.strip())


def _make_loader(dataset: str, task: str):
  def load(config) -> Dataset:
    _check_label_key(config, dataset)
    path = mult_file(config, dataset)
    log.info("reading MulT pickle %s", path)
    return read_mult_pickle(path, task=task, name=dataset,
                            modalities=config_modalities(config))
  load.__name__ = f"load_{dataset}"
  load.__doc__ = (f"MulT pickle for {dataset} from config.data_dir "
                  f"({' or '.join(MULT_FILES[dataset])}).")
  return load


load_mosi = DATASETS.register("mosi")(_make_loader("mosi", "regression"))
load_mosei = DATASETS.register("mosei")(_make_loader("mosei", "regression"))
load_iemocap = DATASETS.register("iemocap")(_make_loader("iemocap", "iemocap"))

__all__ = ["read_mult_pickle", "load_pickle", "resolve_file", "nonzero_mask", "MULT_FILES",
           "requested_modalities", "config_modalities"]
