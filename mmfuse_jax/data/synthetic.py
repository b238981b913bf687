"""Built-in synthetic MOSI-like dataset: the default when no data is given.

Each modality m is a noisy sequence of valid length L_m (back padded). At one *salient*
step (flagged by feature 0, the marker) the step carries a scalar signal s_m along a fixed
direction w_m; a few *distractor* steps carry other signals along the same direction with
no marker. The label is

    y = clip(a_t s_t + a_a s_a + a_v s_v + b s_t s_a + noise, -3, 3)

so (1) every modality contributes, (2) the product term needs text and audio together
(cross-modal interaction), and (3) a model that pools over time without finding the marked
step mixes the signal with the distractors and is measurably worse.
"""

from __future__ import annotations

import numpy as np

from mmfuse_jax.data.core import Dataset, Split, lengths_to_mask

DEFAULT_DIMS = {"text": 24, "audio": 10, "vision": 16}
DEFAULT_LENGTHS = {"text": 20, "audio": 40, "vision": 30}
DEFAULT_SIZES = {"train": 1200, "valid": 300, "test": 300}
LINEAR_WEIGHTS = {"text": 1.0, "audio": 0.6, "vision": 0.6}
INTERACTION_WEIGHT = 0.8  # weight b of s_text * s_audio


def _directions(seed: int, dims: dict[str, int]) -> dict[str, np.ndarray]:
  rng = np.random.default_rng([seed, 0])
  out = {}
  for m, d in dims.items():
    w = rng.normal(size=d - 1)
    out[m] = w / np.linalg.norm(w)
  return out


def _make_split(rng, n: int, dims, lengths, directions, *, amplitude: float, marker: float,
                noise: float, distractors: int, label_noise: float, split_name: str,
                utterances_per_video: int) -> tuple[Split, dict[str, np.ndarray]]:
  feats, masks, signals = {}, {}, {}
  for m in dims:
    t, d = lengths[m], dims[m]
    valid = rng.integers(max(1, (t + 1) // 2), t + 1, size=n)
    x = noise * rng.normal(size=(n, t, d)).astype(np.float32)
    s = rng.normal(size=n)
    for i in range(n):
      k = min(distractors + 1, valid[i])
      pos = rng.choice(valid[i], size=k, replace=False)
      x[i, pos[0], 0] += marker
      x[i, pos[0], 1:] += amplitude * s[i] * directions[m]
      for q in pos[1:]:
        x[i, q, 1:] += amplitude * rng.normal() * directions[m]
    mask = lengths_to_mask(valid, t)
    feats[m] = np.where(mask[..., None], x, 0.0).astype(np.float32)
    masks[m] = mask
    signals[m] = s
  y = sum(LINEAR_WEIGHTS.get(m, 0.0) * signals[m] for m in dims)
  if "text" in dims and "audio" in dims:
    y = y + INTERACTION_WEIGHT * signals["text"] * signals["audio"]
  y = np.clip(y + label_noise * rng.normal(size=n), -3.0, 3.0).astype(np.float32)
  ids = np.array([f"synthetic_{split_name}_{i}" for i in range(n)])
  groups = np.array([f"synthetic_{split_name}_video{i // utterances_per_video}" for i in range(n)])
  return Split(features=feats, masks=masks, labels=y, ids=ids, groups=groups), signals


def make_synthetic(seed: int = 0, sizes: dict[str, int] | None = None,
                   dims: dict[str, int] | None = None, lengths: dict[str, int] | None = None,
                   *, amplitude: float = 2.5, marker: float = 3.0, noise: float = 0.7,
                   distractors: int = 3, label_noise: float = 0.1,
                   utterances_per_video: int = 8, return_signals: bool = False):
  """Generates train/valid/test splits; the same seed gives the same arrays."""
  sizes = {**DEFAULT_SIZES, **(sizes or {})}
  dims = dict(dims or DEFAULT_DIMS)
  lengths = {m: (lengths or DEFAULT_LENGTHS).get(m, DEFAULT_LENGTHS.get(m, 20)) for m in dims}
  directions = _directions(seed, dims)
  splits, signals = {}, {}
  for k, name in enumerate(("train", "valid", "test")):
    rng = np.random.default_rng([seed, k + 1])
    splits[name], signals[name] = _make_split(
        rng, sizes[name], dims, lengths, directions, amplitude=amplitude, marker=marker,
        noise=noise, distractors=distractors, label_noise=label_noise, split_name=name,
        utterances_per_video=utterances_per_video)
  ds = Dataset(name="synthetic", splits=splits, task="regression", source=f"synthetic(seed={seed})")
  return (ds, signals) if return_signals else ds
