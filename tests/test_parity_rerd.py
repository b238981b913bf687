"""Weight-level parity with the official RERD code, without torch: the fixture
tests/fixtures/rerd_parity.npz holds the official model's random weights (float16-exact),
inputs, outputs and gradients, written by `scripts/parity_rerd.py --write-fixture` (see
its docstring: 3 distillation layers, text and audio, every query kept, eval mode)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.convert.common import torch_conv1d, torch_layernorm, torch_linear
from mmfuse_jax.convert.rerd import convert
from mmfuse_jax.data.core import Batch
from mmfuse_jax.models.base import DataInfo
from mmfuse_jax.models.rerd import OFFICIAL_ARCHITECTURE, build, default_net

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "rerd_parity.npz")
OUTPUT_TOL, GRAD_RTOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def fixture():
  z = np.load(FIXTURE)
  meta = json.loads(str(z["meta"]))
  sd = {k[3:]: z[k].astype(np.float32) if z[k].dtype == np.float16 else z[k]
        for k in z.files if k.startswith("sd/")}
  info = DataInfo(modalities=tuple(meta["modalities"]), feature_dims=meta["dims"],
                  max_lengths=meta["lengths"], task="regression")
  b = meta["batch"]
  feats = {m: jnp.asarray(z[f"input/{m}"]) for m in info.modalities}
  batch = Batch(features=feats, masks={m: jnp.ones(v.shape[:2], bool) for m, v in feats.items()},
                labels=jnp.zeros(b), weights=jnp.ones(b), index=jnp.arange(b))
  grads = {k[len("heads/grad/"):]: z[k] for k in z.files if k.startswith("heads/grad/")}
  return dict(meta=meta, sd=sd, info=info, batch=batch, r=z["r"], grads=grads,
              outputs={v: z[f"{v}/output"] for v in ("view", "heads")})


def _net(meta, layout):
  net = default_net()
  net.update(meta["net"])
  net.attention_layout = layout
  return net


def _apply(net, info, variables, batch, r, with_grads):
  """(model, outputs, gradients of sum(outputs * r) or None)."""
  model = build(net, info)
  state = {k: v for k, v in variables.items() if k != "params"}

  def loss(params):
    pred, _ = model.apply({"params": params, **state}, batch, train=False)
    return (pred * r).sum(), pred
  if not with_grads:
    return model, np.asarray(jax.jit(loss)(variables["params"])[1]), None
  (_, pred), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
  return model, np.asarray(pred), grads


def test_torch_layer_helpers_against_numpy():
  """torch's Linear / Conv1d / LayerNorm written out in numpy vs flax with the helpers."""
  import flax.linen as nn
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 6, 4)).astype(np.float32)                  # (B, L, C) for flax
  w, b = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)
  np.testing.assert_allclose(nn.Dense(5).apply({"params": torch_linear(w, b)}, x),
                             x @ w.T + b, rtol=1e-5, atol=1e-6)
  wc = rng.normal(size=(5, 4, 3)).astype(np.float32)                 # torch (out, in, k)
  ref = np.stack([np.einsum("bkc,okc->bo", x[:, t:t + 3], wc.transpose(0, 2, 1))
                  for t in range(4)], 1) + b                          # cross-correlation
  out = nn.Conv(5, (3,), padding="VALID").apply({"params": torch_conv1d(wc, b)}, x)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  g, beta = rng.normal(size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  np.testing.assert_allclose(
      nn.LayerNorm(epsilon=1e-5).apply({"params": torch_layernorm(g, beta)}, x),
      (x - mu) / np.sqrt(var + 1e-5) * g + beta, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout,variant", [("reference_view", "view"), ("heads", "heads")])
def test_outputs_and_gradients_match_the_official_model(fixture, layout, variant):
  """'view': the official code as it is; 'heads': with its attention given the per-head
  layout (paper Eq. 4), our default. Gradients are stored for 'heads'."""
  net = _net(fixture["meta"], layout)
  variables, report = convert(fixture["sd"], net)
  assert not report["notes"] or variant == "heads"                    # only the layout note
  model, pred, grads = _apply(net, fixture["info"], variables, fixture["batch"], fixture["r"],
                              with_grads=variant == "heads")
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)},
                                             fixture["batch"]))
  assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(variables)
  assert all(a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(shapes),
                                                jax.tree_util.tree_leaves(variables)))
  official = fixture["outputs"][variant]
  assert np.abs(pred - official).max() <= OUTPUT_TOL, (pred, official)
  other = fixture["outputs"]["view" if variant == "heads" else "heads"]
  assert np.abs(pred - other).max() > 1e-2                            # the layouts differ
  if variant != "heads":
    return
  # The official gradients in our tree (the converter is linear in the tensors; the
  # BatchNorm statistics come from the state_dict and are not compared).
  ref = convert({**fixture["sd"], **fixture["grads"]}, net)[0]["params"]
  flat_ref = dict(jax.tree_util.tree_flatten_with_path(ref)[0])
  # Relative to each tensor's largest official gradient, floored at 1e-3 of the largest
  # overall: the key biases' gradients are zero in exact arithmetic (rounding noise only).
  scale = 1e-3 * max(np.abs(v).max() for v in flat_ref.values())
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    t = np.asarray(flat_ref[path])
    rel = np.abs(np.asarray(g) - t).max() / max(np.abs(t).max(), scale)
    assert rel <= GRAD_RTOL, (jax.tree_util.keystr(path), rel)


