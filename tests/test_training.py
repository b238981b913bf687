"""End-to-end training: learning, multi-device equivalence, resume, seeds, selection."""

import json
import os

import numpy as np
import pytest

from mmfuse_jax.training import checkpoint as checkpoint_lib
from mmfuse_jax.training.evaluation import evaluate_split
from mmfuse_jax.training.loop import train_and_evaluate, train_seeds
from tests.helpers import tiny_config, tiny_synthetic

FAST_MULT = {"net.d_model": 16, "net.num_heads": 2, "net.num_layers": 1,
             "net.embed_dropout": 0.0, "net.res_dropout": 0.0, "net.relu_dropout": 0.0,
             "net.attn_dropout": 0.0, "optim.lr": 1e-2, "optim.schedule": "constant"}
TIMING_KEYS = ("wall_time_s", "compile_s", "train_steps_per_s")


def _strip(results):
  return {k: v for k, v in results.items() if k not in TIMING_KEYS and k != "config"}


def test_mult_learns_on_synthetic(workdir):
  ds = tiny_synthetic(0, n_train=512, n_valid=128, n_test=128, distractors=1, noise=0.5)
  label_mean_mae = float(np.mean(np.abs(ds.splits["test"].labels - ds.splits["train"].labels.mean())))
  c = tiny_config("mult", epochs=12, **FAST_MULT)
  r = train_and_evaluate(c, workdir, dataset=ds)
  assert r["test"]["mae"] < label_mean_mae - 0.3, (r["test"]["mae"], label_mean_mae)
  assert r["test"]["acc2_has0"] > 0.75
  files = os.listdir(workdir)
  for name in ("results.json", "config.json", "metrics.jsonl", "checkpoints", "tensorboard"):
    assert name in files
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [row["epoch"] for row in rows] == list(range(1, 13))
  # The selected epoch is the one with the best validation MAE, never chosen on test.
  best = min(rows, key=lambda row: row["valid"]["mae"])
  assert r["selected_epoch"] == best["epoch"]
  assert r["valid"]["mae"] == pytest.approx(best["valid"]["mae"], rel=1e-5)


def test_eight_devices_match_one_device(tmp_path):
  ds = tiny_synthetic(1, n_train=128, n_valid=64, n_test=64, modalities=("text", "audio"))
  runs = {}
  for n in (1, 8):
    c = tiny_config("mult", epochs=2, num_devices=n, batch_size=32, eval_batch_size=64,
                    **{"net.d_model": 8, "net.num_heads": 2, "net.num_layers": 1})
    runs[n] = train_and_evaluate(c, str(tmp_path / f"dev{n}"), dataset=ds)
  assert runs[8]["num_devices"] == 8
  assert runs[1]["selected_epoch"] == runs[8]["selected_epoch"]
  for split in ("valid", "test"):
    for k, v in runs[1][split].items():
      assert runs[8][split][k] == pytest.approx(v, rel=1e-4, abs=1e-5), (split, k)


def test_resume_after_interrupt_gives_same_results(tmp_path, monkeypatch):
  ds = tiny_synthetic(2, n_train=96, n_valid=32, n_test=32, modalities=("text", "audio"))
  c = tiny_config("mult", epochs=4, **{"net.d_model": 8, "net.num_heads": 2,
                                       "net.num_layers": 1, "optim.schedule": "plateau",
                                       "optim.plateau_patience": 0})
  full = train_and_evaluate(c, str(tmp_path / "full"), dataset=ds)

  original = checkpoint_lib.Checkpoints.save_latest
  calls = {"n": 0}

  def crash_after_two(self, step, state, meta):
    original(self, step, state, meta)
    calls["n"] += 1
    if calls["n"] == 2:
      raise KeyboardInterrupt("simulated kill")

  monkeypatch.setattr(checkpoint_lib.Checkpoints, "save_latest", crash_after_two)
  work = str(tmp_path / "interrupted")
  with pytest.raises(KeyboardInterrupt):
    train_and_evaluate(c, work, dataset=ds)
  assert not os.path.exists(os.path.join(work, "results.json"))
  monkeypatch.setattr(checkpoint_lib.Checkpoints, "save_latest", original)
  resumed = train_and_evaluate(c, work, dataset=ds)
  assert _strip(resumed) == _strip(full)
  rows = [json.loads(l) for l in open(os.path.join(work, "metrics.jsonl"))]
  assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
  # A finished workdir returns its results without training again.
  assert train_and_evaluate(c, work, dataset=ds) == resumed


def test_seeds_summary(tmp_path):
  ds = tiny_synthetic(3, n_train=64, n_valid=32, n_test=32, modalities=("text", "audio"))
  c = tiny_config("mult", epochs=1, **{"net.d_model": 8, "net.num_heads": 2, "net.num_layers": 1})
  summary = train_seeds(c, str(tmp_path), [1, 2], dataset=ds)
  assert summary["seeds"] == [1, 2]
  values = summary["test"]["mae"]["values"]
  assert len(values) == 2 and values[0] != values[1]
  assert summary["test"]["mae"]["mean"] == pytest.approx(np.mean(values))
  assert os.path.exists(tmp_path / "summary.json")
  assert os.path.exists(tmp_path / "seed_2" / "results.json")


def test_epoch_observer_sees_each_epoch_and_changes_nothing(tmp_path):
  """The observer (reproduction scripts' per-epoch test trajectories) is called once per
  epoch with the epoch's state; the selected epoch's test metrics it saw are the ones the
  run reports, and a run without it gives identical results."""
  ds = tiny_synthetic(4, n_train=96, n_valid=32, n_test=32, modalities=("text", "audio"))
  c = tiny_config("mult", epochs=3, **{"net.d_model": 8, "net.num_heads": 2,
                                       "net.num_layers": 1, "optim.lr": 1e-2})
  seen = {}

  def observe(epoch, exp, state):
    seen[epoch] = evaluate_split(exp, state, exp.dataset.splits["test"])

  # through train_seeds, which makes each seed's observer with epoch_observer_for
  summary = train_seeds(c, str(tmp_path / "observed"), [c.seed], dataset=ds,
                        epoch_observer_for=lambda seed: observe)
  with open(tmp_path / "observed" / f"seed_{c.seed}" / "results.json") as f:
    observed = json.load(f)
  plain = train_and_evaluate(c, str(tmp_path / "plain"), dataset=ds)
  assert summary["selected_epochs"] == [observed["selected_epoch"]]
  assert sorted(seen) == [1, 2, 3]
  assert _strip(observed) == _strip(plain)
  at_selected = seen[observed["selected_epoch"]]
  for k, v in observed["test"].items():
    assert at_selected[k] == pytest.approx(v, rel=1e-6, abs=1e-7), k
  assert len({round(m["mae"], 6) for m in seen.values()}) > 1   # the epochs differ
