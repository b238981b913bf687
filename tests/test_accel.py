"""Accelerator readiness without an accelerator: eval outputs, bf16 compute, attention paths.

The per-model checks trace (never compile) each registered model at MOSI shapes with
scripts/accel_report.py's setup, the same code that prints docs/performance.md's table.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.catalog import MODELS
from mmfuse_jax.data import make_batch
from mmfuse_jax.layers.attention import (chunked_attention, choose_implementation,
                                         explicit_attention, fused_attention)
from mmfuse_jax.training.experiment import build_experiment, init_state
from tests.helpers import load_script, tiny_config, tiny_synthetic

report = load_script("accel_report")
MIB = 2 ** 20


def _qkv_mask(seed=0, b=2, len_q=5, len_k=11, h=2, d=4):
  rng = np.random.default_rng(seed)
  q, k, v = (rng.normal(size=(b, t, h, d)).astype(np.float32) for t in (len_q, len_k, len_k))
  key_mask = np.ones((b, len_k), bool)
  key_mask[0, 7:] = False
  key_mask[1, :3] = False
  attn = np.ones((len_q, len_k), bool)
  attn[2] = False                                 # query 2 sees no key at all
  attn[3, 5:] = False
  mask = key_mask[:, None, None, :] & attn[None, None]
  return q, k, v, jnp.asarray(mask)


def _numpy_attention(q, k, v, mask):
  """Loops over (batch, head, query): softmax over the valid keys, 0 with none."""
  b, len_q, h, d = q.shape
  out = np.zeros_like(q, dtype=np.float64)
  mask = np.broadcast_to(np.asarray(mask), (b, h, len_q, k.shape[1]))
  for i in range(b):
    for j in range(h):
      for n in range(len_q):
        valid = np.nonzero(mask[i, j, n])[0]
        if len(valid):
          s = k[i, valid, j].astype(np.float64) @ q[i, n, j] / np.sqrt(d)
          w = np.exp(s - s.max()); w /= w.sum()
          out[i, n, j] = w @ v[i, valid, j]
  return out


@pytest.mark.parametrize("path", ["xla", "chunked"])
def test_fused_and_chunked_attention_equal_explicit_values_and_gradients(path):
  q, k, v, mask = _qkv_mask()
  run = {"xla": lambda q, k, v: fused_attention(q, k, v, mask, "xla"),
         "chunked": lambda q, k, v: chunked_attention(q, k, v, mask, chunk_size=4)}[path]
  ref = lambda q, k, v: explicit_attention(q, k, v, mask)[0]
  out = jax.jit(run)(q, k, v)
  np.testing.assert_allclose(out, _numpy_attention(q, k, v, mask), atol=1e-5)
  np.testing.assert_allclose(out, ref(q, k, v), atol=1e-6)
  assert np.all(np.asarray(out)[:, 2] == 0)       # fully masked row: 0, not mean(V)
  cot = np.random.default_rng(1).normal(size=out.shape).astype(np.float32)
  loss = lambda f: (lambda q, k, v: jnp.sum(f(q, k, v) * cot))
  grads = jax.jit(jax.grad(loss(run), argnums=(0, 1, 2)))(q, k, v)
  want = jax.grad(loss(ref), argnums=(0, 1, 2))(q, k, v)
  for g, w in zip(grads, want):
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, w, atol=1e-5)
  assert np.all(np.asarray(grads[2])[0, 7:] == 0)  # padded keys' values get no gradient


def test_attention_without_mask_and_key_padding_in_the_chunked_path():
  q, k, v, _ = _qkv_mask(seed=2, len_k=10)
  want = _numpy_attention(q, k, v, np.ones((1, 1, 1, 10), bool))
  np.testing.assert_allclose(chunked_attention(q, k, v, None, chunk_size=3), want, atol=1e-5)
  np.testing.assert_allclose(fused_attention(q, k, v, None), want, atol=1e-5)


def test_choose_implementation_per_backend():
  pick = lambda backend, dtype=jnp.bfloat16, head=8, len_k=100, drop=False: (
      choose_implementation(backend, dtype, head, len_k, dropout_active=drop, chunk_size=512))
  assert pick("gpu") == "cudnn"
  assert pick("gpu", head=6) == "xla"               # MulT's 30 / 5 heads: no cuDNN kernel
  assert pick("gpu", dtype=jnp.float32) == "xla"
  assert pick("gpu", head=6, len_k=1000) == "chunked"
  assert pick("tpu", len_k=1000) == "chunked" and pick("tpu") == "xla"
  assert pick("cpu", len_k=10_000) == "xla"
  assert pick("gpu", drop=True) == "explicit"


def test_dot_operand_types_parser():
  text = ('%3 = stablehlo.dot_general %1, %2, contracting_dims = [1] x [0] : '
          '(tensor<4x8xbf16>, tensor<8x2xbf16>) -> tensor<4x2xbf16>\n'
          '%5 = stablehlo.dot_general %3, %4, contracting_dims = [1] x [0] : '
          '(tensor<4x2xf32>, tensor<2xbf16>) -> tensor<4xf32>\n')
  assert report.dot_operand_types(text) == [("bf16", "bf16"), ("f32", "bf16")]
  assert report.bf16_dot_share(text) == (1, 2)
  assert report.tree_bytes({"a": jax.ShapeDtypeStruct((128,), jnp.float32),
                            "b": np.zeros((2, 3), np.int8)}) == 128 * 4 + 6


@pytest.mark.parametrize("model", MODELS.names())
def test_eval_step_is_small_and_bf16_steps_compute_in_bf16(model):
  """At MOSI shapes: the eval step returns < 1 MiB for an eval batch of 128 (it returned
  every layer's queries, keys and attention maps: GiBs), and under precision='bf16' at
  least 90% of the model's dot_generals (forward and backward) take bf16 operands, and of
  the whole train step's too, except MICA's, whose float32 alignment losses (Eq. 2-3)
  hold the other dot_generals."""
  exp, state, train_b, eval_b = report.setup(model, precision="bf16")
  out = jax.eval_shape(exp.method.eval_step, state, eval_b)
  assert report.tree_bytes(out) < MIB
  bf16, total = report.bf16_dot_share(report.model_grad_text(exp, state, train_b))
  assert total and bf16 >= 0.9 * total, (bf16, total)
  if model != "mica":
    text = jax.jit(exp.method.train_step).lower(state, train_b, jax.random.PRNGKey(0)).as_text()
    bf16, total = report.bf16_dot_share(text)
    assert total and bf16 >= 0.9 * total, (bf16, total)


@pytest.mark.parametrize("model", ["mult"])
def test_bf16_predictions_agree_with_float32(model):
  """Tiny attention models, the same float32 params: bf16 compute changes predictions by
  rounding only (standardised-scale regression outputs within 0.05 + 5%)."""
  ds = tiny_synthetic(0, n_train=16, n_valid=8, n_test=8)
  net = {"net.d_model": 8, "net.num_heads": 2, "net.num_layers": 1}
  exps = {p: build_experiment(tiny_config(model, precision=p, batch_size=16, **net), ds)
          for p in ("float32", "bf16")}
  state = init_state(exps["float32"])
  batch = make_batch(ds.splits["valid"], np.arange(8), 8)
  p32, l32 = exps["float32"].eval_step(state, batch)
  p16, l16 = exps["bf16"].eval_step(state, batch)
  assert p16.dtype == jnp.float32 and l16.dtype == jnp.float32
  assert not np.allclose(p16, p32, rtol=0, atol=0)   # bf16 did compute something different
  np.testing.assert_allclose(p16, p32, rtol=0.05, atol=0.05)
