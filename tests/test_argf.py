"""ARGF: losses (Eq. 3-9) against numpy, the masked BiLSTM against a numpy LSTM, the model's
checks, the method's separate updates (each changes only its own parameters), BatchNorm
handling, ablations, and a tiny end-to-end run that must beat the majority class."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.catalog import MODELS
from mmfuse_jax.data import binarize, make_batch
from mmfuse_jax.data.context import dataset_with_video_context
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.layers.recurrent import MaskedLSTM
from mmfuse_jax.losses import adversarial as adv
from mmfuse_jax.methods.argf import ARGFMethod, param_subset
from mmfuse_jax.models.base import DataInfo
from tests.helpers import tiny_config, tiny_synthetic

UTT = {"text": 1, "audio": 1, "vision": 1}


# ---------------------------------------------------------------------------------------
# Losses (Eq. 3-9)
# ---------------------------------------------------------------------------------------
def _logits(seed=0, b=6):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=b).astype(np.float32) * 2 for _ in range(3)]


def _np_wmean(v, w):
  return (v * w).sum() / max(w.sum(), 1.0)


WEIGHTS = np.array([1, 1, 1, 1, 0, 0], np.float32)


def test_fake_and_true_adversarial_losses_match_eq3_eq4():
  zt, za, zv = _logits()
  d = lambda z: 1.0 / (1.0 + np.exp(-z.astype(np.float64)))  # noqa: E731
  fal = jax.jit(lambda a, v, w: adv.fake_adversarial_loss([a, v], w, 0.7))(za, zv, WEIGHTS)
  ref = _np_wmean(-0.7 * (np.log(d(za)) + np.log(d(zv))), WEIGHTS)
  np.testing.assert_allclose(fal, ref, rtol=1e-5)
  tal = jax.jit(lambda t, a, v, w: adv.true_adversarial_loss(t, [a, v], w, 0.7))(
      zt, za, zv, WEIGHTS)
  ref = _np_wmean(-0.7 * (np.log(1 - d(za)) + np.log(1 - d(zv)) + np.log(d(zt))), WEIGHTS)
  np.testing.assert_allclose(tal, ref, rtol=1e-5)
  # Filler rows (weight 0) do not count: changing them changes nothing.
  za2 = za.copy(); za2[4:] = 50.0
  np.testing.assert_allclose(adv.fake_adversarial_loss([za2, zv], WEIGHTS, 0.7), fal, rtol=1e-6)
  # Gradients: d/dz of -log sigmoid(z) = sigmoid(z) - 1; finite for huge logits.
  g = jax.grad(lambda a: adv.fake_adversarial_loss([a], WEIGHTS))(za)
  np.testing.assert_allclose(g, WEIGHTS * (d(za) - 1) / WEIGHTS.sum(), rtol=1e-5, atol=1e-7)
  big = jax.grad(lambda t: adv.true_adversarial_loss(t, [t], WEIGHTS))(np.full(6, 200.0))
  assert np.all(np.isfinite(big))


@pytest.mark.parametrize("distance", ["l2", "squared"])
def test_reconstruction_and_classification_losses_match_eq6_eq8(distance):
  rng = np.random.default_rng(1)
  xs = [rng.normal(size=(6, d)).astype(np.float32) for d in (4, 3, 5)]
  rs = [rng.normal(size=x.shape).astype(np.float32) for x in xs]
  dist = ((lambda e: np.sqrt((e ** 2).sum(-1))) if distance == "l2"
          else (lambda e: (e ** 2).mean(-1)))
  rl = jax.jit(lambda r, x, w: adv.reconstruction_loss(r, x, w, distance))(rs, xs, WEIGHTS)
  ref = _np_wmean(sum(dist(r.astype(np.float64) - x) for r, x in zip(rs, xs)), WEIGHTS)
  np.testing.assert_allclose(rl, ref, rtol=1e-5)
  labels = np.array([0, 1, 1, 0, 1, 0])
  y = adv.one_hot_targets(jnp.asarray(labels), "classification", 2)
  np.testing.assert_array_equal(y, np.eye(2)[labels])
  outs = [jax.nn.softmax(rng.normal(size=(6, 2)).astype(np.float32)) for _ in range(3)]
  cl = jax.jit(lambda o, y, w: adv.classification_loss(o, y, w, distance))(outs, y, WEIGHTS)
  ref = _np_wmean(sum(dist(np.asarray(o, np.float64) - np.eye(2)[labels]) for o in outs),
                  WEIGHTS)
  np.testing.assert_allclose(cl, ref, rtol=1e-5)
  # The Euclidean norm's gradient is finite (0) where the reconstruction is exact.
  g = jax.grad(lambda r: adv.reconstruction_loss([r], [xs[0]], WEIGHTS, distance))(xs[0])
  assert np.all(np.isfinite(g)) and float(np.abs(g).sum()) == 0.0
  g = jax.grad(lambda r: adv.reconstruction_loss([r], [xs[0]], WEIGHTS, distance))(rs[0])
  assert np.all(np.isfinite(g)) and np.all(g[4:] == 0) and float(np.abs(g[:4]).sum()) > 0


def test_eq9_and_fusion_mse():
  assert float(adv.embedding_objective(1.0, 2.0, 3.0, 4.0, 0.25)) == pytest.approx(
      0.25 * 1 + 0.75 * 2 + 0.5 * 3 + 4)
  logits = np.array([[2.0, -1.0], [0.0, 0.5]], np.float32)
  labels = np.array([0, 1])
  p = np_softmax(logits.astype(np.float64))
  ref = ((p - np.eye(2)[labels]) ** 2).mean(-1)
  np.testing.assert_allclose(adv.probability_mse_per_sample(logits, labels, "classification"),
                             ref, rtol=1e-5)
  np.testing.assert_allclose(
      adv.probability_mse_per_sample(np.array([0.5, -1.0]), np.array([1.0, 1.0]), "regression"),
      [0.25, 4.0])


def np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------------------
# Masked BiLSTM
# ---------------------------------------------------------------------------------------
def _np_lstm(p, xs):
  """flax LSTMCell equations in numpy over a list of (D,) steps; returns outputs, final h."""
  sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
  hdim = p["hi"]["kernel"].shape[0]
  h, c, out = np.zeros(hdim), np.zeros(hdim), []
  for x in xs:
    g = {k: x @ np.asarray(p[f"i{k}"]["kernel"], np.float64)
         + h @ np.asarray(p[f"h{k}"]["kernel"], np.float64) + np.asarray(p[f"h{k}"]["bias"])
         for k in "ifgo"}
    c = sig(g["f"]) * c + sig(g["i"]) * np.tanh(g["g"])
    h = sig(g["o"]) * np.tanh(c)
    out.append(h)
  return out, h


def test_masked_bilstm_matches_numpy_with_padding_anywhere():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 6, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0]], bool)
  lstm = MaskedLSTM(5, bidirectional=True)
  params = lstm.init(jax.random.PRNGKey(0), x, mask)
  out, final = jax.jit(lambda p, x, m: lstm.apply(p, x, m))(params, x, mask)
  p = params["params"]
  for b in range(3):
    steps = np.nonzero(mask[b])[0]
    if len(steps) == 0:
      assert np.all(out[b] == 0) and np.all(final[b] == 0)
      continue
    fo, fh = _np_lstm(p["forward_0"], [x[b, t] for t in steps])
    bo, bh = _np_lstm(p["backward_0"], [x[b, t] for t in steps[::-1]])
    bo = bo[::-1]
    for k, t in enumerate(steps):
      np.testing.assert_allclose(out[b, t], np.concatenate([fo[k], bo[k]]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(final[b], np.concatenate([fh, bh]), rtol=1e-4, atol=1e-5)
    assert np.all(out[b, ~mask[b]] == 0)
  # Padded values do not matter; gradients are finite.
  x2 = np.where(mask[..., None], x, 9.0).astype(np.float32)
  np.testing.assert_allclose(lstm.apply(params, x2, mask)[0], out, atol=1e-6)
  g = jax.grad(lambda x: lstm.apply(params, x, mask)[0].sum())(x)
  assert np.all(np.isfinite(g)) and np.all(g[~mask] == 0)


# ---------------------------------------------------------------------------------------
# Model and method on tiny utterance data
# ---------------------------------------------------------------------------------------
TINY_NET = dict(hidden=6, encoder_expand=2, decoder_widths=(8, 4), classifier_hidden=5,
                discriminator_widths=(6, 3), gfn_hidden=5, decision_hidden=6, ucln_hidden=4,
                ucln_dim=5, dropout=0.1)


def _data(context=True, task="classification", n_train=64, seed=0):
  ds = tiny_synthetic(seed, n_train=n_train, n_valid=32, n_test=32, lengths=UTT)
  if task == "classification":
    ds = binarize(ds)
  return dataset_with_video_context(ds) if context else ds


def _config(context=True, **net):
  c = tiny_config("argf", **{f"net.{k}": v for k, v in {**TINY_NET, **net}.items()})
  c.data.context = context
  return c


def _method(c, ds, steps_per_epoch=2):
  info = DataInfo(ds.modalities, ds.feature_dims, ds.max_lengths, ds.task, ds.num_classes)
  spec = MODELS.get("argf")
  return ARGFMethod(c, spec.build(c.net, info), spec, info, steps_per_epoch)


def _batch(ds, n=12, size=16, split="train"):
  return make_batch(ds.splits[split], np.arange(n), size)


def _changed(a, b):
  return {k for k in a if any(not np.array_equal(x, y) for x, y in
                              zip(jax.tree_util.tree_leaves(a[k]), jax.tree_util.tree_leaves(b[k])))}


def test_config_errors():
  ds = _data(context=False)
  with pytest.raises(ConfigError, match="data.context=true"):
    _method(_config(context=False, ucln=True), ds)
  with pytest.raises(ConfigError, match="target_modality"):
    _method(_config(context=False, ucln=False, target_modality="speech"), ds)
  with pytest.raises(ConfigError, match="net.fusion"):
    _method(_config(context=False, ucln=False, fusion="dfg"), ds)
  with pytest.raises(ConfigError, match="update_order"):
    _method(_config(context=False, ucln=False, update_order="fusion,autoencoder"), ds)
  with pytest.raises(ConfigError, match="net.gfn_edges"):
    _method(_config(context=False, ucln=False, gfn_edges="public"), ds)
  with pytest.raises(ConfigError, match="net.encoder_variant"):
    _method(_config(context=False, ucln=False, encoder_variant="official"), ds)
  with pytest.raises(ConfigError, match="net.bn_update"):
    _method(_config(context=False, ucln=False, bn_update="step"), ds)
  # The model alone (no method): UCLN on utterance data without context is a clear error.
  c = _config(context=False, ucln=True)
  info = DataInfo(ds.modalities, ds.feature_dims, ds.max_lengths, ds.task, ds.num_classes)
  with pytest.raises(ConfigError, match="data.context=true"):
    MODELS.get("argf").build(c.net, info).init(jax.random.PRNGKey(0), _batch(ds), train=False)
  # Data without video ids cannot get context: the data layer says so.
  from mmfuse_jax.errors import DataError
  bare = dataclasses.replace(ds, splits={k: dataclasses.replace(s, groups=None)
                                         for k, s in ds.splits.items()})
  with pytest.raises(DataError, match="video"):
    dataset_with_video_context(bare)


def test_model_outputs_and_ucln_reads_the_utterance_position():
  ds = _data()
  c = _config()
  m = _method(c, ds)
  batch = _batch(ds)
  variables = jax.jit(m.init_variables)(jax.random.PRNGKey(0), batch)
  apply = jax.jit(lambda v, b: m.model.apply(v, b, train=False))
  pred, aux = apply(variables, batch)
  assert pred.shape == (16, 2)
  assert aux["vertex_weights"]["trimodal"].shape == (16, 6)
  assert set(aux["encoded"]) == {"text", "audio", "vision"}
  assert aux["encoded"]["text"].shape == (16, 6) and aux["inputs"]["audio"].shape == (16, 5)
  # Rows 0 and 1 are two utterances of the same video: same context, different positions.
  split = ds.splits["train"]
  assert split.groups[0] == split.groups[1]
  np.testing.assert_array_equal(batch.features["text"][0], batch.features["text"][1])
  assert not np.allclose(aux["inputs"]["text"][0], aux["inputs"]["text"][1])
  # Changing another video's utterances does not change this utterance's UCLN output.
  other = np.asarray(split.groups != split.groups[0])
  feats = {k: np.where(other[:16, None, None], 5.0, v) for k, v in batch.features.items()}
  aux2 = apply(variables, batch.replace(features=feats))[1]
  np.testing.assert_allclose(aux2["inputs"]["text"][0], aux["inputs"]["text"][0], atol=1e-6)


@pytest.fixture(scope="module")
def no_ucln():
  ds = _data(context=False)
  c = _config(context=False, ucln=False)
  m = _method(c, ds)
  batch = _batch(ds)
  return ds, c, m, batch, jax.jit(m.init_state)(jax.random.PRNGKey(0), batch)


@pytest.mark.slow
def test_each_update_changes_only_its_own_parameters(no_ucln):
  ds, c, m, batch, state = no_ucln
  assert set(state.opt_state) == {"autoencoder", "classifier", "discriminator", "fusion"}
  expected = {"autoencoder": {"encoders_text", "encoders_audio", "encoders_vision",
                              "decoders_text", "decoders_audio", "decoders_vision"},
              "classifier": {"encoders_text", "encoders_audio", "encoders_vision",
                             "classifier_net"},
              "discriminator": {"discriminator"},
              "fusion": {"fusion", "decision"}}
  for name in m.updates:
    single = _method(c, ds)
    single.updates = (name,)
    new, metrics = jax.jit(single.train_step)(state, batch, jax.random.PRNGKey(1))
    assert _changed(state.params, new.params) == expected[name], name
    assert set(param_subset(state.params, name)) == expected[name]
    assert np.isfinite(float(metrics[f"grad_norm_{name}"]))
    # Only this update's optimiser state moved.
    moved = {k for k in state.opt_state if any(
        not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(state.opt_state[k]),
                                                 jax.tree_util.tree_leaves(new.opt_state[k])))}
    assert moved == {name}
  # The target encoder gets no adversarial gradient: with lambda = 1 (no reconstruction)
  # the autoencoder update leaves it and all decoders alone.
  c1 = _config(context=False, ucln=False, adv_lambda=1.0)
  single = _method(c1, ds)
  single.updates = ("autoencoder",)
  new, _ = jax.jit(single.train_step)(state, batch, jax.random.PRNGKey(1))
  assert _changed(state.params, new.params) == {"encoders_audio", "encoders_vision"}


def test_full_step_batchnorm_filler_rows_and_eval(no_ucln):
  ds, c, m, batch, state = no_ucln
  step = jax.jit(m.train_step)
  new, metrics = step(state, batch, jax.random.PRNGKey(3))
  assert int(new.step) == 1
  for k in ("fal", "rl", "cl", "tal", "fusion_loss", "embedding_loss"):
    assert np.isfinite(float(metrics[k])) and float(metrics[k]) > 0, k
  # Every BatchNorm's running statistics moved.
  assert _changed(state.model_state["batch_stats"], new.model_state["batch_stats"]) == {
      "encoders_text", "encoders_audio", "encoders_vision", "decision"}
  # Filler rows (weight 0) change nothing: the same real rows with garbage filler rows.
  feats = {k: np.where(np.arange(16)[:, None, None] >= 12, 1e3, v)
           for k, v in batch.features.items()}
  new2, _ = step(state, batch.replace(features=feats), jax.random.PRNGKey(3))
  for a, b in zip(jax.tree_util.tree_leaves((new.params, new.model_state)),
                  jax.tree_util.tree_leaves((new2.params, new2.model_state))):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
  # Eval: running averages and no dropout -> deterministic and independent of the batch.
  ev = jax.jit(m.eval_step)
  p1, l1 = ev(new, batch)
  p2, _ = ev(new, batch)
  np.testing.assert_array_equal(p1, p2)
  other = make_batch(ds.splits["train"], np.array([0, 30, 31, 40]), 4)
  np.testing.assert_allclose(ev(new, other)[0][0], p1[0], rtol=1e-5, atol=1e-6)
  assert l1.shape == (16,) and np.all(np.isfinite(l1))
  # Same key, same result; a different key changes dropout.
  again, _ = step(state, batch, jax.random.PRNGKey(3))
  np.testing.assert_array_equal(jax.tree_util.tree_leaves(again.params)[0],
                                jax.tree_util.tree_leaves(new.params)[0])


def test_encoder_batchnorm_averages_move_once_per_batch():
  """net.bn_update='batch' (default, the public code's one encoder pass per batch): after a
  step of four updates, each encoder BatchNorm's running mean and variance moved exactly
  once, with the statistics of the step's first pass (the parameters before any update,
  the real rows only). 'update' keeps every pass's move (four per batch)."""
  ds = _data(context=False)
  m = _method(_config(context=False, ucln=False, dropout=0.0), ds)
  batch = _batch(ds)   # 12 real rows, 4 filler rows
  state = jax.jit(m.init_state)(jax.random.PRNGKey(0), batch)
  new, _ = jax.jit(m.train_step)(state, batch, jax.random.PRNGKey(1))
  momentum = m.config.net.bn_momentum
  for mod in ("text", "audio", "vision"):
    dense = state.params[f"encoders_{mod}"]["dense_0"]
    x = np.asarray(batch.features[mod][:12, 0], np.float64)   # one step per utterance
    h = x @ np.asarray(dense["kernel"], np.float64) + np.asarray(dense["bias"], np.float64)
    old = state.model_state["batch_stats"][f"encoders_{mod}"]["norm_0"]
    got = new.model_state["batch_stats"][f"encoders_{mod}"]["norm_0"]
    np.testing.assert_allclose(got["mean"], momentum * np.asarray(old["mean"])
                               + (1 - momentum) * h.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["var"], momentum * np.asarray(old["var"])
                               + (1 - momentum) * h.var(0), rtol=1e-4, atol=1e-6)
  # The decision network runs in the fusion update only: its averages moved too.
  assert _changed(state.model_state["batch_stats"], new.model_state["batch_stats"]) == {
      "encoders_text", "encoders_audio", "encoders_vision", "decision"}
  # After the first pass, 'batch' restores the encoders' averages and keeps the others';
  # 'update' keeps every move.
  before = {"batch_stats": {"encoders_text": 1, "decision": 2}}
  after = {"batch_stats": {"encoders_text": 3, "decision": 4}}
  assert m._keep_first_encoder_stats(before, after, True) == {
      "batch_stats": {"encoders_text": 1, "decision": 4}}
  assert m._keep_first_encoder_stats(before, after, False) == after
  every = _method(_config(context=False, ucln=False, bn_update="update"), ds)
  assert every._keep_first_encoder_stats(before, after, True) == after


