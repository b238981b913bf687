"""Official RERD (Redaimao/RERD, `src/models.py` RERDModel) state_dict -> our RERD variables.

Mapped parts (the official names, with m in l / a / v for text / audio / vision):

  proj_m (P_ro, Conv1d k=1)                          -> proj_<mod>
  m_refine.enc_embedding.value_embedding.tokenConv   -> token_<mod> (net.token_conv)
  m_refine.encoder.attn_layers.i (ProbSparse layer)  -> encoder_<mod>/layer_i
  m_refine.encoder.conv_layers.j (distilling block)  -> encoder_<mod>/pool_i, the j-th
                                                        layer i that pools (net.distill_order)
  m_refine.encoder.norm                              -> encoder_<mod>/ln_out
  m_refine.end_conv2 (to 30 features)                -> out_<mod>
  temp_proj_m (P_a, Conv1d over time)                -> align_<mod>
  cross_modal_fusion (MulT encoder)                  -> fusion (scanned layers stacked)
  proj1, proj2, out_layer                            -> head_1, head_2, head_out

BatchNorm running statistics go to `batch_stats`. Tensors without a counterpart are listed
with the reason in the report: on the torch side the unused decoder embedding, the
position tables (computed here), BatchNorm step counters and whatever the net config
leaves out (e.g. the token conv with token_conv=False); on our side the biases the
official layers do not have (P_ro, P_a: set to zero, which is the same function) and
norms that replace the official ones (set to identity). The report's notes name each net
setting that differs from the official architecture (`OFFICIAL_ARCHITECTURE`): with any,
the converted model computes something else than the official one.
"""

from __future__ import annotations

import re

import jax
import numpy as np

from mmfuse_jax.convert.common import torch_conv1d, torch_layernorm, torch_linear
from mmfuse_jax.layers.distill import pools_after
from mmfuse_jax.models.rerd import OFFICIAL_ARCHITECTURE

MODALITIES = {"l": "text", "a": "audio", "v": "vision"}   # official order of concatenation


