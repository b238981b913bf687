"""Data layer: readers (one per format), the synthetic default, batching and the registry.

`load_dataset(config)` returns a validated, standardised `Dataset` ready for batching.
Importing this package registers the synthetic datasets and every reader's datasets.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

# The readers register their datasets on import (csd, mmsa_pickle, mult_pickle, utterance).
from mmfuse_jax.data import csd, mmsa_pickle, utterance  # noqa: F401
from mmfuse_jax.data.context import dataset_with_video_context
from mmfuse_jax.data.core import (Batch, Dataset, IEMOCAP_EMOTIONS, MODALITIES, Split,
                                  lengths_to_mask, select_modalities, validate_dataset)
from mmfuse_jax.data.mult_pickle import config_modalities, requested_modalities
from mmfuse_jax.data.pipeline import (iterate_batches, make_batch, shard_batch, standardize)
from mmfuse_jax.data.synthetic import make_synthetic, make_synthetic_utterances
from mmfuse_jax.errors import DataError
from mmfuse_jax.registry import DATASETS

log = logging.getLogger(__name__)


def _synthetic_sizes(config) -> dict[str, int]:
  d = config.data
  return {"train": d.synthetic_train, "valid": d.synthetic_valid, "test": d.synthetic_test}


@DATASETS.register("synthetic")
def _synthetic(config) -> Dataset:
  """Sequence-level synthetic data (the default of sequence models)."""
  return make_synthetic(config.data.synthetic_seed, sizes=_synthetic_sizes(config))


@DATASETS.register("synthetic_utterance")
def _synthetic_utterance(config) -> Dataset:
  """Utterance-level synthetic data grouped into videos (the default of utterance models)."""
  return make_synthetic_utterances(config.data.synthetic_seed, sizes=_synthetic_sizes(config))


def binarize(ds: Dataset) -> Dataset:
  """Regression labels -> classes {0, 1} with positive = label >= 0 (ARGF / bc-LSTM)."""
  splits = {k: dataclasses.replace(s, labels=(s.labels >= 0).astype(np.int32))
            for k, s in ds.splits.items()}
  return dataclasses.replace(ds, splits=splits, task="classification", num_classes=2)


def load_dataset(config, *, standardize_features: bool | None = None) -> tuple[Dataset, dict]:
  """Reads, checks and standardises the configured dataset.

  Returns (dataset, stats) where stats holds the train-fitted standardisation (mean, std per
  modality) and the NaN/inf replacement counts.
  """
  loader = DATASETS.get(config.dataset)
  ds = loader(config)
  mods = requested_modalities(config_modalities(config))
  ds = select_modalities(ds, mods)
  counts = validate_dataset(ds, nan_policy=config.data.nan_policy)
  for split, per_mod in counts.items():
    for m, c in per_mod.items():
      log.warning("%s: replaced %d NaN/inf values by 0 in split %r modality %r",
                  ds.source, c, split, m)
  if config.data.task == "classification" and ds.task == "regression":
    ds = binarize(ds)
  elif config.data.task and config.data.task != ds.task:
    raise DataError(f"{ds.source}: data.task={config.data.task!r} cannot be made from a "
                    f"{ds.task!r} dataset")
  stats = {"nan_replaced": counts}
  do_std = config.data.standardize if standardize_features is None else standardize_features
  if do_std:
    ds, stats["standardize"] = standardize(ds)
  if config.data.context:  # after standardising, so each utterance counts once in the stats
    ds = dataset_with_video_context(ds)
  return ds, stats


__all__ = ["DATASETS", "Batch", "Dataset", "Split", "MODALITIES", "IEMOCAP_EMOTIONS",
           "load_dataset", "iterate_batches", "make_batch", "shard_batch", "make_synthetic",
           "make_synthetic_utterances", "lengths_to_mask", "binarize"]
