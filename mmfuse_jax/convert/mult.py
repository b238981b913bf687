"""The official MulT (yaohungt/Multimodal-Transformer, src/models.py MULTModel) state_dict ->
our MulTModel variables (models/mult.py).

  proj_{l,a,v}                         -> params/proj_{text,audio,vision} (Conv1d k=1)
  trans_{t}_with_{s}.layers.i          -> params/cross_{s}_to_{t}/layers (scanned: a leading
                                          layer axis) or layer_i (net.scan_layers=False):
      .self_attn (in_proj, out_proj)   ->   attn/{query,key,value,out}
      .layer_norms.0 / .1              ->   ln_attn / ln_ff
      .fc1 / .fc2                      ->   ff1 / ff2
  trans_{t}_with_{s}.layer_norm        -> .../ln_out
  trans_{t}_mem                        -> params/memory_{t} (same layout)
  proj1 / proj2 / out_layer            -> params/head_1 / head_2 / out

No counterpart: each encoder's `version` buffer and the position module's `_float_tensor`
buffer (positions are computed, not stored). The official model skips the input projection
of a modality whose width is already 30: the converter then sets our projection to the
identity. Only the full model (lonly = aonly = vonly = True) exists here.

For the official function, build our model with the public code's settings (`notes` say
which differ): net.position_offset=1, net.layer_norm_eps=1e-5, net.attend_padding=True,
net.causal = their attn_mask (default True), net.proj_kernel=1, d_model = 30 (theirs is
hard-coded) and the modalities in the order text, audio, vision.
"""

from __future__ import annotations

import numpy as np

from mmfuse_jax.convert.common import (Conversion, StateDict, conv1d, finish, layer_norm,
                                       linear, multihead_attention, stack_layers)
from mmfuse_jax.errors import ConfigError

LETTERS = {"text": "l", "audio": "a", "vision": "v"}
ORDER = ("text", "audio", "vision")
# net field -> the public code's value (attn_mask is a per-checkpoint choice: not listed).
PUBLIC = {"position_offset": 1, "layer_norm_eps": 1e-5, "attend_padding": True,
          "proj_kernel": 1}


def _reason(name: str) -> str:
  if name.endswith(".version"):
    return "encoder version buffer (bookkeeping, no weights)"
  if name.endswith("_float_tensor"):
    return "position-embedding dtype buffer (positions are computed, not stored)"
  return "no rule maps this tensor (not a MULTModel tensor?)"


def _layer(sd: StateDict, prefix: str, num_heads: int) -> dict:
  return {"attn": multihead_attention(sd, f"{prefix}.self_attn", num_heads),
          "ln_attn": layer_norm(sd, f"{prefix}.layer_norms.0"),
          "ln_ff": layer_norm(sd, f"{prefix}.layer_norms.1"),
          "ff1": linear(sd, f"{prefix}.fc1"), "ff2": linear(sd, f"{prefix}.fc2")}


def _encoder(sd: StateDict, prefix: str, ours: dict) -> dict:
  """One official TransformerEncoder -> our TransformerEncoder subtree (layout of `ours`)."""
  scanned = "layers" in ours
  q = (ours["layers"] if scanned else ours["layer_0"])["attn"]["query"]["kernel"]
  num_heads = q.shape[-2]
  n = 0
  while f"{prefix}.layers.{n}.fc1.weight" in sd:
    n += 1
  layers = [_layer(sd, f"{prefix}.layers.{i}", num_heads) for i in range(n)]
  out = {"ln_out": layer_norm(sd, f"{prefix}.layer_norm")}
  if scanned:
    out["layers"] = stack_layers(layers)
  else:
    out.update({f"layer_{i}": layer for i, layer in enumerate(layers)})
  for buf in (f"{prefix}.version", f"{prefix}.embed_positions._float_tensor"):
    if buf in sd:
      sd.skip(buf)
  return out


def convert(state_dict: dict, model, template: dict) -> Conversion:
  """state_dict (name -> numpy array) of an official MULTModel -> Conversion whose
  `variables` has the structure of `template` (our model's variables, e.g. from
  `jax.eval_shape(model.init, ...)`); `model` is our MulTModel (its net and data info)."""
  net, info = model.net, model.info
  if tuple(info.modalities) != ORDER:
    raise ConfigError(f"the official MULTModel reads text, audio, vision in that order; "
                      f"build ours with --data.modalities=text,audio,vision (got "
                      f"{','.join(info.modalities)})")
  sd = StateDict(state_dict)
  missing = [f"trans_{LETTERS[t]}_with_{LETTERS[s]}" for t in ORDER for s in ORDER
             if s != t and not sd.has_prefix(f"trans_{LETTERS[t]}_with_{LETTERS[s]}.")]
  if missing:
    raise ConfigError(f"the state_dict lacks {missing}: only the full MulT (lonly, aonly and "
                      f"vonly all true) has a counterpart here")
  ours = template["params"]
  params, notes = {}, []
  for m in ORDER:
    name = f"proj_{LETTERS[m]}.weight"
    if name in sd:
      params[f"proj_{m}"] = conv1d(sd, f"proj_{LETTERS[m]}")
    else:  # their forward skips the projection when the input is already d wide
      d_in, d = ours[f"proj_{m}"]["kernel"].shape[1:]
      if d_in != d:
        raise ConfigError(f"the state_dict has no {name} although {m} is {d_in} wide, "
                          f"not {d}")
      params[f"proj_{m}"] = {"kernel": np.eye(d, dtype=np.float32)[None]}
      notes.append(f"{m}: the official model has no projection ({d}-wide input): ours is "
                   f"set to the identity")
  for t in ORDER:
    for s in ORDER:
      if s != t:
        key = f"cross_{s}_to_{t}"
        params[key] = _encoder(sd, f"trans_{LETTERS[t]}_with_{LETTERS[s]}", ours[key])
    params[f"memory_{t}"] = _encoder(sd, f"trans_{LETTERS[t]}_mem", ours[f"memory_{t}"])
  params["head_1"] = linear(sd, "proj1")
  params["head_2"] = linear(sd, "proj2")
  params["out"] = linear(sd, "out_layer")
  for field, value in PUBLIC.items():
    if net.get(field) != value:
      notes.append(f"net.{field}={net.get(field)!r}; the public code's function needs "
                   f"{value!r}")
  return finish(sd, template, {"params": params}, notes, _reason)
