"""Build `mosi_utterance_real.npz` (utterance-level CMU-MOSI) from its public sources.

  python scripts/build_utterance_npz.py \
      --bclstm_dir ~/src/contextual-utterance-level-multimodal-sentiment-analysis/data \
      --labels_csd ~/data/cmu_mosi_csd/CMU_MOSI_Opinion_Labels.csd \
      --folds ~/data/cmu_mosi_csd/standard_folds_mosi_mosei.json \
      --out ~/data/mosi-utterance/mosi_utterance_real.npz [--force]

Sources (docs/data.md, "Get the data"):
- --bclstm_dir: the `data/` folder of the bc-LSTM repository (Poria et al. 2017,
  declare-lab/contextual-utterance-level-multimodal-sentiment-analysis on GitHub):
    transcripts.csv                         segment id `<video>_<index>`, transcript, ...
    text_train.csv, text_test.csv           first value of row i: 0-based row of transcripts.csv
    text/text_{train,test}0.csv             100 text-CNN values, then the binary label
    audio/audio_{train,test}0.csv           73 openSMILE values, then the binary label
    video/video_{train,test}0.csv           100 3D-CNN values, then the binary label
  Row i of each `*_train0.csv` is the utterance named by row i of `text_train.csv` (the
  same for test). The train/test file a segment comes from is its `split_poria`.
- --labels_csd: the CMU Multimodal SDK's `CMU_MOSI_Opinion_Labels.csd` (HDF5): per video,
  one (sentiment, [start, end]) row per segment. Row r (0-based, in the file's order) of
  video v is segment `v_{r+1}`: with this mapping all 2199 labels equal those of the
  published npz (two videos, VbQk4H8hgr0 and d6hH302o4v8, list a few segments out of time
  order; the file order matches, sorting by start time would change 42 labels).
- --folds: the SDK's standard folds JSON (`standard_folds_mosi_mosei.json`, its 'mosi'
  entry is used): `split_standard` of each segment is the fold of its video.

Readings of the layout (the simplest where the description leaves room):
- every csv is plain comma-separated text with optional double quotes and no header line;
- transcripts.csv: column 0 is the segment id, column 1 the transcript, further columns
  (the public file has two more) are ignored; `<index>` is the digits after the last '_'
  (video ids may contain '_');
- text_{train,test}.csv: only the first value of a row is read (the public file repeats the
  text features after it);
- feature files: exactly D + 1 values per row (D = 100 / 73 / 100), all numbers, the last
  one 0 or 1 and the same in the three modality files. That binary label is not stored:
  `label_binary_poria` is `label >= 0` of the SDK label (the summary counts rows where the
  two differ);
- every row of transcripts.csv must be named by exactly one row of text_train.csv or
  text_test.csv, and every segment must have a .csd row and a fold.
A file that does not fit stops the script with an error naming the file, the row
(0-based, and its line number) and what was expected.

Output: one row per segment, sorted by (video, segment index), with the keys, dtypes and
order of the published file: segment_id, video_id, segment_index (int32), start, end
(float32), transcript, label (float32), label_binary_poria (int8), split_standard,
split_poria, text_cnn (N, 100), audio_opensmile (N, 73), video_3dcnn (N, 100) (float32).
`start` / `end` are the segment's .csd interval. The published npz took its start/end
from another source: they equal the .csd intervals in none of the 2199 rows, both lie
within 0.1 s of them in 63 rows, and the median difference is 0.29 s for start and 0.28 s
for end (max 6.9 s). No model or reader uses them. The file is written deterministically
(fixed zip timestamps), so the same inputs give the same sha256; an existing --out is kept
unless --force.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import zipfile

import numpy as np

from mmfuse_jax.data.csd import read_csd, read_folds
from mmfuse_jax.errors import DataError

# modality folder -> (output key, number of feature values before the label column)
MODALITIES = (("text", "text_cnn", 100), ("audio", "audio_opensmile", 73),
              ("video", "video_3dcnn", 100))
SPLITS = ("train", "test")
KEY_ORDER = ("segment_id", "video_id", "segment_index", "start", "end", "transcript", "label",
             "label_binary_poria", "split_standard", "split_poria", "text_cnn",
             "audio_opensmile", "video_3dcnn")


def _read_rows(path: str):
  """[(row, line, values)] of a header-less csv file; a clear error when it is missing."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found (expected in the bc-LSTM data/ folder)")
  try:
    with open(path, newline="", encoding="utf-8") as f:
      reader = csv.reader(f)
      rows = []
      for values in reader:
        rows.append((len(rows), reader.line_num, values))
  except (UnicodeDecodeError, csv.Error) as e:
    raise DataError(f"{path}: not a readable csv file ({e})") from None
  return rows


def _where(path: str, row: int, line: int) -> str:
  return f"{path}: row {row} (line {line})"


