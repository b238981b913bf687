"""Distillation attention layers (RERD, Guo et al. 2022, Eq. 2; Informer's encoder).

    x_{m,1} = Attn(x_m),   x_{m,n} = MaxPool(Attn(x_{m,n-1})),  2 <= n <= floor(log2 t_m) + 1

Attn is an encoder layer around ProbSparse self-attention (residual, LayerNorm, a 1x1-conv
feed-forward, LayerNorm: Informer's EncoderLayer). "MaxPool" is Informer's distilling
block: Conv1d (kernel 3) -> BatchNorm -> ELU -> MaxPool(kernel 3, stride 2, pad 1), which
maps a length L to floor((L - 1) / 2) + 1 = ceil(L / 2). Masks are pooled with the same
windows (a pooled step is valid when its window holds a valid step; padded steps never win
the max) and every layer keeps padded steps at exactly zero.

Layer order: 'paper' (Eq. 2 and Fig. 2(b): Attn, then Attn + MaxPool for every later
layer) or 'reference' (the official Encoder: Attn + MaxPool for every layer but the last,
then Attn). Both have n attention layers and n - 1 halvings.

Conv padding: 'SAME' (zeros), 'CIRCULAR' (one step each side, length kept) or
'CIRCULAR_2' (the official ConvLayer: two steps each side, so the conv adds two steps and
a layer maps L to floor((L + 1) / 2) + 1: 50 -> 26 -> 14 instead of 50 -> 25 -> 13).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.layers.dropout import Dropout
from mmfuse_jax.layers.probsparse import ProbSparseSelfAttention

POOL_WINDOW, POOL_STRIDE, POOL_PAD = 3, 2, 1
PADDINGS = ("SAME", "CIRCULAR", "CIRCULAR_2")
ORDERS = ("paper", "reference")
ACTIVATIONS = {"gelu": nn.gelu, "relu": nn.relu}
LN_EPSILON = 1e-5   # torch's LayerNorm default, as in Informer and the official code


def pooled_length(length: int) -> int:
  """Length after MaxPool(kernel 3, stride 2, padding 1): floor((L + 2 - 3) / 2) + 1."""
  return (length + 2 * POOL_PAD - POOL_WINDOW) // POOL_STRIDE + 1


def conv_length(length: int, padding: str = "SAME") -> int:
  """Length after the distilling Conv1d(kernel 3): kept, or + 2 with 'CIRCULAR_2'."""
  if padding not in PADDINGS:
    raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
  return length + 2 if padding == "CIRCULAR_2" else length


def pools_after(layer: int, num_layers: int, order: str = "paper") -> bool:
  """Whether the distilling block follows attention layer `layer` (0-based)."""
  if order not in ORDERS:
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
  return layer > 0 if order == "paper" else layer < num_layers - 1


def distilled_lengths(length: int, num_layers: int, distill: bool = True,
                      padding: str = "SAME", order: str = "paper") -> list[int]:
  """Length after each of `num_layers` layers (attention, then the distilling block where
  `pools_after`); without distillation every layer keeps the length."""
  out, cur = [], length
  for i in range(num_layers):
    if distill and pools_after(i, num_layers, order):
      cur = pooled_length(conv_length(cur, padding))
    out.append(cur)
  return out


def max_distill_layers(length: int) -> int:
  """Eq. 2's bound n <= floor(log2 t) + 1 (the last layer still has >= 1 step per halving)."""
  if length < 1:
    raise ConfigError(f"sequence length must be >= 1, got {length}")
  return int(math.floor(math.log2(length))) + 1


def check_distill_layers(lengths: dict[str, int], num_layers: int) -> None:
  """Raises ConfigError when `num_layers` exceeds Eq. 2's bound for the shortest modality."""
  if num_layers < 1:
    raise ConfigError(f"net.distill_layers must be >= 1, got {num_layers}")
  m = min(lengths, key=lambda k: lengths[k])
  limit = max_distill_layers(lengths[m])
  if num_layers > limit:
    raise ConfigError(
        f"net.distill_layers={num_layers} is too many: the shortest sequence ({m!r}, "
        f"{lengths[m]} steps) allows at most floor(log2 {lengths[m]}) + 1 = {limit} "
        f"distillation layers (RERD Eq. 2)")


def masked_max_pool(x, mask):
  """(B, L, D), (B, L) -> MaxPool1d(3, stride 2, pad 1) over valid steps only, and the
  pooled mask. Windows without a valid step give 0 and mask False."""
  pool = lambda a: nn.max_pool(a, (POOL_WINDOW,), strides=(POOL_STRIDE,),
                               padding=((POOL_PAD, POOL_PAD),))  # pads with -inf
  y = pool(jnp.where(mask[..., None], x, -jnp.inf))
  m = pool(mask.astype(x.dtype)[..., None])[..., 0] > 0
  return jnp.where(m[..., None], y, 0.0), m


