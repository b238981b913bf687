"""Mechanism-acts checks (training/mechanism_checks.py): each measure against an independent
computation on hand-made inputs, and (slow) each workdir entry point on a tiny trained run."""

import numpy as np
import pytest

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.models.rerd import default_net as rerd_net, msd_settings
from mmfuse_jax.training import mechanism_checks as mc
from mmfuse_jax.training.loop import train_and_evaluate
from tests.helpers import tiny_config, tiny_synthetic


# ----------------------------------------------------------------------------------------
# RERD: MSD
# ----------------------------------------------------------------------------------------
def _numpy_entropic_ot(x, y, a, b, eps_rel):
  """Eq. 9 by plain Sinkhorn in numpy (log domain, run to convergence): <P, C> + eps
  KL(P | a b^T) with eps = eps_rel * sum_ij a_i b_j C_ij, over the points with mass."""
  x, y, a, b = x[a > 0], y[b > 0], a[a > 0], b[b > 0]
  c = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
  eps = eps_rel * (a @ c @ b)
  f, g = np.zeros(len(a)), np.zeros(len(b))
  for _ in range(5000):
    f = -eps * np.logaddexp.reduce(np.log(b)[None, :] + (g[None, :] - c) / eps, axis=1)
    g = -eps * np.logaddexp.reduce(np.log(a)[:, None] + (f[:, None] - c) / eps, axis=0)
  p = a[:, None] * b[None, :] * np.exp((f[:, None] + g[None, :] - c) / eps)
  return float((p * c).sum() + eps * (p * np.log(p / (a[:, None] * b[None, :]))).sum())


def _clouds(n, rng, aligned=True):
  """Two modalities of n samples: the second is the first plus small noise (aligned) or
  independent draws; lengths vary, padding at the back."""
  t, d = 5, 3
  x = rng.normal(size=(n, t, d)).astype(np.float32) * rng.uniform(0.5, 3.0, (n, 1, 1))
  y = x + 0.05 * rng.normal(size=x.shape) if aligned else rng.normal(size=x.shape)
  lengths = {"text": rng.integers(2, t + 1, n), "audio": rng.integers(2, t + 1, n)}
  masks = {m: np.arange(t)[None, :] < lengths[m][:, None] for m in lengths}
  seqs = {"text": np.where(masks["text"][..., None], x, 0),
          "audio": np.where(masks["audio"][..., None], y.astype(np.float32), 0)}
  return seqs, masks


def test_per_sample_msd_matches_numpy_sinkhorn_and_orders_aligned_below_shuffled():
  rng = np.random.default_rng(0)
  seqs, masks = _clouds(10, rng)
  settings = msd_settings(rerd_net())
  values, valid = mc.per_sample_msd(seqs, masks, settings, chunk=4)  # 3 chunks, last padded
  assert values.shape == (10,) and valid.all()
  for i in range(10):
    a = masks["text"][i] / masks["text"][i].sum()
    b = masks["audio"][i] / masks["audio"][i].sum()
    ref = _numpy_entropic_ot(seqs["text"][i], seqs["audio"][i], a, b, settings["epsilon"])
    assert values[i] == pytest.approx(ref, rel=2e-3, abs=1e-4)
  out = mc.msd_summary(seqs, masks, settings, chunk=4)
  assert out["msd"] == pytest.approx(values.mean(), rel=1e-6)
  assert out["msd"] < 0.5 * out["msd_shuffled"]
  # independent clouds: pairing by sample carries nothing, both numbers alike
  out = mc.msd_summary(*_clouds(40, rng, aligned=False), settings, chunk=4)
  assert out["msd"] == pytest.approx(out["msd_shuffled"], rel=0.3)


def test_permute_modalities_moves_features_with_masks():
  ds = tiny_synthetic(0, n_train=16, n_valid=8, n_test=8)
  split = ds.splits["test"]
  moved = mc.permute_modalities(split, seed=3)
  np.testing.assert_array_equal(moved.labels, split.labels)
  for m in split.features:
    rows = [int(np.flatnonzero((split.features[m] == moved.features[m][i]).all((1, 2)))[0])
            for i in range(len(split))]
    assert sorted(rows) == list(range(len(split)))          # a permutation of the rows
    np.testing.assert_array_equal(moved.masks[m], split.masks[m][rows])
  orders = [tuple(np.argsort(moved.features[m][:, 0, 0])) for m in split.features]
  assert len(set(orders)) == len(orders)                     # independent per modality