@pytest.mark.slow
def test_update_order_switch_changes_the_result(no_ucln):
  ds, c, m, batch, state = no_ucln
  from mmfuse_jax.models.argf import REFERENCE_ORDER
  ref = _method(_config(context=False, ucln=False, update_order=REFERENCE_ORDER), ds)
  assert m.updates == ("autoencoder", "discriminator", "classifier", "fusion")
  assert ref.updates == ("autoencoder", "classifier", "discriminator", "fusion")
  a, _ = jax.jit(m.train_step)(state, batch, jax.random.PRNGKey(1))
  b, _ = jax.jit(ref.train_step)(state, batch, jax.random.PRNGKey(1))
  assert "discriminator" in _changed(a.params, b.params)


@pytest.mark.parametrize("switch,absent", [
    pytest.param("adversarial", "discriminator", marks=pytest.mark.slow),
    pytest.param("classifier", "classifier_net", marks=pytest.mark.slow),
    pytest.param("decoder", "decoders_text", marks=pytest.mark.slow)])
def test_table5_ablations_remove_their_part(switch, absent):
  ds = _data(context=False)
  m = _method(_config(context=False, ucln=False, **{switch: False}), ds)
  batch = _batch(ds)
  state = jax.jit(m.init_state)(jax.random.PRNGKey(0), batch)
  assert absent not in state.params
  upd = {"adversarial": "discriminator", "classifier": "classifier", "decoder": None}[switch]
  if upd:
    assert upd not in state.opt_state and upd not in m.updates
  new, metrics = jax.jit(m.train_step)(state, batch, jax.random.PRNGKey(0))
  assert np.isfinite(float(metrics["fusion_loss"]))
  zero = {"adversarial": ("fal", "tal"), "classifier": ("cl",), "decoder": ("rl",)}[switch]
  assert all(float(metrics[k]) == 0.0 for k in zero)


