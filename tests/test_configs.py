"""Every config under configs/ loads, validates, and sets the NaN/inf policy its data need:
'zero' for the public MulT / MMSA feature files (they hold -inf audio steps), 'error' for
the built-in synthetic data and the utterance npz (which hold none: a NaN there is a bug)."""

from __future__ import annotations

import glob
import os

import pytest

from mmfuse_jax import config as config_lib
from mmfuse_jax.catalog import MODELS
from mmfuse_jax.models.base import check_model_modalities

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*", "*.py")))
PUBLIC_FEATURE_FILES = ("mosi", "mosei", "iemocap", "sims", "mosi_mmsa", "mosei_mmsa", "sdk")


def test_configs_found():
  assert len(CONFIGS) >= 20


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_loads_with_nan_policy(path):
  c = config_lib.load_config_file(path)
  config_lib.validate_config(c)
  check_model_modalities(MODELS.get(c.model), config_lib.modalities(c))
  want = "zero" if c.dataset in PUBLIC_FEATURE_FILES else "error"
  assert c.data.nan_policy == want, (
      f"{path}: dataset {c.dataset!r} needs data.nan_policy={want!r}")
  if want == "zero":  # said in the file, not inherited by accident
    assert 'c.data.nan_policy = "zero"' in open(path).read()
