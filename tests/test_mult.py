"""MulT: shapes per task, padding invariance, causal switch, jit and grad."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax import config as config_lib
from mmfuse_jax.catalog import MODELS
from mmfuse_jax.data import make_batch
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.layers.attention import MultiHeadAttention
from mmfuse_jax.models.base import DataInfo
from tests.helpers import tiny_synthetic


def _model(task="regression", num_classes=None, **net):
  c = config_lib.get_config("mult")
  c.net.update(dict(d_model=8, num_heads=2, num_layers=1, **net))
  ds = tiny_synthetic(0, n_train=8, n_valid=4, n_test=4)
  info = DataInfo(ds.modalities, ds.feature_dims, ds.max_lengths, task, num_classes)
  batch = make_batch(ds.splits["train"], np.arange(6), 6)
  return MODELS.get("mult").build(c.net, info), batch


@pytest.fixture(scope="module")
def built():
  model, batch = _model()
  causal, _ = _model(causal=True)
  params = jax.jit(lambda k, b: model.init(k, b, train=False))(jax.random.PRNGKey(0), batch)
  return model, causal, params, batch


@pytest.mark.parametrize("task,num_classes,shape", [("regression", None, (6,)),
                                                    ("iemocap", None, (6, 4, 2)),
                                                    ("classification", 3, (6, 3))])
def test_output_shapes(task, num_classes, shape):
  model, batch = _model(task, num_classes)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch, train=False))
  pred, aux = jax.eval_shape(lambda p: model.apply(p, batch, train=False), params)
  assert pred.shape == shape
  assert aux["fused"].shape == (6, 3 * 2 * 8)  # 3 targets x 2 sources x d
  assert set(aux["crossmodal"]) == {f"{s}->{t}" for t in ("text", "audio", "vision")
                                    for s in ("text", "audio", "vision") if s != t}
  det = aux["crossmodal"]["audio->text"][0]
  assert det["probs"].shape == (6, 2, batch.features["text"].shape[1],
                                batch.features["audio"].shape[1])


def test_padding_does_not_change_predictions_causal_or_not(built):
  model, causal, params, batch = built
  feats = {m: np.where(batch.masks[m][..., None], x, 7.0) for m, x in batch.features.items()}
  noisy = batch.replace(features=feats)
  fns = [jax.jit(lambda p, b, m=m: m.apply(p, b, train=False)[0]) for m in (model, causal)]
  outs = []
  for fn in fns:
    base = fn(params, batch)
    np.testing.assert_allclose(fn(params, noisy), base, atol=1e-5)
    outs.append(np.asarray(base))
  assert not np.allclose(outs[0], outs[1])  # the causal mask changes what is seen


def test_grads_finite_and_dropout_keyed(built):
  model, _, params, batch = built

  def loss(p, key):
    pred, _ = model.apply(p, batch, train=True, rngs={"dropout": key})
    return jnp.mean(jnp.abs(pred - batch.labels))

  fn = jax.jit(jax.value_and_grad(loss))
  (l3, g), (l3b, _), (l4, _) = (fn(params, jax.random.PRNGKey(k)) for k in (3, 3, 4))
  leaves = jax.tree_util.tree_leaves(g)
  assert all(np.all(np.isfinite(x)) for x in leaves)
  assert sum(float(jnp.abs(x).sum()) for x in leaves) > 0
  assert float(l3) == float(l3b)      # same key, same dropout mask
  assert float(l3) != float(l4)       # another key, another mask


# MulT's public code (src/models.py, get_network(self_type)): self_type = target + source,
# and the attention-dropout rate of each crossmodal stack. Written out from that code, not
# derived from ours: 'la' (text attends to audio) uses attn_dropout_a, and so on; the
# memory stacks ('l_mem', 'a_mem', 'v_mem') all use attn_dropout.
OFFICIAL_ATTN_DROPOUT = {"la": "attn_dropout_a", "lv": "attn_dropout_v",
                         "al": "attn_dropout", "av": "attn_dropout_v",
                         "vl": "attn_dropout", "va": "attn_dropout_a",
                         "l_mem": "attn_dropout", "a_mem": "attn_dropout",
                         "v_mem": "attn_dropout"}


@pytest.mark.parametrize("name", ["mult", "mica"])
def test_attention_dropout_is_keyed_by_the_source_as_in_the_public_code(name):
  """Every MultiHeadAttention's dropout rate, collected while the model is traced, equals
  the public code's rate for its block: six crossmodal directions and three memories."""
  rates = {"attn_dropout": 0.11, "attn_dropout_a": 0.22, "attn_dropout_v": 0.33}
  c = config_lib.get_config(name)
  c.net.update(dict(d_model=8, num_heads=2, num_layers=1, attn_dropout=0.11,
                    attn_dropout_audio=0.22, attn_dropout_vision=0.33))
  ds = tiny_synthetic(0, n_train=8, n_valid=4, n_test=4)
  info = DataInfo(ds.modalities, ds.feature_dims, ds.max_lengths, "regression")
  batch = make_batch(ds.splits["train"], np.arange(6), 6)
  model = MODELS.get(name).build(c.net, info)
  short = {"text": "l", "audio": "a", "vision": "v"}
  seen = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, MultiHeadAttention):
      # the block is the scope path's first part ('layers' of MICA: the second)
      block = next(p for p in context.module.scope.path
                   if re.fullmatch(r"cross_\w+_to_\w+|memory_\w+", p))
      parts = block.split("_")
      key = (short[parts[3]] + short[parts[1]] if parts[0] == "cross"
             else short[parts[1]] + "_mem")
      seen.setdefault(key, set()).add(context.module.dropout)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch, train=True))
  assert seen == {k: {rates[v]} for k, v in OFFICIAL_ATTN_DROPOUT.items()}


def test_parity_switch_errors():
  """The public-code parity switches (their numerics: tests/test_parity.py) are checked."""
  for field, value, match in (("position_offset", -1, "position_offset"),
                              ("layer_norm_eps", 0.0, "layer_norm_eps")):
    model, batch = _model(**{field: value})
    with pytest.raises(ConfigError, match=match):
      jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch, train=False))
