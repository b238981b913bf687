"""The shared-latent synthetic family ('synthetic_shared'): seeded, shaped, and each knob acts
as its generative model (mmfuse_jax/data/synthetic_shared.py) says, checked against
closed-form values or independent regressions."""

import math

import numpy as np
import pytest

from mmfuse_jax import config as config_lib
from mmfuse_jax.data import load_dataset
from mmfuse_jax.data.synthetic_shared import (MODALITY_OFFSETS, MODALITY_SCALES,
                                              make_synthetic_shared)
from mmfuse_jax.errors import ConfigError

MODS = ("text", "audio", "vision")
SMALL = {"train": 60, "valid": 20, "test": 20}
# Short sequences keep the statistical checks fast; the knobs act the same at any length.
LENGTHS = {"text": 10, "audio": 16, "vision": 12}
DIMS = {"text": 12, "audio": 6, "vision": 8}
STATS = {"train": 1000, "valid": 10, "test": 500}


def _make(seed=0, sizes=STATS, **knobs):
  return make_synthetic_shared(seed, sizes=sizes, dims=DIMS, lengths=LENGTHS, **knobs)


def _time_mean(split, m):
  return split.features[m].sum(1) / split.masks[m].sum(1, keepdims=True)


def _ridge_r2(ds, mods, lam=1.0):
  """Test R^2 of ridge regression (numpy least squares) on the time-means of `mods`."""
  tr, te = ds.splits["train"], ds.splits["test"]
  xtr = np.concatenate([_time_mean(tr, m) for m in mods], 1)
  xte = np.concatenate([_time_mean(te, m) for m in mods], 1)
  mu, sd = xtr.mean(0), xtr.std(0) + 1e-9
  xtr = np.c_[(xtr - mu) / sd, np.ones(len(xtr))]
  xte = np.c_[(xte - mu) / sd, np.ones(len(xte))]
  w = np.linalg.solve(xtr.T @ xtr + lam * np.eye(xtr.shape[1]), xtr.T @ tr.labels)
  return 1.0 - np.mean((xte @ w - te.labels) ** 2) / np.var(te.labels)


def _valid_values(split, m):
  return split.features[m][split.masks[m]].astype(np.float64)  # (valid steps, D_m)


def test_seeded_shaped_unaligned_back_padded():
  a = make_synthetic_shared(3, sizes=SMALL)
  b = make_synthetic_shared(3, sizes=SMALL)
  c = make_synthetic_shared(4, sizes=SMALL)
  for name in SMALL:
    for m in MODS:
      np.testing.assert_array_equal(a.splits[name].features[m], b.splits[name].features[m])
    np.testing.assert_array_equal(a.splits[name].labels, b.splits[name].labels)
  assert not np.allclose(a.splits["train"].labels, c.splits["train"].labels)
  assert a.name == "synthetic_shared" and a.task == "regression"
  s = a.splits["train"]
  assert {m: s.features[m].shape for m in MODS} == {
      "text": (60, 20, 24), "audio": (60, 40, 10), "vision": (60, 30, 16)}
  for m, x in s.features.items():
    assert x.dtype == np.float32 and s.masks[m].shape == x.shape[:2]
    lengths = s.masks[m].sum(1)
    t = x.shape[1]
    assert lengths.min() >= (t + 1) // 2 and lengths.max() <= t and len(set(lengths)) > 1
    # back padding: valid steps form a prefix, padding is exactly zero
    np.testing.assert_array_equal(s.masks[m], np.arange(t)[None] < lengths[:, None])
    assert np.all(x[~s.masks[m]] == 0) and np.all(x[s.masks[m]] != 0)
  # unaligned: each modality draws its own valid lengths
  assert not np.array_equal(s.masks["text"].sum(1), s.masks["vision"].sum(1))
  assert s.labels.dtype == np.float32 and s.labels.min() >= -3 and s.labels.max() <= 3


def test_each_knob_changes_only_what_it_acts_on():
  """All draws are made whatever the knobs: raising one modality's noise changes only that
  modality's features; the specific share only the labels; heterogeneity only the features."""
  base = _make(sizes=SMALL)
  noisy = _make(sizes=SMALL, noise={"audio": 3.0})
  shared = _make(sizes=SMALL, specific_share=0.0)
  flat = _make(sizes=SMALL, heterogeneity=0.0)
  for name in SMALL:
    b = base.splits[name]
    for m in MODS:
      np.testing.assert_array_equal(b.masks[m], flat.splits[name].masks[m])
      np.testing.assert_array_equal(b.features[m], shared.splits[name].features[m])
      same = np.array_equal(b.features[m], noisy.splits[name].features[m])
      assert same == (m != "audio"), m
      assert not np.array_equal(b.features[m], flat.splits[name].features[m])
    np.testing.assert_array_equal(b.labels, noisy.splits[name].labels)
    np.testing.assert_array_equal(b.labels, flat.splits[name].labels)
    assert not np.array_equal(b.labels, shared.splits[name].labels)


