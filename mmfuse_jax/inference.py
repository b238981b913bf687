"""Run an exported model without the training code: only jax, numpy and json.

    from mmfuse_jax.inference import load_exported
    predict = load_exported("exported/")           # reads inference.jax.bin + metadata.json
    y = predict({"text": x_t, "audio": x_a, "vision": x_v},        # raw (B, T_m, D_m) float32
                {"text": m_t, "audio": m_a, "vision": m_v})        # (B, T_m) bool, optional

The serialized function (jax.export, StableHLO) embeds the train-fitted standardisation, so
it takes raw features; the batch size is symbolic (any B). Time lengths are the ones in
metadata.json: pad shorter sequences (and mark the padding False in the mask).
"""

from __future__ import annotations

import json
import os

import numpy as np
from jax import export


def load_exported(path: str):
  with open(os.path.join(path, "metadata.json")) as f:
    meta = json.load(f)
  with open(os.path.join(path, "inference.jax.bin"), "rb") as f:
    exported = export.deserialize(bytearray(f.read()))
  mods = meta["modalities"]

  def predict(features: dict, masks: dict | None = None):
    feats, mks = {}, {}
    for m in mods:
      if m not in features:
        raise KeyError(f"missing modality {m!r}; the model needs {mods}")
      x = np.asarray(features[m], np.float32)
      want = (meta["max_lengths"][m], meta["feature_dims"][m])
      if x.ndim != 3 or tuple(x.shape[1:]) != tuple(want):
        raise ValueError(f"modality {m!r}: expected shape (B, {want[0]}, {want[1]}), "
                         f"got {x.shape}")
      feats[m] = x
      mk = np.ones(x.shape[:2], bool) if masks is None or m not in masks else masks[m]
      mks[m] = np.asarray(mk, bool)
    return np.asarray(exported.call(feats, mks))

  predict.metadata = meta
  return predict
