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


IMPLEMENTATIONS = ("auto", "explicit", "xla", "cudnn", "chunked")
CHUNK_SIZE = 512   # key chunk of the online-softmax path; 'auto' uses it for longer keys


def choose_implementation(backend: str, dtype, head_dim: int, len_k: int, *,
                          dropout_active: bool, chunk_size: int = CHUNK_SIZE) -> str:
  """The attention path for one block: 'explicit' (probabilities materialised) while
  attention dropout is active (it acts on the probabilities); otherwise cuDNN's fused
  kernel on GPU where it applies (bf16/fp16, head width a multiple of 8 up to 128), the
  chunked online softmax for keys longer than `chunk_size` on other accelerators, and
  `jax.nn.dot_product_attention`'s XLA path elsewhere (CPU; short keys)."""
  if dropout_active:
    return "explicit"
  low = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  if backend in ("gpu", "cuda") and low and head_dim % 8 == 0 and head_dim <= 128:
    return "cudnn"
  if backend != "cpu" and len_k > chunk_size:
    return "chunked"
  return "xla"


def _broadcast_mask(mask, b: int, h: int, len_q: int, len_k: int):
  return None if mask is None else jnp.broadcast_to(mask, (b, h, len_q, len_k))


def explicit_attention(q, k, v, mask, dropout=None):
  """softmax(q k^T / sqrt(d_h)) v with the scores and statistics in float32 and
  `masked_softmax`'s rows (a query without valid keys outputs 0). q (B, T_q, H, d),
  k and v (B, T_k, H, d), mask broadcastable to (B, H, T_q, T_k) bool or None; dropout:
  None or a function applied to the probabilities before they weight v (attention
  dropout). Scores come from compute-dtype operands and are then cast to float32 (the
  cast, not preferred_element_type, keeps the backward matmuls in the compute dtype).
  Returns (context (B, T_q, H, d), probabilities before dropout (B, H, T_q, T_k) float32)."""
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
  probs = masked_softmax(logits / np.sqrt(q.shape[-1]).astype(np.float32), mask)
  weights = probs if dropout is None else dropout(probs)
  return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v), probs


def fused_attention(q, k, v, mask, implementation: str = "xla"):
  """`jax.nn.dot_product_attention` (implementation 'xla' or 'cudnn'), with the rows that
  have no valid key set to 0 as in `explicit_attention` (the fused kernels average V
  there). Same arguments and context as `explicit_attention`; no probabilities."""
  b, len_q, h, _ = q.shape
  full = _broadcast_mask(mask, b, h, len_q, k.shape[1])
  out = jax.nn.dot_product_attention(q, k, v, mask=full, implementation=implementation)
  if full is None:
    return out
  has_key = full.any(-1).transpose(0, 2, 1)[..., None]          # (B, T_q, H, 1)
  return jnp.where(has_key, out, jnp.zeros((), out.dtype))


