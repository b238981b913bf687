"""layers/dropout.py: the fused threefry mask equals JAX's, and Dropout equals flax's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.layers.dropout import (Dropout, flat_index, fused_bernoulli,
                                       fused_random_bits)

SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4, 5), (4, 2, 33, 17)]


@pytest.mark.parametrize("shape", SHAPES)
def test_bits_equal_jax_random_bits(shape):
  for seed in (0, 1, 12345):
    key = jax.random.PRNGKey(seed)
    got = jax.jit(fused_random_bits, static_argnums=1)(key, shape)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jax.random.bits(key, shape)))
  typed = jax.random.key(7)
  np.testing.assert_array_equal(np.asarray(fused_random_bits(typed, shape)),
                                np.asarray(jax.random.bits(typed, shape)))


def test_flat_index_is_row_major_arange():
  np.testing.assert_array_equal(np.asarray(flat_index((3, 4, 5))),
                                np.arange(60, dtype=np.uint32).reshape(3, 4, 5))


@pytest.mark.parametrize("p", [0.9, 0.75, 0.5, 0.1])
def test_bernoulli_equals_jax_and_has_rate_p(p):
  key = jax.random.PRNGKey(3)
  shape = (64, 50, 31)
  got = np.asarray(jax.jit(fused_bernoulli, static_argnums=(1, 2))(key, p, shape))
  np.testing.assert_array_equal(got, np.asarray(jax.random.bernoulli(key, p, shape)))
  # 99,200 draws: the mean is within 5 standard errors of p
  assert abs(got.mean() - p) < 5 * np.sqrt(p * (1 - p) / got.size)


def test_other_prng_impl_falls_back_to_jax():
  key = jax.random.key(0, impl="rbg")
  assert fused_random_bits(key, (5, 6)) is None
  np.testing.assert_array_equal(np.asarray(fused_bernoulli(key, 0.8, (5, 6))),
                                np.asarray(jax.random.bernoulli(key, 0.8, (5, 6))))


class _Net(nn.Module):
  layer: type
  rate: float
  broadcast_dims: tuple = ()

  @nn.compact
  def __call__(self, x, train):
    h = nn.Dense(6)(x)
    h = self.layer(self.rate, broadcast_dims=self.broadcast_dims)(h, deterministic=not train)
    return jnp.tanh(h).sum()


@pytest.mark.parametrize("rate,dims", [(0.1, ()), (0.5, (1,)), (0.0, ()), (1.0, ())])
def test_dropout_matches_flax_values_and_grads(rate, dims):
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 9, 5))
  ours, theirs = _Net(Dropout, rate, dims), _Net(nn.Dropout, rate, dims)
  params = ours.init(jax.random.PRNGKey(1), x, False)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      theirs.init(jax.random.PRNGKey(1), x, False))
  for key in (jax.random.PRNGKey(2), jax.random.key(3)):
    f = lambda net: jax.jit(jax.value_and_grad(
        lambda p: net.apply(p, x, True, rngs={"dropout": key})))(params)
    (v1, g1), (v2, g2) = f(ours), f(theirs)
    np.testing.assert_allclose(float(v1), float(v2), rtol=1e-6)
    # same masks; the gradient sums may round differently (XLA fuses the two differently)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           g1, g2)
    y = lambda layer: layer(rate, broadcast_dims=dims).apply({}, x, deterministic=False,
                                                             rngs={"dropout": key})
    np.testing.assert_array_equal(np.asarray(y(Dropout)), np.asarray(y(nn.Dropout)))
  # evaluation mode is the identity
  assert float(ours.apply(params, x, False)) == float(theirs.apply(params, x, False))


def test_recomputed_mask_gradients_equal_saved_mask():
  """`dropout` redraws its mask in the backward pass: values, gradients and
  reverse-over-reverse gradients (the MDM gradient penalty's case) equal the version that
  stores the mask."""
  from mmfuse_jax.layers.dropout import dropout, dropout_saving_mask
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 10))
  w = jax.random.normal(jax.random.PRNGKey(1), (10, 10))
  key = jax.random.PRNGKey(2)

  def loss(fn, w, x):
    h = fn(jnp.tanh(x @ w), key, 0.7, (3, 1, 10))   # broadcast mask over axis 1
    return jnp.sum(jnp.sin(h))

  for arg in (0, 1):
    g1 = jax.jit(jax.grad(lambda w, x: loss(dropout, w, x), argnums=arg))(w, x)
    g2 = jax.jit(jax.grad(lambda w, x: loss(dropout_saving_mask, w, x), argnums=arg))(w, x)
    np.testing.assert_allclose(g1, g2, rtol=1e-6, atol=1e-7)
  penalty = lambda fn: jax.grad(lambda w: jnp.sum(jax.grad(
      lambda x: loss(fn, w, x))(x) ** 2))(w)
  np.testing.assert_allclose(jax.jit(lambda: penalty(dropout))(),
                             jax.jit(lambda: penalty(dropout_saving_mask))(), rtol=1e-5,
                             atol=1e-6)


def test_recomputed_mask_saves_memory_in_a_layer_scan():
  """Under a scan over layers (nn.scan-style), storing the masks costs a
  (layers, *shape) boolean stack; redrawing them does not."""
  from mmfuse_jax.layers.dropout import dropout, dropout_saving_mask
  shape = (4, 2, 64, 64)

  def temp_bytes(fn):
    def f(x, keys):
      def body(h, k):
        return jnp.tanh(fn(h, k, 0.9, shape)) * 1.5, None
      return jnp.sum(jax.lax.scan(body, x, keys)[0])
    x = jnp.ones(shape)
    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    return jax.jit(jax.grad(f)).lower(x, keys).compile().memory_analysis().temp_size_in_bytes

  saved, redrawn = temp_bytes(dropout_saving_mask), temp_bytes(dropout)
  assert saved - redrawn >= 6 * np.prod(shape) * 0.9, (saved, redrawn)  # >= the bool stack
