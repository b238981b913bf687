"""Readers of the standard file formats, each tested on a small file written here in exactly
that format's schema (MulT pickles, MMSA pickles, the utterance npz, SDK .csd + folds), plus
the real utterance-level MOSI files when present (read-only) and the TFDS builder."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pickle
import sys

import h5py
import numpy as np
import pytest

from mmfuse_jax import config as config_lib
from mmfuse_jax.data import DATASETS, load_dataset
from mmfuse_jax.data.core import validate_dataset
from mmfuse_jax.data.csd import csd_metadata, overlapping_rows, read_csd, read_folds
from mmfuse_jax.data.mmsa_pickle import read_mmsa_pickle
from mmfuse_jax.data.mult_pickle import read_mult_pickle
from mmfuse_jax.data.utterance import read_utterance_npz
from mmfuse_jax.errors import DataError
from tests.helpers import real_mosi_dir, tiny_config

SIZES = {"train": 12, "valid": 5, "test": 6}


# ----------------------------------------------------------------------------- file writers

def _valid_block(rng, shape):
  """Random values bounded away from 0 (so the nonzero rule sees every valid step)."""
  return (rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)).astype(
      np.float32)


def mult_split(rng, n, *, dims=(6, 4, 3), lengths=(5, 8, 7), iemocap=False):
  """One MulT split (front padding with zeros) and the valid lengths per modality."""
  d, valid = {}, {}
  for m, dim, t in zip(("text", "audio", "vision"), dims, lengths):
    x = np.zeros((n, t, dim), np.float32)
    lens = rng.integers(1, t + 1, size=n)
    for i, k in enumerate(lens):
      x[i, t - k:] = _valid_block(rng, (k, dim))
    d[m], valid[m] = x, lens
  if iemocap:
    cls = rng.integers(0, 2, size=(n, 4))
    d["labels"] = np.eye(2, dtype=np.float32)[cls]  # (n, 4, 2) one-hot over {no, yes}
    valid["classes"] = cls
  else:
    d["labels"] = rng.uniform(-3, 3, size=(n, 1, 1)).astype(np.float32)
  d["id"] = np.array([[f"vid{i // 3}", f"{i}.0", f"{i + 1}.0"] for i in range(n)])
  return d, valid


def write_mult(path, *, seed=0, sizes=SIZES, **kw):
  rng = np.random.default_rng(seed)
  data, valid = {}, {}
  for split, n in sizes.items():
    data[split], valid[split] = mult_split(rng, n, **kw)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    pickle.dump(data, f)
  return data, valid


def mmsa_split(rng, n, *, sims=False, aligned=False, t_text=7, dims=(8, 5, 4)):
  """One MMSA split: back padding, text_bert masks, audio/vision lengths, labels, ids."""
  t_a, t_v = (t_text, t_text) if aligned else (11, 9)
  text_len = rng.integers(2, t_text + 1, size=n)
  d = {"text": np.zeros((n, t_text, dims[0]), np.float32)}
  tb = np.zeros((n, 3, t_text), np.int64)
  for i, k in enumerate(text_len):
    d["text"][i, :k] = _valid_block(rng, (k, dims[0]))
    tb[i, 0, :k] = rng.integers(100, 1000, size=k)
    tb[i, 1, :k] = 1
  d["text_bert"] = tb
  for m, t, dim in (("audio", t_a, dims[1]), ("vision", t_v, dims[2])):
    lens = text_len if aligned else rng.integers(1, t + 1, size=n)
    x = np.zeros((n, t, dim), np.float32)
    for i, k in enumerate(lens):
      x[i, :k] = _valid_block(rng, (k, dim))
    d[m] = x
    # Aligned MMSA files keep the unaligned lengths (longer than T): the reader must not use them.
    d[f"{m}_lengths"] = (lens + 40) if aligned else lens
  scale = 1.0 if sims else 3.0
  d["regression_labels"] = rng.uniform(-scale, scale, size=n).astype(np.float32)
  d["classification_labels"] = rng.integers(0, 3, size=n)
  if sims:
    for k in "TAV":
      d[f"regression_labels_{k}"] = rng.uniform(-1, 1, size=n).astype(np.float32)
  d["id"] = np.array([f"video{i // 4}$_${i % 4}" for i in range(n)], dtype=object)
  d["raw_text"] = np.array(["some words"] * n, dtype=object)
  return d, text_len


def write_mmsa(path, *, seed=0, sizes=SIZES, **kw):
  rng = np.random.default_rng(seed)
  data, lens = {}, {}
  for split, n in sizes.items():
    data[split], lens[split] = mmsa_split(rng, n, **kw)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    pickle.dump(data, f)
  return data, lens


def write_utterance_npz(path, *, n_videos=12, per_video=5, seed=0, shuffle=True, **override):
  """The mosi_utterance_real.npz schema on a small scale (videos 0-7 poria train)."""
  rng = np.random.default_rng(seed)
  video = np.repeat([f"v{j:02d}" for j in range(n_videos)], per_video)
  index = np.tile(np.arange(1, per_video + 1), n_videos).astype(np.int32)
  n = len(video)
  poria = np.where(np.repeat(np.arange(n_videos), per_video) < 8, "train", "test")
  standard = np.array(["train", "valid", "test"])[np.repeat(np.arange(n_videos) % 3, per_video)]
  label = rng.uniform(-3, 3, size=n).astype(np.float32)
  arrays = dict(
      segment_id=np.array([f"{v}_{i}" for v, i in zip(video, index)]), video_id=video,
      segment_index=index, start=np.arange(n, dtype=np.float32),
      end=np.arange(n, dtype=np.float32) + 1, transcript=np.array(["WORDS"] * n), label=label,
      label_binary_poria=(label >= 0).astype(np.int8), split_standard=standard,
      split_poria=poria, text_cnn=rng.normal(size=(n, 10)).astype(np.float32),
      audio_opensmile=rng.normal(size=(n, 7)).astype(np.float32),
      video_3dcnn=rng.normal(size=(n, 9)).astype(np.float32))
  arrays.update(override)
  if shuffle:
    perm = rng.permutation(n)
    arrays = {k: v[perm] if np.ndim(v) and len(v) == n else v for k, v in arrays.items()}
  np.savez(path, **arrays)
  return arrays


def write_csd(path, root, data, metadata=None):
  """An SDK computational sequence: root/data/<video>/{features, intervals} + metadata."""
  with h5py.File(path, "w") as f:
    g = f.create_group(root)
    dg = g.create_group("data")
    for video, (x, iv) in data.items():
      v = dg.create_group(video)
      v.create_dataset("features", data=np.asarray(x, np.float32))
      v.create_dataset("intervals", data=np.asarray(iv, np.float32))
    md = g.create_group("metadata")
    for k, val in (metadata or {"root name": root}).items():
      md.create_dataset(k, data=np.array([val], dtype=object), dtype=h5py.string_dtype())


def cfg(dataset, data_dir, **data):
  c = config_lib.base_config()
  c.dataset = dataset
  c.data_dir = str(data_dir)
  for k, v in data.items():
    c.data[k] = v
  return c


# ----------------------------------------------------------------------------- MulT pickles

def test_mult_mosi_unaligned_default_masks_ids(tmp_path):
  raw, valid = write_mult(tmp_path / "mosi_data_noalign.pkl")
  write_mult(tmp_path / "mosi_data.pkl", seed=1, lengths=(5, 5, 5))
  ds, _ = load_dataset(cfg("mosi", tmp_path), standardize_features=False)
  assert ds.source.endswith("mosi_data_noalign.pkl") and ds.task == "regression"
  assert ds.feature_dims == {"text": 6, "audio": 4, "vision": 3}
  assert ds.max_lengths == {"text": 5, "audio": 8, "vision": 7}
  for split, n in SIZES.items():
    s = ds.splits[split]
    assert len(s) == n and s.labels.shape == (n,) and s.labels.dtype == np.float32
    np.testing.assert_allclose(s.labels, raw[split]["labels"].reshape(n))
    for m in ("text", "audio", "vision"):
      np.testing.assert_array_equal(s.features[m], raw[split][m])
      # nonzero rule: the last `length` steps (front padding) are valid
      np.testing.assert_array_equal(s.masks[m].sum(1), valid[split][m])
      assert s.masks[m][:, -1].all()
    assert s.ids[0] == "vid0_0.0_1.0" and s.groups[4] == "vid1"


def test_mult_aligned_flag_explicit_file_and_fallback(tmp_path):
  write_mult(tmp_path / "mosi_data_noalign.pkl")
  write_mult(tmp_path / "mosi_data.pkl", seed=1, lengths=(5, 5, 5))
  ds, _ = load_dataset(cfg("mosi", tmp_path, aligned=True))
  assert ds.source.endswith("mosi_data.pkl") and set(ds.max_lengths.values()) == {5}
  ds, _ = load_dataset(cfg("mosi", tmp_path, file="mosi_data.pkl"))
  assert ds.source.endswith("mosi_data.pkl")
  # data_dir may name the file itself
  ds, _ = load_dataset(cfg("mosi", tmp_path / "mosi_data.pkl"))
  assert ds.source.endswith("mosi_data.pkl")
  os.remove(tmp_path / "mosi_data_noalign.pkl")  # no unaligned file: the aligned one is read
  ds, _ = load_dataset(cfg("mosi", tmp_path))
  assert ds.source.endswith("mosi_data.pkl") and ds.info["aligned"]


def test_mult_mosei_name(tmp_path):
  write_mult(tmp_path / "mosei_senti_data_noalign.pkl", dims=(6, 74, 35))
  ds, _ = load_dataset(cfg("mosei", tmp_path))
  assert ds.name == "mosei" and ds.feature_dims == {"text": 6, "audio": 74, "vision": 35}


def test_mult_iemocap_labels(tmp_path):
  raw, valid = write_mult(tmp_path / "iemocap_data_noalign.pkl", iemocap=True)
  ds, _ = load_dataset(cfg("iemocap", tmp_path))
  assert ds.task == "iemocap"
  for split, n in SIZES.items():
    y = ds.splits[split].labels
    assert y.shape == (n, 4) and y.dtype == np.int32
    np.testing.assert_array_equal(y, valid[split]["classes"])
  # (N, 4) class ids are accepted too
  direct = read_mult_pickle(str(tmp_path / "iemocap_data_noalign.pkl"), task="iemocap")
  np.testing.assert_array_equal(direct.splits["test"].labels, valid["test"]["classes"])


@pytest.mark.slow
def test_mult_iemocap_trains_end_to_end(tmp_path):
  """(N, 4) emotion labels from a pickle through MulT and the loop (about 1 min on 2 cores)."""
  from mmfuse_jax.training.loop import train_and_evaluate
  write_mult(tmp_path / "data" / "iemocap_data_noalign.pkl", iemocap=True,
             sizes={"train": 16, "valid": 8, "test": 8})
  c = tiny_config("mult", dataset="iemocap", data_dir=str(tmp_path / "data"), epochs=1,
                  batch_size=8, eval_batch_size=8)
  c.net.num_layers, c.net.d_model, c.net.num_heads = 1, 8, 2
  results = train_and_evaluate(c, str(tmp_path / "run"))
  assert os.path.exists(tmp_path / "run" / "results.json")
  assert all(np.isfinite(v) for v in results["test"].values())


# ----------------------------------------------------------------------------- MMSA pickles

def test_mmsa_unaligned_masks_and_extras(tmp_path):
  raw, text_len = write_mmsa(tmp_path / "unaligned_50.pkl")
  ds, _ = load_dataset(cfg("mosi_mmsa", tmp_path), standardize_features=False)
  assert ds.task == "regression" and ds.feature_dims == {"text": 8, "audio": 5, "vision": 4}
  assert ds.info["mask_rule"]["audio"].startswith("audio_lengths")
  assert ds.info["mask_rule"]["text"] == "text_bert input mask"
  for split, n in SIZES.items():
    s, r = ds.splits[split], raw[split]
    np.testing.assert_array_equal(s.masks["text"].sum(1), text_len[split])
    np.testing.assert_array_equal(s.masks["audio"].sum(1), r["audio_lengths"])
    np.testing.assert_array_equal(s.masks["vision"].sum(1), r["vision_lengths"])
    assert s.masks["audio"][np.arange(n), 0].all()  # back padding: first step valid
    np.testing.assert_allclose(s.labels, r["regression_labels"])
    np.testing.assert_array_equal(s.extras["label_class"], r["classification_labels"])
    assert s.extras["text_bert"].shape == (n, 3, 7)
    assert "label_text" not in s.extras
  tr = ds.splits["train"]
  assert tr.ids[5] == "video1$_$1" and tr.groups[5] == "video1"


def test_mmsa_aligned_uses_text_mask_and_processed_folder(tmp_path):
  _, text_len = write_mmsa(tmp_path / "MOSEI" / "Processed" / "aligned_50.pkl", aligned=True)
  ds, _ = load_dataset(cfg("mosei_mmsa", tmp_path, aligned=True))
  assert ds.info["aligned"]
  assert ds.info["mask_rule"]["audio"] == "text mask (word-aligned)"
  for split in SIZES:
    s = ds.splits[split]
    np.testing.assert_array_equal(s.masks["audio"], s.masks["text"])
    np.testing.assert_array_equal(s.masks["vision"].sum(1), text_len[split])


def test_mmsa_without_text_bert_and_lengths_uses_nonzero_rule(tmp_path):
  raw, text_len = write_mmsa(tmp_path / "x.pkl")
  for split in raw.values():
    for k in ("text_bert", "audio_lengths", "vision_lengths", "classification_labels"):
      del split[k]
  with open(tmp_path / "unaligned_50.pkl", "wb") as f:
    pickle.dump(raw, f)
  ds = read_mmsa_pickle(str(tmp_path / "unaligned_50.pkl"))
  assert set(ds.info["mask_rule"].values()) == {"nonzero"}
  np.testing.assert_array_equal(ds.splits["train"].masks["text"].sum(1), text_len["train"])
  assert ds.splits["train"].extras == {}


def test_sims_task_and_unimodal_labels(tmp_path):
  raw, _ = write_mmsa(tmp_path / "SIMS" / "Processed" / "unaligned_39.pkl", sims=True)
  ds, _ = load_dataset(cfg("sims", tmp_path))
  assert ds.task == "sims" and ds.name == "sims"
  s = ds.splits["valid"]
  for key, extra in (("T", "label_text"), ("A", "label_audio"), ("V", "label_vision")):
    np.testing.assert_allclose(s.extras[extra], raw["valid"][f"regression_labels_{key}"])
  # a unimodal label as the target
  ds, _ = load_dataset(cfg("sims", tmp_path, label_key="regression_labels_T"))
  np.testing.assert_allclose(ds.splits["test"].labels, raw["test"]["regression_labels_T"])
  assert "label_text" not in ds.splits["test"].extras


def test_mmsa_classification_labels(tmp_path):
  write_mmsa(tmp_path / "unaligned_50.pkl")
  ds, _ = load_dataset(cfg("mosi_mmsa", tmp_path, label_key="classification_labels"))
  assert ds.task == "classification" and ds.num_classes == 3
  assert ds.splits["train"].labels.dtype == np.int32


# ----------------------------------------------------------------------------- utterance npz

def test_utterance_written_file_poria_split(tmp_path):
  arrays = write_utterance_npz(tmp_path / "mosi_utterance_real.npz")
  ds, _ = load_dataset(cfg("mosi_utterance", tmp_path, valid_fraction=0.25),
                       standardize_features=False)
  tr, va, te = (ds.splits[k] for k in ("train", "valid", "test"))
  assert (len(tr), len(va), len(te)) == (30, 10, 20)  # 8 train videos -> 2 for validation
  assert not set(tr.groups) & set(va.groups) and not set(va.groups) & set(te.groups)
  assert tr.features["text"].shape == (30, 1, 10) and tr.features["audio"].shape == (30, 1, 7)
  assert tr.masks["vision"].all() and tr.labels.dtype == np.float32
  # rows in (video, segment_index) order
  keys = [(g, int(i.split("_")[1])) for g, i in zip(tr.groups, tr.ids)]
  assert keys == sorted(keys)
  row = int(np.nonzero(arrays["segment_id"] == tr.ids[3])[0][0])
  np.testing.assert_allclose(tr.features["text"][3, 0], arrays["text_cnn"][row])
  np.testing.assert_allclose(tr.labels[3], arrays["label"][row])


def test_utterance_split_seed_deterministic(tmp_path):
  write_utterance_npz(tmp_path / "mosi_utterance_real.npz", n_videos=30)
  path = str(tmp_path / "mosi_utterance_real.npz")
  a = read_utterance_npz(path, split_seed=0).info["valid_videos"]
  b = read_utterance_npz(path, split_seed=0).info["valid_videos"]
  c = read_utterance_npz(path, split_seed=1).info["valid_videos"]
  assert a == b and a != c


def test_utterance_standard_split_leakage_rule(tmp_path, caplog):
  write_utterance_npz(tmp_path / "mosi_utterance_real.npz")
  with pytest.raises(DataError, match="leak.*text_cnn.*allow_leakage"):
    load_dataset(cfg("mosi_utterance", tmp_path, split="standard"))
  # audio alone is unsupervised: allowed on the standard split
  ds, _ = load_dataset(cfg("mosi_utterance", tmp_path, split="standard", modalities="audio"))
  assert ds.modalities == ("audio",) and len(ds.splits["valid"]) == 20
  with caplog.at_level(logging.WARNING):
    ds, _ = load_dataset(cfg("mosi_utterance", tmp_path, split="standard", allow_leakage=True))
  assert ds.info["leakage"] and "LEAKAGE ALLOWED" in caplog.text


def test_utterance_binary_label_and_classification(tmp_path):
  write_utterance_npz(tmp_path / "mosi_utterance_real.npz")
  ds, _ = load_dataset(cfg("mosi_utterance", tmp_path, label_key="label_binary_poria"))
  assert ds.task == "classification" and ds.num_classes == 2
  ds2, _ = load_dataset(cfg("mosi_utterance", tmp_path, task="classification"))
  np.testing.assert_array_equal(ds.splits["test"].labels, ds2.splits["test"].labels)


REAL = real_mosi_dir()
needs_real = pytest.mark.skipif(REAL is None, reason="real MOSI files (../shared/data/"
                                "mosi-utterance or MMFUSE_MOSI_DIR) not present")


@needs_real
def test_utterance_real_file():
  ds, stats = load_dataset(cfg("mosi_utterance", REAL))
  tr, va, te = (ds.splits[k] for k in ("train", "valid", "test"))
  assert len(tr) + len(va) == 1447 and len(te) == 752
  assert len(set(tr.groups)) + len(set(va.groups)) == 62 and len(set(te.groups)) == 31
  assert not set(tr.groups) & set(va.groups)
  assert ds.feature_dims == {"text": 100, "audio": 73, "vision": 100}
  with pytest.raises(DataError, match="leak"):
    load_dataset(cfg("mosi_utterance", REAL, split="standard"))
  ds, _ = load_dataset(cfg("mosi_utterance", REAL, split="standard", modalities="audio"))
  assert [len(ds.splits[k]) for k in ("train", "valid", "test")] == [1284, 229, 686]


# ----------------------------------------------------------------------------- SDK .csd

@needs_real
def test_read_csd_real_fixture():
  path = os.path.join(REAL, "CMU_MOSI_Opinion_Labels.csd")
  d = read_csd(path)
  assert len(d) == 93 and sum(len(x) for x, _ in d.values()) == 2199
  x, iv = d["03bSnISJMiM"]
  assert x.dtype == np.float32 and x.shape[1] == 1 and iv.shape == (len(x), 2)
  assert np.all(iv[:, 1] >= iv[:, 0]) and -3 <= x.min() and x.max() <= 3
  assert csd_metadata(path)["root name"].strip('"') == "Opinion Segment Labels"
  folds = read_folds(os.path.join(REAL, "standard_folds_mosi_mosei.json"), videos=list(d))
  assert [len(folds[k]) for k in ("train", "valid", "test")] == [52, 10, 31]


def test_read_csd_written(tmp_path):
  data = {"vidA": (np.arange(6, dtype=np.float32).reshape(3, 2), [[0, 1], [1, 2], [2, 3]]),
          "vidB": (np.ones((1, 2)), [[0.5, 4.0]])}
  write_csd(tmp_path / "f.csd", "My Features", data, {"root name": "My Features"})
  d = read_csd(str(tmp_path / "f.csd"))
  assert sorted(d) == ["vidA", "vidB"]
  np.testing.assert_array_equal(d["vidA"][0], data["vidA"][0])
  assert d["vidB"][1].shape == (1, 2) and d["vidB"][1].dtype == np.float64
  assert csd_metadata(str(tmp_path / "f.csd")) == {"root name": "My Features"}


def test_overlapping_rows():
  iv = np.array([[0, 1], [1, 2], [2, 3], [2.5, 2.5], [3, 4]], float)
  np.testing.assert_array_equal(overlapping_rows(iv, 1.0, 3.0), [1, 2, 3])
  np.testing.assert_array_equal(overlapping_rows(iv, 0.5, 1.0), [0])
  np.testing.assert_array_equal(overlapping_rows(iv, 2.5, 2.5), [2, 3])  # zero-length segment
  assert overlapping_rows(iv, 10, 11).size == 0


def write_sdk_dir(d, *, folds_nested=True):
  """Two feature files (word-level text, 0.5 s audio frames), labels and a folds JSON."""
  rng = np.random.default_rng(0)
  videos = [f"vid{j}" for j in range(6)]
  labels, text, audio = {}, {}, {}
  for j, v in enumerate(videos):
    seg = np.array([[0, 2], [2, 5], [5, 6], [20, 21]], float)  # the last has no rows
    labels[v] = (rng.uniform(-3, 3, size=(4, 1)), seg)
    w = np.array([[0, .5], [.5, 1.5], [1.5, 2.5], [3, 4], [4.5, 5.5]])  # word intervals
    text[v] = (rng.normal(size=(len(w), 3)), w)
    a = np.stack([np.arange(0, 6, .5), np.arange(0, 6, .5) + .5], 1)
    audio[v] = (rng.normal(size=(len(a), 2)), a)
  del audio["vid5"]  # a video missing from one feature file is dropped
  write_csd(d / "X_Opinion_Labels.csd", "Opinion Segment Labels", labels)
  write_csd(d / "X_TimestampedWordVectors.csd", "glove_vectors", text)
  write_csd(d / "X_COVAREP.csd", "COVAREP", audio)
  folds = {"train": videos[:3], "valid": [videos[3]], "test": videos[4:]}
  with open(d / "standard_folds.json", "w") as f:
    json.dump({"other": {"train": ["zzz"], "valid": [], "test": []}, "mine": folds}
              if folds_nested else folds, f)
  return labels, text, audio


def test_sdk_dataset_segments(tmp_path):
  labels, text, audio = write_sdk_dir(tmp_path)
  c = cfg("sdk", tmp_path, modalities="text,audio")
  ds, _ = load_dataset(c, standardize_features=False)
  tr = ds.splits["train"]
  assert [len(ds.splits[k]) for k in ("train", "valid", "test")] == [9, 3, 3]
  assert list(tr.ids[:3]) == ["vid0[0]", "vid0[1]", "vid0[2]"] and tr.groups[3] == "vid1"
  # segment [2, 5): words 2-4 ([1.5, 2.5], [3, 4], [4.5, 5.5]); audio frames 2.0 .. 4.5
  np.testing.assert_allclose(tr.features["text"][1, :3], text["vid0"][0][2:5], rtol=1e-6)
  assert tr.masks["text"][1].sum() == 3 and tr.masks["audio"][1].sum() == 6
  np.testing.assert_allclose(tr.features["audio"][1, :6], audio["vid0"][0][4:10], rtol=1e-6)
  np.testing.assert_allclose(tr.labels[1], labels["vid0"][0][1, 0], rtol=1e-6)
  assert ds.info["skipped"] == {"video_not_in_labels": 0, "video_missing_features": 4,
                                "segment_no_rows": 5}
  # max_steps cuts each sequence; explicit file names work too
  c = cfg("sdk", tmp_path, modalities="text,audio", max_steps=2,
          sdk_features="text=X_TimestampedWordVectors.csd,audio=X_COVAREP.csd",
          sdk_labels="X_Opinion_Labels.csd", folds_file="standard_folds.json")
  ds, _ = load_dataset(c)
  assert ds.max_lengths == {"text": 2, "audio": 2}


@needs_real
def test_sdk_dataset_with_real_labels_and_folds(tmp_path):
  """Feature files written here for the real label file's segments: one row per segment."""
  labels = read_csd(os.path.join(REAL, "CMU_MOSI_Opinion_Labels.csd"))
  feats = {v: (np.c_[y, np.arange(len(y))], iv) for v, (y, iv) in labels.items()}
  write_csd(tmp_path / "covarep.csd", "COVAREP", feats)
  c = cfg("sdk", tmp_path, modalities="audio",
          sdk_labels=os.path.join(REAL, "CMU_MOSI_Opinion_Labels.csd"),
          folds_file=os.path.join(REAL, "standard_folds_mosi_mosei.json"))
  ds, _ = load_dataset(c, standardize_features=False)
  assert [len(ds.splits[k]) for k in ("train", "valid", "test")] == [1284, 229, 686]
  s = ds.splits["test"]
  for j in range(len(s)):  # each segment's own row is among its rows (neighbours may overlap)
    own = int(s.ids[j].split("[")[1].rstrip("]"))
    rows = s.features["audio"][j, s.masks["audio"][j]]
    assert own in rows[:, 1].astype(int)
    assert s.labels[j] == rows[rows[:, 1].astype(int) == own, 0][0]