def test_labels_follow_the_documented_equation():
  ds, sig = make_synthetic_shared(1, sizes=STATS, dims=DIMS, lengths=LENGTHS,
                                  specific_share=0.5, return_signals=True)
  s = sig["train"]
  clean = 1.5 * (math.sqrt(0.5) * s["shared"] + math.sqrt(0.5 / 3) * sum(s[m] for m in MODS))
  resid = ds.splits["train"].labels - np.clip(clean, -3, 3)
  inside = np.abs(clean) < 2.5  # away from the clip, the residual is the label noise 0.2 e
  assert abs(np.std(resid[inside]) - 0.2) < 0.03 and abs(np.mean(resid[inside])) < 0.03
  for m in MODS:  # the nuisance never enters the label
    assert abs(np.corrcoef(s[f"{m}_nuisance"], ds.splits["train"].labels)[0, 1]) < 0.1


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_noise_is_the_within_sequence_variance(sigma):
  """At heterogeneity 0, x = (A l + sigma eps) / sqrt(1 + sigma^2) with l constant over a
  sequence, so the variance of each feature around its sequence's mean (unbiased, pooled)
  is sigma^2 / (1 + sigma^2) and the total variance is 1 (other modalities keep sigma = 1)."""
  ds = _make(sizes={"train": 300, "valid": 10, "test": 10}, heterogeneity=0.0,
             noise={"audio": sigma})
  s = ds.splits["train"]
  for m in MODS:
    x, mask = s.features[m].astype(np.float64), s.masks[m]
    n = mask.sum(1)[:, None]
    dev = np.where(mask[..., None], x - x.sum(1, keepdims=True) / n[..., None], 0.0)
    within = (dev ** 2).sum() / ((n - 1).sum() * x.shape[-1])  # pooled over features too
    noise = sigma if m == "audio" else 1.0
    assert abs(within / (noise ** 2 / (1 + noise ** 2)) - 1) < 0.04, (m, within)
    assert abs(_valid_values(s, m).var() - 1.0) < 0.15


def test_noise_makes_only_its_modality_less_predictive():
  clean, noisy = _make(), _make(noise={"audio": 6.0})
  assert _ridge_r2(noisy, ["text"]) == _ridge_r2(clean, ["text"])  # identical arrays
  assert _ridge_r2(noisy, ["audio"]) < _ridge_r2(clean, ["audio"]) - 0.1


def test_specific_share_sets_what_one_modality_can_predict():
  """The clean label's variance share that modality m alone explains is (1 - rho) + rho / 3:
  with rho = 0 any one modality predicts the label about as well as all three, with rho = 1
  about a third as well."""
  for rho in (0.0, 1.0):
    ds = _make(heterogeneity=0.0, specific_share=rho)
    r2_all = _ridge_r2(ds, MODS)
    assert r2_all > 0.85
    for m in MODS:
      ratio = _ridge_r2(ds, [m]) / r2_all
      assert abs(ratio - ((1 - rho) + rho / 3)) < 0.1, (rho, m, ratio)


def _moments(v):
  v = v.ravel()
  c = v - v.mean()
  sd = c.std()
  return np.array([v.mean(), sd, np.mean(c ** 3) / sd ** 3, np.mean(c ** 4) / sd ** 4])


def test_heterogeneity_zero_gives_equal_modalities_one_gives_their_own():
  flat = _make(sizes={"train": 1000, "valid": 10, "test": 10}, heterogeneity=0.0)
  # mean, std, skewness, kurtosis over every valid value: those of N(0, 1) for each modality
  stats = {m: _moments(_valid_values(flat.splits["train"], m)) for m in MODS}
  for m in MODS:
    np.testing.assert_allclose(stats[m], [0.0, 1.0, 0.0, 3.0], atol=0.15)
  # the same map: the first features of every modality load the latents alike
  x = {m: _time_mean(flat.splits["train"], m)[:, :4] for m in MODS}
  np.testing.assert_allclose(np.corrcoef(x["text"].T, x["audio"].T)[:4, 4:].diagonal(),
                             np.corrcoef(x["text"].T, x["vision"].T)[:4, 4:].diagonal(),
                             atol=0.1)
  own = _make(sizes={"train": 1000, "valid": 10, "test": 10}, heterogeneity=1.0)
  # u ~ N(0, 1) per feature, x = o_m + c_m psi_m(u): closed-form mean and std per modality
  e = math.e
  want = {"text": (0.0, 1.0),
          "audio": (0.0, math.sqrt((e ** 2 - 1) / 2)),                    # sinh(u)
          "vision": (2 * (e ** 0.125 - 1), 2 * math.sqrt((e ** 0.25 - 1) * e ** 0.25))}
  for m in MODS:
    v = _valid_values(own.splits["train"], m)
    mean, sd = want[m]
    assert abs(v.mean() - (MODALITY_OFFSETS[m] + MODALITY_SCALES[m] * mean)) < (
        0.1 * MODALITY_SCALES[m]), m
    assert abs(v.std() / (MODALITY_SCALES[m] * sd) - 1) < 0.1, m
  shape = {m: _moments(_valid_values(own.splits["train"], m))[2:] for m in MODS}
  assert shape["vision"][0] > 1.0 and shape["audio"][1] > 8  # skewed; heavy tailed


def test_registered_with_config_knobs_and_clear_errors():
  c = config_lib.get_config("tfn", "synthetic_shared")
  assert c.preset == "synthetic"  # the model's synthetic preset applies here too
  overrides = {"data.synthetic_train": "40", "data.synthetic_valid": "10",
               "data.synthetic_test": "10", "data.shared_noise_vision": "2.5",
               "data.shared_heterogeneity": "0.5", "data.shared_specific_share": "0.8"}
  config_lib.apply_overrides(c, overrides)
  ds, _ = load_dataset(c, standardize_features=False)
  direct = make_synthetic_shared(0, sizes={"train": 40, "valid": 10, "test": 10},
                                 noise={"vision": 2.5}, heterogeneity=0.5, specific_share=0.8)
  for m in MODS:
    np.testing.assert_array_equal(ds.splits["test"].features[m],
                                  direct.splits["test"].features[m])
  c.data.shared_heterogeneity = 1.5
  with pytest.raises(ConfigError, match=r"data.shared_heterogeneity must be in \[0, 1\]"):
    load_dataset(c)
  c.data.shared_heterogeneity = 1.0
  c.data.shared_noise_audio = -1.0
  with pytest.raises(ConfigError, match="data.shared_noise_audio must be a number >= 0"):
    load_dataset(c)
