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
from mmfuse_jax.losses.alignment import mica_alignment
from mmfuse_jax.losses.matmul import mixed_einsum
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
  the whole train step's too (MICA's included: its alignment losses' distance products
  take bf16 operands, losses.matmul)."""
  exp, state, train_b, eval_b = report.setup(model, precision="bf16")
  out = jax.eval_shape(exp.method.eval_step, state, eval_b)
  assert report.tree_bytes(out) < MIB
  bf16, total = report.bf16_dot_share(report.model_grad_text(exp, state, train_b))
  assert total and bf16 >= 0.9 * total, (bf16, total)
  text = jax.jit(exp.method.train_step).lower(state, train_b, jax.random.PRNGKey(0)).as_text()
  bf16, total = report.bf16_dot_share(text)
  assert total and bf16 >= 0.9 * total, (bf16, total)


def _bf16_round(x):
  return np.asarray(jnp.asarray(x, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32),
                    np.float64)


@pytest.mark.parametrize("spec,shape_a,shape_b", [
    ("nd,md->nm", (7, 5), (9, 5)),                            # MMD distance matrices
    ("bhnm,bmhd->bnhd", (2, 3, 4, 6), (2, 6, 3, 5)),          # V k of MICA's Eq. 2
])
def test_mixed_einsum_values_gradients_and_bf16_dots(spec, shape_a, shape_b):
  """Value and gradients equal float64 numpy on the bf16-rounded operands (and cotangent),
  the products run on this backend forward and backward (also batched by vmap), and every
  dot_general of the gradient takes bf16 operands."""
  rng = np.random.default_rng(0)
  a, b = (rng.normal(size=s).astype(np.float32) for s in (shape_a, shape_b))
  cot = rng.normal(size=np.einsum(spec, a, b).shape).astype(np.float32)
  loss = lambda a, b: jnp.sum(mixed_einsum(spec, a, b, jnp.bfloat16) * cot)
  out = jax.jit(lambda a, b: mixed_einsum(spec, a, b, jnp.bfloat16))(a, b)
  assert out.dtype == jnp.float32
  ra, rb, rc = _bf16_round(a), _bf16_round(b), _bf16_round(cot)
  np.testing.assert_allclose(out, np.einsum(spec, ra, rb), rtol=1e-6, atol=1e-6)
  ga, gb = jax.jit(jax.grad(loss, argnums=(0, 1)))(a, b)
  if spec == "nd,md->nm":
    grads = rc @ rb, rc.T @ ra
  else:
    grads = np.einsum("bnhd,bmhd->bhnm", rc, rb), np.einsum("bhnm,bnhd->bmhd", ra, rc)
  np.testing.assert_allclose(ga, grads[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gb, grads[1], rtol=1e-5, atol=1e-5)
  batched = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(None, 0)))(
      a, np.stack([b, 2 * b]))
  np.testing.assert_allclose(batched[0][1], 2 * np.asarray(ga), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(batched[1][1], gb, rtol=1e-5, atol=1e-5)
  types = report.dot_operand_types(
      jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(a, b).as_text())
  assert len(types) == 3 and all(t == ("bf16", "bf16") for t in types), types
  with pytest.raises(ValueError, match="second operand"):
    mixed_einsum("nd,md->n", np.ones((2, 3)), np.ones((4, 3)), jnp.bfloat16)  # m: only in b


def test_bf16_alignment_losses_agree_with_float32():
  """MICA's L_m (MMD, Eq. 3) and L_e (Eq. 2, raw squared distances) with bf16 distance
  products against float32, on q, k of the scale MICA's attention produces (entries
  ~ N(0, 1.5^2)) plus an offset per sample and head shared by q and k (entries
  ~ N(0, 10^2): |q|^2 ~ 20x the squared distances, where the expansion
  |q|^2 + |k|^2 - 2 q.k cancels). Tolerances (measured in brackets): L_m within 0.5%
  (0.02%), its gradient within 5% in relative L2 norm (2.3%: the MMD gradient is a small
  difference of large kernel terms, each from points rounded at bf16's 2^-9, and the
  offsets differ between the samples pooled in one MMD); L_e within 0.03% (0.008%), its
  gradient within 0.6% (0.24%). Without the centring in element_distance L_e is off by
  0.05% and its gradient by 1.1%."""
  rng = np.random.default_rng(0)
  layers, b, t_t, t_s, h, d_h = 2, 4, 12, 15, 4, 5
  offset = 10.0 * rng.normal(size=(layers, b, 1, h, d_h))
  q = (offset + 1.5 * rng.normal(size=(layers, b, t_t, h, d_h))).astype(np.float32)
  k = (offset + 1.5 * rng.normal(size=(layers, b, t_s, h, d_h))).astype(np.float32)
  probs = jax.nn.softmax(2 * rng.normal(size=(layers, b, h, t_t, t_s)).astype(np.float32), -1)
  masks = {"text": np.arange(t_t)[None] < np.array([[9], [12], [12], [12]]),
           "audio": np.arange(t_s)[None] >= np.array([[0], [4], [0], [0]])}
  weights = np.array([1, 1, 1, 0], np.float32)

  def run(dtype, term):
    """(value, gradient w.r.t. q and k flattened) of L_m (term 0) or L_e (term 1)."""
    def loss(q, k):
      return mica_alignment({"audio->text": {"q": q, "k": k, "probs": probs}}, masks,
                            weights, None, use_mmd=term == 0, use_pe=term == 1,
                            pe_normalize="sum", matmul_dtype=dtype)[term]
    value, grads = jax.jit(jax.value_and_grad(loss, (0, 1)))(q, k)
    return float(value), np.concatenate([np.ravel(g) for g in grads])

  for term, (name, value_tol, grad_tol) in enumerate((("L_m", 5e-3, 0.05),
                                                     ("L_e", 3e-4, 0.006))):
    (v32, g32), (v16, g16) = run(None, term), run(jnp.bfloat16, term)
    assert v16 == pytest.approx(v32, rel=value_tol) and v16 != v32, (name, v16, v32)
    err = np.linalg.norm(g16 - g32) / np.linalg.norm(g32)
    assert err <= grad_tol, (name, err)


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
