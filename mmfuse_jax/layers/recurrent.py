"""Masked (bi)directional LSTMs over padded sequences (padding anywhere).

`MaskedLSTM` runs flax `nn.RNN(nn.OptimizedLSTMCell)` (LSTMCell's math and parameters,
gates computed in one matmul) over the valid steps of each sequence only:
the valid steps are packed to the front (order kept), run with `seq_lengths` (the
backward direction reverses only the valid part), and the outputs are scattered back to
the original positions, zeros at padded steps. So a sequence's outputs do not depend on
its padding, and the backward direction starts at the last *valid* step, as PyTorch's
packed sequences do. Rows without any valid step give zeros.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mmfuse_jax.layers.dropout import Dropout


def pack_valid(x: jnp.ndarray, mask: jnp.ndarray):
  """(B, T, D), (B, T) bool -> (packed (B, T, D), lengths (B,) int32, rank (B, T) int32).

  packed holds the valid steps at the front in their order and zeros after; rank[b, t] is
  the packed index of step t (meaningful where mask[b, t])."""
  t = mask.shape[1]
  steps = jnp.arange(t)
  order = jnp.argsort(jnp.where(mask, steps, t + steps), axis=1)
  packed_mask = jnp.take_along_axis(mask, order, axis=1)
  packed = jnp.take_along_axis(x, order[..., None], axis=1)
  packed = jnp.where(packed_mask[..., None], packed, 0.0)
  rank = (jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1).clip(0)
  return packed, mask.sum(1).astype(jnp.int32), rank


def unpack_valid(packed: jnp.ndarray, mask: jnp.ndarray, rank: jnp.ndarray) -> jnp.ndarray:
  """Inverse of `pack_valid`: (B, T, H) packed outputs -> original positions, 0 at padding."""
  out = jnp.take_along_axis(packed, rank[..., None], axis=1)
  return jnp.where(mask[..., None], out, 0.0)


class MaskedLSTM(nn.Module):
  """(Bi)LSTM over the valid steps of (B, T, D) under a (B, T) mask.

  Returns (outputs (B, T, H * directions) at the original positions, zeros at padding;
  final (B, H * directions): forward state after the last valid step, concatenated with
  the backward state after the first valid step; 0 for empty rows). Stacked layers get
  dropout between them (PyTorch nn.LSTM semantics).
  """
  hidden: int
  bidirectional: bool = True
  num_layers: int = 1
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    mask = mask.astype(bool)
    packed, lengths, rank = pack_valid(x, mask)
    valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
    nonempty = (lengths > 0)[:, None]
    finals = None
    for i in range(self.num_layers):
      if i > 0:
        packed = Dropout(self.dropout, deterministic=not train)(packed)
      # Zero initial state in the inputs' dtype (flax's default carry is float32, which
      # would promote every bf16 step matmul back to float32).
      zeros = jnp.zeros((x.shape[0], self.hidden), packed.dtype)
      (_, h_f), y_f = nn.RNN(nn.OptimizedLSTMCell(self.hidden, name=f"forward_{i}"),
                             return_carry=True)(packed, initial_carry=(zeros, zeros),
                                                seq_lengths=lengths)
      outs, finals = [y_f], [h_f]
      if self.bidirectional:
        (_, h_b), y_b = nn.RNN(nn.OptimizedLSTMCell(self.hidden, name=f"backward_{i}"),
                               return_carry=True, reverse=True, keep_order=True)(
                                   packed, initial_carry=(zeros, zeros), seq_lengths=lengths)
        outs.append(y_b); finals.append(h_b)
      packed = jnp.where(valid[..., None], jnp.concatenate(outs, axis=-1), 0.0)
    final = jnp.where(nonempty, jnp.concatenate(finals, axis=-1), 0.0)
    return unpack_valid(packed, mask, rank), final


__all__ = ["MaskedLSTM", "pack_valid", "unpack_valid"]
