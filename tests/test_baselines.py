"""EF-LSTM, TFN, LMF, MFN: layers against numpy, padding invariance, learning."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.catalog import MODELS
from mmfuse_jax.data.core import Batch
from mmfuse_jax.layers import fusion, recurrent
from mmfuse_jax.models import DataInfo
from mmfuse_jax.models import ef_lstm, lmf, mfn

MODELS_UNDER_TEST = ("ef_lstm", "tfn", "lmf", "mfn")
TINY_NET = {
    "ef_lstm": {"hidden": 16, "num_layers": 2, "dropout": 0.0},
    "tfn": {"text_hidden": 16, "text_out": 8, "audio_hidden": 4, "vision_hidden": 4,
            "post_fusion": 16, "dropout_text": 0.0, "dropout_audio": 0.0,
            "dropout_vision": 0.0, "dropout_post": 0.0},
    "lmf": {"text_hidden": 16, "text_out": 8, "audio_hidden": 4, "vision_hidden": 4,
            "rank": 4, "fusion_dim": 8, "dropout_text": 0.0, "dropout_audio": 0.0,
            "dropout_vision": 0.0, "dropout_post": 0.0},
    "mfn": {"text_hidden": 8, "audio_hidden": 4, "vision_hidden": 4, "mem": 8,
            "attn_hidden": 8, "mem_hidden": 8, "gamma_hidden": 8, "out_hidden": 8,
            "dropout_attn": 0.0, "dropout_mem": 0.0, "dropout_gamma": 0.0,
            "dropout_out": 0.0},
}
DIMS = {"text": 5, "audio": 3, "vision": 4}


def tiny_net(model):
  net = MODELS.get(model).default_net()
  for k, v in TINY_NET[model].items():
    net[k] = v
  return net


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


# ----------------------------------------------------------------------------------------
# Sequence helpers
# ----------------------------------------------------------------------------------------
def test_pack_valid_moves_valid_steps_front():
  x = np.arange(12, dtype=np.float32).reshape(2, 6, 1)
  mask = np.array([[0, 0, 1, 1, 0, 1], [1, 1, 1, 0, 0, 0]], bool)
  xp, n, rank = jax.jit(recurrent.pack_valid)(x, mask)
  np.testing.assert_array_equal(n, [3, 3])
  np.testing.assert_array_equal(rank[0, [2, 3, 5]], [0, 1, 2])
  np.testing.assert_array_equal(xp[..., 0], [[2, 3, 5, 0, 0, 0], [6, 7, 8, 0, 0, 0]])


def _np_area_resample(x, length, n):
  """Reference: target k averages source steps weighted by the overlap of [k/n,(k+1)/n)
  and [j/L,(j+1)/L) (computed with exact fractions on a fine grid)."""
  out = np.zeros((n, x.shape[1]))
  for k in range(n):
    w = np.array([max(0.0, min((k + 1) / n, (j + 1) / length) - max(k / n, j / length))
                  for j in range(length)])
    out[k] = (w[:, None] * x[:length]).sum(0) / w.sum()
  return out


def test_align_modalities_matches_reference_and_is_identity_when_aligned():
  rng = np.random.default_rng(0)
  feats = {"text": rng.normal(size=(2, 4, 2)).astype(np.float32),
           "audio": rng.normal(size=(2, 9, 3)).astype(np.float32)}
  masks = {"text": np.array([[1, 1, 1, 0], [0, 1, 1, 1]], bool),  # front padding in row 1
           "audio": np.array([[1] * 7 + [0] * 2, [1] * 2 + [0] * 7], bool)}
  out, mask, n = jax.jit(ef_lstm.align_modalities, static_argnums=(2, 3))(
      feats, masks, "text", 4)
  np.testing.assert_array_equal(n, [3, 3])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 1, 1, 0]])
  # text (the reference) is only packed; audio 7 -> 3 (averaging) and 2 -> 3 (repeating)
  np.testing.assert_allclose(out["text"][1, :3], feats["text"][1, 1:], rtol=1e-6)
  np.testing.assert_allclose(out["audio"][0, :3], _np_area_resample(feats["audio"][0], 7, 3),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["audio"][1, :3], _np_area_resample(feats["audio"][1], 2, 3),
                             rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(out["audio"])[:, 3] == 0)
  # equal masks: identity
  same = {"text": masks["text"], "audio": masks["text"]}
  f2 = {"text": feats["text"], "audio": feats["audio"][:, :4]}
  out2, _, _ = ef_lstm.align_modalities(f2, same, "text", 4)
  np.testing.assert_allclose(out2["audio"][0, :3], f2["audio"][0, :3], rtol=1e-6)
  # a removed reference modality: grid = longest valid modality
  removed = {"text": np.zeros_like(masks["text"]), "audio": masks["audio"]}
  _, _, n3 = ef_lstm.align_modalities(feats, removed, "text", 4)
  np.testing.assert_array_equal(n3, [4, 2])
  # differentiable
  g = jax.grad(lambda a: ef_lstm.align_modalities({"text": feats["text"], "audio": a},
                                                  masks, "text", 4)[0]["audio"].sum())(
      feats["audio"])
  assert np.all(np.asarray(g)[~masks["audio"]] == 0) and np.abs(g).sum() > 0


def _np_lstm(params, x):
  """Numpy LSTM with flax OptimizedLSTMCell's parameter layout."""
  h = np.zeros(params["hi"]["kernel"].shape[0]); c = np.zeros_like(h)
  gate = lambda n, xt, h: (xt @ np.asarray(params[f"i{n}"]["kernel"])  # noqa: E731
                           + h @ np.asarray(params[f"h{n}"]["kernel"])
                           + np.asarray(params[f"h{n}"]["bias"]))
  for xt in x:
    i, f = _sigmoid(gate("i", xt, h)), _sigmoid(gate("f", xt, h))
    g, o = np.tanh(gate("g", xt, h)), _sigmoid(gate("o", xt, h))
    c = f * c + i * g
    h = o * np.tanh(c)
  return h


