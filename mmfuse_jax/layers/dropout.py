"""Dropout with a fused random mask: the same masks as `flax.linen.Dropout`, bit for bit.

`flax.linen.Dropout` draws its mask with `jax.random.bernoulli`, i.e. JAX's threefry2x32
counter-mode hash (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3") of
each element's flat index. On CPU, JAX lowers that hash as a rolled 5-iteration while loop,
so every round group reads and writes the whole counter state: for MulT's attention
dropout over (batch, heads, 500, 500) scores this was a quarter of the train step
(scripts/profile_step.py). `fused_bernoulli` computes the same hash written out round by
round from broadcasted iotas, which XLA fuses with the comparison and the select into one
elementwise pass (scripts/bench_dropout.py times both).

Equality with JAX holds for the default PRNG configuration (threefry2x32 keys,
`jax_threefry_partitionable`, float32 probabilities, fewer than 2**32 elements) and is
tested bit for bit; in any other configuration `Dropout` calls `jax.random.bernoulli`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Threefry-2x32 rotation constants (Salmon et al. 2011), alternating every 4 rounds.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)


# The hash is written with lax primitives rather than jnp operators: each jnp operator is a
# small jitted function, and a MulT train step draws about 160 masks of some 130 operations
# each, so the operators alone made up a third of the step's tracing time.
def _rotate_left(x: jnp.ndarray, d: int) -> jnp.ndarray:
  return lax.bitwise_or(lax.shift_left(x, np.uint32(d)),
                        lax.shift_right_logical(x, np.uint32(32 - d)))


def threefry2x32(k0, k1, x0, x1):
  """Threefry-2x32 with 20 rounds: key words (k0, k1), counter words (x0, x1), all uint32.

  Key injection after every 4 rounds with the extended key (k0, k1, k0 ^ k1 ^ C) and the
  injection index added to the second word, as in the Random123 reference and JAX."""
  k0, k1, x0, x1 = (jnp.asarray(v, jnp.uint32) for v in (k0, k1, x0, x1))
  ks = (k0, k1, lax.bitwise_xor(lax.bitwise_xor(k0, k1), _KEY_PARITY))
  x0, x1 = lax.add(x0, ks[0]), lax.add(x1, ks[1])
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x0 = lax.add(x0, x1)
      x1 = lax.bitwise_xor(_rotate_left(x1, r), x0)
    x0 = lax.add(x0, ks[(i + 1) % 3])
    x1 = lax.add(lax.add(x1, ks[(i + 2) % 3]), np.uint32(i + 1))
  return x0, x1


def flat_index(shape: Sequence[int]) -> jnp.ndarray:
  """uint32 array of `shape` holding each element's row-major flat index (size < 2**32)."""
  if not shape:
    return jnp.zeros((), jnp.uint32)
  strides = np.cumprod((*shape[1:], 1)[::-1])[::-1]
  idx = lax.full(tuple(shape), 0, jnp.uint32)
  for d, s in enumerate(strides):
    idx = lax.add(idx, lax.mul(lax.broadcasted_iota(jnp.uint32, tuple(shape), d),
                               np.uint32(s)))
  return idx


@functools.partial(jax.jit, static_argnums=2)
def _hash_bits(k0, k1, shape: tuple) -> jnp.ndarray:
  """threefry2x32 of every flat index under key (k0, k1), the two output words xor-ed: one
  jitted function per shape, so a train step traces the hash once per mask shape."""
  hi, lo = threefry2x32(k0, k1, lax.full(shape, 0, jnp.uint32), flat_index(shape))
  return lax.bitwise_xor(hi, lo)


def _threefry_key_words(key):
  """(k0, k1) uint32 words of a threefry key (raw or typed), or None for other PRNGs."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if "threefry" not in str(jax.random.key_impl(key)):
      return None
    key = jax.random.key_data(key)
  elif jax.config.jax_default_prng_impl != "threefry2x32":
    return None
  if key.shape != (2,) or key.dtype != jnp.uint32:
    return None
  return key[0], key[1]


def fused_random_bits(key, shape: Sequence[int]) -> jnp.ndarray | None:
  """uint32 bits equal to jax.random.bits(key, shape), or None where that equality is not
  guaranteed (non-threefry key, non-partitionable threefry, 2**32 elements or more)."""
  words = _threefry_key_words(key)
  if (words is None or not jax.config.jax_threefry_partitionable
      or int(np.prod(shape)) >= 2 ** 32):
    return None
  return _hash_bits(*words, tuple(int(d) for d in shape))


def fused_bernoulli(key, p: float, shape: Sequence[int]) -> jnp.ndarray:
  """Bool mask, True with probability p: jax.random.bernoulli(key, p, shape) bit for bit
  (uniform float32 from the top 23 bits, compared with p), fused where possible."""
  bits = None if jax.config.jax_enable_x64 else fused_random_bits(key, tuple(shape))
  if bits is None:
    return jax.random.bernoulli(key, p, shape)
  one = np.array(1.0, np.float32).view(np.uint32)
  mantissa = lax.bitwise_or(lax.shift_right_logical(bits, np.uint32(9)), one)
  uniform = lax.sub(lax.bitcast_convert_type(mantissa, jnp.float32), np.float32(1.0))
  return lax.lt(uniform, np.float32(p))


def dropout_saving_mask(x, key, keep_prob: float, mask_shape: tuple):
  """x * mask / keep_prob with the (broadcast) Bernoulli(keep_prob) mask of `key`; autodiff
  stores the boolean mask for the backward pass (what flax.linen.Dropout does)."""
  mask = jnp.broadcast_to(fused_bernoulli(key, keep_prob, mask_shape), x.shape)
  return lax.select(mask, x / keep_prob, jnp.zeros_like(x))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def dropout(x, key, keep_prob: float, mask_shape: tuple):
  """`dropout_saving_mask` whose backward pass redraws the mask from `key` instead of
  storing it: the only residual is the key, so a layer scan (nn.scan) does not copy a
  (layers, batch, heads, T_q, T_k) boolean stack, and memory drops by that much. Same
  values and gradients. Reverse mode only (jax.jvp through it raises)."""
  return dropout_saving_mask(x, key, keep_prob, mask_shape)


def _dropout_fwd(x, key, keep_prob, mask_shape):
  return dropout_saving_mask(x, key, keep_prob, mask_shape), key


def _dropout_bwd(keep_prob, mask_shape, key, g):
  return dropout_saving_mask(g, key, keep_prob, mask_shape), None


dropout.defvjp(_dropout_fwd, _dropout_bwd)


class Dropout(nn.Module):
  """Inverted dropout, a drop-in for flax.linen.Dropout (same fields, same masks for the
  same keys) whose mask is computed by `fused_bernoulli` and redrawn in the backward pass
  (`dropout`)."""
  rate: float
  broadcast_dims: Sequence[int] = ()
  deterministic: bool | None = None
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng=None):
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    if self.rate == 0.0 or deterministic:
      return inputs
    if self.rate == 1.0:
      return jnp.zeros_like(inputs)
    if rng is None:
      rng = self.make_rng(self.rng_collection)
    shape = list(inputs.shape)
    for dim in self.broadcast_dims:
      shape[dim] = 1
    return dropout(inputs, rng, 1.0 - self.rate, tuple(shape))


__all__ = ["Dropout", "dropout", "dropout_saving_mask", "fused_bernoulli", "fused_random_bits",
           "threefry2x32", "flat_index"]
