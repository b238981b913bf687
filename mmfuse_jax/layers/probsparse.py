"""ProbSparse self-attention: RERD's distillation attention (Guo et al. 2022, Eq. 3-4),
after Informer (Zhou et al., AAAI 2021).

For every query q_i an "active estimation" (sparsity measure, Eq. 3)

    M(q_i, K) = max_j s_ij - mean_j s_ij,     s_ij = q_i . k_j / sqrt(d_h)

is computed over a random sample of U = c * ceil(ln L_K) valid keys (all valid keys when
that is not fewer than L_K, or when no 'sample' rng is given: the exact Eq. 3). Only the
top u = c * ceil(ln L_Q) queries attend (Eq. 4: softmax over all valid keys); every other
query outputs the mean of V over the valid keys ("lazy" queries).

Masks: a padded key is never sampled and never attended; a padded query gets M = -inf and
is never marked selected (if u exceeds the number of valid queries, the surplus top-u slots
fall on padded queries and keep the mean-of-V output, which the caller masks anyway).

The pure functions (`sample_key_indices`, `sparsity_measure`, `probsparse_attention`) take
the sampled indices explicitly so a test (or a plot) can replicate the selection exactly.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.layers.attention import masked_softmax

LAYOUTS = ("heads", "reference_view")


def num_sparse(length: int, factor: int) -> int:
  """c * ceil(ln L), at least 1 and at most L: the number of sampled keys (U, with L = L_K)
  and of selected queries (u, with L = L_Q)."""
  if length < 1:
    raise ValueError(f"sequence length must be >= 1, got {length}")
  return int(min(length, max(1, factor * math.ceil(math.log(length)))))


def sample_key_indices(rng, key_mask: jnp.ndarray, num_queries: int, num_samples: int
                       ) -> jnp.ndarray:
  """(B, L_K) bool -> (B, L_Q, U) int32 indices of valid keys, uniform with replacement.

  One uniform draw r[i, j] per (query, sample) is shared by the batch and the heads (as in
  Informer); sample b maps it to its own valid keys: idx = valid_b[floor(r * n_valid_b)].
  A row without valid keys gets index 0 (its queries are padding and never selected).
  """
  r = jax.random.uniform(rng, (num_queries, num_samples))
  n_valid = key_mask.sum(-1).astype(jnp.int32)                        # (B,)
  order = jnp.argsort(~key_mask, axis=-1, stable=True)                # valid keys first
  slot = jnp.floor(r[None] * n_valid[:, None, None]).astype(jnp.int32)
  slot = jnp.clip(slot, 0, jnp.maximum(n_valid - 1, 0)[:, None, None])
  b = key_mask.shape[0]
  idx = jnp.take_along_axis(order, slot.reshape(b, -1), axis=1)
  return idx.reshape(b, num_queries, num_samples).astype(jnp.int32)


def sparsity_measure(q, k, key_mask, sample_idx=None, query_mask=None) -> jnp.ndarray:
  """Eq. 3: M = max - mean of the scaled scores over the sampled (or all valid) keys.

  q (B, L_Q, H, d), k (B, L_K, H, d), key_mask (B, L_K) bool, sample_idx (B, L_Q, U) or None
  (all valid keys). Returns (B, H, L_Q) float32, -inf at padded queries (query_mask).
  """
  scale = 1.0 / np.sqrt(q.shape[-1]).astype(np.float32)
  if sample_idx is None:
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale
    valid = key_mask[:, None, None, :]
    big_neg = jnp.finfo(s.dtype).min
    smax = jnp.where(valid, s, big_neg).max(-1)
    n = jnp.maximum(valid.sum(-1), 1)
    smean = jnp.where(valid, s, 0.0).sum(-1) / n
  else:
    b, lq, u = sample_idx.shape
    k_s = jnp.take_along_axis(k, sample_idx.reshape(b, lq * u)[:, :, None, None], axis=1)
    k_s = k_s.reshape(b, lq, u, *k.shape[2:])                           # (B, L_Q, U, H, d)
    s = jnp.einsum("bqhd,bquhd->bhqu", q, k_s).astype(jnp.float32) * scale
    smax, smean = s.max(-1), s.mean(-1)
  m = smax - smean
  if query_mask is not None:
    m = jnp.where(query_mask[:, None, :], m, -jnp.inf)
  return m


def probsparse_attention(q, k, v, mask, *, num_top: int, sample_idx=None):
  """Eq. 4 with the top-`num_top` queries of Eq. 3; the other queries output mean(V).

  q, k, v (B, L, H, d) (self-attention: queries and keys share `mask` (B, L) bool).
  Returns (context (B, L, H, d), details) with details 'measure' (B, H, L), 'top' (B, H, u)
  indices chosen by jax.lax.top_k, 'selected' (B, H, L) bool (top-u and valid).
  """
  b, length, h, d = q.shape
  measure = jax.lax.stop_gradient(sparsity_measure(q, k, mask, sample_idx, query_mask=mask))
  _, top = jax.lax.top_k(measure, num_top)                             # (B, H, u)
  qh = q.transpose(0, 2, 1, 3)                                         # (B, H, L, d)
  q_sel = jnp.take_along_axis(qh, top[..., None], axis=2)             # (B, H, u, d)
  scale = 1.0 / np.sqrt(d).astype(np.float32)
  logits = jnp.einsum("bhud,bkhd->bhuk", q_sel, k).astype(jnp.float32) * scale
  probs = masked_softmax(logits, mask[:, None, None, :])
  out_sel = jnp.einsum("bhuk,bkhd->bhud", probs.astype(v.dtype), v)
  w = mask.astype(v.dtype)[:, :, None, None]
  mean_v = (v * w).sum(1) / jnp.maximum(w.sum(1), 1.0)                 # (B, H, d)
  sel_valid = jnp.take_along_axis(jnp.broadcast_to(mask[:, None, :], (b, h, length)), top, 2)
  out_sel = jnp.where(sel_valid[..., None], out_sel, mean_v[:, :, None, :])
  ctx = jnp.broadcast_to(mean_v[:, :, None, :], (b, h, length, d))
  bi = jnp.arange(b)[:, None, None]
  hi = jnp.arange(h)[None, :, None]
  ctx = ctx.at[bi, hi, top].set(out_sel)
  selected = jnp.zeros((b, h, length), bool).at[bi, hi, top].set(sel_valid)
  return ctx.transpose(0, 2, 1, 3), {"measure": measure, "top": top, "selected": selected}


def full_attention(q, k, v, mask):
  """Dense masked softmax attention (every query attends): the 'w/o distillation' ablation
  and the u = L limit of `probsparse_attention`. Returns (context (B, L, H, d), probs)."""
  scale = 1.0 / np.sqrt(q.shape[-1]).astype(np.float32)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale
  probs = masked_softmax(logits, mask[:, None, None, :])
  return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v), probs


class ProbSparseSelfAttention(nn.Module):
  """Multi-head ProbSparse self-attention (RERD Eq. 3-4) with input/output projections.

  head_dim defaults to d_model // num_heads (Informer: with d = 64 and 6 heads the heads
  are 10 wide and the output projection maps 60 -> 64). sparse=False gives dense attention.
  Key sampling draws from the 'sample' rng stream; without one (evaluation) the measure
  uses all valid keys, which is deterministic and exactly Eq. 3.

  layout 'heads' (Eq. 4) splits the projections into heads along the features.
  'reference_view' reproduces the official code, which reads the (B, L, H, d) projections
  as (B, H, L, d) with `.view` (no transpose) and the (B, H, L, d) context back as
  (B, L, H * d): the "heads" are then blocks of L consecutive (step, head) slices. That
  layout mixes time steps, so in it attention uses no masks (the official code has none):
  padded steps take part, and only all-valid inputs give the official outputs' meaning.
  Returns (output (B, L, d_model), details: 'q', 'k', 'sample_idx', 'measure', 'top',
  'selected').
  """
  num_heads: int
  head_dim: int | None = None
  factor: int = 3
  sparse: bool = True
  sample_keys: bool = True
  layout: str = "heads"
  dtype: jnp.dtype | None = None   # None: follow the inputs and params (see attention.py)

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    if self.layout not in LAYOUTS:
      raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
    b, length, dim = x.shape
    head = self.head_dim or max(1, dim // self.num_heads)
    dense = lambda name: nn.DenseGeneral((self.num_heads, head), dtype=self.dtype, name=name)
    q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
    details = {"q": q, "k": k}
    if self.layout == "reference_view":
      # torch `.view(B, H, L, d)` of a (B, L, H, d) tensor is a row-major reshape; the
      # functions below take (B, L, H, d), hence the transpose of the viewed tensor.
      viewed = lambda t: t.reshape(b, self.num_heads, length, head).transpose(0, 2, 1, 3)
      q, k, v = viewed(q), viewed(k), viewed(v)
      mask = jnp.ones((b, length), bool)
    if self.sparse:
      u = num_sparse(length, self.factor)
      n_samples = num_sparse(length, self.factor)
      sample_idx = None
      if self.sample_keys and n_samples < length and self.has_rng("sample"):
        sample_idx = sample_key_indices(self.make_rng("sample"), mask, length, n_samples)
      ctx, det = probsparse_attention(q, k, v, mask, num_top=u, sample_idx=sample_idx)
      details.update(det)
      details["sample_idx"] = sample_idx
    else:
      ctx, probs = full_attention(q, k, v, mask)
      details["probs"] = probs
    if self.layout == "reference_view":
      # The official (B, H, L, d) context read back as (B, L, H * d) by `.view`.
      ctx = ctx.transpose(0, 2, 1, 3).reshape(b, length, self.num_heads, head)
    out = nn.DenseGeneral(dim, axis=(-2, -1), dtype=self.dtype, name="out")(ctx)
    return out, details
