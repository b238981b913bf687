"""Weight-for-weight parity with the official PyTorch code, without torch: the fixtures hold
the official models' random weights, inputs, eval-mode outputs and parameter gradients at
tiny widths (scripts/make_parity_fixtures.py); ours gets the converted weights
(mmfuse_jax/convert) and must give the same outputs (1e-5) and gradients (1e-4 relative)."""

import os

import flax.serialization
import jax
import numpy as np
import pytest

from mmfuse_jax.catalog import MODELS
from mmfuse_jax.convert import CONVERTERS, parity
from mmfuse_jax.convert.common import StateDict, multihead_attention
from mmfuse_jax.data import load_dataset
from mmfuse_jax.data.synthetic import DEFAULT_DIMS
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.evaluate import evaluate_workdir
from mmfuse_jax.export import export_workdir
from mmfuse_jax.inference import load_exported
from mmfuse_jax.models.base import DataInfo
from tests.helpers import load_script, tiny_config

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _record(model):
  return parity.load_record(os.path.join(FIXTURES, f"parity_{model}.npz"))


@pytest.fixture(scope="module", params=sorted(parity.RUNNERS))
def result(request):
  record = _record(request.param)
  return request.param, record, parity.check(record)


def test_outputs_and_gradients_match_the_official_code(result):
  model, record, res = result
  assert res["max_output_diff"] <= parity.OUTPUT_ATOL, res["output_diff"]
  assert res["max_grad_rel"] <= parity.GRAD_RTOL, sorted(
      res["grad_rel"].items(), key=lambda kv: -kv[1])[:5]
  # Every official parameter with a gradient was compared, every output too.
  meta, sd, _, out, grads = parity.split_record(record)
  assert set(res["output_diff"]) == set(out)
  unused = {"fusion.norm.weight", "fusion.norm.bias"}   # graph11_new never calls its `norm`
  assert set(res["grad_rel"]) == set(grads) - unused
  # The comparison has teeth: outputs and gradients are not trivially small.
  assert min(float(np.max(np.abs(v))) for v in out.values()) > 1e-2
  assert min(float(np.max(np.abs(g))) for k, g in grads.items() if k not in unused) > 1e-3


def test_only_documented_tensors_lack_a_counterpart(result):
  model, record, res = result
  documented = ("encoder version buffer", "position-embedding dtype buffer",
                "BatchNorm batch counter", "graph11_new builds this BatchNorm")
  assert res["unmatched"]
  for name, why in res["unmatched"].items():
    assert why.startswith(documented), (name, why)


def test_a_wrong_mapping_fails():
  """Swapping the query and key blocks of one in_proj (a plausible converter bug) breaks
  parity: the fixtures catch wrong mappings."""
  record = _record("mult")
  name = "sd/trans_l_with_a.layers.0.self_attn.in_proj_weight"
  w = record[name].copy()
  d = w.shape[1]
  record[name] = np.concatenate([w[d:2 * d], w[:d], w[2 * d:]])
  res = parity.check(record)
  assert not res["ok"] and res["max_output_diff"] > 1e-3


