"""`python -m mmfuse_jax.train --model=X` with no other flag trains X on its built-in
synthetic dataset with its synthetic preset; every registered model must learn there.

The full no-flag runs take 20 s to 4 min each on a 2-core CPU (scripts/check_defaults.py,
README table): too long for the test suite. For the models whose defaults train fast, each
test here keeps everything of the model's
default config (`get_config(model)`: default dataset kind, paper settings, synthetic preset,
widths, optimizer, learning rate, batch size) and shortens only the data and the epochs,
on a cleaner draw of the same generator (same feature widths and sequence lengths, less
feature noise, no distractor steps) so that a few hundred sequences and a few epochs
suffice. It checks that the selected checkpoint beats the constant predictor of the train
label mean on the test split by a wide margin, which fails when a default stops learning
(a broken pooling, a collapsed bottleneck, a learning rate that diverges) even though the
short run cannot reach the full run's accuracy.
"""

import os

import numpy as np
import pytest

from mmfuse_jax import config as config_lib
from mmfuse_jax.catalog import MODELS
from mmfuse_jax.data import make_synthetic, make_synthetic_utterances, standardize
from mmfuse_jax.data.context import dataset_with_video_context
from mmfuse_jax.training.loop import train_and_evaluate

# model -> (training samples, epochs) of the shortened run; validation and test 200 each.
# Measured on the 2-core CPU (test MAE / label-mean MAE): argf 0.65, ef_lstm 0.75 at
# (600, 6), tfn 0.55, mfn 0.58, lmf 0.61; rerd 0.51 and mica 0.60 at (600, 6) too, but their
# compiles alone take 40-80 s, as do MulT's and MCER's, whose default settings need more than
# a short run (MulT 1.08, MCER 0.95 at (600, 6)).
SHORT_RUNS = {"argf": (600, 6), "ef_lstm": (1200, 8), "tfn": (1200, 8), "lmf": (1200, 8),
              "mfn": (1200, 8)}
# The models whose default runs are too slow to shorten here, and the test that asserts
# learning for each on tiny widths (the full default runs: scripts/check_defaults.py).
TINY_LEARNING_TESTS = {
    "mult": "tests/test_training.py::test_mult_learns_on_synthetic",
    "rerd": "tests/test_rerd_model.py::test_tiny_training_beats_label_mean",
    "mica": "tests/test_mica.py::test_mica_learns_on_synthetic",
    "mcer": "tests/test_mcer.py::test_mcer_learns_beats_label_mean",
}
CLEAN_SEQUENCES = {"noise": 0.3, "distractors": 0}
CLEAN_UTTERANCES = {"noise": 0.5}


def short_run_data(config, n_train: int):
  """The cleaner draw, prepared as `load_dataset` prepares the built-in one (standardised
  on train; video context where the config asks for it)."""
  sizes = {"train": n_train, "valid": 200, "test": 200}
  if config.dataset == "synthetic_utterance":
    ds = make_synthetic_utterances(0, sizes=sizes, **CLEAN_UTTERANCES)
  else:
    ds = make_synthetic(0, sizes=sizes, **CLEAN_SEQUENCES)
  ds, _ = standardize(ds)
  return dataset_with_video_context(ds) if config.data.context else ds


def test_every_registered_model_has_a_learning_test():
  assert sorted({**SHORT_RUNS, **TINY_LEARNING_TESTS}) == MODELS.names()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for test in TINY_LEARNING_TESTS.values():
    path, name = test.split("::")
    source = open(os.path.join(root, path)).read()
    assert f"def {name}(" in source, test
    # It runs in the default (CI) test run: not in the slow tier.
    assert f"@pytest.mark.slow\ndef {name}(" not in source, test


@pytest.mark.parametrize("model", sorted(SHORT_RUNS))
def test_default_settings_learn_the_default_data(model, tmp_path):
  c = config_lib.get_config(model)
  assert c.dataset == config_lib.default_dataset(model) and c.preset == "synthetic"
  n_train, c.epochs = SHORT_RUNS[model]
  c.num_devices, c.progress = 1, False
  r = train_and_evaluate(c, str(tmp_path / "run"), dataset=short_run_data(c, n_train))
  label_mean = r["baseline"]["test"]["mae"]
  test = r["test"]
  if os.environ.get("MMFUSE_PRINT_SHORT_RUNS"):
    print(f"\n{model}: test MAE {test['mae']:.3f} label-mean {label_mean:.3f} "
          f"Corr {test['corr']:.3f} Acc-2 {test['acc2_non0']:.3f} "
          f"epoch {r['selected_epoch']}/{r['epochs_run']}")
  assert test["mae"] < 0.75 * label_mean, (model, test["mae"], label_mean)
  assert np.isfinite(test["corr"]) and test["corr"] > 0.5, (model, test["corr"])
  assert test["acc2_non0"] > 0.7, (model, test["acc2_non0"])
