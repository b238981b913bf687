"""`python -m mmfuse_jax.data.check`: reports computed independently here (numpy on the arrays
written), problems named with a non-zero exit, reader errors as exit status 2."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mmfuse_jax.data.check import main, padding_side
from tests.helpers import real_mosi_dir
from tests.test_data_readers import SIZES, write_mult


def run(capsys, *args):
  rc = main(list(args))
  out = capsys.readouterr()
  return rc, out.out, out.err


def test_synthetic_report(capsys):
  rc, out, _ = run(capsys, "--dataset=synthetic", "--data.synthetic_train=40",
                   "--data.synthetic_valid=10", "--data.synthetic_test=12")
  assert rc == 0 and out.rstrip().endswith("OK")
  assert "train: 40 samples" in out and "test: 12 samples" in out
  assert "padding back" in out and "NaN/inf 0" in out


def test_mult_pickle_report_matches_numpy(tmp_path, capsys):
  raw, valid = write_mult(tmp_path / "mosi_data_noalign.pkl")
  rc, out, _ = run(capsys, "--dataset=mosi", f"--data_dir={tmp_path}")
  assert rc == 0, out
  lens = valid["valid"]["audio"]
  x = raw["valid"]["audio"]
  line = next(s for s in out.splitlines()[out.splitlines().index(
      f"valid: {SIZES['valid']} samples, 2 videos"):] if s.strip().startswith("audio"))
  assert str(x.shape) in line and "padding front" in line
  assert f"min {lens.min()} mean {lens.mean():.1f} max {lens.max()}" in line
  y = raw["test"]["labels"].ravel()
  assert f"min {y.min():.3f} mean {y.mean():.3f} max {y.max():.3f}" in out
  # a 5-sample train split differs from the public MOSI release: a warning, still exit 0
  assert "WARNING: split sizes train/valid/test (12, 5, 6) differ" in out


def test_nan_inf_named_and_policy(tmp_path, capsys):
  raw, _ = write_mult(tmp_path / "mosi_data_noalign.pkl")
  raw["train"]["audio"][0, -1, 0] = -np.inf
  raw["train"]["audio"][3, -1, :2] = np.nan
  with open(tmp_path / "mosi_data_noalign.pkl", "wb") as f:
    pickle.dump(raw, f)
  count = int((~np.isfinite(raw["train"]["audio"])).sum())
  rc, out, _ = run(capsys, "--dataset=mosi", f"--data_dir={tmp_path}")
  assert rc == 1 and out.rstrip().endswith("FAILED: 1 error(s)")
  assert (f"ERROR: split 'train' modality 'audio': {count} NaN/inf values; training stops "
          f"on them: pass --data.nan_policy=zero") in out
  rc, out, _ = run(capsys, "--dataset=mosi", f"--data_dir={tmp_path}",
                   "--data.nan_policy=zero")
  assert rc == 0 and f"WARNING: split 'train' modality 'audio': {count} NaN/inf" in out


def test_labels_out_of_range_and_missing_file(tmp_path, capsys):
  raw, _ = write_mult(tmp_path / "mosi_data_noalign.pkl")
  raw["test"]["labels"][:2] = 7.0  # e.g. labels on another scale
  with open(tmp_path / "mosi_data_noalign.pkl", "wb") as f:
    pickle.dump(raw, f)
  rc, out, _ = run(capsys, "--dataset=mosi", f"--data_dir={tmp_path}")
  assert rc == 1 and "ERROR: split 'test': 2 labels outside [-3, 3]" in out
  rc, out, err = run(capsys, "--dataset=mosei", f"--data_dir={tmp_path}")
  assert rc == 2 and "mosei_senti_data_noalign.pkl" in err and out == ""
  rc, _, err = run(capsys, f"--data_dir={tmp_path}")
  assert rc == 2 and "pass --dataset=NAME" in err and "mosi_mmsa" in err


def test_padding_side():
  m = np.array([[0, 1, 1], [1, 1, 1], [0, 0, 1]], bool)
  assert padding_side(m) == "front" and padding_side(m[:, ::-1]) == "back"
  assert padding_side(np.ones((2, 3), bool)) == "none"
  assert padding_side(np.array([[0, 1, 1], [1, 1, 0]], bool)) == "mixed"


@pytest.mark.skipif(real_mosi_dir() is None, reason="utterance-level MOSI files not present")
def test_real_utterance_standard_split_sizes(capsys):
  rc, out, _ = run(capsys, "--dataset=mosi_utterance", f"--data_dir={real_mosi_dir()}",
                   "--data.split=standard", "--data.modalities=audio")
  assert rc == 0 and "WARNING" not in out
  assert "train: 1284 samples, 52 videos" in out and "test: 686 samples, 31 videos" in out
