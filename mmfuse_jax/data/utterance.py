"""Real CMU-MOSI at utterance level: `mosi_utterance_real.npz` (dataset 'mosi_utterance').

Schema (`np.load`, no pickle; one row per segment, N = 2199, 93 videos):
  segment_id (N,) str '<video>_<idx>'  video_id (N,) str  segment_index (N,) int
  label (N,) float32 in [-3, 3]        label_binary_poria (N,) int8 (label >= 0)
  split_standard (N,) str train/valid/test (SDK folds)   split_poria (N,) str train/test
  text_cnn (N, 100) float32   audio_opensmile (N, 73) float32   video_3dcnn (N, 100) float32
  (start, end, transcript are read by nobody here)

Each modality becomes (N, 1, D) (T = 1, mask all True): text = text_cnn, audio =
audio_opensmile, vision = video_3dcnn. Labels = 'label' (regression; binarise with
--data.task=classification), or --data.label_key=label_binary_poria (2 classes). ids =
segment_id, groups = video_id; rows in (video_id, segment_index) order.

Splits (--data.split):
  'poria' (default): split_poria train/test, validation carved out of train BY VIDEO (no
    video in two splits): data.valid_fraction of the train videos, chosen by a permutation
    seeded with data.split_seed (deterministic).
  'standard': split_standard train/valid/test.
  Poria validation scores are optimistic: those clips' labels trained the text_cnn and
  video_3dcnn extractors (valid Acc-2 ~0.99 vs test ~0.77 for MulT); report test only.
Leakage rule: text_cnn and video_3dcnn come from extractors trained on the labels of the
poria training split, which holds 23 of the 31 standard-test videos, so on the standard
split they leak (text_cnn ridge: 94.2% Acc-2 there vs 77.4% on the poria test). Reading the
standard split with text or vision is a DataError unless --data.allow_leakage=true, which
logs a loud warning. audio_opensmile is unsupervised and valid on either split.

The file's sha256 is not checked (other copies are fine); keys, shapes and split values are.
"""

from __future__ import annotations

import logging
import zipfile
import zlib

import numpy as np

from mmfuse_jax.data.core import Dataset, Split
from mmfuse_jax.data.mult_pickle import config_modalities, requested_modalities, resolve_file
from mmfuse_jax.errors import ConfigError, DataError
from mmfuse_jax.registry import DATASETS

log = logging.getLogger(__name__)

FILE_NAMES = ("mosi_utterance_real.npz", "mosi_utterance.npz")
MODALITY_KEYS = {"text": "text_cnn", "audio": "audio_opensmile", "vision": "video_3dcnn"}
LEAKY_ON_STANDARD = ("text", "vision")
ROW_KEYS = ("segment_id", "video_id", "segment_index", "split_standard", "split_poria")
LABEL_KEYS = {"label": ("regression", None), "label_binary_poria": ("classification", 2)}


def read_npz(path: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
  """Loads the named arrays (no pickles allowed); a corrupt file or missing key is a DataError."""
  try:
    z = np.load(path, allow_pickle=False)
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
    raise DataError(f"{path}: file is truncated or not a .npz archive "
                    f"({type(e).__name__}: {e})") from None
  if not hasattr(z, "files"):
    raise DataError(f"{path}: is a single .npy array, expected a .npz archive with keys "
                    f"{list(keys)}")
  with z:
    missing = [k for k in keys if k not in z.files]
    if missing:
      raise DataError(f"{path}: missing keys {missing}; keys found: {sorted(z.files)}")
    out = {}
    for k in keys:
      try:
        out[k] = z[k]
      except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: key {k!r} cannot be read; the file is truncated or "
                        f"corrupt ({type(e).__name__}: {e})") from None
  return out


def _check_shapes(arrays: dict[str, np.ndarray], path: str) -> int:
  n = arrays["label"].shape[0] if arrays["label"].ndim == 1 else -1
  if n <= 0:
    raise DataError(f"{path}: key 'label' has shape {arrays['label'].shape}; expected (N,) "
                    f"with N > 0")
  for k, v in arrays.items():
    if k in MODALITY_KEYS.values():
      if v.ndim != 2 or v.shape[0] != n or v.dtype.kind not in "fiu":
        raise DataError(f"{path}: key {k!r} has shape {v.shape} ({v.dtype}); expected "
                        f"({n}, D) float")
    elif v.shape != (n,):
      raise DataError(f"{path}: key {k!r} has shape {v.shape}; expected ({n},)")
  for k in ("split_standard", "split_poria"):
    if arrays[k].dtype.kind not in "US":
      raise DataError(f"{path}: key {k!r} should hold split names (str), got {arrays[k].dtype}")
  return n


