"""Readers read only the modalities asked for (--data.modalities), and models that need more
say so by name: tiny MulT / MMSA pickles and utterance npz files written in tmp_path with
some modality keys removed."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mmfuse_jax import config as config_lib
from mmfuse_jax.catalog import MODELS
from mmfuse_jax.data import load_dataset
from mmfuse_jax.errors import ConfigError, DataError
from mmfuse_jax.models.base import check_model_modalities
from mmfuse_jax.training.experiment import build_experiment
from tests.test_data_readers import cfg, write_mmsa, write_mult, write_utterance_npz


def drop_keys(path, *keys):
  """Rewrites a pickle written by the readers' tests without `keys` in every split."""
  with open(path, "rb") as f:
    data = pickle.load(f)
  for split in data.values():
    for k in keys:
      split.pop(k, None)
  with open(path, "wb") as f:
    pickle.dump(data, f)
  return data


def test_mult_text_only_pickle_loads_with_text(tmp_path):
  raw, valid = write_mult(tmp_path / "mosi_data_noalign.pkl")
  drop_keys(tmp_path / "mosi_data_noalign.pkl", "audio", "vision")
  ds, _ = load_dataset(cfg("mosi", tmp_path, modalities="text"), standardize_features=False)
  assert ds.modalities == ("text",)
  s = ds.splits["train"]
  np.testing.assert_array_equal(s.features["text"], raw["train"]["text"])
  np.testing.assert_array_equal(s.masks["text"].sum(1), valid["train"]["text"])


def test_mult_text_audio_pickle_and_missing_modality_message(tmp_path):
  raw, _ = write_mult(tmp_path / "mosi_data_noalign.pkl")
  drop_keys(tmp_path / "mosi_data_noalign.pkl", "vision")
  ds, _ = load_dataset(cfg("mosi", tmp_path, modalities="text,audio"),
                       standardize_features=False)
  assert ds.modalities == ("text", "audio")
  np.testing.assert_array_equal(ds.splits["test"].features["audio"], raw["test"]["audio"])
  with pytest.raises(DataError) as e:  # all three asked for: name what is there
    load_dataset(cfg("mosi", tmp_path))
  msg = str(e.value)
  assert "missing key 'vision' for modality 'vision'" in msg
  assert "--data.modalities=text,audio" in msg and "mosi_data_noalign.pkl" in msg


def test_mmsa_text_only_and_audio_only(tmp_path):
  path = tmp_path / "unaligned_50.pkl"
  raw, text_len = write_mmsa(path)
  drop_keys(path, "audio", "vision", "audio_lengths", "vision_lengths")
  ds, _ = load_dataset(cfg("mosi_mmsa", tmp_path, modalities="text"),
                       standardize_features=False)
  assert ds.modalities == ("text",)
  np.testing.assert_array_equal(ds.splits["valid"].masks["text"].sum(1), text_len["valid"])
  assert "text_bert" in ds.splits["valid"].extras
  with pytest.raises(DataError, match="pass --data.modalities=text"):
    load_dataset(cfg("mosi_mmsa", tmp_path, modalities="text,audio"))


def test_mmsa_aligned_audio_only_keeps_text_mask(tmp_path):
  """Aligned MMSA audio, read alone, still takes the word mask from text_bert."""
  path = tmp_path / "aligned_50.pkl"
  raw, text_len = write_mmsa(path, aligned=True)
  drop_keys(path, "vision")
  ds, _ = load_dataset(cfg("mosi_mmsa", tmp_path, modalities="audio"),
                       standardize_features=False)
  assert ds.modalities == ("audio",)
  s = ds.splits["train"]
  np.testing.assert_array_equal(s.masks["audio"].sum(1), text_len["train"])
  assert ds.info["mask_rule"] == {"audio": "text mask (word-aligned)"}
  assert "text_bert" not in s.extras


def test_utterance_npz_without_vision_key(tmp_path):
  arrays = write_utterance_npz(tmp_path / "mosi_utterance_real.npz")
  np.savez(tmp_path / "mosi_utterance_real.npz",
           **{k: v for k, v in arrays.items() if k != "video_3dcnn"})
  ds, _ = load_dataset(cfg("mosi_utterance", tmp_path, modalities="text,audio"))
  assert ds.modalities == ("text", "audio")
  with pytest.raises(DataError, match="video_3dcnn"):
    load_dataset(cfg("mosi_utterance", tmp_path))


def test_config_rejects_unknown_or_repeated_modalities():
  for bad in ("txt", "text,text", ""):
    c = config_lib.get_config("tfn", preset=False)
    c.data.modalities = bad
    with pytest.raises(ConfigError, match="data.modalities"):
      config_lib.validate_config(c)


@pytest.mark.parametrize("model, mods, need", [
    ("mult", ("text",), "at least 2 modalities"),
    ("mica", ("audio",), "at least 2 modalities"),
    ("mcer", ("text", "audio"), "all of text, audio, vision"),
])
def test_models_that_need_more_modalities_say_so(model, mods, need):
  with pytest.raises(ConfigError) as e:
    check_model_modalities(MODELS.get(model), mods)
  assert f"model {model!r} needs {need}" in str(e.value)
  assert "--data.modalities=" + ",".join(mods) in str(e.value)


def test_single_modality_models_accept_one():
  for model in ("tfn", "lmf", "ef_lstm", "mfn", "rerd"):
    check_model_modalities(MODELS.get(model), ("text",))
  check_model_modalities(MODELS.get("mult"), ("text", "audio"))


def test_build_experiment_checks_before_reading(tmp_path):
  """The model's need is reported before any file is looked for (data_dir is empty)."""
  c = config_lib.get_config("mult", "mosi", preset=False)
  c.data_dir = str(tmp_path)
  c.data.modalities = "text"
  with pytest.raises(ConfigError, match="model 'mult' needs at least 2"):
    build_experiment(c)