# ----------------------------------------------------------------------------------------
# MICA: query / key distances
# ----------------------------------------------------------------------------------------
def test_query_key_distances_order_aligned_below_shifted():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(400, 4))
  same = {"a->b": (q, rng.normal(size=(300, 4))),
          "b->a": (q, rng.normal(size=(300, 4)) + np.array([8.0, 0, 0, 0]))}
  out = mc.query_key_distances(same, max_elements=200)
  assert out["b->a"]["a_distance"] == pytest.approx(2.0, abs=0.05)   # separable
  assert abs(out["a->b"]["a_distance"]) < 0.35                       # one distribution
  assert out["b->a"]["mmd2"] > 10 * out["a->b"]["mmd2"]
  assert out["mean"]["mmd2"] == pytest.approx((out["a->b"]["mmd2"] + out["b->a"]["mmd2"]) / 2)
  assert out["a->b"]["n_queries"] == 400 and out["a->b"]["n_keys"] == 300


# ----------------------------------------------------------------------------------------
# MDM: fresh critic
# ----------------------------------------------------------------------------------------
def _dependent_views(n, rng, dependent=True):
  x = rng.normal(size=(n, 4))
  joint = np.concatenate([x, x + 0.1 * rng.normal(size=x.shape) if dependent
                          else rng.normal(size=x.shape)], 1)
  marg = np.concatenate([x, rng.normal(size=x.shape)], 1)
  return joint.astype(np.float32), marg.astype(np.float32)


def test_fresh_critic_detects_dependency_and_not_its_absence():
  rng = np.random.default_rng(0)
  kw = dict(steps=300, batch_size=64, lr=1e-2, dropout=0.0)   # one program for both fits
  critic, params = mc.fit_critic(*_dependent_views(512, rng), **kw)
  test_j, test_m = _dependent_views(512, rng)
  est = mc.critic_estimate(critic, params, test_j, test_m)
  # the estimate is E_P[T] - E_Q[T] of the critic's deterministic scores
  t_j = np.asarray(critic.apply({"params": params}, test_j))
  t_m = np.asarray(critic.apply({"params": params}, test_m))
  assert est == pytest.approx(t_j.mean() - t_m.mean(), abs=1e-5)
  assert est > 0.08
  critic, params = mc.fit_critic(*_dependent_views(512, rng, dependent=False), **kw)
  assert abs(mc.critic_estimate(critic, params,
                                *_dependent_views(512, rng, dependent=False))) < 0.03


# ----------------------------------------------------------------------------------------
# ARGF: modality probe
# ----------------------------------------------------------------------------------------
def _embeddings(n, rng, shift):
  return {m: rng.normal(size=(n, 5)) + shift * i for i, m in
          enumerate(("text", "audio", "vision"))}


def test_modality_probe_separable_vs_identical_and_matches_sklearn():
  rng = np.random.default_rng(0)
  assert mc.modality_probe_accuracy(_embeddings(200, rng, 5.0),
                                    _embeddings(200, rng, 5.0)) > 0.99
  chance = mc.modality_probe_accuracy(_embeddings(300, rng, 0.0), _embeddings(300, rng, 0.0))
  assert abs(chance - 1 / 3) < 0.06
  # overlapping classes, a vanishing penalty: the maximum-likelihood fit is unique, so the
  # class probabilities equal scikit-learn's multinomial logistic regression's (C = 1 / (n
  # l2); its penalty is on all K classes, ours on K - 1, which no longer matters)
  sklearn = pytest.importorskip("sklearn.linear_model")
  train, test = _embeddings(150, rng, 0.7), _embeddings(150, rng, 0.7)
  x = np.concatenate(list(train.values())); y = np.repeat([0, 1, 2], 150)
  mu, sd = x.mean(0), x.std(0) + 1e-8
  coef = mc.fit_softmax_regression((x - mu) / sd, y, 3, l2=1e-7)
  ref = sklearn.LogisticRegression(C=1 / (len(x) * 1e-7), tol=1e-12, max_iter=100000)
  ref.fit((x - mu) / sd, y)
  xt = (np.concatenate(list(test.values())) - mu) / sd
  logits = np.concatenate([xt, np.ones((len(xt), 1))], 1) @ coef
  probs = np.exp(logits - logits.max(1, keepdims=True))
  np.testing.assert_allclose(probs / probs.sum(1, keepdims=True), ref.predict_proba(xt),
                             atol=2e-3)
  np.testing.assert_array_equal(mc.softmax_predict(coef, xt), ref.predict(xt))


