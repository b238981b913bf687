"""The synthetic default: deterministic, padded correctly, and built so that time
structure, fusion and the cross-modal interaction all measurably matter."""

import numpy as np

from mmfuse_jax.data import make_synthetic
from mmfuse_jax.data.synthetic import DEFAULT_DIMS, _directions


def test_seeded_and_shapes():
  a = make_synthetic(3, sizes={"train": 50, "valid": 20, "test": 20})
  b = make_synthetic(3, sizes={"train": 50, "valid": 20, "test": 20})
  c = make_synthetic(4, sizes={"train": 50, "valid": 20, "test": 20})
  np.testing.assert_array_equal(a.splits["train"].features["audio"], b.splits["train"].features["audio"])
  assert not np.allclose(a.splits["train"].labels, c.splits["train"].labels)
  s = a.splits["train"]
  for m, x in s.features.items():
    assert x.shape[:2] == s.masks[m].shape
    assert np.all(x[~s.masks[m]] == 0)           # padding is zero
    assert s.masks[m].sum(1).min() >= 1
    assert len(set(s.masks[m].sum(1))) > 1       # variable valid lengths
  assert len({x.shape[1] for x in s.features.values()}) == 3  # unaligned lengths
  assert s.labels.min() >= -3 and s.labels.max() <= 3


def _ridge_mae(xtr, ytr, xte, yte, lam=1.0):
  xtr = np.c_[xtr, np.ones(len(xtr))]; xte = np.c_[xte, np.ones(len(xte))]
  w = np.linalg.solve(xtr.T @ xtr + lam * np.eye(xtr.shape[1]), xtr.T @ ytr)
  return float(np.mean(np.abs(xte @ w - yte)))


def test_time_structure_fusion_and_interaction_matter():
  ds = make_synthetic(0)
  directions = _directions(0, DEFAULT_DIMS)
  tr, te = ds.splits["train"], ds.splits["test"]

  def projections(split, how):
    z = {}
    for m, x in split.features.items():
      if how == "mean":  # ignores time: mean over valid steps
        v = x.sum(1) / split.masks[m].sum(1, keepdims=True)
      else:              # uses time: the step flagged by the marker feature
        idx = x[:, :, 0].argmax(1)
        v = x[np.arange(len(idx)), idx]
      z[m] = v[:, 1:] @ directions[m]
    return z

  def design(z, mods, interaction=True):
    cols = [z[m] for m in mods]
    if interaction:
      cols.append(z["text"] * z["audio"])
    return np.stack(cols, 1)

  mods = ("text", "audio", "vision")
  ztr_t, zte_t = projections(tr, "marker"), projections(te, "marker")
  ztr_m, zte_m = projections(tr, "mean"), projections(te, "mean")
  fused = _ridge_mae(design(ztr_t, mods), tr.labels, design(zte_t, mods), te.labels)
  no_time = _ridge_mae(design(ztr_m, mods), tr.labels, design(zte_m, mods), te.labels)
  text_only = _ridge_mae(design(ztr_t, ("text",), False), tr.labels,
                         design(zte_t, ("text",), False), te.labels)
  no_interaction = _ridge_mae(design(ztr_t, mods, False), tr.labels,
                              design(zte_t, mods, False), te.labels)
  label_mean = float(np.mean(np.abs(te.labels - tr.labels.mean())))
  assert fused < 0.6 * no_time, (fused, no_time)
  assert fused < text_only - 0.2, (fused, text_only)
  assert fused < no_interaction - 0.1, (fused, no_interaction)
  assert no_time > 0.85 * label_mean  # pooling over time barely beats the mean
