"""Built-in synthetic datasets: the default when no data is given.

`make_synthetic` (dataset 'synthetic', for sequence models) is MOSI-like: each modality m is a noisy sequence of valid length L_m (back padded). At one *salient*
step (flagged by feature 0, the marker) the step carries a scalar signal s_m along a fixed
direction w_m; a few *distractor* steps carry other signals along the same direction with
no marker. The label is

    y = clip(a_t s_t + a_a s_a + a_v s_v + b s_t s_a + noise, -3, 3)

so (1) every modality contributes, (2) the product term needs text and audio together
(cross-modal interaction), and (3) a model that pools over time without finding the marked
step mixes the signal with the distractors and is measurably worse.

`make_synthetic_utterances` (dataset 'synthetic_utterance', for utterance-level models such
as ARGF) has one feature vector per utterance (T = 1) and utterances grouped into videos of
varying length. Each video g has a latent mood c_g; each utterance i carries its own signals
s_m,i along a direction w_m of modality m and a weak, noisy view of c_g along a second
direction u_m:

    x_m,i = amplitude s_m,i w_m + context_amplitude c_g u_m + noise e,   e ~ N(0, I)
    y_i = clip(a_t s_t,i + a_a s_a,i + a_v s_v,i + b s_t,i s_a,i + k c_g + noise, -3, 3)

so besides the utterance's own features and the text x audio interaction, the label depends
on what the other utterances of the video show: c_g is estimated far better from the whole
video than from one utterance, which is what a context network (ARGF's UCLN) is for.
"""

from __future__ import annotations

import numpy as np

from mmfuse_jax.data.core import Dataset, Split, lengths_to_mask

DEFAULT_DIMS = {"text": 24, "audio": 10, "vision": 16}
UTTERANCE_DIMS = {"text": 32, "audio": 12, "vision": 20}
VIDEO_LENGTHS = (4, 16)   # utterances per video, uniform in [min, max]
CONTEXT_WEIGHT = 1.0      # weight k of the video mood c_g in the label
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


def _utterance_split(rng, n: int, dims, directions, context_directions, *, amplitude: float,
                     context_amplitude: float, noise: float, label_noise: float,
                     video_lengths: tuple[int, int], split_name: str
                     ) -> tuple[Split, dict[str, np.ndarray]]:
  lengths = []
  while sum(lengths) < n:
    lengths.append(int(rng.integers(video_lengths[0], video_lengths[1] + 1)))
  lengths[-1] -= sum(lengths) - n  # the last video is cut so the split has exactly n rows
  video = np.repeat(np.arange(len(lengths)), lengths)
  mood = rng.normal(size=len(lengths))[video]
  feats, masks, signals = {}, {}, {"context": mood}
  for m, d in dims.items():
    s = rng.normal(size=n)
    x = (amplitude * s[:, None] * directions[m][None] + context_amplitude * mood[:, None]
         * context_directions[m][None] + noise * rng.normal(size=(n, d)))
    feats[m] = x.astype(np.float32)[:, None, :]
    masks[m] = np.ones((n, 1), bool)
    signals[m] = s
  y = sum(LINEAR_WEIGHTS.get(m, 0.0) * signals[m] for m in dims) + CONTEXT_WEIGHT * mood
  if "text" in dims and "audio" in dims:
    y = y + INTERACTION_WEIGHT * signals["text"] * signals["audio"]
  y = np.clip(y + label_noise * rng.normal(size=n), -3.0, 3.0).astype(np.float32)
  position = np.concatenate([np.arange(k) for k in lengths])
  groups = np.array([f"synthetic_{split_name}_video{v:04d}" for v in video])
  ids = np.array([f"{g}_{p}" for g, p in zip(groups, position)])
  return Split(features=feats, masks=masks, labels=y, ids=ids, groups=groups), signals


def make_synthetic_utterances(seed: int = 0, sizes: dict[str, int] | None = None,
                              dims: dict[str, int] | None = None, *, amplitude: float = 2.5,
                              context_amplitude: float = 0.6, noise: float = 1.0,
                              label_noise: float = 0.1,
                              video_lengths: tuple[int, int] = VIDEO_LENGTHS,
                              return_signals: bool = False):
  """Utterance-level train/valid/test splits (different videos in each; rows in video order,
  features (N, 1, D_m), `groups` = video ids); the same seed gives the same arrays."""
  sizes = {**DEFAULT_SIZES, **(sizes or {})}
  dims = dict(dims or UTTERANCE_DIMS)
  rng = np.random.default_rng([seed, 100])
  directions, context_directions = {}, {}
  for m, d in dims.items():  # two orthonormal directions per modality
    q, _ = np.linalg.qr(rng.normal(size=(d, 2)))
    directions[m], context_directions[m] = q[:, 0], q[:, 1]
  splits, signals = {}, {}
  for k, name in enumerate(("train", "valid", "test")):
    split_rng = np.random.default_rng([seed, 100 + k + 1])
    splits[name], signals[name] = _utterance_split(
        split_rng, sizes[name], dims, directions, context_directions, amplitude=amplitude,
        context_amplitude=context_amplitude, noise=noise, label_noise=label_noise,
        video_lengths=video_lengths, split_name=name)
  ds = Dataset(name="synthetic_utterance", splits=splits, task="regression",
               source=f"synthetic_utterance(seed={seed})")
  return (ds, signals) if return_signals else ds
