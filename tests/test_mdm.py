"""MDM method (Algorithm 1 in one train step), robustness table and dependency scores."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmfuse_jax.data.pipeline import make_batch
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.losses import dependency as dep
from mmfuse_jax.losses.task import weighted_mean
from mmfuse_jax.models.mdm_critic import table4_widths
from mmfuse_jax.training import robustness
from mmfuse_jax.training.dependency_scores import dependency_table
from mmfuse_jax.training.experiment import load_trained
from mmfuse_jax.training.experiment import build_experiment, init_state
from mmfuse_jax.training.loop import train_and_evaluate
from tests.helpers import tiny_config, tiny_synthetic
from tests.test_baselines import TINY_NET

EF = {**{f"net.{k}": v for k, v in TINY_NET["ef_lstm"].items()}, "net.num_layers": 1}


def _exp(mdm="kl", ds=None, **overrides):
  ds = ds or tiny_synthetic(0, n_train=64, n_valid=32, n_test=32)
  c = tiny_config("ef_lstm", **EF, **{"net.mdm": mdm, **overrides})
  return build_experiment(c, ds), ds


def _batch(ds, n=32, size=32, more=0):
  """Rows 0..n-1, with `more` further batches of other rows (batch.more) for the critic."""
  total = len(ds.splits["train"])
  rows = [(np.arange(n) + (i + 1) * n) % total for i in range(more)]
  return make_batch(ds.splits["train"], np.arange(n), size, more_rows=rows)


def test_state_layout_and_config_errors():
  exp, ds = _exp("w", **{"net.mdm_unroll": 2})
  st = init_state(exp)
  assert set(st.opt_state) == {"model", "critic"}
  widths = [st.extras["critic"][f"dense_{i}"]["kernel"].shape[1] for i in range(5)]
  assert widths == list(table4_widths(16))  # fused width of EF-LSTM = hidden 16
  with pytest.raises(ValueError, match="further batches"):
    exp.train_step(st, _batch(ds), jax.random.PRNGKey(0))  # no batch.more
  st2, m = exp.train_step(st, _batch(ds, more=2), jax.random.PRNGKey(0))
  assert int(st2.step) == 1 and {"mdm_estimate", "mdm_critic_estimate", "task_loss"} <= set(m)
  with pytest.raises(ConfigError, match="net.mdm must be one of"):
    _exp("mi")


def test_none_is_exactly_the_standard_method():
  from mmfuse_jax.methods.standard import StandardMethod
  exp, ds = _exp("none")
  st = init_state(exp)
  assert st.extras == {} and not isinstance(st.opt_state, dict)
  b = _batch(ds)
  std = StandardMethod(exp.config, exp.model, exp.spec, exp.info, exp.method.steps_per_epoch)
  s1, m1 = exp.train_step(st, b, jax.random.PRNGKey(3))
  s2, m2 = jax.jit(std.train_step)(init_state(exp), b, jax.random.PRNGKey(3))
  for a, c in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s2.params)):
    np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-7)


LMF = {**{f"net.{k}": v for k, v in TINY_NET["lmf"].items()}, "model": "lmf"}


@pytest.mark.parametrize("model,mode", [("ef_lstm", "fused"),
                                        pytest.param("lmf", "unimodal", marks=pytest.mark.slow)])
def test_model_gradient_is_eq5_under_the_critic(model, mode):
  """With no critic update (unroll 0) and no dropout, the step's model gradient equals the
  gradient of L_down - lambda * L_MDM computed directly, parameter by parameter. The critic
  scores representations that depend on parameters (EF-LSTM's fused Dense+ReLU output; LMF's
  unimodal subnetworks), and the penalty's gradient is large enough that the opposite sign
  (+ lambda) is far outside the tolerance: a sign error in the gradient path fails."""
  lam = 0.7
  overrides = {"net.mdm_unroll": 0, "net.mdm_input": mode, "net.mdm_critic_dropout": 0.0,
               "net.mdm_lambda": lam, "net.mdm_critic_output": "linear"}
  if model == "lmf":
    ds = tiny_synthetic(0, n_train=64, n_valid=32, n_test=32)
    c = tiny_config("lmf", **{k: v for k, v in LMF.items() if k != "model"},
                    **{"net.mdm": "f", **overrides})
    exp = build_experiment(c, ds)
  else:
    exp, ds = _exp("f", **overrides)
  st = init_state(exp)
  b = _batch(ds, n=27)  # 5 filler rows
  rng = jax.random.PRNGKey(5)
  meth = exp.method
  rngs = meth.step_rngs(rng, st.step)
  mods = exp.info.modalities
  crit = lambda z: meth.critic.apply({"params": st.extras["critic"]}, z)  # noqa: E731

  def direct(params, sign):
    (pred, aux), _ = meth.apply(params, st.model_state, b, train=True)
    task = weighted_mean(meth.task_loss_per_sample(pred, b), b.weights)
    if mode == "fused":   # Fig. 3: the fused representation of the batch and its negatives
      zj = aux["fused"]
      (_, neg), _ = meth.apply(params, st.model_state,
                               meth.negative_batch(rngs["negatives"], b), train=True)
      zm = neg["fused"]
    else:
      zj = jnp.concatenate([aux["unimodal"][m] for m in mods], -1)
      parts = dep.shuffle_modalities(rngs["marginals"], {m: aux["unimodal"][m] for m in mods},
                                     b.weights)
      zm = jnp.concatenate([parts[m] for m in mods], -1)
    return task - sign * lam * dep.f_bound(crit(zj), crit(zm), b.weights), task

  fn = jax.jit(jax.value_and_grad(direct, has_aux=True), static_argnums=1)
  (loss, task), want = fn(st.params, 1.0)
  _, flipped = fn(st.params, -1.0)
  grads, m, _, _ = jax.jit(meth.model_gradient)(st, b, rng)
  np.testing.assert_allclose(m["loss"], loss, rtol=1e-5)
  # Eq. 5 by itself: the method's named loss on the outputs of its forward pass.
  outs, _ = meth.model_outputs(st.params, model_state=st.model_state, batch=b, rngs=rngs)
  eq5, _ = meth.model_loss(outs, batch=b, critic_params=st.extras["critic"],
                           ma=(st.extras["ma"], st.extras["ma_count"]), rngs=rngs)
  np.testing.assert_allclose(eq5, loss, rtol=1e-5)
  np.testing.assert_allclose(m["task_loss"], task, rtol=1e-5)
  got, want, flipped = (np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(t)])
                        for t in (grads, want, flipped))
  scale = np.abs(want).max()
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
  # The penalty moves the gradient by far more than the tolerance, so + lambda would fail.
  assert np.abs(want - flipped).max() > 1e-2 * scale


def test_each_critic_update_draws_a_fresh_batch_and_fresh_negatives():
  """Algorithm 1: update i of the unroll uses the i-th further batch (and its own negative
  permutation). Replaying the updates on batches built independently from the same rows
  gives the step's critic; replaying them on the step's own batch does not."""
  k = 3
  exp, ds = _exp("kl", **{"net.mdm_unroll": k, "net.mdm_critic_dropout": 0.0})
  meth = exp.method
  st = init_state(exp)
  b = _batch(ds, n=30, more=k)   # 2 filler rows in every batch
  rng = jax.random.PRNGKey(2)
  _, _, _, (cparams, _, _) = jax.jit(meth.model_gradient)(st, b, rng)
  rngs = meth.step_rngs(rng, st.step)
  split = ds.splits["train"]

  @jax.jit
  def replay(batches):
    c, o = st.extras["critic"], st.opt_state["critic"]
    ma = (st.extras["ma"], st.extras["ma_count"])
    for i, bi in enumerate(batches):
      in_rng, loss_rng = jax.random.split(jax.random.fold_in(rngs["critic"], i))
      zj, zm = meth.critic_inputs(st.params, st.model_state, bi, in_rng)
      g, (_, ma) = jax.grad(meth.critic_loss, has_aux=True)(c, zj, zm, bi.weights, ma, loss_rng)
      u, o = meth.critic_tx.update(g, o, c)
      c = optax.apply_updates(c, u)
    return c

  fresh = [make_batch(split, (np.arange(30) + (i + 1) * 30) % 64, 32) for i in range(k)]
  for i, bi in enumerate(fresh):
    np.testing.assert_array_equal(np.asarray(b.more.index)[:, i], bi.index)
  # Each AdamW update moves a parameter by about the learning rate (1e-3 here).
  close = lambda a, c: all(np.allclose(x, y, rtol=0, atol=2e-5) for x, y in zip(  # noqa: E731
      jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(c)))
  assert close(replay(fresh), cparams)
  assert not close(replay([b.replace(more=None)] * k), cparams)   # the old, repeated batch


def test_critic_unroll_learns_dependence():
  """Modalities that share a signal: the unrolled critic's DV estimate grows."""
  ds = tiny_synthetic(0, n_train=64, n_valid=32, n_test=32)
  tr = ds.splits["train"]
  mask = tr.masks["text"][..., None]
  text_mean = (tr.features["text"] * mask).sum(1) / mask.sum(1)
  tr.features["audio"][:, :, :3] = 3.0 * text_mean[:, None, :3]  # audio repeats text
  tr.masks["audio"][:] = True
  exp, _ = _exp("kl", ds=ds, **{"net.mdm_unroll": 10, "net.mdm_input": "unimodal",
                                "net.mdm_critic_dropout": 0.0, "net.mdm_critic_lr": 3e-3,
                                "net.mdm_critic_output": "linear", "optim.lr": 1e-6,
                                "net.mdm_ma_rate": 0.05})  # with MINE's correction
  st = init_state(exp)
  b = _batch(ds, more=10)
  ests = []
  for i in range(8):
    st, m = exp.train_step(st, b, jax.random.PRNGKey(i))
    ests.append(float(m["mdm_critic_estimate"]))
  assert ests[-1] > 0.3 and ests[-1] > ests[0] + 0.2, ests
  assert float(st.extras["ma_count"]) == 80 and float(st.extras["ma"]) > 0


