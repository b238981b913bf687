"""MMSA pickles (thuiar/MMSA): `aligned_50.pkl`, `unaligned_50.pkl` (MOSI, MOSEI) and
`unaligned_39.pkl` (CH-SIMS).

Schema: a dict {'train', 'valid', 'test'}; each split a dict with
  'text'             (N, T_t, 768 or 300) float   BERT features (or GloVe)
  'text_bert'        (N, 3, T_t) int, optional    token ids / input mask / segment ids
  'audio'            (N, T_a, D_a) float          MOSI 5, MOSEI 74, SIMS 33
  'vision'           (N, T_v, D_v) float          MOSI 20, MOSEI 35, SIMS 709
  'audio_lengths', 'vision_lengths'  (N,) int, optional  valid steps (padding at the back)
  'regression_labels'     (N,) float              sentiment ([-3, 3]; SIMS [-1, 1])
  'classification_labels' (N,) int, optional
  'regression_labels_T', '_A', '_V'  (N,) float   SIMS only: unimodal labels
  'id'               (N,) str                     'video$_$clip'
  'raw_text'         ignored

Masks: text from `text_bert[:, 1]` (the input mask) when present and as long as 'text',
else the nonzero rule (a step is valid when any feature is nonzero). Audio/vision from
`*_lengths` (back padding) when present and <= T; else, when the modality is word-aligned
with the text (same T and a text_bert mask), the text mask; else the nonzero rule.
`Dataset.info['mask_rule']` records the rule used per modality.

Kept per sample in `Split.extras` when present: 'label_class' (classification_labels),
'label_text' / 'label_audio' / 'label_vision' (SIMS unimodal labels), 'text_bert'
((N, 3, T_t) int32, for a token-level text encoder).

SAFETY: pickles run code when they are loaded; only the file the user names is opened.
"""

from __future__ import annotations

import logging

import numpy as np

from mmfuse_jax.data.core import Dataset, Split, lengths_to_mask
from mmfuse_jax.data.mult_pickle import (SPLITS, as_features, check_count, config_modalities,
                                         decode_ids, get_split, load_pickle, nonzero_mask,
                                         require, require_modality, requested_modalities,
                                         resolve_file, sample_count, warn_empty_masks)
from mmfuse_jax.errors import ConfigError, DataError
from mmfuse_jax.registry import DATASETS

log = logging.getLogger(__name__)

MMSA_MODALITY_KEYS = {"text": "text", "audio": "audio", "vision": "vision"}
UNIMODAL_LABELS = {"regression_labels_T": "label_text", "regression_labels_A": "label_audio",
                   "regression_labels_V": "label_vision"}
# dataset -> (unaligned file, aligned file or None, sub-folders MMSA uses)
MMSA_FILES = {
    "mosi_mmsa": ("unaligned_50.pkl", "aligned_50.pkl", ("", "Processed", "MOSI/Processed")),
    "mosei_mmsa": ("unaligned_50.pkl", "aligned_50.pkl", ("", "Processed", "MOSEI/Processed")),
    "sims": ("unaligned_39.pkl", None, ("", "Processed", "SIMS/Processed")),
}


def _vector(value, n: int, *, path: str, split: str, key: str, kind: str) -> np.ndarray:
  v = np.asarray(value)
  if v.dtype.kind not in "fiub" or v.size != n or (v.ndim > 1 and v.shape[0] != n):
    raise DataError(f"{path}: split {split!r} key {key!r} has shape {v.shape} and dtype "
                    f"{v.dtype}; expected ({n},) numeric")
  v = v.reshape(n)
  return v.astype(np.float32) if kind == "f" else v.astype(np.int32)


def _text_mask(d: dict, text: np.ndarray, *, path: str, split: str):
  if "text_bert" not in d:
    return None, None
  tb = np.asarray(d["text_bert"])
  n = text.shape[0]
  if tb.ndim != 3 or tb.shape[:2] != (n, 3) or tb.dtype.kind not in "fiub":
    raise DataError(f"{path}: split {split!r} key 'text_bert' has shape {tb.shape}; expected "
                    f"({n}, 3, T) token ids / input mask / segment ids")
  tb = tb.astype(np.int32)
  if tb.shape[2] != text.shape[1]:
    log.warning("%s: split %r: text_bert has %d steps but text has %d; text mask by the "
                "nonzero rule", path, split, tb.shape[2], text.shape[1])
    return None, tb
  return tb[:, 1] != 0, tb


