"""Weight-for-weight parity with the official PyTorch code.

    python scripts/torch_parity.py --model=mult --torch-ref=PATH [--size=full|tiny] [--causal=true]
    python scripts/torch_parity.py --model=argf --torch-ref=PATH
    python scripts/torch_parity.py --model=rerd --torch-ref=PATH   (= scripts/parity_rerd.py)

Builds the official model from a checkout (PATH as in scripts/torch_ref.py), gives every
parameter and BatchNorm running average random values, and runs it in eval mode on random
inputs in which every step is valid (the official code has no padding masks); the scalar
loss sum_o <output_o, cotangent_o> (random cotangents) gives parameter gradients. Our model,
built with the settings that reproduce the official function, gets the converted weights
(mmfuse_jax/convert) and the same inputs and loss (mmfuse_jax/convert/parity.py). Prints the
max absolute difference of each output and the max relative difference of each parameter's
gradient (max |ours - theirs| / max |theirs|, the denominator at least 1e-3 of the model's
largest gradient entry: mmfuse_jax/convert/parity.py), and exits 1 above 1e-5 (outputs,
float32) or 1e-4 (gradients).

  mult  MULTModel, attn_mask = --causal (their default: true) and ours net.causal alike,
        unequal lengths so the crossmodal mask's shift 1 + |T_k - T_q| matters; also a
        batch with front padding (zero rows) against ours with net.attend_padding
  argf  Encoder_5 (x3), Decoder2 (x3; tiny: text only), Discriminator, classifier3 (on each
        modality) and graph11_new, each on its own inputs, with every net.*_variant and
        net.gfn_edges = 'reference'
  rerd  runs scripts/parity_rerd.py (all its settings; --size and --causal do not apply):
        distillation encoders with every query kept and all keys sampled, fusion
        transformer, head; the official attention layout and the per-head one

--size=tiny is the fixture size (scripts/make_parity_fixtures.py; MulT then at width 6,
their hard-coded 30 replaced as scripts/torch_ref.py describes). The torch-side builder of
each model is one entry of BUILDERS: (checkout, size, options) -> a parity record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parity_rerd  # noqa: E402  (scripts/ is not a package)
import torch_ref  # noqa: E402

from mmfuse_jax.convert import parity  # noqa: E402

# MulT sizes. full: the public code's MOSI settings at their width; tiny: fixture size.
MULT_SIZES = {
    "full": dict(net=dict(d_model=30, num_heads=5, num_layers=5), batch=3,
                 dims={"text": 300, "audio": 5, "vision": 20},
                 lengths={"text": 20, "audio": 33, "vision": 27}),
    "tiny": dict(net=dict(d_model=6, num_heads=2, num_layers=1), batch=2,
                 dims={"text": 7, "audio": 5, "vision": 4},
                 lengths={"text": 5, "audio": 8, "vision": 6}),
}
# ARGF sizes: k, input widths (full: the paper's UCLN output width 50); graph11_new's MLP
# width (64), its decision width (50), Decoder2's (512, 64) and the Discriminator's (64, 16)
# are fixed in the public code.
ARGF_SIZES = {
    "full": dict(k=50, batch=8, dims={"audio": 50, "vision": 50, "text": 50},
                 decoders=("audio", "vision", "text"), out_dim=3),
    "tiny": dict(k=4, batch=3, dims={"audio": 5, "vision": 4, "text": 6},
                 decoders=("text",), out_dim=3),
}
ARGF_MODS = ("audio", "vision", "text")


def _randomize(module, gen, size: str, scale: float = 0.1) -> None:
  """Every parameter += scale * N(0, 1) (so biases and norms are not at their defaults);
  BatchNorm running means ~ N(0, 0.1^2), running variances ~ U(0.5, 1.5). Tiny (fixture)
  models get values on the float16 grid (still float32), which compress to half."""
  import torch
  with torch.no_grad():
    for p in module.parameters():
      p.add_(scale * torch.randn(p.shape, generator=gen))
    for name, b in module.named_buffers():
      if name.endswith("running_mean"):
        b.copy_(0.1 * torch.randn(b.shape, generator=gen))
      elif name.endswith("running_var"):
        b.copy_(0.5 + torch.rand(b.shape, generator=gen))
    if size == "tiny":
      for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
          t.copy_(_grid(t, size))


def _grid(t, size: str):
  """Fixture inputs and weights on the float16 grid (module docstring of _randomize)."""
  return t.half().float() if size == "tiny" else t


def _np(t):
  return t.detach().cpu().numpy().astype(np.float32)


def _record(meta: dict, named_modules: dict, inputs: dict, outputs: dict) -> dict:
  """Flat record: state_dicts under their prefixes ('' for one model), inputs, outputs and
  the gradients of sum_o <out_o, cot_o> (cotangents drawn here, stored as inputs)."""
  import torch
  gen = torch.Generator().manual_seed(1)
  cots = {f"cot_{k}": torch.randn(v.shape, generator=gen) for k, v in outputs.items()
          if not k.startswith("nograd_")}
  params = {}
  for prefix, mod in named_modules.items():
    for name, p in mod.named_parameters():
      params[f"{prefix}{name}"] = p
  for p in params.values():
    p.grad = None
  loss = sum((outputs[k[4:]] * c).sum() for k, c in cots.items())
  loss.backward()
  rec = {"meta": np.array(json.dumps(meta))}
  for prefix, mod in named_modules.items():
    for name, t in mod.state_dict().items():
      rec[f"sd/{prefix}{name}"] = _np(t) if t.is_floating_point() else t.cpu().numpy()
  rec.update({f"in/{k}": (v if isinstance(v, np.ndarray) else _np(v))
              for k, v in {**inputs, **cots}.items()})
  rec.update({f"out/{k.removeprefix('nograd_')}": _np(v) for k, v in outputs.items()})
  rec.update({f"grad/{k}": _np(p.grad) if p.grad is not None else np.zeros(p.shape, np.float32)
              for k, p in params.items()})
  return rec


def official_mult(ckout: str, size: str, causal: bool = True) -> dict:
  """MULTModel with random weights: 'output', 'last_hs', and 'output_padded' on a batch
  whose first rows start with zero (padding) steps."""
  import torch
  from mmfuse_jax import config as config_lib
  s = MULT_SIZES[size]
  net = config_lib.get_config("mult").net
  net.update(dict(s["net"], causal=causal, position_offset=1, layer_norm_eps=1e-5,
                  attend_padding=True, proj_kernel=1))
  torch.manual_seed(0)
  model, _, _ = torch_ref.build_mult(ckout, net, s["dims"], s["lengths"], 1,
                                     width=net.d_model)
  gen = torch.Generator().manual_seed(0)
  _randomize(model, gen, size)
  model.eval()
  mods = ("text", "audio", "vision")
  xs = {m: _grid(torch.randn(s["batch"], s["lengths"][m], s["dims"][m], generator=gen), size)
        for m in mods}
  padded = {m: x.clone() for m, x in xs.items()}
  for i, m in enumerate(mods):   # rows 0, 1 padded at the front, like the MulT pickles
    padded[m][0, :2 + i] = 0.0
    padded[m][1, :1] = 0.0
  out, last_hs = model(*(xs[m] for m in mods))
  with torch.no_grad():
    out_padded, _ = model(*(padded[m] for m in mods))
  meta = {"model": "mult", "net": {k: net[k] for k in (*s["net"], "causal", "position_offset",
                                                       "layer_norm_eps", "attend_padding",
                                                       "proj_kernel")},
          "info": {"modalities": list(mods), "feature_dims": s["dims"],
                   "max_lengths": s["lengths"], "task": "regression", "num_classes": None},
          "official": "yaohungt/Multimodal-Transformer src/models.py MULTModel",
          "torch": torch.__version__}
  inputs = {**{f"x_{m}": xs[m] for m in mods}, **{f"padded_x_{m}": padded[m] for m in mods}}
  return _record(meta, {"": model}, inputs,
                 {"output": out, "last_hs": last_hs, "nograd_output_padded": out_padded})


def official_argf(ckout: str, size: str) -> dict:
  """ARGF_context2 modules with random weights, each part on its own random inputs."""
  import torch
  from mmfuse_jax import config as config_lib
  s = ARGF_SIZES[size]
  k, b = s["k"], s["batch"]
  net = config_lib.get_config("argf").net
  net.update(dict(ucln=False, hidden=k, encoder_expand=10, decoder_widths=(512, 64),
                  discriminator_widths=(64, 16), classifier_hidden=k, gfn_hidden=64,
                  decision_hidden=50, decision_norm="batch", gfn_share_mlp=True,
                  encoder_variant="reference", decoder_variant="reference",
                  discriminator_variant="reference", classifier_variant="reference",
                  gfn_edges="reference"))
  torch.manual_seed(0)
  m = torch_ref._argf_modules(ckout, net, s["dims"], s["out_dim"])
  named = {f"encoder_{x}.": m["enc"][x] for x in ARGF_MODS}
  named.update({f"decoder_{x}.": m["dec"][x] for x in s["decoders"]})
  named.update({"discriminator.": m["disc"], "classifier.": m["cls"], "fusion.": m["fusion"]})
  gen = torch.Generator().manual_seed(0)
  for mod in named.values():
    _randomize(mod, gen, size)
    mod.eval()
  x = {a: _grid(torch.randn(b, s["dims"][a], generator=gen), size) for a in ARGF_MODS}
  z = {name: _grid(torch.randn(b, k, generator=gen), size) for name in ("z_dec", "z_disc")}
  z_cls = {a: _grid(torch.randn(b, k, generator=gen), size) for a in ARGF_MODS}
  z_fuse = _grid(torch.randn(b, 3, k, generator=gen), size)
  logits = {}
  hook = m["fusion"].linear_3.register_forward_hook(lambda mod, i, o: logits.update(o=o))
  out = {f"enc_{a}": m["enc"][a](x[a]) for a in ARGF_MODS}
  out.update({f"dec_{a}": m["dec"][a](z["z_dec"]) for a in s["decoders"]})
  out["disc"] = m["disc"](z["z_disc"])
  out.update({f"cls_{a}": m["cls"](z_cls[a]) for a in ARGF_MODS})
  out["fusion"], out["fusion_weights"] = m["fusion"](z_fuse)
  hook.remove()
  out["fusion_logits"] = logits["o"]
  sizes = {"k": k, "dims": s["dims"], "out_dim": s["out_dim"]}
  meta = {"model": "argf", "net": {key: net[key] for key in net if key in (
              "ucln", "hidden", "encoder_expand", "decoder_widths", "discriminator_widths",
              "classifier_hidden", "gfn_hidden", "decision_hidden", "decision_norm",
              "gfn_share_mlp", "encoder_variant", "decoder_variant",
              "discriminator_variant", "classifier_variant", "gfn_edges")},
          "info": {"modalities": list(ARGF_MODS), "feature_dims": s["dims"],
                   "max_lengths": {a: 1 for a in ARGF_MODS}, "task": "classification",
                   "num_classes": s["out_dim"]},
          "official": "TmacMai/ARGF_multimodal_fusion ARGF/ARGF_context2/model.py",
          "sizes": sizes, "decoders": list(s["decoders"]), "torch": torch.__version__}
  inputs = {**{f"x_{a}": x[a] for a in ARGF_MODS}, **z,
            **{f"z_cls_{a}": z_cls[a] for a in ARGF_MODS}, "z_fuse": z_fuse}
  return _record(meta, named, inputs, out)


BUILDERS = {"mult": official_mult, "argf": official_argf}


def official_record(model: str, path: str, size: str, **options) -> dict:
  """The parity record of `model` from the checkout under `path` (torch_ref.resolve)."""
  ckout, msg = torch_ref.resolve(model, path)
  if ckout is None:
    raise SystemExit(msg)
  msg = torch_ref.torch_missing()
  if msg:
    raise SystemExit(msg)
  import warnings
  import torch
  torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
  with warnings.catch_warnings():   # their SyntaxWarnings and deprecations
    warnings.simplefilter("ignore")
    return BUILDERS[model](ckout, size, **options)


def print_result(model: str, res: dict) -> None:
  print(f"{model}: max |output diff| = {res['max_output_diff']:.3e} (tolerance "
        f"{parity.OUTPUT_ATOL:g}), max gradient relative diff = {res['max_grad_rel']:.3e} "
        f"(tolerance {parity.GRAD_RTOL:g}) over {len(res['grad_rel'])} parameters")
  for name, d in res["output_diff"].items():
    print(f"  output {name:16s} {d:.3e}")
  worst = sorted(res["grad_rel"].items(), key=lambda kv: -kv[1])[:3]
  for name, d in worst:
    print(f"  grad   {name:50s} {d:.3e}")
  print("conversion: " + res["report"].replace("\n", "\n  "))
  print("PASS" if res["ok"] else "FAIL")


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--model", required=True, choices=sorted([*BUILDERS, "rerd"]))
  ap.add_argument("--torch-ref", required=True, help="checkout(s) of the official code")
  ap.add_argument("--size", default="full", choices=("full", "tiny"))
  ap.add_argument("--causal", default="true", choices=("true", "false"),
                  help="mult: attn_mask / net.causal on both sides")
  args = ap.parse_args(argv)
  if args.model == "rerd":
    return parity_rerd.main(["--torch-ref", args.torch_ref])
  import jax
  jax.config.update("jax_default_matmul_precision", "highest")
  options = {"causal": args.causal == "true"} if args.model == "mult" else {}
  record = official_record(args.model, os.path.expanduser(args.torch_ref), args.size,
                           **options)
  res = parity.check(record)
  print_result(args.model, res)
  return 0 if res["ok"] else 1


if __name__ == "__main__":
  sys.exit(main())