# ----------------------------------------------------------------------------- TFDS builder

def test_tfds_builder_round_trip_without_tensorflow(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  import tensorflow_datasets as tfds
  from mmfuse_jax.data import tfds_builders
  tfds.disable_progress_bar()
  manual = tmp_path / "manual"
  write_mult(manual / "iemocap_data_noalign.pkl", iemocap=True)
  write_mmsa(manual / "SIMS" / "Processed" / "unaligned_39.pkl", sims=True)
  for name, reader_cfg in (("iemocap", cfg("iemocap", manual)), ("sims", cfg("sims", manual))):
    tfds_builders.prepare(name, manual_dir=str(manual), data_dir=str(tmp_path / "tfds"))
    back = tfds_builders.load_prepared(name, data_dir=str(tmp_path / "tfds"))
    ref = DATASETS.get(name)(reader_cfg)
    assert back.task == ref.task and back.num_classes == ref.num_classes
    for split, s in ref.splits.items():
      b = back.splits[split]
      np.testing.assert_array_equal(b.labels, s.labels)
      np.testing.assert_array_equal(b.ids, s.ids)
      np.testing.assert_array_equal(b.groups, s.groups)
      for m in s.features:
        np.testing.assert_array_equal(b.features[m], s.features[m])
        np.testing.assert_array_equal(b.masks[m], s.masks[m])
      for k in tfds_builders.MmfuseSentiment.builder_configs[name].extras:
        np.testing.assert_allclose(b.extras[k], s.extras[k])
    validate_dataset(back)
  if importlib.util.find_spec("tensorflow") is None:
    assert "tensorflow" not in sys.modules  # built and read back with numpy only
