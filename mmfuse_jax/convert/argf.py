"""The public ARGF modules (TmacMai/ARGF_multimodal_fusion, ARGF/ARGF_context2/model.py) ->
our ARGFModel variables (models/argf.py, layers/fusion.py).

The public code keeps one module per part (its training script saves each with
torch.save); the state_dict given here holds them all, each under a part prefix:

  encoder_{audio,vision,text}.*   Encoder_5      -> encoders_{m}
      linear_1, norm2, linear_2, norm3           -> dense_0, norm_0, dense_1, norm_1
      linear_3, norm, linear_4                   -> dense_2, norm_2, dense_3 (reference
                                                    variant); the paper variant has no
                                                    k-wide hidden layer: linear_3 -> dense_2,
                                                    norm and linear_4 have no counterpart
  decoder_{audio,vision,text}.*   Decoder2       -> decoders_{m}
      model.0, model.3, model.7                  -> dense_0, dense_1, out
      model.5 (BatchNorm1d(64))                  -> norm_1 (reference variant only)
  discriminator.*                 Discriminator  -> discriminator: model.0, .2, .4 ->
                                                    dense_0, dense_1, out
  classifier.*                    classifier3    -> classifier_net: norm -> norm_in
                                                    (reference variant only), linear_1 ->
                                                    dense_0, linear_2 -> out
  fusion.*                        graph11_new    -> fusion + decision
      attention                                  -> fusion/attention/dense
      graph_fusion.0/.2, graph_fusion2.0/.2      -> fusion/{bimodal,trimodal}_mlp/dense_0/1
      norm2, linear_1, linear_2, linear_3        -> decision/norm, dense_0, dense_1, out
      norm (BatchNorm1d(k))                      -> none: built, never used by its forward

Parts may be missing (the public script saves only the encoders and graph11_new): our
variables of a missing part, and the UCLN (trained and stored apart in the public code),
keep the template's values and are listed in `Conversion.kept`. BatchNorm running averages
go to batch_stats (evaluation uses them); num_batches_tracked has no counterpart.

The function equals the public one with every `net.*_variant` and `net.gfn_edges` set to
'reference', net.gfn_hidden = 64, net.classifier_hidden = k, net.decision_norm = 'batch',
modalities ordered audio, vision, text; its graph11_new returns softmax probabilities and
its classifier3 softmax outputs too, where our fusion returns logits (classes).
"""

from __future__ import annotations

from mmfuse_jax.convert.common import (Conversion, StateDict, batch_norm, finish, linear,
                                       set_path)
from mmfuse_jax.errors import ConfigError

MODALITIES = ("audio", "vision", "text")   # graph11_new's vertex order (a1, v1, l1)
ENCODER_LAYERS = (("linear_1", "norm2"), ("linear_2", "norm3"), ("linear_3", "norm"))


def _reason(name: str) -> str:
  part, _, rest = name.partition(".")
  if rest.endswith("num_batches_tracked"):
    return "BatchNorm batch counter (flax keeps none)"
  if part == "fusion" and rest.startswith("norm."):
    return "graph11_new builds this BatchNorm but its forward never uses it"
  if part.startswith("encoder_") and rest.split(".")[0] in ("norm", "linear_4"):
    return "net.encoder_variant='paper' has no k-wide hidden layer (Encoder_5 has)"
  if part.startswith("decoder_") and rest.startswith("model.5."):
    return "net.decoder_variant='paper' has no BatchNorm in the decoder (Decoder2 has)"
  if part == "classifier" and rest.startswith("norm."):
    return "net.classifier_variant='paper' has no input BatchNorm (classifier3 has)"
  if part == "fusion" and rest.startswith("norm2."):
    return "net.decision_norm is not 'batch'"
  if part in ("decoder_audio", "decoder_vision", "decoder_text", "discriminator",
              "classifier"):
    return "this model is built without that part (net.decoder/adversarial/classifier)"
  return "no rule maps this tensor (unknown part or not an ARGF_context2 module tensor)"


def _bn(sd: StateDict, prefix: str, params: dict, stats: dict, ours: str) -> None:
  p, s = batch_norm(sd, prefix)
  set_path(params, ours, p)
  set_path(stats, ours, s)


def _encoder(sd, part, ours, net, params, stats):
  reference = net.get("encoder_variant", "paper") == "reference"
  layers = ENCODER_LAYERS if reference else ENCODER_LAYERS[:2]
  for i, (lin, norm) in enumerate(layers):
    set_path(params, f"{ours}/dense_{i}", linear(sd, f"{part}.{lin}"))
    _bn(sd, f"{part}.{norm}", params, stats, f"{ours}/norm_{i}")
  last = "linear_4" if reference else "linear_3"
  set_path(params, f"{ours}/dense_{len(layers)}", linear(sd, f"{part}.{last}"))