@pytest.mark.parametrize("fusion", ["concat", pytest.param("multiply", marks=pytest.mark.slow),
                                    "average", pytest.param("tensor", marks=pytest.mark.slow)])
def test_table6_fusions_build_and_predict(fusion):
  ds = _data(context=False)
  m = _method(_config(context=False, ucln=False, fusion=fusion), ds)
  batch = _batch(ds)
  variables = jax.jit(m.init_variables)(jax.random.PRNGKey(0), batch)
  pred, _ = jax.jit(lambda v, b: m.model.apply(v, b, train=False))(variables, batch)
  assert pred.shape == (16, 2) and np.all(np.isfinite(pred))
  assert "fusion" in variables["params"] or fusion in ("concat", "multiply", "tensor")


@pytest.mark.slow
def test_ucln_two_stage_schedule():
  ds = _data()
  c = _config(ucln_epochs=1)  # steps_per_epoch=2 -> steps 0, 1 train only the UCLN
  m = _method(c, ds, steps_per_epoch=2)
  batch = _batch(ds)
  state = jax.jit(m.init_state)(jax.random.PRNGKey(0), batch)
  assert set(state.opt_state) == {"ucln", "autoencoder", "classifier", "discriminator",
                                  "fusion"}
  step = jax.jit(m.train_step)
  s1, met = step(state, batch, jax.random.PRNGKey(1))
  ucln = {k for k in state.params if k.startswith("ucln")}
  assert _changed(state.params, s1.params) == ucln
  assert float(met["ucln_loss"]) > 0 and float(met["fusion_loss"]) == 0.0
  s2, met2 = step(s1.replace(step=jnp.asarray(2, jnp.int32)), batch, jax.random.PRNGKey(1))
  changed = _changed(s1.params, s2.params)
  assert not (changed & ucln) and {"fusion", "decision", "encoders_text"} <= changed
  assert float(met2["ucln_loss"]) == 0.0 and float(met2["fusion_loss"]) > 0