def _split_rows(arrays, split: str, *, valid_fraction: float, seed: int, path: str
                ) -> tuple[dict[str, np.ndarray], dict]:
  video = arrays["video_id"]
  if split == "standard":
    names = arrays["split_standard"].astype(str)
    bad = sorted(str(v) for v in set(names) - {"train", "valid", "test"})
    if bad:
      raise DataError(f"{path}: key 'split_standard' has values {bad}; expected "
                      f"train/valid/test")
    return {k: np.nonzero(names == k)[0] for k in ("train", "valid", "test")}, {}
  names = arrays["split_poria"].astype(str)
  bad = sorted(str(v) for v in set(names) - {"train", "test"})
  if bad:
    raise DataError(f"{path}: key 'split_poria' has values {bad}; expected train/test")
  if not 0.0 < valid_fraction < 1.0:
    raise ConfigError(f"data.valid_fraction must be in (0, 1), got {valid_fraction}")
  train_rows = np.nonzero(names == "train")[0]
  videos = np.unique(video[train_rows])  # sorted: the permutation alone decides
  if len(videos) < 2:
    raise DataError(f"{path}: split_poria 'train' has {len(videos)} video(s); carving a "
                    f"validation split by video needs at least 2")
  n_valid = min(len(videos) - 1, max(1, int(round(valid_fraction * len(videos)))))
  perm = np.random.default_rng(seed).permutation(len(videos))
  valid_videos = np.sort(videos[perm[:n_valid]])
  in_valid = np.isin(video[train_rows], valid_videos)
  rows = {"train": train_rows[~in_valid], "valid": train_rows[in_valid],
          "test": np.nonzero(names == "test")[0]}
  return rows, {"valid_videos": [str(v) for v in valid_videos]}


def read_utterance_npz(path: str, *, split: str = "poria", valid_fraction: float = 0.2,
                       split_seed: int = 0, label_key: str = "label",
                       modalities: tuple[str, ...] = ("text", "audio", "vision"),
                       allow_leakage: bool = False) -> Dataset:
  """Reads the utterance-level MOSI npz into a Dataset (see the module doc).

  `modalities` is what the caller will use: only those are read (the file needs only their
  keys) and only those enter the leakage check.
  """
  if split not in ("poria", "standard"):
    raise ConfigError(f"data.split for mosi_utterance must be 'poria' or 'standard', got "
                      f"{split!r}")
  if label_key not in LABEL_KEYS:
    raise ConfigError(f"data.label_key for mosi_utterance must be one of "
                      f"{list(LABEL_KEYS)}, got {label_key!r}")
  leaky = [m for m in modalities if m in LEAKY_ON_STANDARD]
  if split == "standard" and leaky:
    feats = [MODALITY_KEYS[m] for m in leaky]
    msg = (f"{path}: features {feats} (modalities {leaky}) leak on split 'standard': their "
           f"extractors were trained on the labels of the poria training split, which holds "
           f"23 of the 31 standard-test videos (text_cnn ridge scores 94.2% Acc-2 there vs "
           f"77.4% on the poria test split). Use --data.split=poria (default), or "
           f"--data.modalities=audio on the standard split")
    if not allow_leakage:
      raise DataError(msg + ", or --data.allow_leakage=true to run anyway (results are "
                      "not comparable)")
    log.warning("!" * 78)
    log.warning("LEAKAGE ALLOWED (--data.allow_leakage=true): %s. Test scores of this run "
                "are inflated and must not be reported.", msg)
    log.warning("!" * 78)
  task, num_classes = LABEL_KEYS[label_key]
  mods = requested_modalities(modalities)
  keys = ROW_KEYS + tuple(dict.fromkeys(("label", label_key))) + tuple(
      MODALITY_KEYS[m] for m in mods)
  arrays = read_npz(path, keys)
  _check_shapes(arrays, path)
  order = np.lexsort((arrays["segment_index"], arrays["video_id"].astype(str)))
  arrays = {k: v[order] for k, v in arrays.items()}
  rows, info = _split_rows(arrays, split, valid_fraction=valid_fraction, seed=split_seed,
                           path=path)
  splits = {}
  for name, r in rows.items():
    if len(r) == 0:
      raise DataError(f"{path}: split {name!r} (data.split={split!r}) is empty (0 samples)")
    feats = {m: arrays[MODALITY_KEYS[m]][r].astype(np.float32)[:, None, :] for m in mods}
    masks = {m: np.ones((len(r), 1), bool) for m in mods}
    y = arrays[label_key][r]
    labels = y.astype(np.float32) if task == "regression" else y.astype(np.int32)
    splits[name] = Split(features=feats, masks=masks, labels=labels,
                         ids=arrays["segment_id"][r].astype(str),
                         groups=arrays["video_id"][r].astype(str))
  info.update(format="utterance_npz", file=path, split=split, leakage=bool(split == "standard"
                                                                           and leaky))
  return Dataset(name="mosi_utterance", splits=splits, task=task, num_classes=num_classes,
                 source=path, info=info)


@DATASETS.register("mosi_utterance")
def load_mosi_utterance(config) -> Dataset:
  """mosi_utterance_real.npz from config.data_dir (or config.data.file)."""
  path = resolve_file(config, "mosi_utterance", FILE_NAMES)
  log.info("reading utterance-level MOSI %s", path)
  return read_utterance_npz(path, split=config.data.split or "poria",
                            valid_fraction=float(config.data.valid_fraction),
                            split_seed=int(config.data.split_seed),
                            label_key=config.data.label_key or "label",
                            modalities=config_modalities(config),
                            allow_leakage=bool(config.data.allow_leakage))


__all__ = ["read_utterance_npz", "read_npz", "MODALITY_KEYS"]