def chunked_attention(q, k, v, mask, chunk_size: int = CHUNK_SIZE):
  """`explicit_attention`'s context in chunks of `chunk_size` keys with an online softmax
  (running max m, normaliser l and unnormalised context; Milakov & Gimelshein 2018): the
  (T_q, T_k) scores never exist at once, and the backward pass recomputes each chunk
  (jax.checkpoint) instead of storing its scores. Float32 statistics; 0 for rows with no
  valid key."""
  b, len_q, h, d = q.shape
  len_k = k.shape[1]
  n_chunks = -(-len_k // chunk_size)
  pad = n_chunks * chunk_size - len_k
  full = _broadcast_mask(mask, b, h, len_q, len_k)
  if full is None:
    full = jnp.ones((b, h, len_q, len_k), bool)
  if pad:
    k = jnp.pad(k, ((0, 0), (0, pad), (0, 0), (0, 0)))
    v = jnp.pad(v, ((0, 0), (0, pad), (0, 0), (0, 0)))
    full = jnp.pad(full, ((0, 0), (0, 0), (0, 0), (0, pad)))
  chunks = lambda a, axis: jnp.moveaxis(
      a.reshape(a.shape[:axis] + (n_chunks, chunk_size) + a.shape[axis + 1:]), axis, 0)
  scale = 1.0 / np.sqrt(d).astype(np.float32)
  big_neg = jnp.finfo(jnp.float32).min

  @jax.checkpoint
  def step(carry, xs):
    m, l, acc = carry
    k_c, v_c, mask_c = xs
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k_c).astype(jnp.float32) * scale
    s = jnp.where(mask_c, s, big_neg)
    m_new = jnp.maximum(m, s.max(-1))
    p = jnp.where(mask_c, jnp.exp(s - m_new[..., None]), 0.0)
    corr = jnp.exp(m - m_new)
    l = l * corr + p.sum(-1)
    pv = jnp.einsum("bhqk,bkhd->bhqd", p.astype(v.dtype), v_c).astype(jnp.float32)
    return (m_new, l, acc * corr[..., None] + pv), None

  init = (jnp.full((b, h, len_q), big_neg, jnp.float32), jnp.zeros((b, h, len_q), jnp.float32),
          jnp.zeros((b, h, len_q, d), jnp.float32))
  (_, l, acc), _ = jax.lax.scan(step, init, (chunks(k, 1), chunks(v, 1), chunks(full, 3)))
  out = jnp.where(l[..., None] > 0, acc / jnp.maximum(l, 1e-30)[..., None], 0.0)
  return out.transpose(0, 2, 1, 3).astype(v.dtype)


class MultiHeadAttention(nn.Module):
  """Scaled dot-product attention over `num_heads` heads (Vaswani et al. 2017).

  Returns (output, details) with details = {'q', 'k': (B, T, H, d_h) projected queries and
  keys, 'probs': (B, H, T_q, T_k) attention probabilities after masking, before dropout}.
  key_mask (B, T_k) marks valid keys; attn_mask (T_q, T_k) or (B, T_q, T_k) restricts more.

  implementation: 'auto' (`choose_implementation` for the default backend), or one of
  'explicit', 'xla', 'cudnn', 'chunked' (`explicit_attention`, `fused_attention`,
  `chunked_attention`; an active dropout always takes 'explicit'). On the fused and
  chunked paths details['probs'] is computed apart from the output: when nothing reads
  it (the train and eval steps of models without attention losses) XLA removes it, and
  the (T_q, T_k) probabilities are never materialised.
  """
  num_heads: int
  dim: int | None = None
  dropout: float = 0.0
  use_bias: bool = True
  dtype: jnp.dtype | None = None   # None: the inputs' and params' dtype (bf16 under
                                   # precision='bf16', whose cast Method.apply does)
  implementation: str = "auto"
  chunk_size: int = CHUNK_SIZE

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
    mask = None
    if key_mask is not None:
      mask = key_mask[:, None, None, :]
    if attn_mask is not None:
      am = attn_mask[None, None] if attn_mask.ndim == 2 else attn_mask[:, None]
      mask = am if mask is None else (mask & am)
    if self.implementation not in IMPLEMENTATIONS:
      raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got "
                       f"{self.implementation!r}")
    dropout_active = train and self.dropout > 0
    impl = self.implementation
    if impl == "auto" or dropout_active:
      impl = choose_implementation(jax.default_backend(), q.dtype, head, k.shape[1],
                                   dropout_active=dropout_active, chunk_size=self.chunk_size)
    if impl == "explicit":
      out, probs = explicit_attention(q, k, v, mask,
                                      Dropout(self.dropout, deterministic=not train))
    else:
      if impl == "chunked":
        out = chunked_attention(q, k, v, mask, self.chunk_size)
      else:
        out = fused_attention(q, k, v, mask, impl)
      _, probs = explicit_attention(q, k, v, mask)   # removed by XLA unless read
    out = nn.DenseGeneral(dim, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype,
                          name="out")(out)
    return out, {"q": q, "k": k, "probs": probs}
