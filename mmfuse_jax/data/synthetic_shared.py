"""Built-in synthetic data with a shared latent sentiment (dataset 'synthetic_shared').

The default synthetic data (`synthetic`) gives every modality an independent signal, so there
is nothing shared to align. This family is made for the mechanism benchmark
(docs/mechanisms.md): one latent sentiment is seen by every modality, each through its own
map, with knobs for how heterogeneous the modalities are, how noisy each one is, and how much
of the label only one modality carries.

Generative model. Sample i has a shared latent z_i, and each modality m (M modalities) a
specific signal s_mi and a nuisance n_mi; all are independent N(0, 1). The label is

    y_i = clip(1.5 (sqrt(1 - rho) z_i + sqrt(rho / M) sum_m s_mi) + 0.2 e_i, -3, 3)

with e_i ~ N(0, 1) and rho = `specific_share` in [0, 1]: with rho = 0 the label is the shared
latent alone (any one modality is enough), with rho = 1 it is the sum of the specific signals
(every modality is needed). The nuisance n_mi never enters the label. Modality m is a
sequence of T_m steps of D_m features (default text 20 x 24, audio 40 x 10, vision 30 x 16)
with L_mi valid steps, uniform in [ceil(T_m / 2), T_m] and drawn independently per modality
(unaligned), zero padded at the back. At each valid step t

    u_mit = (A_m(h) [z_i, s_mi, n_mi]^T + sigma_m eps_mit) / sqrt(1 + sigma_m^2),
                                                                eps_mit ~ N(0, I_{D_m})
    x_mit = h o_m + c_m^h phi_mh(u_mit)                         (phi elementwise)
    phi_mh(u) = (1 - h) u + h psi_m(u)
    psi_text(u) = u,  psi_audio(u) = sinh(u),  psi_vision(u) = 2 (exp(u / 2) - 1)

where sigma_m = `noise[m]` (per-step noise of modality m) and h = `heterogeneity` in [0, 1]:

- A_m(h) (D_m x 3) is the row-normalised (1 - h) B[:D_m] + h C_m, with B (max D_m x 3) shared
  by all modalities and C_m drawn for modality m (entries N(0, 1), drawn once per seed). Each
  feature is thus a unit-norm mix of the three latents, and every feature's u is N(0, 1)
  whatever sigma_m (the noise lowers the signal's share of it: 1 / (1 + sigma_m^2)).
- c_m (`MODALITY_SCALES`) and o_m (`MODALITY_OFFSETS`) give each modality its own scale and
  offset; psi_m its own distribution shape (Gaussian, heavy tailed, skewed; each psi has
  psi(0) = 0 and psi'(0) = 1, so the shapes differ but small signals pass alike).

With h = 0 every modality uses the same map (the first D_m rows of B), the same scale and no
warp, so all features of all modalities have the same distribution (with equal sigma_m);
with h = 1 (the default) each has its own map, scale, offset and shape. The per-feature
standardisation of the data pipeline (`data.standardize`, on by default) removes the scales
and offsets; the maps and the shapes stay. The warps are monotone, so no information is lost,
but a linear read-out of audio and vision gets harder as h grows.

The best prediction of y from modality m alone is 1.5 (sqrt(1 - rho) z_i + sqrt(rho / M)
s_mi) (its share of the clean label's variance is (1 - rho) + rho / M), and how well a
modality reveals it falls with sigma_m: `return_signals=True` returns z, s_m and n_m per
split (keys 'shared', m and m + '_nuisance') for such checks (e.g. MCER's unimodal labels).

All random draws are made in a fixed order whatever the knobs: two datasets with the same seed
and sizes differ only where a knob acts (e.g. raising sigma_audio changes only the audio
features), which makes paired comparisons across conditions exact.
"""

from __future__ import annotations

import math

import numpy as np

from mmfuse_jax.data.core import Dataset, Split, lengths_to_mask
from mmfuse_jax.data.synthetic import DEFAULT_DIMS, DEFAULT_LENGTHS, DEFAULT_SIZES
from mmfuse_jax.errors import ConfigError

LABEL_SCALE = 1.5         # the clean label has standard deviation 1.5 (MOSI-like, in [-3, 3])
LABEL_NOISE = 0.2
DEFAULT_NOISE = 1.0       # sigma_m of every modality
DEFAULT_HETEROGENEITY = 1.0
DEFAULT_SPECIFIC_SHARE = 0.3
MODALITY_SCALES = {"text": 1.0, "audio": 4.0, "vision": 0.25}
MODALITY_OFFSETS = {"text": 0.0, "audio": -2.0, "vision": 3.0}
LATENTS = 3               # z, s_m, n_m


def _psi(modality: str, u: np.ndarray) -> np.ndarray:
  """The modality's distribution shape at heterogeneity 1 (psi(0) = 0, psi'(0) = 1)."""
  if modality == "audio":
    return np.sinh(u)
  if modality == "vision":
    return 2.0 * np.expm1(u / 2.0)
  return u