def test_discriminator_accuracy_is_balanced():
  scores = {"text": np.array([0.9, 0.8, 0.2, 0.7]),            # target: 3 of 4 right
            "audio": np.array([0.1, 0.6]), "vision": np.array([0.3, 0.4])}  # 3 of 4 right
  assert mc.discriminator_accuracy(scores, "text") == pytest.approx(0.75)
  scores["audio"] = np.array([0.9, 0.9])                       # sources: 2 of 4 right
  assert mc.discriminator_accuracy(scores, "text") == pytest.approx(0.5 * (0.75 + 0.5))


# ----------------------------------------------------------------------------------------
# MCER: generated-label distances
# ----------------------------------------------------------------------------------------
def test_generated_label_distances():
  y = np.array([1.0, -2.0, 0.5, 3.0, 0.0])
  seen = np.array([1, 1, 1, 1, 0.0])                          # row 4 never trained on
  labels = {"t": y + [0.1, -0.1, 0.0, 0.2, 9.0], "a": y + [1.0, 1.0, -1.0, 0.0, 9.0],
            "v": y + [0.0, 0.3, 0.3, 0.2, 9.0]}
  out = mc.generated_label_distances({"y_m": y, "seen": seen, "labels": labels})
  d_t, d_a, d_v = 0.4 / 4, 3.0 / 4, 0.8 / 4
  assert out["D_text"] == pytest.approx(d_t) and out["D_audio"] == pytest.approx(d_a)
  assert out["D_vision"] == pytest.approx(d_v)
  assert out["g"] == pytest.approx(d_a - (d_t + d_v) / 2)
  none = mc.generated_label_distances({"y_m": y, "seen": seen, "labels": {}})
  assert np.isnan(none["D_audio"]) and np.isnan(none["g"])


# ----------------------------------------------------------------------------------------
# Workdir entry points on tiny trained runs (slow: compiling a model's steps takes a
# minute or more on a CPU)
# ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_argf_check_on_a_tiny_run(workdir):
  ds = tiny_synthetic(0, n_train=96, n_valid=32, n_test=48)
  c = tiny_config("argf", epochs=1, **{"net.ucln": False, "data.context": False,
                                       "net.hidden": 8, "net.fusion": "concat"})
  train_and_evaluate(c, workdir, dataset=ds)
  out = mc.mechanism_check(workdir, dataset=ds)
  assert set(out) == {"probe_accuracy", "probe_chance", "discriminator_accuracy",
                      "adversarial_trained"}
  assert out["probe_chance"] == pytest.approx(1 / 3) and out["adversarial_trained"] == 1.0
  # independently: the probe on the encoders' outputs of the restored state
  exp, state = mc.load_trained(workdir, dataset=ds)
  from mmfuse_jax.training.evaluation import predict_split
  enc = {name: {m: np.concatenate([np.asarray(a["encoded"][m]) for a in
                                   predict_split(exp, state, ds.splits[name], with_aux=True)[2]])
                for m in ds.modalities} for name in ("train", "test")}
  assert out["probe_accuracy"] == pytest.approx(
      mc.modality_probe_accuracy(enc["train"], enc["test"]))
  assert 0.0 <= out["discriminator_accuracy"] <= 1.0
  with pytest.raises(ConfigError, match="rerd_check needs rerd"):
    mc.rerd_check(workdir, dataset=ds)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
  from tests.helpers import shared_compilation_cache
  with shared_compilation_cache(tmp_path_factory.mktemp("xla_cache")):
    yield


@pytest.mark.slow
def test_rerd_check_matches_the_regulariser_on_a_tiny_run(workdir, module_cache):
  """'msd' equals the MSD the training regulariser computes on the whole test split (one
  batch) in evaluation mode."""
  import jax
  from mmfuse_jax.data import iterate_batches
  from mmfuse_jax.models.rerd import msd_regularizer
  ds = tiny_synthetic(0, n_train=64, n_valid=32, n_test=48)
  c = tiny_config("rerd", epochs=1, **{"net.latent_dim": 8, "net.distill_heads": 2,
                                       "net.distill_layers": 2, "net.distill_ff": 8,
                                       "net.out_dim": 4, "net.fusion_heads": 2,
                                       "net.fusion_layers": 1})
  train_and_evaluate(c, workdir, dataset=ds)
  out = mc.mechanism_check(workdir, dataset=ds)
  assert out["msd_trained"] == 1.0 and out["msd"] > 0 and out["msd_shuffled"] > 0
  exp, state = mc.load_trained(workdir, dataset=ds)
  batch = next(iter(iterate_batches(ds.splits["test"], 64)))
  (_, aux), _ = exp.method.apply(state.params, state.model_state, batch, train=False)
  _, metrics = jax.jit(lambda a, b: msd_regularizer(a, b, exp.config, None))(aux, batch)
  assert out["msd"] == pytest.approx(float(metrics["msd"]), rel=1e-4)


