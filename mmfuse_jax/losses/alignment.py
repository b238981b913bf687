"""MICA's alignment losses between the queries and keys of crossmodal attention.

Liang et al., "Attention is not Enough: Mitigating the Distribution Discrepancy in
Asynchronous Multimodal Sequence Fusion", ICCV 2021, Sec. 3.4:

  L = L_p + alpha * L_m + beta * L_e

* L_m (marginal alignment): sum over layers i and the six directions s -> t of
  MMD^2(keys k_s^[i], queries q_t^[i])  (`marginal_alignment`, built on losses.mmd.mmd2).
* L_e (propagated element-level alignment, Eq. 2): per sample j,
  d_j = sum_{n,m} V^[i]_{nm} ||q_{j,t,n} - k_{j,s,m}||^2 with
  W^[i] = softmax(Q K^T / sqrt(d_k)) > gamma (gamma: the top tau fraction of the matrix),
  V^[l] = W^[0] OR ... OR W^[l]  (`selection_mask`, `propagate`, `element_distance`,
  `element_alignment`).

W and V are indicators: they carry no gradient (the selection is computed under
stop_gradient), the gradient of L_e flows through q and k only.

Array layout (what models.mica puts in aux['crossmodal'][f'{s}->{t}'], layers stacked on a
leading axis of size D): q (D, B, T_t, H, d_h), k (D, B, T_s, H, d_h), probs (D, B, H, T_t,
T_s). A list of per-layer dicts (MulT's aux) is stacked by `stack_layers`.

matmul_dtype (bfloat16 under precision='bf16', from models.mica): the products of the
distance computations (q.(V k) here, x.y of the MMD kernels) take operands in that dtype
with float32 accumulation and output, forward and backward (losses.matmul); the squared
norms, the selection, the kernels, every reduction and the loss values stay float32, and
the vectors are first shifted by a common centre (distances unchanged) so the rounding is
relative to their spread. None: all float32, exactly as before.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mmfuse_jax.losses.matmul import mixed_einsum
from mmfuse_jax.losses.mmd import DEFAULT_SCALES, mmd2
from mmfuse_jax.losses.order import kth_largest


def stack_layers(details: Any) -> dict:
  """{'q','k','probs'} with a leading layer axis; accepts a list of per-layer dicts."""
  if isinstance(details, (list, tuple)):
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *details)
  return details


# ------------------------------------------------------------------ element-level (Eq. 2)
def selection_mask(probs: jnp.ndarray, q_mask: jnp.ndarray, k_mask: jnp.ndarray,
                   tau: float, ways: int | None = None) -> jnp.ndarray:
  """W = probs >= gamma on valid entries, gamma = the k-th largest valid probability of each
  (T_t, T_s) matrix, k = ceil(tau * n_valid) (n_valid = valid queries x valid keys).

  probs (..., T_t, T_s); q_mask (..., T_t) and k_mask (..., T_s) bool, broadcastable to the
  leading axes of probs. Returns a bool array like probs, without gradient. tau = 0 selects
  nothing, tau = 1 every valid entry; ties at gamma are all selected. ways: the bisection's
  thresholds per pass + 1 (losses.order.kth_largest; None: by backend), same result.
  """
  if not 0.0 <= tau <= 1.0:
    raise ValueError(f"selection rate tau must be in [0, 1], got {tau}")
  probs = jax.lax.stop_gradient(probs).astype(jnp.float32)
  valid = q_mask[..., :, None] & k_mask[..., None, :]
  valid = jnp.broadcast_to(valid, probs.shape)
  lead = probs.shape[:-2]
  # gamma exactly, by bisection over the float bits (losses.order): a few vectorised passes
  # (31 binary on CPU, 8 sixteen-way on GPU/TPU) instead of a sort of every T_t x T_s matrix.
  flat_valid = valid.reshape(lead + (-1,))
  k = jnp.ceil(tau * flat_valid.sum(-1) - 1e-6).astype(jnp.int32)
  gamma = kth_largest(probs.reshape(lead + (-1,)), flat_valid, k, ways)
  return valid & (probs >= gamma[..., None, None]) & (k > 0)[..., None, None]


def propagate(selected: jnp.ndarray, axis: int = 0) -> jnp.ndarray:
  """V^[l] = W^[0] OR W^[1] OR ... OR W^[l] along the layer axis (MICA Sec. 3.4)."""
  return jnp.cumsum(selected.astype(jnp.int32), axis=axis) > 0


def element_distance(q: jnp.ndarray, k: jnp.ndarray, weight: jnp.ndarray,
                     matmul_dtype=None) -> jnp.ndarray:
  """d_j = sum_h sum_{n,m} V_{h,n,m} ||q_{h,n} - k_{h,m}||^2 per sample (MICA Eq. 2).

  q (B, T_t, H, d_h), k (B, T_s, H, d_h); weight (B, H, T_t, T_s) per head, or
  (B, T_t, T_s) shared by all heads (then the distance is over the concatenated heads).
  Computed as sum_n r_n |q_n|^2 + sum_m c_m |k_m|^2 - 2 sum_n q_n . (V k)_n with the row
  and column sums r, c of V, without materialising a (T_t, T_s, d) tensor. Returns (B,).

  matmul_dtype: V k (the T_t x T_s x d_h product) with operands in that dtype and float32
  accumulation; q and k are first shifted by the mean c of the selected endpoints per
  sample and head (sum_n r_n q_n + sum_m c_m k_m over sum r + sum c), which leaves every
  ||q_n - k_m|| unchanged, and the distances are those of the rounded shifted vectors.
  """
  if weight.ndim == 3:
    weight = jnp.broadcast_to(weight[:, None], (q.shape[0], q.shape[2]) + weight.shape[1:])
  if matmul_dtype is not None:
    return _element_distance_low(q, k, weight, matmul_dtype)
  v = weight.astype(q.dtype)
  rows = v.sum(-1)                     # (B, H, T_t)
  cols = v.sum(-2)                     # (B, H, T_s)
  qq = jnp.einsum("bnhd,bnhd->bhn", q, q)
  kk = jnp.einsum("bmhd,bmhd->bhm", k, k)
  cross = jnp.einsum("bhnm,bnhd,bmhd->b", v, q, k)
  return (rows * qq).sum((1, 2)) + (cols * kk).sum((1, 2)) - 2.0 * cross


def _element_distance_low(q, k, weight, matmul_dtype) -> jnp.ndarray:
  """`element_distance` with V k in `matmul_dtype` (float32 accumulation); all else float32."""
  q, k = q.astype(jnp.float32), k.astype(jnp.float32)
  rows = weight.sum(-1).astype(jnp.float32)          # (B, H, T_t)
  cols = weight.sum(-2).astype(jnp.float32)          # (B, H, T_s)
  r_t, c_t = jnp.swapaxes(rows, 1, 2)[..., None], jnp.swapaxes(cols, 1, 2)[..., None]
  total = rows.sum(-1) + cols.sum(-1)                # (B, H)
  center = ((r_t * q).sum(1) + (c_t * k).sum(1)) / jnp.maximum(total, 1.0)[..., None]
  center = jax.lax.stop_gradient(center)[:, None]    # (B, 1, H, d_h)
  q_low = (q - center).astype(matmul_dtype).astype(jnp.float32)
  k_low = (k - center).astype(matmul_dtype).astype(jnp.float32)
  v = weight.astype(matmul_dtype)                     # 0/1: exact
  vk = mixed_einsum("bhnm,bmhd->bnhd", v, k_low, matmul_dtype)        # (B, T_t, H, d_h)
  near = (r_t * q_low * q_low).sum((1, 2, 3)) + (c_t * k_low * k_low).sum((1, 2, 3))
  return near - 2.0 * (q_low * vk).sum((1, 2, 3))


def _unit_heads(x: jnp.ndarray, heads: str, eps: float = 1e-12) -> jnp.ndarray:
  """x (..., H, d_h) scaled so each head has norm 1/sqrt(H) ('per_head') or the
  concatenated heads have norm 1 ('mean'); zero vectors stay zero, gradients finite."""
  axes = (-1,) if heads == "per_head" else (-2, -1)
  sq = jnp.sum(x * x, axis=axes, keepdims=True)
  scale = jax.lax.rsqrt(sq + eps)
  if heads == "per_head":
    scale = scale / jnp.sqrt(jnp.asarray(x.shape[-2], x.dtype))
  return x * scale


def element_alignment(q: jnp.ndarray, k: jnp.ndarray, probs: jnp.ndarray,
                      q_mask: jnp.ndarray, k_mask: jnp.ndarray, *, tau: float,
                      propagate_layers: bool = True, heads: str = "per_head",
                      normalize: str = "mean", distance: str = "squared",
                      matmul_dtype=None) -> tuple[jnp.ndarray, dict]:
  """Per-sample L_e contribution of one direction s -> t, summed over layers (Eq. 2).

  q (D, B, T_t, H, d_h), k (D, B, T_s, H, d_h), probs (D, B, H, T_t, T_s), q_mask (B, T_t),
  k_mask (B, T_s). heads: 'per_head' thresholds each head's attention matrix and weights its
  own distances; 'mean' thresholds the head-averaged matrix and weights the distance of the
  concatenated heads. propagate_layers: V^[l] = union of W^[0..l] (paper), else W^[l]
  (Table 5, "w/o propagation"). normalize: 'sum' is Eq. 2 literally; 'mean' divides each
  d_j by the number of selected (n, m) pairs (per head: averaged over heads; at least 1),
  so both heads modes give a mean squared distance between d-wide (all heads) vectors.
  distance: 'squared' is ||q - k||^2 of the raw vectors (Eq. 2); 'cosine' first scales
  every compared vector to a fixed norm (per head 1/sqrt(H), so the concatenated heads
  have norm 1; 'mean' heads: the concatenated vector to norm 1), so ||q - k||^2 =
  2 - 2 cos(q, k) per head and 'mean' gives a value in [0, 4] whatever the scale of q, k.
  matmul_dtype: see `element_distance`.
  Returns ((B,) distances, {'selected_fraction': mean share of valid entries in V}).
  """
  if heads == "mean":
    probs = probs.mean(2)                                   # (D, B, T_t, T_s)
    qm, km = q_mask[None], k_mask[None]
  elif heads == "per_head":
    qm, km = q_mask[None, :, None], k_mask[None, :, None]
  else:
    raise ValueError(f"unknown pe heads mode {heads!r} (valid: 'per_head', 'mean')")
  if distance == "cosine":
    q, k = _unit_heads(q, heads), _unit_heads(k, heads)
  elif distance != "squared":
    raise ValueError(f"unknown pe distance {distance!r} (valid: 'squared', 'cosine')")
  selected = selection_mask(probs, qm, km, tau)
  weight = propagate(selected, axis=0) if propagate_layers else selected
  dist = jax.vmap(lambda a, b, w: element_distance(a, b, w, matmul_dtype))(q, k, weight)
  count = weight.reshape(weight.shape[:2] + (-1,)).sum(-1).astype(dist.dtype)  # (D, B)
  if normalize == "mean":
    pairs = count / (q.shape[3] if heads == "per_head" else 1)  # selected pairs per head
    dist = dist / jnp.maximum(pairs, 1.0)
  elif normalize != "sum":
    raise ValueError(f"unknown pe normalize {normalize!r} (valid: 'sum', 'mean')")
  valid = (qm[..., :, None] & km[..., None, :])
  n_valid = jnp.broadcast_to(valid, weight.shape).reshape(weight.shape[:2] + (-1,)).sum(-1)
  frac = (count / jnp.maximum(n_valid, 1)).mean()
  return dist.sum(0), {"selected_fraction": frac}


# ------------------------------------------------------------------ marginal (MMD)
def _subsample(rng, weights: jnp.ndarray, max_elements: int) -> jnp.ndarray:
  """Indices of min(n, max_elements) elements drawn uniformly without replacement among
  those with weight > 0 (Gumbel top-k); invalid ones only fill up when too few are valid."""
  n = weights.shape[0]
  if not max_elements or max_elements >= n:
    return jnp.arange(n)
  g = jax.random.gumbel(rng, (n,))
  scores = jnp.where(weights > 0, g, -jnp.inf)
  return jax.lax.top_k(scores, max_elements)[1]


def marginal_alignment(q: jnp.ndarray, k: jnp.ndarray, q_mask: jnp.ndarray,
                       k_mask: jnp.ndarray, sample_weights: jnp.ndarray, rng=None, *,
                       pool: str = "batch", max_elements: int = 0,
                       bandwidth: str | float = "median", scales=DEFAULT_SCALES,
                       estimator: str = "biased", matmul_dtype=None) -> jnp.ndarray:
  """sum_i MMD^2(k_s^[i], q_t^[i]) for one direction s -> t (MICA Sec. 3.4, L_m term).

  Vectors are the concatenated heads (d = H * d_h). pool 'batch': one MMD between all
  valid keys and all valid queries of the batch (padding and filler rows weighted 0),
  each side subsampled to max_elements with `rng` when it has more (0: all);
  pool 'sample': one MMD per sample (keys and queries of the same sample), weighted mean
  over samples. matmul_dtype: see losses.mmd. Returns a scalar.
  """
  q, k = jnp.asarray(q), jnp.asarray(k)
  q_mask, k_mask = jnp.asarray(q_mask), jnp.asarray(k_mask)
  sample_weights = jnp.asarray(sample_weights)
  d_layers, b = q.shape[0], q.shape[1]
  qf = q.reshape(d_layers, b, q.shape[2], -1)
  kf = k.reshape(d_layers, b, k.shape[2], -1)
  sample_weights = sample_weights.astype(qf.dtype)
  wq = q_mask.astype(qf.dtype) * sample_weights[:, None]
  wk = k_mask.astype(kf.dtype) * sample_weights[:, None]
  kw = dict(bandwidth=bandwidth, scales=scales, estimator=estimator, matmul_dtype=matmul_dtype)
  if pool == "batch":
    qf = qf.reshape(d_layers, -1, qf.shape[-1]); wq = wq.reshape(-1)
    kf = kf.reshape(d_layers, -1, kf.shape[-1]); wk = wk.reshape(-1)
    if max_elements and max(qf.shape[1], kf.shape[1]) > max_elements:
      if rng is None:
        raise ValueError("marginal_alignment needs an rng to subsample elements")
      rq, rk = jax.random.split(rng)
      iq, ik = _subsample(rq, wq, max_elements), _subsample(rk, wk, max_elements)
      qf, wq, kf, wk = qf[:, iq], wq[iq], kf[:, ik], wk[ik]
    per_layer = jax.vmap(lambda kk, qq: mmd2(kk, qq, wk, wq, **kw))(kf, qf)
    return per_layer.sum()
  if pool == "sample":
    per = jax.vmap(jax.vmap(lambda kk, qq, a, c: mmd2(kk, qq, a, c, **kw)),
                   in_axes=(0, 0, None, None))(kf, qf, wk, wq)       # (D, B)
    total = sample_weights.sum()
    return (per * sample_weights).sum() / jnp.maximum(total, 1.0)
  raise ValueError(f"unknown MMD pool {pool!r} (valid: 'batch', 'sample')")


# ------------------------------------------------------------------ both, over directions
def mica_alignment(crossmodal: dict, masks: dict, sample_weights: jnp.ndarray, rng, *,
                   use_mmd: bool = True, use_pe: bool = True, tau: float = 0.25,
                   propagate_layers: bool = True, pe_heads: str = "per_head",
                   pe_normalize: str = "mean", pe_distance: str = "squared",
                   mmd_pool: str = "batch",
                   mmd_max_elements: int = 0, mmd_bandwidth: str | float = "median",
                   mmd_scales=DEFAULT_SCALES, mmd_estimator: str = "biased",
                   matmul_dtype=None) -> tuple[jnp.ndarray, jnp.ndarray, dict]:
  """(L_m, L_e, metrics) over every crossmodal block 's->t' of `crossmodal`.

  L_m = sum_i sum_{s != t} MMD^2 (scalar). L_e = weighted mean over samples (weights
  `sample_weights`, 0 for filler rows) of sum_i sum_{s != t} d_{j,s,t}^[i]; the paper sums
  over all N training samples, a minibatch estimate of that sum divided by N.
  A switched-off term is 0 and is not computed. matmul_dtype (e.g. bfloat16): the dtype of
  the distance products' operands (float32 accumulation); None: float32 throughout.
  """
  zero = jnp.zeros((), jnp.float32)
  l_m, l_e_per_sample = zero, None
  metrics = {}
  names = sorted(crossmodal)
  for idx, name in enumerate(names):
    s, t = name.split("->")
    det = stack_layers(crossmodal[name])
    q, k, probs = det["q"], det["k"], det["probs"]
    if use_mmd:
      r = None if rng is None else jax.random.fold_in(rng, idx)
      term = marginal_alignment(q, k, masks[t], masks[s], sample_weights, r, pool=mmd_pool,
                                max_elements=mmd_max_elements, bandwidth=mmd_bandwidth,
                                scales=mmd_scales, estimator=mmd_estimator,
                                matmul_dtype=matmul_dtype)
      l_m = l_m + term
      metrics[f"mmd/{name}"] = term
    if use_pe:
      dist, info = element_alignment(q, k, probs, masks[t], masks[s], tau=tau,
                                     propagate_layers=propagate_layers, heads=pe_heads,
                                     normalize=pe_normalize, distance=pe_distance,
                                     matmul_dtype=matmul_dtype)
      l_e_per_sample = dist if l_e_per_sample is None else l_e_per_sample + dist
      metrics[f"pe_selected/{name}"] = info["selected_fraction"]
  l_e = zero
  if l_e_per_sample is not None:
    w = sample_weights.astype(l_e_per_sample.dtype)
    l_e = (l_e_per_sample * w).sum() / jnp.maximum(w.sum(), 1.0)
  return l_m, l_e, metrics


__all__ = ["element_alignment", "element_distance", "marginal_alignment", "mica_alignment",
           "propagate", "selection_mask", "stack_layers"]
