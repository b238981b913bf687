"""The synthetic default: deterministic, padded correctly, and built so that time
structure, fusion and the cross-modal interaction all measurably matter."""

import numpy as np

from mmfuse_jax.data import make_synthetic, make_synthetic_utterances
from mmfuse_jax.data.synthetic import DEFAULT_DIMS, VIDEO_LENGTHS, _directions


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


# ----------------------------------------------------------------------------------------
# Utterance-level synthetic data (the default of utterance-level models such as ARGF)
# ----------------------------------------------------------------------------------------
def test_utterance_data_seeded_grouped_and_shaped():
  sizes = {"train": 120, "valid": 40, "test": 40}
  a = make_synthetic_utterances(3, sizes=sizes)
  b = make_synthetic_utterances(3, sizes=sizes)
  c = make_synthetic_utterances(4, sizes=sizes)
  np.testing.assert_array_equal(a.splits["train"].features["audio"],
                                b.splits["train"].features["audio"])
  assert not np.allclose(a.splits["train"].labels, c.splits["train"].labels)
  widths = set()
  for name, s in a.splits.items():
    assert len(s) == sizes[name]
    for m, x in s.features.items():
      assert x.shape[:2] == (len(s), 1) and s.masks[m].all()
      widths.add(x.shape[2])
    # Rows are in video order; videos have varying lengths within the configured range.
    videos, starts, counts = np.unique(s.groups, return_index=True, return_counts=True)
    assert np.all(np.diff(np.sort(starts)) > 0) and len(set(counts[:-1])) > 1
    assert counts[:-1].min() >= VIDEO_LENGTHS[0] and counts.max() <= VIDEO_LENGTHS[1]
    assert s.labels.min() >= -3 and s.labels.max() <= 3
  assert len(widths) == 3  # three modalities of different widths
  # No video is in two splits.
  groups = [set(s.groups) for s in a.splits.values()]
  assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_utterance_labels_need_own_features_interaction_and_video_context():
  ds, signals = make_synthetic_utterances(0, return_signals=True)
  tr, te = ds.splits["train"], ds.splits["test"]

  def utterance(split):
    return np.concatenate([split.features[m][:, 0] for m in ("text", "audio", "vision")], 1)

  def video_means(split):
    x = utterance(split)
    _, video = np.unique(split.groups, return_inverse=True)
    sums = np.zeros((video.max() + 1, x.shape[1]))
    np.add.at(sums, video, x)
    return (sums / np.bincount(video)[:, None])[video]

  # The text x audio interaction as a feature: the product of each modality's signal
  # estimated linearly from its own features on train.
  def signal_fit(m):
    x = tr.features[m][:, 0]
    return np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ signals["train"][m])
  w_t, w_a = signal_fit("text"), signal_fit("audio")

  def product(split):
    return (split.features["text"][:, 0] @ w_t * (split.features["audio"][:, 0] @ w_a))[:, None]

  def fit(*parts):
    return _ridge_mae(np.concatenate([p(tr) for p in parts], 1), tr.labels,
                      np.concatenate([p(te) for p in parts], 1), te.labels)

  label_mean = float(np.mean(np.abs(te.labels - tr.labels.mean())))
  own = fit(utterance)
  with_interaction = fit(utterance, product)
  with_context = fit(utterance, product, video_means)
  text_only = _ridge_mae(tr.features["text"][:, 0], tr.labels, te.features["text"][:, 0],
                         te.labels)
  assert own < 0.7 * label_mean, (own, label_mean)              # the own features carry signal
  assert own < text_only - 0.1, (own, text_only)                # every modality contributes
  assert with_interaction < own - 0.08, (with_interaction, own)  # the interaction matters
  assert with_context < with_interaction - 0.08, (with_context, with_interaction)  # context
