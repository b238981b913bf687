"""ARGF's graph fusion network (Eq. 10-16) against a numpy computation, the Table 6
alternatives and the decision network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.layers.fusion import (DecisionNetwork, GraphFusion, SimpleFusion, similarity,
                                      vertex_logits, weighted_vertices)


def np_softmax(x, axis=-1):
  e = np.exp(x - x.max(axis, keepdims=True))
  return e / e.sum(axis, keepdims=True)


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_dense(p, x):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_mlp(p, x, slope=0.2):
  h = np_dense(p["dense_0"], x)
  h = np.where(h > 0, h, slope * h)
  return np.tanh(np_dense(p["dense_1"], h))


def np_gfn(params, v, share=True, offset=0.5):
  """Eq. 10-15 and the trimodal layer written out with loops, in float64."""
  v = [np.asarray(x, np.float64) for x in v]
  alpha = np.stack([np_sigmoid(np_dense(params["attention"]["dense"], x))[:, 0] for x in v], 1)
  u = sum(alpha[:, m, None] * v[m] for m in range(3)) / 3.0
  def sim(a, b):  # Eq. 12
    return (np_softmax(a) * np_softmax(b)).sum(-1)
  mlp_p = lambda layer, i: params[f"{layer}_mlp" if share else f"{layer}_mlp_{i}"]  # noqa: E731
  pairs = [(0, 1), (0, 2), (1, 2)]
  bi = [np_mlp(mlp_p("bimodal", p), np.concatenate([v[i], v[j]], -1))
        for p, (i, j) in enumerate(pairs)]
  hat = np.stack([(alpha[:, i] + alpha[:, j]) / (sim(v[i], v[j]) + offset) for i, j in pairs], 1)
  a_bi = np.exp(hat) / np.exp(hat).sum(1, keepdims=True)               # Eq. 14
  b = sum(a_bi[:, p, None] * bi[p] for p in range(3))                   # Eq. 15
  tri, hat_t = [], []
  for p, (x, y) in enumerate([(0, 1), (0, 2), (1, 2)]):
    tri.append(np_mlp(mlp_p("trimodal", p), np.concatenate([bi[x], bi[y]], -1)))
    hat_t.append((a_bi[:, x] + a_bi[:, y]) / (sim(bi[x], bi[y]) + offset))
  for p, (i, j) in enumerate(pairs):
    o = 3 - i - j
    tri.append(np_mlp(mlp_p("trimodal", 3 + p), np.concatenate([bi[p], v[o]], -1)))
    hat_t.append((a_bi[:, p] + alpha[:, o]) / (sim(bi[p], v[o]) + offset))
  hat_t = np.stack(hat_t, 1)
  a_tri = np.exp(hat_t) / np.exp(hat_t).sum(1, keepdims=True)
  t = sum(a_tri[:, q, None] * tri[q] for q in range(6))
  return np.concatenate([u, b, t], -1), alpha, a_bi, a_tri


MODS = ("text", "audio", "vision")


def _inputs(b=5, k=6, seed=0):
  rng = np.random.default_rng(seed)
  return {m: rng.normal(size=(b, k)).astype(np.float32) for m in ("text", "audio", "vision")}


def test_eq12_to_15_pure_functions_on_hand_made_vectors():
  vi = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, -1.0]], np.float32)
  vj = np.array([[0.0, 0.0, 0.0], [2.0, -1.0, 0.0]], np.float32)
  # Equal vectors with uniform softmax: S = 3 * (1/3)^2 = 1/3.
  s = jax.jit(similarity)(vi, vj)
  np.testing.assert_allclose(s[0], 1.0 / 3.0, rtol=1e-6)
  np.testing.assert_allclose(s[1], (np_softmax(vi[1]) * np_softmax(vj[1])).sum(), rtol=1e-6)
  wi, wj = np.array([0.2, 0.9], np.float32), np.array([0.4, 0.1], np.float32)
  logits = jax.jit(vertex_logits)(wi, wj, vi, vj)
  np.testing.assert_allclose(logits[0], 0.6 / (1.0 / 3.0 + 0.5), rtol=1e-6)   # Eq. 13
  verts = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
  lg = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], np.float32)
  out, alpha = jax.jit(weighted_vertices)(lg, verts)
  np.testing.assert_allclose(alpha[0], [1 / 3] * 3, rtol=1e-6)                 # Eq. 14
  np.testing.assert_allclose(out, (np_softmax(lg)[..., None] * verts).sum(1), rtol=1e-5)


@pytest.mark.parametrize("share", [True, False])
def test_graph_fusion_matches_numpy(share):
  vs = _inputs()
  gfn = GraphFusion(hidden=7, share_mlp=share, modalities=MODS)
  params = gfn.init(jax.random.PRNGKey(0), vs)["params"]
  omega, aux = jax.jit(lambda p, x: gfn.apply({"params": p}, x))(params, vs)
  ref, alpha, a_bi, a_tri = np_gfn(params, [vs[m] for m in MODS], share)
  assert omega.shape == (5, 18)
  np.testing.assert_allclose(aux["unimodal"], alpha, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(aux["bimodal"], a_bi, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(aux["trimodal"], a_tri, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(omega, ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(aux["bimodal"]).sum(1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(aux["trimodal"]).sum(1), 1.0, rtol=1e-5)
  n_mlps = sum(1 for k in params if "mlp" in k)
  assert n_mlps == (2 if share else 9)


def test_vertex_names_follow_the_weight_columns():
  names = GraphFusion.vertex_names(["text", "audio", "vision"])
  assert names["bimodal"] == ["text-audio", "text-vision", "audio-vision"]
  assert names["trimodal"][:3] == ["text-audio|text-vision", "text-audio|audio-vision",
                                   "text-vision|audio-vision"]
  assert names["trimodal"][3:] == ["text-audio|vision", "text-vision|audio", "audio-vision|text"]


def test_graph_fusion_gradients_are_finite_and_reach_every_parameter():
  vs = _inputs(seed=1)
  gfn = GraphFusion(hidden=7, modalities=MODS)
  params = gfn.init(jax.random.PRNGKey(1), vs)["params"]
  def loss(p, x):
    omega, aux = gfn.apply({"params": p}, x)
    return jnp.sum(omega ** 2) + jnp.sum(aux["trimodal"][:, 0])
  gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, vs)
  for leaf in jax.tree_util.tree_leaves((gp, gx)):
    assert np.all(np.isfinite(leaf))
    assert float(jnp.abs(leaf).sum()) > 0


def test_graph_fusion_needs_three_modalities():
  vs = _inputs()
  vs.pop("vision")
  with pytest.raises(ValueError, match="exactly 3"):
    GraphFusion().init(jax.random.PRNGKey(0), vs)


def test_vertex_order_follows_modalities_not_dict_order():
  vs = _inputs(seed=2)
  a = GraphFusion(hidden=7, modalities=MODS)
  b = GraphFusion(hidden=7, modalities=("audio", "text", "vision"))
  params = a.init(jax.random.PRNGKey(0), vs)["params"]
  wa = a.apply({"params": params}, vs)[1]["unimodal"]
  wb = b.apply({"params": params}, vs)[1]["unimodal"]
  np.testing.assert_allclose(wa[:, [1, 0, 2]], wb, rtol=1e-6)


@pytest.mark.parametrize("kind,width", [("concat", 18), ("multiply", 6), ("average", 6),
                                        ("tensor", 7 ** 3)])
def test_table6_alternatives(kind, width):
  vs = _inputs()
  mod = SimpleFusion(kind, modalities=MODS)
  variables = mod.init(jax.random.PRNGKey(0), vs)
  z, aux = jax.jit(lambda v, x: mod.apply(v, x))(variables, vs)
  assert z.shape == (5, width)
  v = [np.asarray(vs[m], np.float64) for m in MODS]
  if kind == "concat":
    np.testing.assert_allclose(z, np.concatenate(v, -1), rtol=1e-6)
  elif kind == "multiply":
    np.testing.assert_allclose(z, v[0] * v[1] * v[2], rtol=1e-5)
  elif kind == "average":
    p = variables["params"]["attention"]["dense"]
    a = np.stack([np_sigmoid(np_dense(p, x))[:, 0] for x in v], 1)
    np.testing.assert_allclose(z, sum(a[:, m, None] * v[m] for m in range(3)) / 3, rtol=1e-5)
  else:
    z1 = [np.concatenate([x, np.ones((5, 1))], -1) for x in v]
    ref = np.einsum("bi,bj,bk->bijk", *z1).reshape(5, -1)
    np.testing.assert_allclose(z, ref, rtol=1e-5, atol=1e-6)


def test_decision_network_batchnorm_ignores_filler_rows():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(8, 6)).astype(np.float32)
  row_mask = np.array([True] * 5 + [False] * 3)
  net = DecisionNetwork(out_dim=2, hidden=4)
  variables = net.init(jax.random.PRNGKey(0), z, row_mask)
  def run(z):
    out, new = net.apply(variables, z, row_mask, train=True, mutable=["batch_stats"])
    return out, new["batch_stats"]
  out_a, st_a = jax.jit(run)(z)
  z_b = z.copy(); z_b[5:] = 100.0 * rng.normal(size=(3, 6))
  out_b, st_b = jax.jit(run)(z_b)
  np.testing.assert_allclose(out_a[:5], out_b[:5], rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(st_a), jax.tree_util.tree_leaves(st_b)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Running mean moved towards the mean of the 5 real rows (momentum 0.9).
  np.testing.assert_allclose(st_a["norm"]["mean"], 0.1 * z[:5].mean(0), rtol=1e-4, atol=1e-6)
  # Eval mode: per-row (no batch dependence).
  ev = lambda zz: net.apply(variables, zz, row_mask, train=False)  # noqa: E731
  np.testing.assert_allclose(ev(z)[0], ev(np.concatenate([z[:1], z_b[1:]]))[0], rtol=1e-6)

