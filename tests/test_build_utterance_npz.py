"""scripts/build_utterance_npz.py: a round trip through a bc-LSTM data/ folder.

The fake folder is written from the published npz (its features, transcripts, segment ids,
poria split and binary labels), with the rows of every csv shuffled, so the script has to
follow transcripts.csv and the text_{train,test}.csv index files to put them back in
place. Labels, folds and intervals come from the real SDK .csd and folds files.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil

import h5py
import numpy as np
import pytest

from tests.helpers import load_script, real_mosi_dir

MOSI_DIR = real_mosi_dir()
pytestmark = pytest.mark.skipif(
    MOSI_DIR is None, reason="real utterance-level MOSI files not found (set MMFUSE_MOSI_DIR "
    "to the folder holding mosi_utterance_real.npz and CMU_MOSI_Opinion_Labels.csd)")

FEATURES = (("text", "text_cnn"), ("audio", "audio_opensmile"), ("video", "video_3dcnn"))


def _write_csv(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="", encoding="utf-8") as f:
    csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)


def _fake_bclstm_dir(root, real) -> str:
  """A bc-LSTM data/ folder holding the published npz's rows, every file shuffled."""
  rng = np.random.default_rng(0)
  data = os.path.join(root, "data")
  n = len(real["segment_id"])
  transcript_order = rng.permutation(n)                     # npz row of each transcripts row
  row_in_transcripts = np.argsort(transcript_order)
  _write_csv(os.path.join(data, "transcripts.csv"),
             [[real["segment_id"][i], real["transcript"][i], "7",
               str(real["label_binary_poria"][i])] for i in transcript_order])
  for split in ("train", "test"):
    rows = rng.permutation(np.nonzero(real["split_poria"] == split)[0])
    _write_csv(os.path.join(data, f"text_{split}.csv"),
               [[str(row_in_transcripts[i])] + [repr(float(v)) for v in real["text_cnn"][i]]
                for i in rows])
    for folder, key in FEATURES:
      _write_csv(os.path.join(data, folder, f"{folder}_{split}0.csv"),
                 [[repr(float(v)) for v in real[key][i]] + [str(real["label_binary_poria"][i])]
                  for i in rows])
  return data


def _args(data, out):
  return [f"--bclstm_dir={data}",
          f"--labels_csd={os.path.join(MOSI_DIR, 'CMU_MOSI_Opinion_Labels.csd')}",
          f"--folds={os.path.join(MOSI_DIR, 'standard_folds_mosi_mosei.json')}", f"--out={out}"]


@pytest.fixture(scope="module")
def real():
  with np.load(os.path.join(MOSI_DIR, "mosi_utterance_real.npz"), allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def fake_data(real, tmp_path_factory):
  return _fake_bclstm_dir(str(tmp_path_factory.mktemp("bclstm")), real)


def test_round_trip_gives_the_published_npz(tmp_path, real, fake_data, capsys):
  script = load_script("build_utterance_npz")
  data = fake_data
  out = str(tmp_path / "out" / "mosi_utterance_real.npz")
  assert script.main(_args(data, out)) == 0
  printed = capsys.readouterr().out
  with np.load(out, allow_pickle=False) as z:
    built = {k: z[k] for k in z.files}
  assert list(built) == list(real)                          # same keys, same order
  for key in real:
    assert built[key].dtype == real[key].dtype, key
    assert built[key].shape == real[key].shape, key
    if key in ("start", "end"):
      continue                                              # .csd intervals (module doc)
    if key == "label":
      np.testing.assert_allclose(built[key], real[key], rtol=0, atol=np.finfo(np.float32).eps)
    else:
      np.testing.assert_array_equal(built[key], real[key], err_msg=key)
  # start/end are the .csd intervals of each segment, read here with h5py directly
  with h5py.File(os.path.join(MOSI_DIR, "CMU_MOSI_Opinion_Labels.csd"), "r") as f:
    group = f["Opinion Segment Labels"]["data"]
    for i in (0, 700, len(real["segment_id"]) - 1):
      interval = group[real["video_id"][i]]["intervals"][real["segment_index"][i] - 1]
      assert (built["start"][i], built["end"][i]) == tuple(np.float32(interval))
  assert "2199 rows, 93 videos" in printed
  assert "split_poria: train 1447 rows / 62 videos, test 752 rows / 31 videos" in printed
  sha = [line.split()[1] for line in printed.splitlines() if line.startswith("sha256 ")]
  assert sha == [hashlib.sha256(open(out, "rb").read()).hexdigest()]
  # an existing --out is kept unless --force
  before = os.path.getmtime(out)
  assert script.main(_args(data, out)) == 2
  assert "exists; pass --force" in capsys.readouterr().err
  assert os.path.getmtime(out) == before


def test_malformed_csv_names_file_and_row(tmp_path, fake_data, capsys):
  script = load_script("build_utterance_npz")
  data = shutil.copytree(fake_data, str(tmp_path / "data"))
  path = os.path.join(data, "audio", "audio_train0.csv")
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  rows[5] = rows[5][:-2] + rows[5][-1:]                     # one feature value short
  _write_csv(path, rows)
  out = str(tmp_path / "out.npz")
  assert script.main(_args(data, out)) == 2
  err = capsys.readouterr().err
  assert f"{path}: row 5 (line 6) has 73 values; expected 74" in err
  assert not os.path.exists(out)