def test_negative_batch_never_uses_filler_rows():
  exp, ds = _exp("kl")
  b = _batch(ds, n=20)
  neg = exp.method.negative_batch(jax.random.PRNGKey(0), b)
  for m in b.features:
    # every valid row's features come from a valid row, filler rows stay empty
    assert not np.asarray(neg.masks[m])[20:].any()
    assert np.asarray(neg.masks[m])[:20].any(1).all()


@pytest.mark.slow
def test_robustness_table_and_dependency_scores(workdir):
  ds = tiny_synthetic(1, n_train=64, n_valid=32, n_test=48)
  c = tiny_config("ef_lstm", epochs=1, **EF, **{"net.mdm": "w", "net.mdm_unroll": 2})
  r = train_and_evaluate(c, workdir, dataset=ds)
  drops = ["text", "remove:text+audio", "remove:text+audio+vision"]
  t = robustness.modality_drop_table(workdir, drops, dataset=ds)
  assert t["clean"]["mae"] == pytest.approx(r["test"]["mae"], rel=1e-5)
  for spec in drops:
    row = t["drops"][spec]
    assert row["acc2_has0_ratio"] == pytest.approx(
        row["metrics"]["acc2_has0"] / t["clean"]["acc2_has0"])
  assert t["drops"]["text"]["metrics"]["mae"] != t["clean"]["mae"]
  with pytest.raises(ConfigError, match="subset of"):
    robustness.parse_drop("zero:speech", ("text", "audio"))
  # all modalities removed: every sample gets the same prediction
  exp, state = load_trained(workdir, dataset=ds)
  from mmfuse_jax.training.evaluation import predict_split
  none_left = robustness.corrupt_split(ds.splits["test"], "remove", ("text", "audio", "vision"))
  preds, _ = predict_split(exp, state, none_left)
  assert np.ptp(preds) < 1e-5
  json.dumps(t)
  table = dependency_table(workdir, dataset=ds, top=3)
  scores = np.asarray(table["scores"])
  assert scores.shape == (48,) and np.all((scores > 0) & (scores < 1))
  assert table["high"][0][1] == pytest.approx(scores.max())
  assert table["low"][0][1] == pytest.approx(scores.min())
  assert os.path.exists(os.path.join(workdir, "results.json"))