def _decoder(sd, part, ours, net, params, stats):
  for torch_idx, name in ((0, "dense_0"), (3, "dense_1"), (7, "out")):
    set_path(params, f"{ours}/{name}", linear(sd, f"{part}.model.{torch_idx}"))
  if net.get("decoder_variant", "paper") == "reference":
    _bn(sd, f"{part}.model.5", params, stats, f"{ours}/norm_1")


def _discriminator(sd, part, ours, net, params, stats):
  for torch_idx, name in ((0, "dense_0"), (2, "dense_1"), (4, "out")):
    set_path(params, f"{ours}/{name}", linear(sd, f"{part}.model.{torch_idx}"))


def _classifier(sd, part, ours, net, params, stats):
  set_path(params, f"{ours}/dense_0", linear(sd, f"{part}.linear_1"))
  set_path(params, f"{ours}/out", linear(sd, f"{part}.linear_2"))
  if net.get("classifier_variant", "paper") == "reference":
    _bn(sd, f"{part}.norm", params, stats, f"{ours}/norm_in")


def _fusion(sd, part, net, info, params, stats, notes):
  if net.fusion != "graph":
    raise ConfigError(f"graph11_new is the graph fusion network: build ours with "
                      f"net.fusion=graph (got {net.fusion!r})")
  if tuple(info.modalities) != MODALITIES:
    raise ConfigError(f"graph11_new takes its vertices in the order audio, vision, text; "
                      f"build ours with --data.modalities=audio,vision,text (got "
                      f"{','.join(info.modalities)})")
  set_path(params, "fusion/attention/dense", linear(sd, f"{part}.attention"))
  for torch_name, ours, n in (("graph_fusion", "bimodal", 3), ("graph_fusion2", "trimodal", 6)):
    mlp = {"dense_0": linear(sd, f"{part}.{torch_name}.0"),
           "dense_1": linear(sd, f"{part}.{torch_name}.2")}
    if net.gfn_share_mlp:
      set_path(params, f"fusion/{ours}_mlp", mlp)
    else:
      for i in range(n):
        set_path(params, f"fusion/{ours}_mlp_{i}", mlp)
  if not net.gfn_share_mlp:
    notes.append("net.gfn_share_mlp=false: each vertex's MLP starts as a copy of the public "
                 "code's shared one")
  if f"{part}.norm.weight" in sd:   # built by graph11_new, unused by its forward
    for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
      if f"{part}.norm.{k}" in sd:
        sd.skip(f"{part}.norm.{k}")
  if net.decision_norm == "batch":
    _bn(sd, f"{part}.norm2", params, stats, "decision/norm")
  for torch_name, ours in (("linear_1", "dense_0"), ("linear_2", "dense_1"),
                           ("linear_3", "out")):
    set_path(params, f"decision/{ours}", linear(sd, f"{part}.{torch_name}"))


PARTS = {"encoder": (_encoder, "encoders_{m}", "encoder_variant"),
         "decoder": (_decoder, "decoders_{m}", "decoder_variant"),
         "discriminator": (_discriminator, "discriminator", "discriminator_variant"),
         "classifier": (_classifier, "classifier_net", "classifier_variant")}


def convert(state_dict: dict, model, template: dict) -> Conversion:
  """state_dict ({part prefix}.{name} -> numpy array, module docstring) -> Conversion in
  the structure of `template` (our variables, with values: absent parts keep them);
  `model` is our ARGFModel (its net and data info)."""
  net, info = model.net, model.info
  sd = StateDict(state_dict)
  params, stats, notes = {}, {}, []
  built = {"encoder": True, "decoder": net.decoder, "discriminator": net.adversarial,
           "classifier": net.classifier}
  for kind, (fn, ours, variant_field) in PARTS.items():
    per_modality = "{m}" in ours
    names = ([(f"{kind}_{m}", ours.format(m=m)) for m in info.modalities] if per_modality
             else [(kind, ours)])
    for part, ours_name in names:
      if not sd.has_prefix(f"{part}.") or not built[kind]:
        continue
      fn(sd, part, ours_name, net, params, stats)
      if net.get(variant_field, "paper") != "reference":
        notes.append(f"{part}: net.{variant_field}='paper' computes another function than "
                     f"the public module; 'reference' reproduces it")
  if sd.has_prefix("fusion."):
    _fusion(sd, "fusion", net, info, params, stats, notes)
    if net.get("gfn_edges", "paper") != "reference":
      notes.append("fusion: net.gfn_edges='paper' weights the vertices differently from "
                   "graph11_new; 'reference' reproduces it")
    if net.gfn_hidden != 64:
      notes.append(f"fusion: net.gfn_hidden={net.gfn_hidden}, graph11_new's MLPs are 64 wide")
  if not params:
    raise ConfigError("the state_dict names none of the parts encoder_{audio,vision,text}, "
                      "decoder_*, discriminator, classifier, fusion")
  built_vars = {"params": params}
  if stats:
    built_vars["batch_stats"] = stats
  return finish(sd, template, built_vars, notes, _reason, allow_missing=True)