def test_report_names_tensors_without_counterpart(fixture):
  """With the paper defaults (only the sizes of the checkpoint) the conversion still
  works, and the report says what has no counterpart and which settings differ."""
  net = default_net()
  for key in ("latent_dim", "distill_heads", "distill_ff", "distill_layers", "factor",
              "fusion_heads", "fusion_layers", "out_dim"):
    net[key] = fixture["meta"]["net"][key]
  variables, report = convert(fixture["sd"], net)
  unused, ours = report["torch_without_counterpart"], report["ours_without_counterpart"]
  assert "l_refine.enc_embedding.value_embedding.tokenConv.weight" in unused  # token_conv off
  assert "a_refine.dec_embedding.value_embedding.tokenConv.weight" in unused  # never used
  assert "proj_v.weight" in unused and "temp_proj_v.weight" in unused  # vision not fused
  assert "l_refine.encoder.conv_layers.0.norm.num_batches_tracked" in unused
  assert set(ours) == {f"params/{p}_{m}/bias" for p in ("proj", "align")
                       for m in ("text", "audio")}
  assert not variables["params"]["proj_text"]["bias"].any()
  differing = {k for k, v in OFFICIAL_ARCHITECTURE.items() if net[k] != v}
  assert len(report["notes"]) == len(differing) and all(
      any(f"net.{k}=" in n for n in report["notes"]) for k in differing)
  # Paper order: the official j-th distilling block goes after attention layer j + 1.
  enc = variables["params"]["encoder_text"]
  assert set(k for k in enc if k.startswith("pool_")) == {"pool_1", "pool_2"}
  np.testing.assert_array_equal(
      enc["pool_1"]["conv"]["kernel"],
      fixture["sd"]["l_refine.encoder.conv_layers.0.downConv.weight"].transpose(2, 1, 0))


def test_convert_rejects_other_layer_counts(fixture):
  net = _net(fixture["meta"], "heads")
  net.distill_layers = 2
  with pytest.raises(ValueError, match="3 distillation layers"):
    convert(fixture["sd"], net)
  net = _net(fixture["meta"], "heads")
  net.fusion_layers = 2
  with pytest.raises(ValueError, match="1 fusion layers"):
    convert(fixture["sd"], net)


def test_layer_norm_setting_reports_the_batchnorms(fixture):
  net = _net(fixture["meta"], "heads")
  net.distill_norm = "layer"
  variables, report = convert(fixture["sd"], net)
  assert "batch_stats" not in variables
  unused = report["torch_without_counterpart"]
  assert "l_refine.encoder.conv_layers.1.norm.running_var" in unused
  assert "l_refine.encoder.conv_layers.1.norm.weight" in unused
  assert "params/encoder_text/pool_1/norm" in report["ours_without_counterpart"]
  assert any("distill_norm" in n for n in report["notes"])