def test_paper_configs_load():
  from mmfuse_jax import config as config_lib
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "mdm.py")
  settings = config_lib.config_settings(path)
  assert len(settings) == 9
  for setting in settings:
    c = config_lib.load_config_file(f"{path}:{setting}")
    config_lib.validate_config(c)
    assert c.method == "mdm" and c.net.mdm in ("w", "none", "kl", "f")
    assert c.net.mdm_unroll >= 1 and c.optim.name == "adamw"


@pytest.mark.parametrize("kind", [pytest.param("kl", marks=pytest.mark.slow),
                                  pytest.param("f", marks=pytest.mark.slow), "w"])
def test_ef_lstm_with_mdm_learns(kind, workdir):
  ds = tiny_synthetic(0, n_train=384, n_valid=96, n_test=96, distractors=0, noise=0.3)
  label_mean_mae = float(np.mean(np.abs(ds.splits["test"].labels
                                        - ds.splits["train"].labels.mean())))
  c = tiny_config("ef_lstm", epochs=10, **EF, **{"net.mdm": kind, "net.mdm_unroll": 3,
                                                 "optim.lr": 5e-3})
  r = train_and_evaluate(c, workdir, dataset=ds)
  assert r["test"]["mae"] < label_mean_mae - 0.15, (kind, r["test"]["mae"], label_mean_mae)