def _majority(labels_train, labels_test):
  return float(np.mean(labels_test == np.bincount(labels_train).argmax()))


@pytest.mark.slow
def test_end_to_end_beats_majority_class(tmp_path):
  from mmfuse_jax.training.loop import train_and_evaluate
  ds = _data(context=False, n_train=256)
  c = _config(context=False, ucln=False, hidden=8, dropout=0.0)
  c.epochs, c.batch_size, c.optim.lr = 6, 32, 3e-3
  res = train_and_evaluate(c, str(tmp_path / "run"), dataset=ds)
  base = _majority(ds.splits["train"].labels, ds.splits["test"].labels)
  assert res["test"]["acc"] >= base + 0.15, (res["test"], base)


@pytest.mark.slow
def test_end_to_end_with_ucln_regression_beats_label_mean(tmp_path):
  from mmfuse_jax.training.loop import train_and_evaluate
  ds = _data(context=True, task="regression", n_train=256)
  c = _config(dropout=0.0, ucln_hidden=8, ucln_dim=8, hidden=8)
  c.epochs, c.batch_size, c.optim.lr = 8, 32, 3e-3
  c.net.ucln_optimizer = "adam"
  res = train_and_evaluate(c, str(tmp_path / "run"), dataset=ds)
  y_test, y_train = ds.splits["test"].labels, ds.splits["train"].labels
  mean_mae = float(np.mean(np.abs(y_test - y_train.mean())))
  assert res["test"]["mae"] <= 0.8 * mean_mae, (res["test"], mean_mae)


def test_config_files():
  import os
  from mmfuse_jax import config as config_lib
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "argf.py")
  load = lambda name: config_lib.load_config_file(f"{path}:{name}")  # noqa: E731
  c = load("mosi_utterance")
  assert (c.model, c.dataset, c.method) == ("argf", "mosi_utterance", "argf")
  assert c.data.task == "classification" and c.data.split == "poria" and c.data.context
  assert c.net.ucln and c.net.target_modality == "text" and c.optim.b1 == 0.5
  # The paper's two stages: UCLNs first (2 epochs: their validation loss's minimum).
  assert c.net.ucln_epochs == 2 and c.epochs > c.net.ucln_epochs
  r = load("mosi_utterance_regression")
  assert r.data.task == "" and r.data.context and r.dataset == "mosi_utterance"
  t = load("tiny")
  assert t.dataset == "synthetic" and not t.net.ucln
  for cfg in (c, r, t):
    config_lib.validate_config(cfg)