def read_transcripts(path: str):
  """[(segment_id, video, index, transcript)] in file order."""
  out, seen = [], {}
  for row, line, values in _read_rows(path):
    if len(values) < 2:
      raise DataError(f"{_where(path, row, line)} has {len(values)} value(s); expected at "
                      f"least 2: segment id '<video>_<index>', transcript")
    segment_id, transcript = values[0].strip(), values[1]
    video, sep, index = segment_id.rpartition("_")
    if not sep or not video or not index.isdigit():
      raise DataError(f"{_where(path, row, line)}: segment id {segment_id!r} is not "
                      f"'<video>_<index>' with an integer index")
    if segment_id in seen:
      raise DataError(f"{_where(path, row, line)}: segment id {segment_id!r} already on row "
                      f"{seen[segment_id]}")
    seen[segment_id] = row
    out.append((segment_id, video, int(index), transcript))
  if not out:
    raise DataError(f"{path}: no rows; expected one row per segment")
  return out


def read_index(path: str, n_transcripts: int, transcripts_path: str) -> list[int]:
  """The first value of each row: a 0-based row of transcripts.csv."""
  out = []
  for row, line, values in _read_rows(path):
    first = values[0].strip() if values else ""
    if not first.isdigit() or int(first) >= n_transcripts:
      raise DataError(f"{_where(path, row, line)}: first value {first!r} should be a 0-based "
                      f"row of {transcripts_path} (an integer in [0, {n_transcripts}))")
    out.append(int(first))
  return out


def read_features(path: str, dim: int, n_rows: int, index_path: str) -> tuple[np.ndarray,
                                                                              np.ndarray]:
  """(features (n, dim) float32, binary labels (n,) int8) of one `<modality>_<split>0.csv`."""
  rows = _read_rows(path)
  if len(rows) != n_rows:
    raise DataError(f"{path}: {len(rows)} rows; expected {n_rows}, one per row of "
                    f"{index_path}")
  values = np.empty((n_rows, dim + 1), np.float64)
  for row, line, v in rows:
    if len(v) != dim + 1:
      raise DataError(f"{_where(path, row, line)} has {len(v)} values; expected {dim + 1} "
                      f"({dim} features, then the binary label)")
    try:
      values[row] = [float(x) for x in v]
    except ValueError as e:
      raise DataError(f"{_where(path, row, line)}: not a number ({e}); expected {dim + 1} "
                      f"numbers") from None
    if values[row, -1] not in (0.0, 1.0):
      raise DataError(f"{_where(path, row, line)}: last value {v[-1]!r} should be the binary "
                      f"label 0 or 1")
  return values[:, :dim].astype(np.float32), values[:, -1].astype(np.int8)


