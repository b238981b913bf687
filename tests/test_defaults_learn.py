"""`python -m mmfuse_jax.train --model=X` with no other flag trains X on its built-in
synthetic dataset with its synthetic preset; every registered model must learn there.

Each test runs the model's default config (`get_config(model)`: default dataset, paper
settings, synthetic preset) on smaller splits and fewer epochs than the CLI run, and checks
that the selected checkpoint clearly beats the constant predictor of the train label mean
on the test split. The full-size runs and their times: scripts/check_defaults.py and the
README table.
"""

import numpy as np
import pytest

from mmfuse_jax import config as config_lib
from mmfuse_jax.registry import MODELS
from mmfuse_jax.training.loop import train_and_evaluate

# model -> (training samples, epochs) of the shortened run; validation/test 200 each.
SHORT_RUNS = {
    "mult": (1200, 6), "rerd": (1200, 8), "mica": (600, 6), "mcer": (2400, 4),
    "argf": (1200, 6), "ef_lstm": (4800, 4), "tfn": (2400, 8), "lmf": (2400, 10),
    "mfn": (4800, 4),
}


def test_every_registered_model_has_a_short_run():
  assert sorted(SHORT_RUNS) == MODELS.names()


@pytest.mark.parametrize("model", sorted(SHORT_RUNS))
def test_default_settings_learn_the_default_data(model, tmp_path):
  c = config_lib.get_config(model)
  assert c.dataset == config_lib.default_dataset(model)
  c.num_devices, c.progress = 1, False
  c.data.synthetic_train, c.epochs = SHORT_RUNS[model]
  c.data.synthetic_valid = c.data.synthetic_test = 200
  r = train_and_evaluate(c, str(tmp_path / "run"))
  label_mean = r["baseline"]["test"]["mae"]
  assert r["test"]["mae"] < 0.8 * label_mean, (model, r["test"]["mae"], label_mean)
  assert r["test"]["acc2_non0"] > 0.65, (model, r["test"]["acc2_non0"])
  assert np.isfinite(r["test"]["corr"]) and r["test"]["corr"] > 0.4