def _maps(seed: int, dims: dict[str, int], heterogeneity: float) -> dict[str, np.ndarray]:
  """A_m(h) per modality: row-normalised (1 - h) B[:D_m] + h C_m (module docstring)."""
  rng = np.random.default_rng([seed, 200])
  shared = rng.normal(size=(max(dims.values()), LATENTS))
  own = {m: rng.normal(size=(dims[m], LATENTS)) for m in dims}
  out = {}
  for m, d in dims.items():
    a = (1.0 - heterogeneity) * shared[:d] + heterogeneity * own[m]
    out[m] = a / np.linalg.norm(a, axis=1, keepdims=True)
  return out


def _shared_split(rng, n: int, dims, lengths, maps, *, noise, heterogeneity: float,
                  specific_share: float, split_name: str
                  ) -> tuple[Split, dict[str, np.ndarray]]:
  z = rng.normal(size=n)
  feats, masks, signals = {}, {}, {"shared": z}
  for m, d in dims.items():  # every draw happens whatever the knobs (common random numbers)
    s, nuisance = rng.normal(size=n), rng.normal(size=n)
    t = lengths[m]
    valid = rng.integers((t + 1) // 2, t + 1, size=n)
    eps = rng.standard_normal(size=(n, t, d), dtype=np.float32)
    latent = (np.stack([z, s, nuisance], 1) @ maps[m].T).astype(np.float32)  # (n, D_m)
    u = (latent[:, None, :] + np.float32(noise[m]) * eps) / np.float32(
        math.sqrt(1.0 + noise[m] ** 2))
    warped = u if heterogeneity == 0 else (
        np.float32(1.0 - heterogeneity) * u + np.float32(heterogeneity) * _psi(m, u))
    x = (np.float32(heterogeneity * MODALITY_OFFSETS.get(m, 0.0))
         + np.float32(MODALITY_SCALES.get(m, 1.0) ** heterogeneity) * warped)
    mask = lengths_to_mask(valid, t)
    feats[m] = np.where(mask[..., None], x, 0.0).astype(np.float32)
    masks[m] = mask
    signals[m], signals[f"{m}_nuisance"] = s, nuisance
  specific = sum(signals[m] for m in dims)
  clean = math.sqrt(1.0 - specific_share) * z + math.sqrt(specific_share / len(dims)) * specific
  e = rng.normal(size=n)
  y = np.clip(LABEL_SCALE * clean + LABEL_NOISE * e, -3.0, 3.0).astype(np.float32)
  ids = np.array([f"synthetic_shared_{split_name}_{i}" for i in range(n)])
  return Split(features=feats, masks=masks, labels=y, ids=ids, groups=None), signals


def _check_knobs(noise: dict[str, float], heterogeneity: float, specific_share: float) -> None:
  for m, v in noise.items():
    if not (np.isfinite(v) and v >= 0):
      raise ConfigError(f"data.shared_noise_{m} must be a number >= 0, got {v}")
  for name, v in (("heterogeneity", heterogeneity), ("specific_share", specific_share)):
    if not 0.0 <= v <= 1.0:
      raise ConfigError(f"data.shared_{name} must be in [0, 1], got {v}")


def make_synthetic_shared(seed: int = 0, sizes: dict[str, int] | None = None,
                          dims: dict[str, int] | None = None,
                          lengths: dict[str, int] | None = None, *,
                          noise: dict[str, float] | float = DEFAULT_NOISE,
                          heterogeneity: float = DEFAULT_HETEROGENEITY,
                          specific_share: float = DEFAULT_SPECIFIC_SHARE,
                          return_signals: bool = False):
  """Train/valid/test splits of the shared-latent model (module docstring); the same seed
  and knobs give the same arrays. noise: sigma_m per modality (a dict) or one value for all.
  Returns the Dataset, or (Dataset, {split: signals}) with return_signals."""
  sizes = {**DEFAULT_SIZES, **(sizes or {})}
  dims = dict(dims or DEFAULT_DIMS)
  lengths = {m: (lengths or DEFAULT_LENGTHS).get(m, DEFAULT_LENGTHS.get(m, 20)) for m in dims}
  noise = ({m: float(noise) for m in dims} if np.isscalar(noise)
           else {m: float(noise.get(m, DEFAULT_NOISE)) for m in dims})
  _check_knobs(noise, heterogeneity, specific_share)
  maps = _maps(seed, dims, heterogeneity)
  splits, signals = {}, {}
  for k, name in enumerate(("train", "valid", "test")):
    rng = np.random.default_rng([seed, 200 + k + 1])
    splits[name], signals[name] = _shared_split(
        rng, sizes[name], dims, lengths, maps, noise=noise, heterogeneity=heterogeneity,
        specific_share=specific_share, split_name=name)
  knobs = ", ".join(f"noise_{m}={v:g}" for m, v in noise.items())
  ds = Dataset(name="synthetic_shared", splits=splits, task="regression",
               source=f"synthetic_shared(seed={seed}, {knobs}, heterogeneity={heterogeneity:g},"
                      f" specific_share={specific_share:g})")
  return (ds, signals) if return_signals else ds
