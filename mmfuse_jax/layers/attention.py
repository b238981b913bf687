"""Masked multi-head attention that exposes its queries, keys and probabilities."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.layers.dropout import Dropout


def causal_mask(len_q: int, len_k: int) -> jnp.ndarray:
  """(len_q, len_k) bool mask, True where query i may attend key j.

  Query i sees keys j <= i + |len_k - len_q| (MulT's shifted future mask); for equal
  lengths this is the usual lower-triangular mask.
  """
  shift = abs(len_k - len_q)
  return jnp.arange(len_k)[None, :] <= jnp.arange(len_q)[:, None] + shift


def masked_softmax(logits: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
  """Softmax over the last axis where mask is True; masked entries get exactly 0 and a row
  with no valid entry is all zeros (no NaN)."""
  if mask is None:
    return jax.nn.softmax(logits, axis=-1)
  big_neg = jnp.finfo(logits.dtype).min
  logits = jnp.where(mask, logits, big_neg)
  probs = jax.nn.softmax(logits, axis=-1)
  return jnp.where(mask, probs, 0.0)


class MultiHeadAttention(nn.Module):
  """Scaled dot-product attention over `num_heads` heads (Vaswani et al. 2017).

  Returns (output, details) with details = {'q', 'k': (B, T, H, d_h) projected queries and
  keys, 'probs': (B, H, T_q, T_k) attention probabilities after masking, before dropout}.
  key_mask (B, T_k) marks valid keys; attn_mask (T_q, T_k) or (B, T_q, T_k) restricts more.
  """
  num_heads: int
  dim: int | None = None
  dropout: float = 0.0
  use_bias: bool = True
  dtype: jnp.dtype | None = None   # None: the inputs' and params' dtype (bf16 under
                                   # precision='bf16', whose cast Method.apply does)

  @nn.compact
  def __call__(self, x_q, x_kv, key_mask=None, attn_mask=None, *, train: bool = False):
    dim = self.dim or x_q.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f"attention width {dim} is not divisible by num_heads={self.num_heads}")
    head = dim // self.num_heads
    dense = lambda name: nn.DenseGeneral((self.num_heads, head), use_bias=self.use_bias,
                                         dtype=self.dtype, name=name)
    q = dense("query")(x_q)
    k = dense("key")(x_kv)
    v = dense("value")(x_kv)
    # Scores from compute-dtype operands, then float32 for the softmax statistics (the
    # cast, not preferred_element_type, keeps the backward matmuls in the compute dtype).
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
    logits = logits / np.sqrt(head).astype(np.float32)
    mask = None
    if key_mask is not None:
      mask = key_mask[:, None, None, :]
    if attn_mask is not None:
      am = attn_mask[None, None] if attn_mask.ndim == 2 else attn_mask[:, None]
      mask = am if mask is None else (mask & am)
    probs = masked_softmax(logits, mask)
    dropped = Dropout(self.dropout, deterministic=not train)(probs)
    out = jnp.einsum("bhqk,bkhd->bqhd", dropped.astype(v.dtype), v)
    out = nn.DenseGeneral(dim, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype,
                          name="out")(out)
    return out, {"q": q, "k": k, "probs": probs}