@pytest.mark.slow
def test_mica_check_on_a_tiny_run(workdir, module_cache):
  ds = tiny_synthetic(0, n_train=64, n_valid=32, n_test=48)
  c = tiny_config("mica", epochs=1, **{"net.d_model": 8, "net.num_heads": 2,
                                       "net.num_layers": 1, "net.memory_layers": 1,
                                       "net.mmd_max_elements": 64})
  train_and_evaluate(c, workdir, dataset=ds)
  out = mc.mechanism_check(workdir, dataset=ds, split="test")
  directions = [k.split(":", 1)[1] for k in out if k.startswith("mmd2:")]
  assert len(directions) == 6 and out["alignment_trained"] == 1.0
  assert out["mmd2"] == pytest.approx(np.mean([out[f"mmd2:{d}"] for d in directions]))
  assert all(-2.0 <= out[f"a_distance:{d}"] <= 2.0 for d in directions)


@pytest.mark.slow
def test_mdm_check_on_a_tiny_run(workdir, module_cache):
  """The trained critic's estimate is mean T(joint) - mean T(negatives), T(joint) being the
  per-sample dependency scores of dependency_scores.py."""
  from mmfuse_jax.training.dependency_scores import score_split
  ds = tiny_synthetic(1, n_train=64, n_valid=32, n_test=48)
  c = tiny_config("ef_lstm", epochs=1, **{"net.hidden": 8, "net.num_layers": 1,
                                          "net.mdm": "w", "net.mdm_unroll": 1})
  train_and_evaluate(c, workdir, dataset=ds)
  out = mc.mdm_check(workdir, dataset=ds, steps=20)
  assert out["mdm_trained"] == 1.0
  assert all(np.isfinite(out[k]) for k in ("dependency_fresh", "dependency_trained",
                                           "dependency_fresh_train"))
  exp, state = mc.load_trained(workdir, dataset=ds)
  z_j, z_m = mc.critic_views(exp, state, ds.splits["test"], seed=1)
  t_m = np.asarray(exp.method.critic.apply({"params": state.extras["critic"]}, z_m))
  scores = score_split(exp, state, ds.splits["test"])
  assert out["dependency_trained"] == pytest.approx(scores.mean() - t_m.mean(), abs=1e-5)


@pytest.mark.slow
def test_mcer_check_on_a_tiny_run(workdir, module_cache):
  import jax
  ds = tiny_synthetic(0, n_train=64, n_valid=32, n_test=32)
  c = tiny_config("mcer", epochs=2, **{"net.text_dim": 8, "net.audio_dim": 8,
                                       "net.vision_dim": 8, "net.fusion_dim": 16,
                                       "net.uni_dim": 8, "net.z_dim": 8, "net.cross_dim": 8,
                                       "net.cross_layers": 1, "net.cross_heads": 2,
                                       "net.head_dim": 8, "data.shared_noise_audio": 3.0})
  train_and_evaluate(c, workdir, dataset=ds)
  out = mc.mechanism_check(workdir, dataset=ds)
  assert out["noise_audio"] == 3.0 and out["noise_text"] == 1.0
  exp, state = mc.load_trained(workdir, dataset=ds)
  ex = jax.device_get(state.extras)
  y = np.asarray(ex["y_m"])
  d = {m: np.mean(np.abs(np.asarray(ex["labels"][k]) - y)) for m, k in
       (("text", "t"), ("audio", "a"), ("vision", "v"))}       # every train row was seen
  assert out["D_audio"] == pytest.approx(d["audio"], rel=1e-5) and out["D_audio"] > 0
  assert out["g"] == pytest.approx(d["audio"] - (d["text"] + d["vision"]) / 2, rel=1e-4)