def test_multihead_attention_split_matches_a_numpy_forward():
  """The head split of common.multihead_attention: our q/k/v kernels reproduce the fused
  in_proj (x @ W^T + b) head by head."""
  rng = np.random.default_rng(0)
  d, h = 6, 3
  sd = StateDict({"a.in_proj_weight": rng.normal(size=(3 * d, d)),
                  "a.in_proj_bias": rng.normal(size=3 * d),
                  "a.out_proj.weight": rng.normal(size=(d, d)),
                  "a.out_proj.bias": rng.normal(size=d)})
  mha = multihead_attention(sd, "a", h)
  x = rng.normal(size=(4, d))
  fused = x @ sd.tensors["a.in_proj_weight"].T + sd.tensors["a.in_proj_bias"]
  for i, k in enumerate(("query", "key", "value")):
    ours = np.einsum("td,dhe->the", x, mha[k]["kernel"]) + mha[k]["bias"]
    np.testing.assert_allclose(ours.reshape(4, d), fused[:, i * d:(i + 1) * d], rtol=1e-5)
  heads = rng.normal(size=(4, h, d // h))
  np.testing.assert_allclose(np.einsum("the,hed->td", heads, mha["out"]["kernel"]),
                             heads.reshape(4, d) @ sd.tensors["a.out_proj.weight"].T,
                             rtol=1e-5)
  assert sd.unmatched() == []


def test_converter_errors_name_the_problem():
  meta, sd, _, _, _ = parity.split_record(_record("mult"))
  model, info, _ = parity.build(meta)
  template = parity.template_for(model, info)
  partial = {k: v for k, v in sd.items() if not k.startswith("trans_v_with_a.")}
  with pytest.raises(ConfigError, match="only the full MulT"):
    CONVERTERS["mult"](partial, model, template)
  short = {k: v for k, v in sd.items() if k != "proj1.bias"}
  with pytest.raises(ConfigError, match="proj1.bias"):
    CONVERTERS["mult"](short, model, template)


def _official_mult_state_dict(rng, dims, d, layers, out_dim):
  """Random tensors under the official MULTModel's names and shapes (its src/models.py and
  modules/transformer.py): what a checkpoint of theirs holds."""
  sd = {f"proj_{x}.weight": rng.normal(size=(d, dims[m], 1)) / np.sqrt(dims[m])
        for m, x in (("text", "l"), ("audio", "a"), ("vision", "v"))}

  def encoder(prefix, width, n):
    for i in range(n):
      p = f"{prefix}.layers.{i}"
      sd.update({f"{p}.self_attn.in_proj_weight": rng.normal(size=(3 * width, width)) * 0.3,
                 f"{p}.self_attn.in_proj_bias": rng.normal(size=3 * width) * 0.1,
                 f"{p}.self_attn.out_proj.weight": rng.normal(size=(width, width)) * 0.3,
                 f"{p}.self_attn.out_proj.bias": rng.normal(size=width) * 0.1,
                 f"{p}.fc1.weight": rng.normal(size=(4 * width, width)) * 0.3,
                 f"{p}.fc1.bias": rng.normal(size=4 * width) * 0.1,
                 f"{p}.fc2.weight": rng.normal(size=(width, 4 * width)) * 0.2,
                 f"{p}.fc2.bias": rng.normal(size=width) * 0.1})
      for j in (0, 1):
        sd[f"{p}.layer_norms.{j}.weight"] = 1 + rng.normal(size=width) * 0.1
        sd[f"{p}.layer_norms.{j}.bias"] = rng.normal(size=width) * 0.1
    sd[f"{prefix}.layer_norm.weight"] = 1 + rng.normal(size=width) * 0.1
    sd[f"{prefix}.layer_norm.bias"] = rng.normal(size=width) * 0.1
    sd[f"{prefix}.version"] = np.array([2.0])
    sd[f"{prefix}.embed_positions._float_tensor"] = np.array([0.0])
  for t in "lav":
    for s in "lav":
      if s != t:
        encoder(f"trans_{t}_with_{s}", d, layers)
    encoder(f"trans_{t}_mem", 2 * d, max(layers, 3))
  c = 6 * d
  sd.update({"proj1.weight": rng.normal(size=(c, c)) * 0.2, "proj1.bias": np.zeros(c),
             "proj2.weight": rng.normal(size=(c, c)) * 0.2, "proj2.bias": np.zeros(c),
             "out_layer.weight": rng.normal(size=(out_dim, c)) * 0.2,
             "out_layer.bias": np.zeros(out_dim)})
  return {k: np.asarray(v, np.float32) for k, v in sd.items()}


@pytest.mark.slow
def test_imported_checkpoint_evaluates_and_exports(tmp_path):
  """scripts/convert_torch_checkpoint.py's workdir (its torch-free part): evaluate and
  export read it, and the exported function computes the converted model."""
  script = load_script("convert_torch_checkpoint")
  sd = _official_mult_state_dict(np.random.default_rng(0), DEFAULT_DIMS, 6, 1, 1)
  c = tiny_config("mult")
  c.data.synthetic_train, c.data.synthetic_valid, c.data.synthetic_test = 32, 16, 16
  c.net.num_heads = 2
  set_fields = script.mult_net_from_checkpoint(c.net, sd, {})
  c.data.standardize = False
  out = str(tmp_path / "imported")
  info = script.write_workdir(c, sd, out, "random.pt", set_fields)
  assert set(info["unmatched"]) == {k for k in sd if k.endswith(("version", "_float_tensor"))}
  assert "net.position_offset=1" in info["set"] and c.net.d_model == 6
  res = evaluate_workdir(out, splits=("test",))
  assert res["selected_epoch"] == 0 and np.isfinite(res["test"]["mae"])
  export_workdir(out, str(tmp_path / "exported"))
  # The exported variables are the converted ones ...
  ds, _ = load_dataset(c)
  info = DataInfo(ds.modalities, ds.feature_dims, ds.max_lengths, ds.task, ds.num_classes)
  model = MODELS.get("mult").build(c.net, info)
  want = CONVERTERS["mult"](sd, model, parity.template_for(model, info)).variables
  with open(tmp_path / "exported" / "params.msgpack", "rb") as f:
    got = flax.serialization.msgpack_restore(f.read())
  jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
  # ... and the exported function gives evaluate's test MAE.
  test = ds.splits["test"]
  pred = load_exported(str(tmp_path / "exported"))(test.features, test.masks)
  np.testing.assert_allclose(np.mean(np.abs(pred - test.labels)), res["test"]["mae"],
                             rtol=1e-5)


def test_torch_parity_script_runs_rerd_through_parity_rerd(monkeypatch):
  """`torch_parity.py --model=rerd` is scripts/parity_rerd.py with the same checkout."""
  script = load_script("torch_parity")
  calls = []
  monkeypatch.setattr(script.parity_rerd, "main", lambda argv: calls.append(argv) or 3)
  assert script.main(["--model=rerd", "--torch-ref=/refs"]) == 3
  assert calls == [["--torch-ref", "/refs"]]
