"""Utterance context: present each utterance with the other utterances of its video.

Context models (ARGF's UCLN, bc-LSTM) run a recurrent network over the utterances of a
video. `with_video_context` keeps one sample per utterance (so labels, metrics and batching
stay per utterance) and replaces its (1, D) features by its video's (U, D) utterance
sequence, masked to the video's length, with `extras['position']` = the utterance's index in
that sequence. Videos are ordered as the rows are (readers sort by segment index).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mmfuse_jax.data.core import Dataset, Split
from mmfuse_jax.errors import DataError


def with_video_context(split: Split, max_utterances: int, *, source: str = "<memory>",
                       split_name: str = "?") -> Split:
  if split.groups is None:
    raise DataError(f"{source}: split {split_name!r} has no video ids (groups); utterance "
                    f"context (UCLN) needs data grouped by video")
  for m, x in split.features.items():
    if x.shape[1] != 1:
      raise DataError(f"{source}: split {split_name!r} modality {m!r} has {x.shape[1]} time "
                      f"steps; utterance context needs utterance-level features (T = 1)")
  n = len(split)
  order = {}
  for row, g in enumerate(split.groups):
    order.setdefault(g, []).append(row)
  longest = max(len(r) for r in order.values())
  if longest > max_utterances:
    raise DataError(f"{source}: split {split_name!r} has a video with {longest} utterances, "
                    f"more than max_utterances={max_utterances}")
  position = np.zeros(n, np.int32)
  feats = {m: np.zeros((n, max_utterances, x.shape[-1]), np.float32)
           for m, x in split.features.items()}
  masks = {m: np.zeros((n, max_utterances), bool) for m in split.features}
  for rows in order.values():
    rows = np.asarray(rows)
    for pos, row in enumerate(rows):
      position[row] = pos
      for m, x in split.features.items():
        feats[m][row, :len(rows)] = x[rows, 0]
        masks[m][row, :len(rows)] = split.masks[m][rows, 0]
  return dataclasses.replace(split, features=feats, masks=masks,
                             extras={**split.extras, "position": position})


def dataset_with_video_context(ds: Dataset) -> Dataset:
  longest = max(max(np.unique(s.groups, return_counts=True)[1]) if s.groups is not None else 1
                for s in ds.splits.values())
  splits = {k: with_video_context(s, int(longest), source=ds.source, split_name=k)
            for k, s in ds.splits.items()}
  return dataclasses.replace(ds, splits=splits, info={**ds.info, "context": True})
