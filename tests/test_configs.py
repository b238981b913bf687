"""Every setting of every config under configs/ loads, validates, and sets the NaN/inf policy
its data need: 'zero' for the public MulT / MMSA feature files (they hold -inf audio steps),
'error' for the built-in synthetic data and the utterance npz (which hold none: a NaN there
is a bug). A setting is named after a colon, `--config=configs/mdm.py:tfn,mosei`."""

from __future__ import annotations

import glob
import os

import pytest

from mmfuse_jax import config as config_lib
from mmfuse_jax import sweep, train
from mmfuse_jax.catalog import MODELS
from mmfuse_jax.cli import parse_flags
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.models.base import check_model_modalities

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
SETTINGS = [f"{path}:{name}" for path in FILES for name in config_lib.config_settings(path)]
PUBLIC_FEATURE_FILES = ("mosi", "mosei", "iemocap", "sims", "mosi_mmsa", "mosei_mmsa", "sdk")
# The models each method's file configures.
FAMILIES = {"argf": {"argf"}, "mcer": {"mcer"}, "mdm": {"ef_lstm", "tfn", "lmf", "mfn"},
            "mica": {"mica"}, "mult": {"mult"}, "rerd": {"rerd"}}


def test_configs_found():
  assert {os.path.basename(p)[:-3] for p in FILES} == set(FAMILIES)
  assert len(SETTINGS) >= 30


@pytest.mark.parametrize("spec", SETTINGS, ids=lambda s: os.path.relpath(s, ROOT))
def test_config_loads_with_nan_policy(spec):
  c = config_lib.load_config_file(spec)
  config_lib.validate_config(c)
  check_model_modalities(MODELS.get(c.model), config_lib.modalities(c))
  path, _ = config_lib.split_config_arg(spec)
  assert c.model in FAMILIES[os.path.basename(path)[:-3]], (spec, c.model)
  want = "zero" if c.dataset in PUBLIC_FEATURE_FILES else "error"
  assert c.data.nan_policy == want, (
      f"{spec}: dataset {c.dataset!r} needs data.nan_policy={want!r}")
  if want == "zero":  # said in the file, not inherited by accident
    assert 'c.data.nan_policy = "zero"' in open(path).read()


def test_setting_argument():
  """FILE:ARG picks a setting; a missing or unknown one names the valid settings."""
  mdm = os.path.join(ROOT, "configs", "mdm.py")
  c = config_lib.load_config_file(f"{mdm}:tfn,mosei")
  assert (c.model, c.dataset, c.net.mdm, c.data.aligned) == ("tfn", "mosei", "w", True)
  assert config_lib.split_config_arg(f"{mdm}:tfn,mosei") == (mdm, "tfn,mosei")
  assert config_lib.split_config_arg(mdm) == (mdm, None)
  for spec, got in ((mdm, "no setting"), (f"{mdm}:tfn,iemocap", "'tfn,iemocap'")):
    with pytest.raises(ConfigError, match=f"SETTING one of ef_lstm,mosi, .*tiny; got.*{got}"):
      config_lib.load_config_file(spec)
  with pytest.raises(ConfigError, match="does not exist"):
    config_lib.load_config_file(os.path.join(ROOT, "configs", "nope.py:tiny"))


def test_setting_argument_on_the_command_lines():
  """train and sweep take --config=FILE:SETTING (the sweep builds its base config with
  train's `build_config`), followed by overrides."""
  mdm = os.path.join(ROOT, "configs", "mdm.py")
  for known in (train.KNOWN, sweep.KNOWN):
    flags, overrides = parse_flags([f"--config={mdm}:lmf,mosi", "--net.mdm=kl"], known)
    c = train.build_config(flags, overrides)
    assert (c.model, c.dataset, c.net.mdm, c.data.aligned) == ("lmf", "mosi", "kl", True)