def read_mmsa_pickle(path: str, *, task: str = "regression", name: str = "mmsa",
                     label_key: str = "regression_labels",
                     modalities=None) -> Dataset:
  """Reads an MMSA pickle into a Dataset (see the module doc for keys and masks).

  label_key: the per-split key used as labels: a regression key (default) or
  'classification_labels' (then task 'classification'). modalities: the ones to read
  (default all three); only those must be in the file. The text array, when the file has
  it, still serves the word-aligned audio/vision masks. SAFETY: unpickles `path`.
  """
  mods = requested_modalities(modalities)
  data = load_pickle(path)
  classify = label_key.startswith("classification")
  splits, dims, rules = {}, {}, {}
  for split in SPLITS:
    d = get_split(data, split, path)
    y_raw = require(d, label_key, path, split, "the labels; set --data.label_key to choose")
    n = sample_count(y_raw, path=path, split=split, key=label_key)
    labels = _vector(y_raw, n, path=path, split=split, key=label_key,
                     kind="i" if classify else "f")
    feats, masks = {}, {}
    # text is read when asked for, or when present (its mask marks word-aligned steps)
    for m in [m for m in MMSA_MODALITY_KEYS if m in mods or (m == "text" and "text" in d)]:
      key = MMSA_MODALITY_KEYS[m]
      x = as_features(require_modality(d, key, m, path, split, mods, MMSA_MODALITY_KEYS),
                      path=path, split=split, key=key, expected_dim=dims.get(m))
      check_count(x.shape[0], n, path=path, split=split, key=key)
      dims.setdefault(m, x.shape[2])
      feats[m] = x
    text_mask, text_bert = None, None
    if "text" in feats:
      text_mask, text_bert = _text_mask(d, feats["text"], path=path, split=split)
      masks["text"] = text_mask if text_mask is not None else nonzero_mask(feats["text"])
      rules["text"] = "text_bert input mask" if text_mask is not None else "nonzero"
      if "text" not in mods:
        del feats["text"], masks["text"], rules["text"]
        text_bert = None
    for m in [m for m in ("audio", "vision") if m in mods]:
      x, key = feats[m], f"{m}_lengths"
      t = x.shape[1]
      lengths = None
      if key in d:
        lengths = _vector(d[key], n, path=path, split=split, key=key, kind="i")
        if lengths.min() < 0:
          raise DataError(f"{path}: split {split!r} key {key!r} has negative lengths")
        if lengths.max() > t:
          lengths = None  # aligned files may keep the unaligned lengths
      if lengths is not None:
        masks[m], rules[m] = lengths_to_mask(lengths, t), f"{key} (back padding)"
      elif text_mask is not None and t == text_mask.shape[1]:
        masks[m], rules[m] = text_mask.copy(), "text mask (word-aligned)"
      else:
        masks[m], rules[m] = nonzero_mask(x), "nonzero"
    extras = {}
    if "classification_labels" in d and not classify:
      extras["label_class"] = _vector(d["classification_labels"], n, path=path, split=split,
                                      key="classification_labels", kind="i")
    for key, extra in UNIMODAL_LABELS.items():
      if key in d and key != label_key:
        extras[extra] = _vector(d[key], n, path=path, split=split, key=key, kind="f")
    if text_bert is not None:
      extras["text_bert"] = text_bert
    ids, groups = decode_ids(d.get("id"), n, path=path, split=split)
    splits[split] = Split(features=feats, masks=masks, labels=labels, ids=ids, groups=groups,
                          extras=extras)
  extra_sets = {k: sorted(s.extras) for k, s in splits.items()}
  if len({tuple(v) for v in extra_sets.values()}) > 1:
    raise DataError(f"{path}: splits carry different optional keys {extra_sets}; every split "
                    f"needs the same ones")
  num_classes = None
  if classify:
    task = "classification"
    num_classes = int(max(int(s.labels.max()) for s in splits.values())) + 1
  ds = Dataset(name=name, splits=splits, task=task, num_classes=num_classes, source=path,
               info={"format": "mmsa_pickle", "file": path, "mask_rule": rules,
                     "label_key": label_key,
                     "aligned": len({x.shape[1] for x in splits["train"].features.values()})
                                == 1})
  warn_empty_masks(ds)
  return ds


def mmsa_file(config, dataset: str) -> str:
  unaligned, aligned, subdirs = MMSA_FILES[dataset]
  if config.data.aligned:
    if aligned is None:
      raise ConfigError(f"dataset {dataset!r} has no word-aligned MMSA file; drop "
                        f"--data.aligned")
    names = (aligned,)
  else:
    names = (unaligned,) if aligned is None else (unaligned, aligned)
  return resolve_file(config, dataset, names, subdirs)


def _make_loader(dataset: str, task: str):
  def load(config) -> Dataset:
    path = mmsa_file(config, dataset)
    log.info("reading MMSA pickle %s", path)
    return read_mmsa_pickle(path, task=task, name=dataset,
                            label_key=config.data.label_key or "regression_labels",
                            modalities=config_modalities(config))
  load.__name__ = f"load_{dataset}"
  return load


load_mosi_mmsa = DATASETS.register("mosi_mmsa")(_make_loader("mosi_mmsa", "regression"))
load_mosei_mmsa = DATASETS.register("mosei_mmsa")(_make_loader("mosei_mmsa", "regression"))
load_sims = DATASETS.register("sims")(_make_loader("sims", "sims"))

__all__ = ["read_mmsa_pickle", "MMSA_FILES"]
