"""Test-time noise and distribution shift of one modality (training/conditions.py,
`evaluate --noise/--shift`) on a tiny trained run."""

import json
import os

import numpy as np
import pytest

from mmfuse_jax import evaluate
from mmfuse_jax.data.pipeline import make_batch
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import conditions
from mmfuse_jax.training.loop import train_and_evaluate
from tests.helpers import shared_compilation_cache, tiny_config, tiny_synthetic
from tests.test_baselines import TINY_NET

MODS = ("text", "audio", "vision")
# The cheapest model to compile (a one-layer EF-LSTM of width 16): the run is compiled once
# and the table and the CLI reload it through the persistent cache.
EF = {**{f"net.{k}": v for k, v in TINY_NET["ef_lstm"].items()}, "net.num_layers": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 1-epoch tiny EF-LSTM on small synthetic_shared data, loaded from its config (so the
  CLI can rebuild it from the workdir); 16 steps at LR 1e-2 take its test MAE well below the
  label mean's, so its predictions depend on the inputs."""
  work = str(tmp_path_factory.mktemp("conditions") / "run")
  c = tiny_config("ef_lstm", epochs=1, dataset="synthetic_shared", **EF,
                  **{"data.synthetic_train": 512, "data.synthetic_valid": 32,
                     "data.synthetic_test": 64, "optim.lr": 1e-2})
  with shared_compilation_cache(tmp_path_factory.mktemp("xla_cache")):
    yield work, train_and_evaluate(c, work)


def _split():
  return tiny_synthetic(0, n_train=40, n_valid=8, n_test=24).splits["test"]


def test_noise_changes_only_the_named_modality_on_valid_steps():
  split = _split()
  sd = np.linspace(0.5, 2.0, split.features["audio"].shape[-1])
  one = conditions.noise_split(split, "audio", 1.0, sd, seed=3)
  two = conditions.noise_split(split, "audio", 2.0, sd, seed=3)
  for m in MODS:
    np.testing.assert_array_equal(one.masks[m], split.masks[m])
    if m != "audio":
      np.testing.assert_array_equal(one.features[m], split.features[m])
  np.testing.assert_array_equal(one.labels, split.labels)
  mask = split.masks["audio"]
  delta = one.features["audio"] - split.features["audio"]
  assert np.all(delta[~mask] == 0) and np.all(delta[mask] != 0)
  eps = delta[mask] / sd  # standard normal per feature
  assert abs(eps.mean()) < 0.1 and abs(eps.std() - 1) < 0.1
  # levels are paired: level 2 is twice the same draw; the seed picks the draw
  np.testing.assert_allclose(two.features["audio"] - split.features["audio"], 2 * delta,
                             rtol=1e-5, atol=1e-5)
  other = conditions.noise_split(split, "audio", 1.0, sd, seed=4)
  assert not np.array_equal(other.features["audio"], one.features["audio"])
  # what a model sees: the batch of the noised split differs from the clean one only in audio
  rows = np.arange(16)
  clean_b, noisy_b = make_batch(split, rows, 16), make_batch(one, rows, 16)
  for m in MODS:
    same = np.array_equal(np.asarray(clean_b.features[m]), np.asarray(noisy_b.features[m]))
    assert same == (m != "audio")
    np.testing.assert_array_equal(np.asarray(clean_b.masks[m]), np.asarray(noisy_b.masks[m]))


def test_shift_scales_about_the_mean_or_moves_by_sd():
  split = _split()
  x, mask = split.features["vision"].astype(np.float64), split.masks["vision"]
  valid = x[mask]
  mean, sd = valid.mean(0), valid.std(0)
  scaled = conditions.shift_split(split, "vision", "scale", 3.0, mean, sd)
  moved = conditions.shift_split(split, "vision", "offset", -1.5, mean, sd)
  np.testing.assert_allclose(scaled.features["vision"][mask], mean + 3.0 * (valid - mean),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(moved.features["vision"][mask], valid - 1.5 * sd, rtol=1e-5,
                             atol=1e-5)
  for s in (scaled, moved):
    assert np.all(s.features["vision"][~mask] == 0)
    for m in ("text", "audio"):
      np.testing.assert_array_equal(s.features[m], split.features[m])
  for kind, identity in (("scale", 1.0), ("offset", 0.0)):
    same = conditions.shift_split(split, "vision", kind, identity, mean, sd)
    np.testing.assert_array_equal(same.features["vision"], split.features["vision"])


@pytest.mark.parametrize("flag,spec,message", [
    ("noise", "audio", "expected MOD:LEVEL"),
    ("noise", "audio:loud", "'loud' is not a number"),
    ("noise", "audio:-1", "LEVEL must be >= 0"),
    ("noise", "speech:1", "unknown modality 'speech'"),
    ("shift", "vision:2", "expected MOD:KIND:AMOUNT"),
    ("shift", "vision:tilt:2", "KIND must be one of scale, offset"),
    ("shift", "vision:scale:nan", "is not a number"),
])
def test_bad_specs_name_the_flag_and_the_form(flag, spec, message):
  parse = conditions.parse_noise if flag == "noise" else conditions.parse_shift
  with pytest.raises(ConfigError, match=message) as info:
    parse(spec, MODS)
  text = str(info.value)
  assert text.startswith(f"--{flag}={spec!r}") and conditions.FORMS[flag] in text


def test_table_clean_levels_and_degradation(trained):
  work, results = trained
  noise = [f"{m}:{level}" for m in MODS for level in (0, 1, 4)]
  t = conditions.condition_table(work, noise=noise, shift=["audio:scale:1", "text:offset:0",
                                                          "text:offset:2"], seed=0)
  assert t["clean"]["mae"] == pytest.approx(results["test"]["mae"], rel=1e-5)
  for m in MODS:  # level 0 is the clean split exactly
    assert t["noise"][f"{m}:0"]["metrics"] == t["clean"]
    assert t["noise"][f"{m}:4"]["modality"] == m and t["noise"][f"{m}:4"]["level"] == 4.0
  assert t["shift"]["audio:scale:1"]["metrics"] == t["clean"]
  assert t["shift"]["text:offset:0"]["metrics"] == t["clean"]
  assert t["shift"]["text:offset:2"]["metrics"] != t["clean"]
  row = t["noise"]["audio:4"]
  assert row["acc2_has0_ratio"] == pytest.approx(row["metrics"]["acc2_has0"]
                                                 / t["clean"]["acc2_has0"])
  # larger noise degrades on average over the modalities
  mae = {lv: np.mean([t["noise"][f"{m}:{lv}"]["metrics"]["mae"] for m in MODS])
         for lv in (0, 1, 4)}
  assert mae[4] > mae[0] + 0.05 and mae[4] > mae[1], mae
  json.dumps(t)
  with pytest.raises(ConfigError, match="unknown modality 'speech'"):
    conditions.condition_table(work, noise=["speech:1"])


def test_cli_writes_noise_and_shift_tables(trained, capsys):
  work, results = trained
  assert evaluate.main([f"--workdir={work}", "--noise=vision:0,vision:2",
                        "--shift=audio:offset:1"]) == 0
  out = capsys.readouterr().out
  assert "noise vision:2" in out and "shift audio:offset:1" in out
  noise = json.load(open(os.path.join(work, "noise_test.json")))
  shift = json.load(open(os.path.join(work, "shift_test.json")))
  assert set(noise["noise"]) == {"vision:0", "vision:2"} and "shift" not in noise
  assert set(shift["shift"]) == {"audio:offset:1"} and "noise" not in shift
  assert noise["clean"]["mae"] == pytest.approx(results["test"]["mae"], rel=1e-5)
  assert noise["noise"]["vision:0"]["metrics"] == noise["clean"]
  # a malformed spec fails before the run is loaded, naming the flag and the form
  assert evaluate.main([f"--workdir={work}", "--shift=audio:tilt:1"]) == 2
  err = capsys.readouterr().err
  assert "--shift='audio:tilt:1'" in err and "MOD:KIND:AMOUNT" in err
