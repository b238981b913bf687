"""TensorFlow Datasets builder over the readers: `mmfuse_sentiment/<config>`.

The user's own files are the builder's manual_dir (nothing is downloaded). Each builder
config reads one file with the matching mmfuse reader and writes one TFDS example per
sample; the written data is the reader's output (not standardised, not binarised):

  config               reader / file in manual_dir (also <manual_dir>/Processed, .../<DS>/Processed)
  mosi, mosi_aligned   MulT mosi_data_noalign.pkl / mosi_data.pkl
  mosei, mosei_aligned MulT mosei_senti_data_noalign.pkl / mosei_senti_data.pkl
  iemocap, iemocap_aligned  MulT iemocap_data_noalign.pkl / iemocap_data.pkl
  mosi_mmsa, mosei_mmsa (+ _aligned)  MMSA unaligned_50.pkl / aligned_50.pkl
  sims                 MMSA unaligned_39.pkl (plus unimodal labels)
  mosi_utterance       mosi_utterance_real.npz (poria split, valid_fraction 0.2, split_seed 0)

Example features: 'text' / 'audio' / 'vision' (T, D) float32 (as padded in the file),
'mask_text' / 'mask_audio' / 'mask_vision' (T,) bool, 'label' () float32 ((4,) int32 for
IEMOCAP), 'id' and 'group' (text), 'index' (row in the reader's split, which restores the
order: TFDS shuffles records when writing), and extras ('label_text', ... for SIMS).

No TensorFlow needed: with file_format='array_record' (the default here) TFDS writes with
the array_record package and reads back through `builder.as_data_source()` (random access,
numpy). Only `as_dataset()` (tf.data) and the 'tfrecord' format need TensorFlow.

    from mmfuse_jax.data import tfds_builders
    ds = tfds_builders.prepare("mosi", manual_dir="~/data/MulT", data_dir="~/tfds")
    dataset = tfds_builders.load_prepared("mosi", data_dir="~/tfds")  # -> mmfuse Dataset

SAFETY: the pickle configs unpickle the files in manual_dir (pickles run code when loaded);
point manual_dir only at files you trust.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from mmfuse_jax.config_base import base_config
from mmfuse_jax.data import DATASETS
from mmfuse_jax.data.core import MODALITIES, Dataset, Split
from mmfuse_jax.data.mult_pickle import resolve_file
from mmfuse_jax.errors import DataError

_PICKLE_DIRS = {"mosi_mmsa": ("", "Processed", "MOSI/Processed"),
                "mosei_mmsa": ("", "Processed", "MOSEI/Processed"),
                "sims": ("", "Processed", "SIMS/Processed")}


@dataclasses.dataclass(eq=False)
class SentimentConfig(tfds.core.BuilderConfig):
  dataset: str = ""                     # registered mmfuse dataset whose reader is used
  file: str = ""                        # file name in manual_dir
  task: str = "regression"
  extras: tuple = ()                    # names of float32 per-sample scalar extras kept


def _cfg(name, dataset, file, task="regression", extras=(), description=""):
  return SentimentConfig(name=name, dataset=dataset, file=file, task=task, extras=extras,
                         description=description or f"{dataset} from {file}")


_SIMS_EXTRAS = ("label_text", "label_audio", "label_vision")
CONFIGS = [
    _cfg("mosi", "mosi", "mosi_data_noalign.pkl"),
    _cfg("mosi_aligned", "mosi", "mosi_data.pkl"),
    _cfg("mosei", "mosei", "mosei_senti_data_noalign.pkl"),
    _cfg("mosei_aligned", "mosei", "mosei_senti_data.pkl"),
    _cfg("iemocap", "iemocap", "iemocap_data_noalign.pkl", task="iemocap"),
    _cfg("iemocap_aligned", "iemocap", "iemocap_data.pkl", task="iemocap"),
    _cfg("mosi_mmsa", "mosi_mmsa", "unaligned_50.pkl"),
    _cfg("mosi_mmsa_aligned", "mosi_mmsa", "aligned_50.pkl"),
    _cfg("mosei_mmsa", "mosei_mmsa", "unaligned_50.pkl"),
    _cfg("mosei_mmsa_aligned", "mosei_mmsa", "aligned_50.pkl"),
    _cfg("sims", "sims", "unaligned_39.pkl", task="sims", extras=_SIMS_EXTRAS),
    _cfg("mosi_utterance", "mosi_utterance", "mosi_utterance_real.npz"),
]


def _reader_config(cfg: SentimentConfig, manual_dir: str):
  """An mmfuse config that makes the registered reader read exactly cfg.file."""
  c = base_config()
  c.dataset = cfg.dataset
  c.data_dir = str(manual_dir)
  c.data.file = resolve_file(c, cfg.dataset, (cfg.file,), _PICKLE_DIRS.get(cfg.dataset, ("",)))
  return c


def read_with_reader(cfg: SentimentConfig, manual_dir: str) -> Dataset:
  return DATASETS.get(cfg.dataset)(_reader_config(cfg, manual_dir))


class MmfuseSentiment(tfds.core.GeneratorBasedBuilder):
  """Multimodal sentiment / emotion data (MOSI, MOSEI, IEMOCAP, CH-SIMS) from user files."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: MulT and MMSA pickles, utterance-level MOSI."}
  BUILDER_CONFIGS = CONFIGS
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the data file of the chosen config in manual_dir: MulT pickles (mosi_data.pkl, "
      "mosi_data_noalign.pkl, mosei_senti_data[_noalign].pkl, iemocap_data[_noalign].pkl), "
      "MMSA pickles (aligned_50.pkl, unaligned_50.pkl, unaligned_39.pkl) or "
      "mosi_utterance_real.npz. Pickles run code when loaded: use files you trust.")

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's own look-up of this file goes through the optional `importlib_resources`
    # package for classes inside packages; the answer is simply this module's path.
    return epath.Path(__file__)

  def __init__(self, *, file_format: str | None = "array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    if cfg.task == "iemocap":
      label = tfds.features.Tensor(shape=(4,), dtype=np.int32)
    else:
      label = tfds.features.Tensor(shape=(), dtype=np.float32)
    feats = {
        **{m: tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="zlib")
           for m in MODALITIES},
        **{f"mask_{m}": tfds.features.Tensor(shape=(None,), dtype=np.bool_) for m in MODALITIES},
        "label": label,
        "id": tfds.features.Text(),
        "group": tfds.features.Text(),
        "index": tfds.features.Scalar(dtype=np.int32),
        **{k: tfds.features.Scalar(dtype=np.float32) for k in cfg.extras},
    }
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict(feats),
        metadata=tfds.core.MetadataDict(task=cfg.task, dataset=cfg.dataset))

  def _split_generators(self, dl_manager):
    ds = read_with_reader(self.builder_config, dl_manager.manual_dir)
    self.info.metadata.update(task=ds.task, num_classes=ds.num_classes, source=ds.source)
    return {name: self._generate_examples(split) for name, split in ds.splits.items()}

  def _generate_examples(self, split: Split):
    cfg = self.builder_config
    missing = [k for k in cfg.extras if k not in split.extras]
    if missing:
      raise DataError(f"config {cfg.name!r} needs per-sample {missing}; the data has "
                      f"{sorted(split.extras)}")
    for i in range(len(split)):
      ex = {m: split.features[m][i] for m in MODALITIES}
      ex.update({f"mask_{m}": split.masks[m][i] for m in MODALITIES})
      ex.update(label=split.labels[i], id=str(split.ids[i]),
                group="" if split.groups is None else str(split.groups[i]), index=i)
      ex.update({k: np.float32(split.extras[k][i]) for k in cfg.extras})
      yield i, ex


