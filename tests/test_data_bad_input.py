"""Bad input gives one clear DataError naming the file, split, key/modality and expected
shape, through the readers, `load_dataset` and the CLI (exit 2, one 'error:' line)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mmfuse_jax.data import load_dataset
from mmfuse_jax.data.csd import read_csd
from mmfuse_jax.errors import ConfigError, DataError
from tests.test_data_readers import (cfg, write_csd, write_mmsa, write_mult,
                                     write_utterance_npz)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dump(path, data):
  with open(path, "wb") as f:
    pickle.dump(data, f)


def _mult(tmp_path, name="mosi_data_noalign.pkl", **kw):
  raw, _ = write_mult(tmp_path / name, **kw)
  return raw


# ----------------------------------------------------------------------------- missing things

def test_missing_file_lists_what_was_looked_for(tmp_path):
  with pytest.raises(DataError) as e:
    load_dataset(cfg("mosi", tmp_path / "nowhere"))
  msg = str(e.value)
  assert "mosi_data_noalign.pkl" in msg and "mosi_data.pkl" in msg and "does not exist" in msg
  with pytest.raises(DataError, match="holds none of them"):
    load_dataset(cfg("mosei", tmp_path))
  with pytest.raises(DataError, match="--data_dir"):
    load_dataset(cfg("mosi", ""))
  with pytest.raises(DataError, match="data.file 'other.pkl' not found"):
    load_dataset(cfg("mosi", tmp_path, file="other.pkl"))
  with pytest.raises(DataError, match=r"Processed.*unaligned_39\.pkl|unaligned_39\.pkl"):
    load_dataset(cfg("sims", tmp_path))
  with pytest.raises(DataError, match="mosi_utterance_real.npz"):
    load_dataset(cfg("mosi_utterance", tmp_path))


def test_missing_key_lists_keys_found(tmp_path):
  raw = _mult(tmp_path)
  del raw["valid"]["vision"]
  _dump(tmp_path / "mosi_data_noalign.pkl", raw)
  with pytest.raises(DataError) as e:
    load_dataset(cfg("mosi", tmp_path))
  msg = str(e.value)
  assert "mosi_data_noalign.pkl" in msg and "split 'valid'" in msg and "'vision'" in msg
  assert "keys found: ['audio', 'id', 'labels', 'text']" in msg


def test_missing_split_lists_keys(tmp_path):
  raw = _mult(tmp_path)
  del raw["test"]
  _dump(tmp_path / "mosi_data_noalign.pkl", raw)
  with pytest.raises(DataError, match=r"missing split 'test'; keys found: \['train', 'valid'\]"):
    load_dataset(cfg("mosi", tmp_path))


def test_mmsa_missing_label_key(tmp_path):
  raw, _ = write_mmsa(tmp_path / "unaligned_50.pkl")
  del raw["train"]["regression_labels"]
  _dump(tmp_path / "unaligned_50.pkl", raw)
  with pytest.raises(DataError, match=r"split 'train' is missing key 'regression_labels'.*"
                                      r"label_key.*keys found"):
    load_dataset(cfg("mosi_mmsa", tmp_path))


# ----------------------------------------------------------------------------- wrong shapes

def test_wrong_feature_dim_across_splits(tmp_path):
  raw = _mult(tmp_path)
  raw["valid"]["audio"] = np.ones((5, 8, 9), np.float32)
  _dump(tmp_path / "mosi_data_noalign.pkl", raw)
  with pytest.raises(DataError) as e:
    load_dataset(cfg("mosi", tmp_path))
  msg = str(e.value)
  assert "mosi_data_noalign.pkl" in msg and "split 'valid' key 'audio'" in msg
  assert "feature dimension 9 but split 'train' has 4" in msg and "(N, T, 4)" in msg


def test_wrong_rank_and_count(tmp_path):
  raw = _mult(tmp_path)
  raw["train"]["text"] = np.ones((12, 6), np.float32)
  _dump(tmp_path / "mosi_data_noalign.pkl", raw)
  with pytest.raises(DataError, match=r"split 'train' key 'text' has shape \(12, 6\); "
                                      r"expected \(N, T, D\)"):
    load_dataset(cfg("mosi", tmp_path))
  raw = _mult(tmp_path)
  raw["test"]["vision"] = raw["test"]["vision"][:4]
  _dump(tmp_path / "mosi_data_noalign.pkl", raw)
  with pytest.raises(DataError, match="split 'test' key 'vision' has 4 samples but the labels "
                                      "have 6"):
    load_dataset(cfg("mosi", tmp_path))


def test_iemocap_label_shape(tmp_path):
  raw = _mult(tmp_path, "iemocap_data_noalign.pkl", iemocap=True)
  raw["train"]["labels"] = np.zeros((12, 6, 2), np.float32)
  _dump(tmp_path / "iemocap_data_noalign.pkl", raw)
  with pytest.raises(DataError, match=r"key 'labels' has shape \(12, 6, 2\); IEMOCAP expects "
                                      r"\(N, 4, 2\)"):
    load_dataset(cfg("iemocap", tmp_path))


def test_mmsa_text_bert_shape(tmp_path):
  raw, _ = write_mmsa(tmp_path / "unaligned_50.pkl")
  raw["valid"]["text_bert"] = raw["valid"]["text_bert"][:, :2]
  _dump(tmp_path / "unaligned_50.pkl", raw)
  with pytest.raises(DataError, match=r"split 'valid' key 'text_bert' has shape \(5, 2, 7\); "
                                      r"expected \(5, 3, T\)"):
    load_dataset(cfg("mosi_mmsa", tmp_path))


def test_not_a_dict_of_splits(tmp_path):
  _dump(tmp_path / "mosi_data_noalign.pkl", [1, 2, 3])
  with pytest.raises(DataError, match="expected a dict with keys"):
    load_dataset(cfg("mosi", tmp_path))


# ----------------------------------------------------------------------------- values

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_in_features(tmp_path, bad):
  raw = _mult(tmp_path)
  raw["test"]["audio"][2, -1, 1] = bad
  _dump(tmp_path / "mosi_data_noalign.pkl", raw)
  with pytest.raises(DataError) as e:
    load_dataset(cfg("mosi", tmp_path))
  msg = str(e.value)
  assert "mosi_data_noalign.pkl" in msg and "split 'test'" in msg and "'audio'" in msg
  assert "1 NaN/inf" in msg and "nan_policy=zero" in msg
  ds, stats = load_dataset(cfg("mosi", tmp_path, nan_policy="zero"))
  assert stats["nan_replaced"]["test"] == {"audio": 1}
  assert np.isfinite(ds.splits["test"].features["audio"]).all()


def test_nan_in_mmsa_and_utterance_features(tmp_path):
  raw, _ = write_mmsa(tmp_path / "unaligned_50.pkl")
  raw["valid"]["vision"][0, 0, 0] = np.nan
  _dump(tmp_path / "unaligned_50.pkl", raw)
  with pytest.raises(DataError, match="split 'valid' modality 'vision' contains 1 NaN/inf"):
    load_dataset(cfg("mosi_mmsa", tmp_path))
  arr = write_utterance_npz(tmp_path / "mosi_utterance_real.npz", shuffle=False)
  arr["audio_opensmile"][0, 0] = np.inf  # v00 is a poria train video (train or valid)
  np.savez(tmp_path / "mosi_utterance_real.npz", **arr)
  with pytest.raises(DataError, match="modality 'audio' contains 1 NaN/inf"):
    load_dataset(cfg("mosi_utterance", tmp_path))


def test_empty_split(tmp_path):
  raw = _mult(tmp_path, sizes={"train": 6, "valid": 3, "test": 0})
  _dump(tmp_path / "mosi_data_noalign.pkl", raw)
  with pytest.raises(DataError, match=r"mosi_data_noalign\.pkl: split 'test' is empty"):
    load_dataset(cfg("mosi", tmp_path))


def test_empty_utterance_split(tmp_path):
  arr = write_utterance_npz(tmp_path / "mosi_utterance_real.npz", shuffle=False)
  arr["split_poria"] = np.full_like(arr["split_poria"], "train")
  np.savez(tmp_path / "mosi_utterance_real.npz", **arr)
  with pytest.raises(DataError, match="split 'test' .* is empty"):
    load_dataset(cfg("mosi_utterance", tmp_path))


# ----------------------------------------------------------------------------- corrupt files

def test_truncated_and_non_pickle(tmp_path):
  _mult(tmp_path)
  path = tmp_path / "mosi_data_noalign.pkl"
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(DataError, match="file is truncated or not a pickle"):
    load_dataset(cfg("mosi", tmp_path))
  path.write_text("this is a text file, not a pickle\n")
  with pytest.raises(DataError, match="file is truncated or not a pickle"):
    load_dataset(cfg("mosi", tmp_path))
  path.write_bytes(b"")
  with pytest.raises(DataError, match="file is truncated or not a pickle"):
    load_dataset(cfg("mosi", tmp_path))


def test_corrupt_npz(tmp_path):
  write_utterance_npz(tmp_path / "mosi_utterance_real.npz")
  path = tmp_path / "mosi_utterance_real.npz"
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(DataError, match="truncated|corrupt"):
    load_dataset(cfg("mosi_utterance", tmp_path))
  path.write_bytes(b"\x00garbage" * 100)
  with pytest.raises(DataError, match="truncated or not a .npz"):
    load_dataset(cfg("mosi_utterance", tmp_path))
  with open(path, "wb") as f:
    np.save(f, np.ones(3))
  with pytest.raises(DataError, match="single .npy array, expected a .npz"):
    load_dataset(cfg("mosi_utterance", tmp_path))


def test_npz_missing_key_and_bad_shape(tmp_path):
  arr = write_utterance_npz(tmp_path / "a.npz", shuffle=False)
  del arr["video_3dcnn"]
  np.savez(tmp_path / "mosi_utterance_real.npz", **arr)
  with pytest.raises(DataError, match=r"missing keys \['video_3dcnn'\]; keys found: "
                                      r"\['audio_opensmile'"):
    load_dataset(cfg("mosi_utterance", tmp_path))
  arr = write_utterance_npz(tmp_path / "a.npz", shuffle=False)
  arr["text_cnn"] = arr["text_cnn"][:10]
  np.savez(tmp_path / "mosi_utterance_real.npz", **arr)
  with pytest.raises(DataError, match=r"key 'text_cnn' has shape \(10, 10\).*expected \(60, D\)"):
    load_dataset(cfg("mosi_utterance", tmp_path))
  arr = write_utterance_npz(tmp_path / "a.npz", shuffle=False)
  arr["split_poria"] = np.where(arr["split_poria"] == "test", "heldout", arr["split_poria"])
  np.savez(tmp_path / "mosi_utterance_real.npz", **arr)
  with pytest.raises(DataError, match=r"'split_poria' has values \['heldout'\]"):
    load_dataset(cfg("mosi_utterance", tmp_path))


def test_bad_split_config(tmp_path):
  write_utterance_npz(tmp_path / "mosi_utterance_real.npz")
  with pytest.raises(ConfigError, match="'poria' or 'standard'"):
    load_dataset(cfg("mosi_utterance", tmp_path, split="random"))
  with pytest.raises(ConfigError, match="valid_fraction"):
    load_dataset(cfg("mosi_utterance", tmp_path, valid_fraction=1.5))


def test_corrupt_and_malformed_csd(tmp_path):
  path = tmp_path / "f.csd"
  path.write_bytes(b"not hdf5 at all" * 50)
  with pytest.raises(DataError, match="truncated or not an HDF5"):
    read_csd(str(path))
  write_csd(path, "Feat", {"v": (np.ones((4, 2)), np.zeros((4, 2)))})
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 3])
  with pytest.raises(DataError, match="truncated"):
    read_csd(str(path))
  with h5py.File(path, "w") as f:
    f.create_group("Feat").create_group("stuff")
  with pytest.raises(DataError, match=r"one root group holding 'data'.*'Feat': \['stuff'\]"):
    read_csd(str(path))
  with h5py.File(path, "w") as f:
    f.create_group("Feat/data/v1").create_dataset("features", data=np.ones((3, 2)))
  with pytest.raises(DataError, match=r"video 'v1' should hold 'features' and 'intervals'; "
                                      r"found \['features'\]"):
    read_csd(str(path))
  write_csd(path, "Feat", {"v": (np.ones((4, 2)), np.zeros((3, 2)))})
  with pytest.raises(DataError, match=r"'intervals' has shape \(3, 2\); expected \(4, 2\)"):
    read_csd(str(path))
  with pytest.raises(DataError, match="not found"):
    read_csd(str(tmp_path / "missing.csd"))


def test_sdk_missing_files(tmp_path):
  with pytest.raises(DataError, match="label .csd"):
    load_dataset(cfg("sdk", tmp_path))
  write_csd(tmp_path / "Labels.csd", "L", {"v": (np.ones((1, 1)), [[0, 1]])})
  with pytest.raises(DataError, match=r"modality 'text'.*--data.sdk_features"):
    load_dataset(cfg("sdk", tmp_path))


# ----------------------------------------------------------------------------- the CLI

def _cli(args, cwd):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
  return subprocess.run([sys.executable, "-m", "mmfuse_jax.train", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def _bad_dirs(tmp_path):
  (tmp_path / "corrupt").mkdir()
  (tmp_path / "corrupt" / "mosi_data_noalign.pkl").write_bytes(b"\x80\x04garbage")
  write_utterance_npz(tmp_path / "mosi_utterance_real.npz")
  return {
      "missing": (["--dataset=mosi", f"--data_dir={tmp_path / 'BAD'}"], "looked for"),
      "corrupt": (["--dataset=mosi", f"--data_dir={tmp_path / 'corrupt'}"],
                  "file is truncated or not a pickle"),
      "leakage": (["--dataset=mosi_utterance", f"--data_dir={tmp_path}",
                   "--data.split=standard"], "leak"),
  }


@pytest.mark.parametrize("case", ["missing", "corrupt", "leakage"])
def test_cli_bad_data_exits_2_with_one_error_line(tmp_path, case):
  args, expected = _bad_dirs(tmp_path)[case]
  workdir = tmp_path / "run"
  r = _cli(["--model=mult", *args, f"--workdir={workdir}", "--epochs=1", "--progress=false"],
           cwd=tmp_path)
  assert r.returncode == 2, r.stderr
  errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and expected in errors[0], r.stderr
  assert "Traceback" not in r.stderr
  assert not (workdir / "results.json").exists() and not workdir.exists()