def test_masked_lstm_matches_numpy_and_ignores_padding():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 6, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], bool)
  lstm = recurrent.MaskedLSTM(5, bidirectional=False)
  params = lstm.init(jax.random.PRNGKey(0), x, mask)
  _, h = jax.jit(lstm.apply)(params, x, mask)
  cell = params["params"]["forward_0"]
  np.testing.assert_allclose(h[0], _np_lstm(cell, x[0, :4]), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(h[1], _np_lstm(cell, x[1, 2:]), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(h[2], 0.0)
  x2 = x.copy(); x2[~mask] = 100.0  # garbage in padding changes nothing
  np.testing.assert_allclose(lstm.apply(params, x2, mask)[1], h, rtol=1e-6)
  g = jax.grad(lambda v: lstm.apply(params, v, mask)[1].sum())(x)
  assert np.all(np.asarray(g)[~mask] == 0)


# ----------------------------------------------------------------------------------------
# Fusion layers
# ----------------------------------------------------------------------------------------
def test_tensor_fusion_matches_numpy():
  rng = np.random.default_rng(2)
  zs = [rng.normal(size=(2, d)).astype(np.float32) for d in (2, 3, 4)]
  out = jax.jit(fusion.tensor_fusion)(zs)
  one = lambda z: np.concatenate([z, np.ones((2, 1))], 1)  # noqa: E731
  ref = np.einsum("bi,bj,bk->bijk", *[one(z) for z in zs]).reshape(2, -1)
  np.testing.assert_allclose(out, ref, rtol=1e-6)
  # the appended 1s keep every unimodal and bimodal term
  np.testing.assert_allclose(out[:, -1], 1.0)


def test_low_rank_fusion_equals_rank_r_tensor_fusion():
  rng = np.random.default_rng(3)
  zs = [jnp.asarray(rng.normal(size=(3, d)), jnp.float32) for d in (2, 3, 4)]
  layer = lmf.LowRankFusion(rank=3, out_dim=5)
  params = layer.init(jax.random.PRNGKey(0), zs)
  out = jax.jit(layer.apply)(params, zs)
  p = jax.tree_util.tree_map(np.asarray, params["params"])
  # W = sum_i lambda_i W_1^(i) (x) W_2^(i) (x) W_3^(i), applied to TFN's outer product
  w = np.einsum("r,rao,rbo,rco->abco", p["fusion_weights"][0], p["factor_0"], p["factor_1"],
                p["factor_2"])
  tensor = np.asarray(fusion.tensor_fusion(zs)).reshape(3, 3, 4, 5)
  ref = np.einsum("nabc,abco->no", tensor, w) + p["fusion_bias"]
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_mfn_cell_matches_numpy():
  net = tiny_net("mfn")
  mods = ("text", "audio")
  rng = np.random.default_rng(4)
  b = 2
  xs = {"text": rng.normal(size=(b, 3)).astype(np.float32),
        "audio": rng.normal(size=(b, 2)).astype(np.float32)}
  states = {m: (rng.normal(size=(b, net[f"{m}_hidden"])).astype(np.float32),
                rng.normal(size=(b, net[f"{m}_hidden"])).astype(np.float32)) for m in mods}
  mem = rng.normal(size=(b, net.mem)).astype(np.float32)
  valid = np.array([True, False])
  cell = mfn.MFNCell(net, mods)
  params = cell.init(jax.random.PRNGKey(0), (states, mem), (xs, valid))
  (new_states, new_mem), _ = jax.jit(cell.apply)(params, (states, mem), (xs, valid))
  p = jax.tree_util.tree_map(np.asarray, params["params"])
  # numpy reference for row 0 (valid)
  def lstm_step(q, x, c, h):
    gate = lambda n: x @ q[f"i{n}"]["kernel"] + h @ q[f"h{n}"]["kernel"] + q[f"h{n}"]["bias"]  # noqa: E731
    c2 = _sigmoid(gate("f")) * c + _sigmoid(gate("i")) * np.tanh(gate("g"))
    return c2, _sigmoid(gate("o")) * np.tanh(c2)
  mlp = lambda q, x: np.maximum(x @ q["fc1"]["kernel"] + q["fc1"]["bias"], 0) @ q["fc2"]["kernel"] + q["fc2"]["bias"]  # noqa: E731
  new = {m: lstm_step(p[f"lstm_{m}"], xs[m][0], *[s[0] for s in states[m]]) for m in mods}
  c_star = np.concatenate([states[m][0][0] for m in mods] + [new[m][0] for m in mods])
  a = np.exp(mlp(p["d_attn"], c_star)); a /= a.sum()
  c_hat = a * c_star
  u_hat = np.tanh(mlp(p["d_mem"], c_hat))
  both = np.concatenate([c_hat, mem[0]])
  u = _sigmoid(mlp(p["d_gamma1"], both)) * mem[0] + _sigmoid(mlp(p["d_gamma2"], both)) * u_hat
  np.testing.assert_allclose(new_mem[0], u, rtol=1e-4, atol=1e-5)
  for m in mods:
    np.testing.assert_allclose(new_states[m][0][0], new[m][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_states[m][1][0], new[m][1], rtol=1e-4, atol=1e-5)
    # an invalid step leaves the state unchanged
    np.testing.assert_array_equal(new_states[m][1][1], states[m][1][1])
  np.testing.assert_array_equal(new_mem[1], mem[1])


# ----------------------------------------------------------------------------------------
# Whole models: outputs, aux, padding invariance
# ----------------------------------------------------------------------------------------
def _batch(seed=0, b=4, lengths=None):
  rng = np.random.default_rng(seed)
  lengths = lengths or {"text": 5, "audio": 7, "vision": 6}
  feats, masks = {}, {}
  for m, t in lengths.items():
    valid = rng.integers(1, t + 1, size=b)
    mask = np.arange(t)[None] < valid[:, None]
    feats[m] = np.where(mask[..., None], rng.normal(size=(b, t, DIMS[m])), 0).astype(np.float32)
    masks[m] = mask
  return Batch(features=feats, masks=masks, labels=rng.normal(size=b).astype(np.float32),
               weights=np.ones(b, np.float32), index=np.arange(b, dtype=np.int32))


def _repad(batch, extra=3, front=False):
  """The same samples with `extra` more padding steps (at the back or the front)."""
  feats, masks = {}, {}
  for m, x in batch.features.items():
    b, t, d = x.shape
    x2 = np.zeros((b, t + extra, d), np.float32) + 7.0  # garbage in padding
    mk = np.zeros((b, t + extra), bool)
    for i in range(b):
      n = int(batch.masks[m][i].sum())
      start = t + extra - n if front else 0
      x2[i, start:start + n] = x[i, :n]
      mk[i, start:start + n] = True
    feats[m], masks[m] = x2, mk
  return batch.replace(features=feats, masks=masks)


def _info(batch):
  return DataInfo(modalities=tuple(batch.features), feature_dims=DIMS,
                  max_lengths={m: x.shape[1] for m, x in batch.features.items()},
                  task="regression")


@pytest.mark.parametrize("model", MODELS_UNDER_TEST)
def test_model_outputs_and_padding_invariance(model):
  spec = MODELS.get(model)
  net = tiny_net(model)
  batch = _batch()
  module = spec.build(net, _info(batch))
  variables = module.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
                          batch)
  pred, aux = jax.jit(lambda v, b: module.apply(v, b))(variables, batch)
  assert pred.shape == (4,) and np.all(np.isfinite(pred))
  assert aux["fused"].ndim == 2 and aux["fused"].shape[0] == 4
  assert set(aux["unimodal"]) == {"text", "audio", "vision"}
  # 3 more padding steps, and the valid steps moved to the back (padding at the front)
  other = _repad(batch, 3, front=True)
  module2 = spec.build(net, _info(other))
  pred2, aux2 = jax.jit(lambda v, b: module2.apply(v, b))(variables, other)
  np.testing.assert_allclose(pred2, pred, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(aux2["fused"], aux["fused"], rtol=1e-4, atol=1e-5)
  # training mode with dropout: a fully removed modality still gives finite outputs and
  # gradients, and the dropout key matters
  for k in net:
    if k.startswith("dropout"):
      net[k] = 0.3
  module3 = spec.build(net, _info(batch))
  removed = batch.replace(masks={**batch.masks, "text": np.zeros_like(batch.masks["text"])})
  loss = lambda v, r: module3.apply(v, removed, train=True, rngs={"dropout": r})[0].sum()  # noqa: E731
  vg = jax.jit(jax.value_and_grad(loss))
  (l1, g), (l2, _) = vg(variables, jax.random.PRNGKey(2)), vg(variables, jax.random.PRNGKey(3))
  assert np.isfinite(l1) and l1 != l2
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(g))


def test_models_register_mdm_method_and_paper_training():
  from mmfuse_jax import config as config_lib
  for model in MODELS_UNDER_TEST:
    c = config_lib.get_config(model)
    assert c.method == "mdm" and c.net.mdm == "none" and c.net.mdm_unroll == 10
    assert c.optim.name == "adamw"


# Learning with the default settings: tests/test_defaults_learn.py.