def prepare(config: str, manual_dir: str, data_dir: str, *,
            file_format: str = "array_record") -> MmfuseSentiment:
  """Builds `mmfuse_sentiment/<config>` from the files in manual_dir into data_dir."""
  builder = MmfuseSentiment(config=config, data_dir=os.path.expanduser(data_dir),
                            file_format=file_format)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir)))
  return builder


def load_prepared(config: str, data_dir: str) -> Dataset:
  """Reads a prepared `mmfuse_sentiment/<config>` back into an mmfuse Dataset (no TF)."""
  builder = MmfuseSentiment(config=config, data_dir=os.path.expanduser(data_dir))
  sources = builder.as_data_source()
  cfg = builder.builder_config
  meta = dict(builder.info.metadata or {})
  splits = {}
  for name in ("train", "valid", "test"):
    if name not in sources:
      raise DataError(f"{builder.data_dir}: prepared data has no split {name!r}; found "
                      f"{sorted(sources)}")
    src = sources[name]
    recs = sorted((src[i] for i in range(len(src))), key=lambda r: int(r["index"]))
    groups = np.array([r["group"].decode() for r in recs])
    splits[name] = Split(
        features={m: np.stack([r[m] for r in recs]).astype(np.float32) for m in MODALITIES},
        masks={m: np.stack([r[f"mask_{m}"] for r in recs]).astype(bool) for m in MODALITIES},
        labels=np.stack([r["label"] for r in recs]),
        ids=np.array([r["id"].decode() for r in recs]),
        groups=None if np.all(groups == "") else groups,
        extras={k: np.array([r[k] for r in recs], np.float32) for k in cfg.extras})
  return Dataset(name=cfg.dataset, splits=splits, task=meta.get("task", cfg.task),
                 num_classes=meta.get("num_classes"), source=str(builder.data_dir),
                 info={"format": "tfds", "builder": f"mmfuse_sentiment/{cfg.name}"})


__all__ = ["MmfuseSentiment", "SentimentConfig", "CONFIGS", "prepare", "load_prepared"]