def _heads_in(weight, bias, heads: int) -> dict:
  """Linear (H * d_h, d) -> DenseGeneral((H, d_h)): the official code splits heads with
  `.view(B, L, H, -1)`, head h being output features [h d_h, (h + 1) d_h)."""
  p = torch_linear(weight, bias)
  d_in, width = p["kernel"].shape
  if width % heads:
    raise ValueError(f"a projection of width {width} cannot be split into {heads} heads")
  return {"kernel": p["kernel"].reshape(d_in, heads, width // heads),
          "bias": p["bias"].reshape(heads, width // heads)}


def _heads_out(weight, bias, heads: int) -> dict:
  """Linear (d, H * d_h) -> DenseGeneral over axes (H, d_h)."""
  p = torch_linear(weight, bias)
  width, d_out = p["kernel"].shape
  return {"kernel": p["kernel"].reshape(heads, width // heads, d_out), "bias": p["bias"]}


class _StateDict:
  """The state_dict with a record of what was taken."""

  def __init__(self, state_dict):
    self.arrays = {k: np.asarray(v) for k, v in state_dict.items()}
    self.used: set[str] = set()

  def __contains__(self, name):
    return name in self.arrays

  def take(self, name: str) -> np.ndarray:
    if name not in self.arrays:
      raise KeyError(f"the official state_dict has no {name!r} (is it an official RERD "
                     f"checkpoint built with the same layer counts?)")
    self.used.add(name)
    return self.arrays[name]

  def count(self, pattern: str) -> int:
    """Number of distinct indices i in keys matching pattern (with one '(\\d+)')."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in self.arrays if (m := rx.match(k))})


def _check(ok: bool, msg: str) -> None:
  if not ok:
    raise ValueError(msg)


def _attention_layer(sd: _StateDict, prefix: str, heads: int) -> dict:
  a = prefix + "attention."
  conv1, conv2 = sd.take(prefix + "conv1.weight"), sd.take(prefix + "conv2.weight")
  return {
      "attn": {name: _heads_in(sd.take(f"{a}{name}_projection.weight"),
                               sd.take(f"{a}{name}_projection.bias"), heads)
               for name in ("query", "key", "value")}
              | {"out": _heads_out(sd.take(a + "out_projection.weight"),
                                   sd.take(a + "out_projection.bias"), heads)},
      "ln_attn": torch_layernorm(sd.take(prefix + "norm1.weight"),
                                 sd.take(prefix + "norm1.bias")),
      # The feed-forward Conv1d(k=1) layers are per-step Linear layers.
      "ff1": torch_linear(conv1[..., 0], sd.take(prefix + "conv1.bias")),
      "ff2": torch_linear(conv2[..., 0], sd.take(prefix + "conv2.bias")),
      "ln_ff": torch_layernorm(sd.take(prefix + "norm2.weight"),
                               sd.take(prefix + "norm2.bias")),
  }


def _fusion_layer(sd: _StateDict, prefix: str, heads: int) -> dict:
  w, b = sd.take(prefix + "self_attn.in_proj_weight"), sd.take(prefix + "self_attn.in_proj_bias")
  e = w.shape[1]
  qkv = {name: _heads_in(w[i * e:(i + 1) * e], b[i * e:(i + 1) * e], heads)
         for i, name in enumerate(("query", "key", "value"))}
  return {
      "ln_attn": torch_layernorm(sd.take(prefix + "layer_norms.0.weight"),
                                 sd.take(prefix + "layer_norms.0.bias")),
      "attn": qkv | {"out": _heads_out(sd.take(prefix + "self_attn.out_proj.weight"),
                                       sd.take(prefix + "self_attn.out_proj.bias"), heads)},
      "ln_ff": torch_layernorm(sd.take(prefix + "layer_norms.1.weight"),
                               sd.take(prefix + "layer_norms.1.bias")),
      "ff1": torch_linear(sd.take(prefix + "fc1.weight"), sd.take(prefix + "fc1.bias")),
      "ff2": torch_linear(sd.take(prefix + "fc2.weight"), sd.take(prefix + "fc2.bias")),
  }


def convert(state_dict: dict[str, np.ndarray], net_config) -> tuple[dict, dict]:
  """Official RERD state_dict (numpy arrays) -> ({'params', 'batch_stats'}, report).

  net_config: our `config.net`; the layer and head counts must be the checkpoint's
  (ValueError otherwise). Our model must see the modalities in the official order
  text, audio, vision (DataInfo.modalities), present ones only.
  report: 'torch_without_counterpart' {official name: reason},
  'ours_without_counterpart' {our path: what it was set to}, 'notes' [structural
  differences that change the function].
  """
  net = net_config
  sd = _StateDict(state_dict)
  params, stats = {}, {}
  ours_only: dict[str, str] = {}
  notes: list[str] = []
  for key, official in OFFICIAL_ARCHITECTURE.items():
    if net[key] != official:
      notes.append(f"net.{key}={net[key]!r} (official: {official!r}): the converted model "
                   f"computes something else than the official one")
  if net.distill_norm != "batch":
    notes.append(f"net.distill_norm={net.distill_norm!r} (official: 'batch')")
  _check(net.encoder == "distill",
         f"net.encoder={net.encoder!r}: the official model has distillation encoders")
  _check(net.proj_kernel == 1, f"net.proj_kernel={net.proj_kernel}: the official P_ro has "
         f"kernel 1")
  _check(net.align_kernel == 1, f"net.align_kernel={net.align_kernel}: the official P_a has "
         f"kernel 1")
  n_layers = net.distill_layers
  for short, mod in MODALITIES.items():
    pre = f"{short}_refine."
    if not any(k.startswith(pre) for k in sd.arrays):
      continue                       # not fused by the official model (lonly/aonly/vonly)
    found = sd.count(re.escape(pre) + r"encoder\.attn_layers\.(\d+)\.")
    _check(found == n_layers, f"the checkpoint has {found} distillation layers for {mod}, "
           f"net.distill_layers={n_layers}")
    proj = sd.take(f"proj_{short}.weight")
    _check(proj.shape[0] == net.latent_dim,
           f"the checkpoint's latent width is {proj.shape[0]}, net.latent_dim="
           f"{net.latent_dim}")
    if proj.shape[1] == 30:
      notes.append(f"{mod} has 30 input features: the official forward then skips P_ro "
                   f"(`x if orig_d == d_l`), which the converted model does not")
    params[f"proj_{mod}"] = torch_conv1d(proj)
    if net.proj_bias:
      params[f"proj_{mod}"]["bias"] = np.zeros(net.latent_dim, np.float32)
      ours_only[f"params/proj_{mod}/bias"] = "zeros (the official P_ro has no bias)"
    token = pre + "enc_embedding.value_embedding.tokenConv."
    if net.token_conv:
      params[f"token_{mod}"] = torch_conv1d(sd.take(token + "weight"), sd.take(token + "bias"))
    enc = {f"layer_{i}": _attention_layer(sd, f"{pre}encoder.attn_layers.{i}.",
                                          net.distill_heads)
           for i in range(n_layers)}
    pooled = [i for i in range(n_layers) if pools_after(i, n_layers, net.distill_order)]
    for j, i in enumerate(pooled):
      c = f"{pre}encoder.conv_layers.{j}."
      enc[f"pool_{i}"] = {"conv": torch_conv1d(sd.take(c + "downConv.weight"),
                                               sd.take(c + "downConv.bias"))}
      if net.distill_norm == "batch":
        enc[f"pool_{i}"]["norm"] = torch_layernorm(sd.take(c + "norm.weight"),
                                                   sd.take(c + "norm.bias"))
        stats.setdefault(f"encoder_{mod}", {})[f"pool_{i}"] = {"norm": {
            "mean": sd.take(c + "norm.running_mean").astype(np.float32),
            "var": sd.take(c + "norm.running_var").astype(np.float32)}}
      else:
        width = sd.arrays[c + "norm.weight"].shape
        enc[f"pool_{i}"]["norm"] = {"scale": np.ones(width, np.float32),
                                    "bias": np.zeros(width, np.float32)}
        ours_only[f"params/encoder_{mod}/pool_{i}/norm"] = (
            "identity LayerNorm (the official block has a BatchNorm)")
    enc["ln_out"] = torch_layernorm(sd.take(pre + "encoder.norm.weight"),
                                    sd.take(pre + "encoder.norm.bias"))
    params[f"encoder_{mod}"] = enc
    end = sd.take(pre + "end_conv2.weight")
    _check(end.shape[0] == net.out_dim,
           f"the checkpoint's encoder output width is {end.shape[0]}, net.out_dim="
           f"{net.out_dim}")
    params[f"out_{mod}"] = torch_linear(end[..., 0], sd.take(pre + "end_conv2.bias"))
    params[f"align_{mod}"] = torch_conv1d(sd.take(f"temp_proj_{short}.weight"))
    if net.align_bias:
      t_min = params[f"align_{mod}"]["kernel"].shape[-1]
      params[f"align_{mod}"]["bias"] = np.zeros(t_min, np.float32)
      ours_only[f"params/align_{mod}/bias"] = "zeros (the official P_a has no bias)"
  _check(bool(params), "no official RERD encoder (l_refine / a_refine / v_refine) in the "
         "state_dict")
  found = sd.count(r"cross_modal_fusion\.layers\.(\d+)\.")
  _check(found == net.fusion_layers,
         f"the checkpoint has {found} fusion layers, net.fusion_layers={net.fusion_layers}")
  layers = [_fusion_layer(sd, f"cross_modal_fusion.layers.{i}.", net.fusion_heads)
            for i in range(net.fusion_layers)]
  params["fusion"] = {
      "layers": jax.tree_util.tree_map(lambda *a: np.stack(a), *layers),
      "ln_out": torch_layernorm(sd.take("cross_modal_fusion.layer_norm.weight"),
                                sd.take("cross_modal_fusion.layer_norm.bias"))}
  for ours, theirs in (("head_1", "proj1"), ("head_2", "proj2"), ("head_out", "out_layer")):
    params[ours] = torch_linear(sd.take(theirs + ".weight"), sd.take(theirs + ".bias"))

  unused = {}
  for name in sorted(set(sd.arrays) - sd.used):
    if ".dec_embedding." in name:
      unused[name] = "decoder embedding: built but unused by the official forward"
    elif name.endswith("position_embedding.pe"):
      unused[name] = ("position table buffer: computed here (net.distill_positions_style="
                      "'interleaved' is the same table)")
    elif name.endswith("num_batches_tracked"):
      unused[name] = "BatchNorm step counter"
    elif ".encoder.conv_layers." in name and ".norm." in name:
      unused[name] = "BatchNorm of a distilling block: net.distill_norm='layer'"
    elif name == "cross_modal_fusion.version":
      unused[name] = "fairseq version buffer"
    elif ".tokenConv." in name:
      unused[name] = "token conv: net.token_conv=False"
    elif re.match(r"(temp_)?proj_[lav]\.weight$", name):
      unused[name] = "a modality the official model does not fuse (no *_refine encoder)"
    elif name.startswith("bert_"):
      unused[name] = "BERT text encoder (use_bert): not part of this model"
    else:
      unused[name] = "no counterpart"
  variables = {"params": params}
  if stats:
    variables["batch_stats"] = stats
  report = {"torch_without_counterpart": unused, "ours_without_counterpart": ours_only,
            "notes": notes}
  return variables, report
