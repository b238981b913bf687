"""Pre-LayerNorm transformer blocks, self- and crossmodal (MulT, Tsai et al. 2019, Sec. 3.2)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.layers.attention import MultiHeadAttention, causal_mask
from mmfuse_jax.layers.dropout import Dropout


POSITION_STYLES = ("concat", "interleaved")


def sinusoidal_positions(length: int, dim: int, style: str = "concat", offset: int = 0
                         ) -> jnp.ndarray:
  """(length, dim) sine/cosine position table (Vaswani et al. 2017, Sec. 3.5) of the
  positions offset, ..., offset + length - 1 (MulT's public code numbers from 1).

  style 'concat' (MulT / fairseq / tensor2tensor): sines in the first half, cosines in the
  second, frequencies 10000^(-i / (half - 1)), a zero column for odd dims. 'interleaved'
  (the paper's own layout; Informer's PositionalEmbedding): sin at even, cos at odd
  columns, frequencies 10000^(-2i / dim).
  """
  if style == "interleaved":
    freq = np.exp(-np.log(10000.0) * np.arange(0, dim, 2) / dim)
    pos = np.arange(offset, offset + length)[:, None] * freq[None, :]
    table = np.zeros((length, dim))
    table[:, 0::2] = np.sin(pos)
    table[:, 1::2] = np.cos(pos)[:, :dim // 2]
    return jnp.asarray(table, jnp.float32)
  if style != "concat":
    raise ValueError(f"style must be one of {POSITION_STYLES}, got {style!r}")
  half = dim // 2
  freq = np.exp(-np.log(10000.0) * np.arange(half) / max(half - 1, 1))
  pos = np.arange(offset, offset + length)[:, None] * freq[None, :]
  table = np.concatenate([np.sin(pos), np.cos(pos)], axis=1)
  if dim % 2:
    table = np.concatenate([table, np.zeros((length, 1))], axis=1)
  return jnp.asarray(table, jnp.float32)


def last_valid(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """(B, T, D), (B, T) -> (B, D): the last valid time step of each sequence (step T-1 when
  the mask has no valid step)."""
  t = x.shape[1]
  idx = jnp.where(mask.any(1), t - 1 - jnp.argmax(mask[:, ::-1], axis=1), t - 1)
  return jnp.take_along_axis(x, idx[:, None, None], axis=1)[:, 0]


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """(B, T, D), (B, T) -> (B, D) mean over valid steps (0 where none)."""
  w = mask.astype(x.dtype)[..., None]
  return (x * w).sum(1) / jnp.maximum(w.sum(1), 1.0)


class AttentionPool(nn.Module):
  """(B, T, D), (B, T) -> (B, D): sum_t a_t x_t with a = softmax over the valid steps of a
  learned linear score w.x_t + b (one learned query; 0 where no step is valid)."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    mask = mask.astype(bool)
    scores = nn.Dense(1, name="score")(x)[..., 0].astype(jnp.float32)
    scores = jnp.where(mask, scores, -jnp.inf)
    weights = jax.nn.softmax(jnp.where(mask.any(1, keepdims=True), scores, 0.0), axis=1)
    weights = jnp.where(mask, weights, 0.0).astype(x.dtype)
    return jnp.einsum("bt,btd->bd", weights, x)


class TransformerLayer(nn.Module):
  """x <- x + Drop(MHA(LN(x), LN(x_kv))); x <- x + Drop(FF(LN(x))).

  With x_kv given this is MulT's crossmodal attention block (queries from the target
  modality, keys and values from the source); otherwise self-attention.
  """
  num_heads: int
  ff_mult: int = 4
  attn_dropout: float = 0.0
  relu_dropout: float = 0.0
  res_dropout: float = 0.0
  layer_norm_eps: float = 1e-6
  dtype: jnp.dtype | None = None   # None: follow the inputs and params (see attention.py)
  attention_impl: str = "auto"     # MultiHeadAttention.implementation

  @nn.compact
  def __call__(self, x, x_kv=None, kv_mask=None, attn_mask=None, train: bool = False):
    ln = nn.LayerNorm(epsilon=self.layer_norm_eps, name="ln_attn")
    h = ln(x)
    kv = h if x_kv is None else ln(x_kv)
    attn, details = MultiHeadAttention(self.num_heads, dropout=self.attn_dropout,
                                       dtype=self.dtype, implementation=self.attention_impl,
                                       name="attn")(
                                           h, kv, kv_mask, attn_mask, train=train)
    x = x + Dropout(self.res_dropout, deterministic=not train)(attn)
    d = x.shape[-1]
    h = nn.LayerNorm(epsilon=self.layer_norm_eps, name="ln_ff")(x)
    h = nn.relu(nn.Dense(self.ff_mult * d, dtype=self.dtype, name="ff1")(h))
    h = Dropout(self.relu_dropout, deterministic=not train)(h)
    h = nn.Dense(d, dtype=self.dtype, name="ff2")(h)
    x = x + Dropout(self.res_dropout, deterministic=not train)(h)
    return x, details


class TransformerEncoder(nn.Module):
  """MulT's TransformerEncoder: scale by sqrt(d), add sinusoidal positions, embedding
  dropout, `num_layers` pre-LN layers, final LayerNorm. Cross-attends to x_kv when given.

  q_mask / kv_mask (B, T) mark the steps attention may read (None: all). position_offset
  numbers the first step (MulT's public code: 1). q_position_mask / kv_position_mask
  (B, T), when given, drop the position embedding of the steps marked False (the public
  code gives its padding steps none).
  Returns (output (B, T_q, d), per-layer details list).
  """
  num_heads: int
  num_layers: int
  attn_dropout: float = 0.0
  relu_dropout: float = 0.0
  res_dropout: float = 0.0
  embed_dropout: float = 0.0
  causal: bool = False
  positions: bool = True
  scan_layers: bool = True
  remat_attention: bool = False
  position_offset: int = 0
  layer_norm_eps: float = 1e-6   # flax default; PyTorch's nn.LayerNorm: 1e-5
  dtype: jnp.dtype | None = None   # None: follow the inputs and params (see attention.py)
  attention_impl: str = "auto"     # MultiHeadAttention.implementation

  def _embed(self, x, position_mask, train):
    d = x.shape[-1]
    x = float(np.sqrt(d)) * x   # a Python float is weakly typed: x keeps its dtype
    if self.positions:
      pos = sinusoidal_positions(x.shape[1], d, offset=self.position_offset)[None].astype(
          x.dtype)
      if position_mask is not None:
        pos = jnp.where(position_mask[..., None], pos, 0.0)
      x = x + pos
    return Dropout(self.embed_dropout, deterministic=not train)(x)

  @nn.compact
  def __call__(self, x, q_mask=None, x_kv=None, kv_mask=None, *, q_position_mask=None,
               kv_position_mask=None, train: bool = False):
    cross = x_kv is not None
    x = self._embed(x, q_position_mask, train)
    if cross:
      x_kv = self._embed(x_kv, kv_position_mask, train)
    else:
      kv_mask = q_mask
    len_k = x_kv.shape[1] if cross else x.shape[1]
    attn_mask = causal_mask(x.shape[1], len_k) if self.causal else None
    layer_kwargs = dict(num_heads=self.num_heads, attn_dropout=self.attn_dropout,
                        relu_dropout=self.relu_dropout, res_dropout=self.res_dropout,
                        layer_norm_eps=self.layer_norm_eps, dtype=self.dtype,
                        attention_impl=self.attention_impl)
    layer_cls = TransformerLayer
    if self.remat_attention:
      # Backward pass recomputes everything but the outputs of batch-free matmuls (the Dense
      # projections): the (B, H, T_q, T_k) scores, probabilities and dropout are redone
      # from the saved q, k, v instead of being stored per layer.
      layer_cls = nn.remat(TransformerLayer, static_argnums=(5,),
                           policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    if self.scan_layers:
      # One compiled layer body for the whole stack (much faster compiles); details are
      # stacked along a leading layer axis.
      def body(layer, carry, _):
        out, det = layer(carry, x_kv, kv_mask, attn_mask, train)
        return out, det
      stack = nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True,
                                                                    "dropout": True},
                      length=self.num_layers)
      x, stacked = stack(layer_cls(**layer_kwargs, name="layers"), x, None)
      details = [jax.tree_util.tree_map(lambda a, i=i: a[i], stacked)
                 for i in range(self.num_layers)]
    else:
      details = []
      for i in range(self.num_layers):
        x, det = layer_cls(**layer_kwargs, name=f"layer_{i}")(
            x, x_kv, kv_mask, attn_mask, train)
        details.append(det)
    x = nn.LayerNorm(epsilon=self.layer_norm_eps, name="ln_out")(x)
    if q_mask is not None:
      x = jnp.where(q_mask[..., None], x, 0.0)
    return x, details