def circular_pad(x, pad: int):
  """(B, L, ...) -> (B, L + 2 pad, ...) wrapped around the time axis (torch's circular
  padding; it may wrap more than once when pad > L)."""
  idx = (np.arange(-pad, x.shape[1] + pad)) % x.shape[1]
  return jnp.take(x, idx, axis=1)


class DistillConv(nn.Module):
  """Informer's distilling block: Conv1d(k=3) -> norm -> ELU -> masked MaxPool(3, 2, 1).

  norm 'batch' is a BatchNorm over valid steps only ('batch_stats' collection); 'layer' is
  a LayerNorm. padding 'SAME' pads with zeros (padded steps are zero); 'CIRCULAR' wraps one
  step each side; 'CIRCULAR_2' wraps two (the official ConvLayer), so the conv output has
  L + 2 steps, an output step being valid when its window holds a valid step. Circular
  padding wraps over the padded length (the official code has no masks).
  """
  norm: str = "batch"
  padding: str = "SAME"
  momentum: float = 0.9   # flax convention (torch momentum 0.1)

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    x = jnp.where(mask[..., None], x, 0.0)
    if self.padding == "CIRCULAR_2":
      x = nn.Conv(x.shape[-1], (3,), padding="VALID", name="conv")(circular_pad(x, 2))
      window = lambda a: nn.max_pool(a, (3,), strides=(1,), padding="VALID")
      mask = window(circular_pad(mask, 2).astype(x.dtype)[..., None])[..., 0] > 0
    elif self.padding in ("SAME", "CIRCULAR"):
      x = nn.Conv(x.shape[-1], (3,), padding=self.padding, name="conv")(x)
    else:
      raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
    if self.norm == "batch":
      x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=1e-5,
                       name="norm")(x, mask=jnp.broadcast_to(mask[..., None], x.shape))
    elif self.norm == "layer":
      x = nn.LayerNorm(epsilon=LN_EPSILON, name="norm")(x)
    else:
      raise ValueError(f"norm must be 'batch' or 'layer', got {self.norm!r}")
    x = nn.elu(x)
    return masked_max_pool(x, mask)


class DistillEncoderLayer(nn.Module):
  """Attn of Eq. 2: x <- LN(x + Drop(ProbSparse(x))); x <- LN(x + Drop(FF(x))), FF a pair
  of 1x1 convolutions d -> d_ff -> d with GELU or ReLU (Informer's EncoderLayer, post-LN).
  `layout`: see ProbSparseSelfAttention."""
  num_heads: int
  d_ff: int = 64
  factor: int = 3
  sparse: bool = True
  sample_keys: bool = True
  dropout: float = 0.0
  activation: str = "gelu"
  layout: str = "heads"

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, "
                       f"got {self.activation!r}")
    drop = lambda y: Dropout(self.dropout, deterministic=not train)(y)
    attn, details = ProbSparseSelfAttention(self.num_heads, factor=self.factor,
                                            sparse=self.sparse, sample_keys=self.sample_keys,
                                            layout=self.layout, name="attn")(
                                                x, mask, train=train)
    x = nn.LayerNorm(epsilon=LN_EPSILON, name="ln_attn")(x + drop(attn))
    h = drop(ACTIVATIONS[self.activation](nn.Dense(self.d_ff, name="ff1")(x)))
    h = drop(nn.Dense(x.shape[-1], name="ff2")(h))
    x = nn.LayerNorm(epsilon=LN_EPSILON, name="ln_ff")(x + h)
    return jnp.where(mask[..., None], x, 0.0), details


class DistillationStack(nn.Module):
  """D_n of Eq. 5: `num_layers` layers of Eq. 2, then a final LayerNorm (Informer).

  distill=False (ablation 'w/o distillation layers') uses dense self-attention and no
  pooling. The distilling block after attention layer i is `pool_i` (see `pools_after`
  for the order). Returns (x (B, L_n, d), mask (B, L_n), per-layer details); the lengths
  are `distilled_lengths(L, num_layers, distill, padding, order)`.
  """
  num_heads: int
  num_layers: int
  d_ff: int = 64
  factor: int = 3
  distill: bool = True
  sample_keys: bool = True
  dropout: float = 0.0
  norm: str = "batch"
  padding: str = "SAME"
  order: str = "paper"
  activation: str = "gelu"
  layout: str = "heads"

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    details = []
    x = jnp.where(mask[..., None], x, 0.0)
    for i in range(self.num_layers):
      x, det = DistillEncoderLayer(self.num_heads, self.d_ff, self.factor, sparse=self.distill,
                                   sample_keys=self.sample_keys, dropout=self.dropout,
                                   activation=self.activation, layout=self.layout,
                                   name=f"layer_{i}")(x, mask, train=train)
      if self.distill and pools_after(i, self.num_layers, self.order):
        x, mask = DistillConv(self.norm, self.padding, name=f"pool_{i}")(x, mask, train=train)
      det = dict(det, mask=mask)
      details.append(det)
    x = nn.LayerNorm(epsilon=LN_EPSILON, name="ln_out")(x)
    return jnp.where(mask[..., None], x, 0.0), mask, details