def build(bclstm_dir: str, labels_csd: str, folds_path: str) -> tuple[dict[str, np.ndarray],
                                                                      dict]:
  """(arrays in KEY_ORDER, facts for the summary) built from the three sources."""
  transcripts_path = os.path.join(bclstm_dir, "transcripts.csv")
  transcripts = read_transcripts(transcripts_path)
  split_of = {}                                    # transcripts row -> (split, csv row)
  feats = {key: [None] * len(transcripts) for _, key, _ in MODALITIES}
  binary_csv = np.full(len(transcripts), -1, np.int8)
  for split in SPLITS:
    index_path = os.path.join(bclstm_dir, f"text_{split}.csv")
    index = read_index(index_path, len(transcripts), transcripts_path)
    for row, t in enumerate(index):
      if t in split_of:
        raise DataError(f"{index_path}: row {row} names row {t} of {transcripts_path} "
                        f"({transcripts[t][0]}), already named by row {split_of[t][1]} of "
                        f"text_{split_of[t][0]}.csv; expected each segment once")
      split_of[t] = (split, row)
    for folder, key, dim in MODALITIES:
      path = os.path.join(bclstm_dir, folder, f"{folder}_{split}0.csv")
      x, binary = read_features(path, dim, len(index), index_path)
      for row, t in enumerate(index):
        feats[key][t] = x[row]
        if binary_csv[t] >= 0 and binary_csv[t] != binary[row]:
          raise DataError(f"{path}: row {row} has binary label {binary[row]} but the other "
                          f"modalities' files give {binary_csv[t]} for {transcripts[t][0]}")
        binary_csv[t] = binary[row]
  missing = [transcripts[t][0] for t in range(len(transcripts)) if t not in split_of]
  if missing:
    raise DataError(f"{transcripts_path}: {len(missing)} segment(s) named by neither "
                    f"text_train.csv nor text_test.csv, e.g. {missing[:5]}; expected every "
                    f"row in one of them")

  labels = read_csd(labels_csd)
  folds = read_folds(folds_path, videos=list(labels))
  fold_of = {}
  for split, videos in folds.items():
    for v in videos:
      fold_of.setdefault(v, split)
  order = sorted(range(len(transcripts)), key=lambda t: (transcripts[t][1], transcripts[t][2]))
  columns = {k: [] for k in KEY_ORDER}
  used = set()
  for t in order:
    segment_id, video, index, transcript = transcripts[t]
    if video not in labels:
      raise DataError(f"{labels_csd}: no video {video!r} (segment {segment_id}, row {t} of "
                      f"{transcripts_path}); expected one label row per segment")
    y, intervals = labels[video]
    if not 1 <= index <= len(y):
      raise DataError(f"{labels_csd}: video {video!r} has {len(y)} segment rows, so no "
                      f"segment index {index} (segment {segment_id}, row {t} of "
                      f"{transcripts_path}); expected indices 1..{len(y)}")
    if video not in fold_of:
      raise DataError(f"{folds_path}: video {video!r} (segment {segment_id}) is in no fold; "
                      f"expected it in one of train/valid/test")
    used.add((video, index))
    columns["segment_id"].append(segment_id)
    columns["video_id"].append(video)
    columns["segment_index"].append(index)
    columns["start"].append(intervals[index - 1, 0])
    columns["end"].append(intervals[index - 1, 1])
    columns["transcript"].append(transcript)
    columns["label"].append(y[index - 1, 0])
    columns["split_standard"].append(fold_of[video])
    columns["split_poria"].append(split_of[t][0])
    for _, key, _ in MODALITIES:
      columns[key].append(feats[key][t])
  label = np.array(columns["label"], np.float32)
  arrays = {
      "segment_id": np.array(columns["segment_id"]),
      "video_id": np.array(columns["video_id"]),
      "segment_index": np.array(columns["segment_index"], np.int32),
      "start": np.array(columns["start"], np.float32),
      "end": np.array(columns["end"], np.float32),
      "transcript": np.array(columns["transcript"]),
      "label": label,
      "label_binary_poria": (label >= 0).astype(np.int8),
      "split_standard": np.array(columns["split_standard"]),
      "split_poria": np.array(columns["split_poria"]),
  }
  for _, key, dim in MODALITIES:
    arrays[key] = np.stack(columns[key]).astype(np.float32).reshape(-1, dim)
  facts = {
      "csd_segments_without_features": sum(len(y) for y, _ in labels.values()) - len(used),
      "csv_binary_differs": int(np.sum(binary_csv[order] != arrays["label_binary_poria"])),
  }
  return {k: arrays[k] for k in KEY_ORDER}, facts


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  """np.savez_compressed's format with fixed timestamps (same arrays, same bytes), written
  to a temporary file first so that a failure leaves no partial --out."""
  tmp = path + ".tmp"
  with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
    for key, value in arrays.items():
      info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      with zf.open(info, "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.ascontiguousarray(value), allow_pickle=False)
  os.replace(tmp, path)


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def summary(arrays: dict[str, np.ndarray], facts: dict, out: str) -> str:
  """Rows, videos, split sizes (rows / videos), label range and the sha256 of `out`."""
  lines = [f"wrote {out}: {len(arrays['segment_id'])} rows, "
           f"{len(np.unique(arrays['video_id']))} videos, label in "
           f"[{arrays['label'].min():.2f}, {arrays['label'].max():.2f}]"]
  for key, names in (("split_standard", ("train", "valid", "test")),
                     ("split_poria", ("train", "test"))):
    parts = [f"{name} {np.sum(arrays[key] == name)} rows / "
             f"{len(np.unique(arrays['video_id'][arrays[key] == name]))} videos"
             for name in names]
    lines.append(f"{key}: " + ", ".join(parts))
  lines.append(f"bc-LSTM binary label != (label >= 0): {facts['csv_binary_differs']} rows; "
               f".csd segments without bc-LSTM features: "
               f"{facts['csd_segments_without_features']}")
  lines.append(f"sha256 {sha256(out)}")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--bclstm_dir", required=True, help="the bc-LSTM repository's data/ folder")
  p.add_argument("--labels_csd", required=True, help="CMU_MOSI_Opinion_Labels.csd")
  p.add_argument("--folds", required=True, help="standard_folds_mosi_mosei.json")
  p.add_argument("--out", required=True, help="the npz to write")
  p.add_argument("--force", action="store_true", help="overwrite an existing --out")
  args = p.parse_args(argv)
  bclstm_dir, labels_csd, folds, out = (os.path.expanduser(a) for a in
                                        (args.bclstm_dir, args.labels_csd, args.folds, args.out))
  try:
    if os.path.exists(out) and not args.force:
      raise DataError(f"{out} exists; pass --force to overwrite it")
    if not os.path.isdir(bclstm_dir):
      raise DataError(f"--bclstm_dir {bclstm_dir}: not a folder (expected the bc-LSTM "
                      f"repository's data/ folder)")
    arrays, facts = build(bclstm_dir, labels_csd, folds)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_npz(out, arrays)
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(summary(arrays, facts, out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
