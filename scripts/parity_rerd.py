"""Weight-level parity of our RERD with the official PyTorch code (Redaimao/RERD).

  python scripts/parity_rerd.py --torch-ref=PATH [--setting=three_layers] [--write-fixture=F]

PATH is a checkout of Redaimao/RERD (see scripts/torch_ref.py: its model is imported at
run time with the same adaptations). The official model gets random weights (every tensor,
BatchNorm running statistics included, rounded to float16 values so that a fixture can
store them exactly), mmfuse_jax.convert.rerd maps them to our parameter tree, and both
models run in eval mode on the same inputs with every step valid. The settings keep every
query (u = c * ceil(ln L) = L at every layer) and sample every key, so ProbSparse
attention is deterministic and the outputs agree to float32 rounding:

  three_layers  3 distillation layers (attn, pool, attn, pool, attn), c = 2, lengths 2
  two_layers    2 distillation layers, c = 3, lengths 9 -> 6 (the official circular
                padding of 2: our conv_padding='CIRCULAR_2')
  fixture       three_layers with text and audio only and one fusion layer (small enough
                for tests/fixtures/rerd_parity.npz)

Our model uses `OFFICIAL_ARCHITECTURE` (models/rerd.py). Two official variants are checked:

  view   the official code as it is, whose ProbAttention reads (B, L, H, d) as (B, H, L, d)
         with `.view`; ours with net.attention_layout='reference_view'
  heads  the official code with that `.view` made a transpose at run time (their
         ProbAttention instances get a wrapper; no file is edited), i.e. paper Eq. 4;
         ours with the default attention_layout='heads'

Prints the max absolute difference of the outputs and of every parameter gradient (of
sum(output * r) for a fixed random r; relative as `grad_differences` defines it) and exits
1 above 1e-5 (outputs) or 1e-4 relative (gradients).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_ref  # noqa: E402  (scripts/ is not a package)

from mmfuse_jax.convert.rerd import convert  # noqa: E402
from mmfuse_jax.data.core import Batch  # noqa: E402
from mmfuse_jax.models.base import DataInfo  # noqa: E402
from mmfuse_jax.models.rerd import OFFICIAL_ARCHITECTURE, build, default_net  # noqa: E402

OUTPUT_TOL, GRAD_RTOL = 1e-5, 1e-4
DIMS = {"text": 7, "audio": 5, "vision": 6}
SETTINGS = {
    "three_layers": dict(layers=3, factor=2, length=2, fusion_layers=2,
                         modalities=("text", "audio", "vision")),
    "two_layers": dict(layers=2, factor=3, length=9, fusion_layers=2,
                       modalities=("text", "audio", "vision")),
    "fixture": dict(layers=3, factor=2, length=2, fusion_layers=1,
                    modalities=("text", "audio")),
}
VARIANTS = ("view", "heads")
BATCH = 3


def net_for(setting: str, variant: str = "heads"):
  """Our net config for a setting: the official architecture at tiny widths (the official
  encoder output is fixed at 30 features per modality)."""
  s = SETTINGS[setting]
  net = default_net()
  net.update(OFFICIAL_ARCHITECTURE)
  net.latent_dim, net.distill_heads, net.distill_ff = 8, 2, 8
  net.distill_layers, net.factor = s["layers"], s["factor"]
  net.fusion_heads, net.fusion_layers = 3, s["fusion_layers"]
  net.out_dim = 30
  net.use_msd = False
  net.attention_layout = "reference_view" if variant == "view" else "heads"
  return net


def info_for(setting: str) -> DataInfo:
  s = SETTINGS[setting]
  return DataInfo(modalities=s["modalities"], feature_dims={m: DIMS[m] for m in s["modalities"]},
                  max_lengths={m: s["length"] for m in s["modalities"]}, task="regression")


def _per_head_forward(inner):
  """Wraps an official ProbAttention so that it splits heads by transposing (paper Eq. 4):
  it is handed tensors whose memory is (B, H, L, d) under their (B, L, H, d) shape, so its
  `.view(B, H, L, -1)` yields the transpose, and its (B, H, L, d) context is returned with
  (B, L, H, d) memory for the caller's `.view(B, L, -1)`."""
  original = inner.forward

  def forward(queries, keys, values, attn_mask):
    relabel = lambda t: t.transpose(1, 2).contiguous().view(t.shape)
    context, attn = original(relabel(queries), relabel(keys), relabel(values), attn_mask)
    return context.transpose(1, 2).contiguous().view(context.shape), attn
  return forward


def build_reference(torch_ref_dir: str, seed: int, setting: str = "three_layers",
                    variant: str = "heads"):
  """The official RERDModel for `setting`, random float16-exact weights from `seed`, in
  eval mode; variant 'heads' patches its attention to the per-head layout.
  Returns (model, net, info)."""
  import torch
  ckout, msg = torch_ref.resolve("rerd", torch_ref_dir)
  if ckout is None:
    raise SystemExit(msg)
  s, net, info = SETTINGS[setting], net_for(setting, variant), info_for(setting)
  lengths = {m: s["length"] for m in DIMS}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # their SyntaxWarnings ('is' with literals)
    model, _, _ = torch_ref.build_rerd(ckout, net, DIMS, lengths, 1,
                                       modalities=s["modalities"])
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if not t.is_floating_point():
        continue
      noise = torch.randn(t.shape, generator=gen)
      if name.endswith("running_var"):
        value = 0.5 + noise.abs()
      elif name.endswith(("running_mean", "bias")):
        value = 0.2 * noise
      elif t.dim() == 1:                       # LayerNorm / BatchNorm scales
        value = 1.0 + 0.2 * noise
      elif name.endswith("position_embedding.pe"):
        continue                               # the fixed sine table
      else:
        fan_in = t[0].numel()
        value = noise / np.sqrt(fan_in)
      t.copy_(value.half().float())
  model.eval()
  if variant == "heads":
    for module in model.modules():
      if type(module).__name__ == "ProbAttention":
        module.forward = _per_head_forward(module)
  return model, net, info


def state_dict_numpy(model) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def make_inputs(setting: str, seed: int) -> tuple[dict, np.ndarray]:
  """Inputs for every official modality (their forward projects all three) and r."""
  rng = np.random.default_rng(seed + 1)
  length = SETTINGS[setting]["length"]
  x = {m: rng.normal(size=(BATCH, length, d)).astype(np.float32) for m, d in DIMS.items()}
  return x, rng.normal(size=BATCH).astype(np.float32)


def run_reference(model, inputs: dict, r: np.ndarray) -> tuple[np.ndarray, dict]:
  """Official outputs (B,) and the gradients of sum(output * r) per parameter name."""
  import torch
  model.zero_grad()
  t = {m: torch.from_numpy(v) for m, v in inputs.items()}
  out = model(t["text"], t["audio"], t["vision"])[0][:, 0]
  (out * torch.from_numpy(r)).sum().backward()
  grads = {n: p.grad.detach().numpy().copy() for n, p in model.named_parameters()
           if p.grad is not None}
  return out.detach().numpy(), grads


def run_ours(net, info, state_dict: dict, inputs: dict, r: np.ndarray):
  """Our outputs (B,), gradients (our tree) and the converter's report."""
  variables, report = convert(state_dict, net)
  model = build(net, info)
  feats = {m: jnp.asarray(inputs[m]) for m in info.modalities}
  masks = {m: jnp.ones(v.shape[:2], bool) for m, v in feats.items()}
  batch = Batch(features=feats, masks=masks, labels=jnp.zeros(BATCH), weights=jnp.ones(BATCH),
                index=jnp.arange(BATCH))
  state = {k: v for k, v in variables.items() if k != "params"}

  def loss(params):
    pred, _ = model.apply({"params": params, **state}, batch, train=False)
    return (pred * r).sum(), pred
  (_, pred), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
  return np.asarray(pred), grads, variables, report, model, batch


def grad_differences(ours, official, skip=()) -> tuple[float, float, str]:
  """(largest relative difference, largest absolute difference, its tensor) over the
  leaves of two gradient trees. A tensor's difference is relative to its largest official
  gradient, floored at 1e-3 of the largest over all tensors: some gradients are zero in
  exact arithmetic (the key biases, which shift a whole softmax row) and only rounding
  noise of about 1e-8 is left to compare there."""
  flat_ref = dict(jax.tree_util.tree_flatten_with_path(official)[0])
  scale = 1e-3 * max(float(np.abs(np.asarray(v)).max()) for v in flat_ref.values())
  worst_rel, worst_abs, worst_name = 0.0, 0.0, ""
  for path, g in jax.tree_util.tree_flatten_with_path(ours)[0]:
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    if any(name.startswith(s) for s in skip):
      continue
    t = np.asarray(flat_ref[path])
    diff = float(np.abs(np.asarray(g) - t).max())
    rel = diff / max(float(np.abs(t).max()), scale)
    if rel > worst_rel:
      worst_rel, worst_name = rel, name
    worst_abs = max(worst_abs, diff)
  return worst_rel, worst_abs, worst_name


def compare(net, info, state_dict, inputs, r, ref_out, ref_grads) -> dict:
  """Max output difference and max relative gradient difference over mapped tensors."""
  pred, grads, variables, report, model, batch = run_ours(net, info, state_dict, inputs, r)
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, batch))
  same_tree = (jax.tree_util.tree_structure(shapes) ==
               jax.tree_util.tree_structure(variables) and
               all(a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(shapes),
                                                      jax.tree_util.tree_leaves(variables))))
  # Official gradients in our tree: the converter is linear in the tensors, and buffers
  # (BatchNorm statistics) only fill the batch_stats, which are not compared.
  mapped, _ = convert({**state_dict, **ref_grads}, net)
  ref_tree = mapped["params"]
  skip = {p.split("/", 1)[1] for p in report["ours_without_counterpart"]}
  rel, worst_abs, worst_name = grad_differences(grads, ref_tree, skip)
  missing = sorted(n for n in ref_grads if n in report["torch_without_counterpart"])
  return {"output_max_abs_diff": float(np.abs(pred - ref_out).max()),
          "output_max_abs": float(np.abs(ref_out).max()),
          "grad_max_rel_diff": rel, "grad_max_abs_diff": worst_abs,
          "grad_worst_tensor": worst_name, "tree_matches_init": bool(same_tree),
          "official_grads_without_counterpart": missing,
          "report": report}


def check(torch_ref_dir: str, setting: str, seed: int = 0) -> dict:
  """Both variants of one setting; returns the numbers per variant."""
  inputs, r = make_inputs(setting, seed)
  out = {}
  for variant in VARIANTS:
    model, net, info = build_reference(torch_ref_dir, seed, setting, variant)
    sd = state_dict_numpy(model)
    ref_out, ref_grads = run_reference(model, inputs, r)
    out[variant] = compare(net, info, sd, inputs, r, ref_out, ref_grads)
  return out


def write_fixture(torch_ref_dir: str, path: str, seed: int = 0) -> None:
  """tests/fixtures/rerd_parity.npz: the official random weights (float16, exact), the
  inputs, r, the outputs of both variants and the gradients of the 'heads' variant."""
  setting = "fixture"
  inputs, r = make_inputs(setting, seed)
  arrays = {f"input/{m}": v for m, v in inputs.items() if m in SETTINGS[setting]["modalities"]}
  arrays["r"] = r
  sd = None
  for variant in VARIANTS:
    model, _, _ = build_reference(torch_ref_dir, seed, setting, variant)
    ref_out, ref_grads = run_reference(model, inputs, r)
    arrays[f"{variant}/output"] = ref_out.astype(np.float32)
    if variant == "heads":
      for n, g in ref_grads.items():
        arrays[f"heads/grad/{n}"] = g.astype(np.float32)
    sd = state_dict_numpy(model)
  for n, v in sd.items():
    if n.endswith("position_embedding.pe"):
      continue                                 # 5000-step tables; computed when loading
    if np.issubdtype(v.dtype, np.floating):
      assert np.array_equal(v.astype(np.float16).astype(np.float32), v), n
      v = v.astype(np.float16)
    arrays[f"sd/{n}"] = v
  info = info_for(setting)
  arrays["meta"] = np.array(json.dumps({
      "setting": setting, "seed": seed, "batch": BATCH, "net": net_for(setting).to_dict(),
      "modalities": list(info.modalities), "dims": dict(info.feature_dims),
      "lengths": dict(info.max_lengths)}))
  np.savez_compressed(path, **arrays)
  print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--torch-ref", required=True, help="checkout of Redaimao/RERD")
  p.add_argument("--setting", default="all", choices=("all", *SETTINGS))
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--write-fixture", default="", help="also write the CI fixture here")
  args = p.parse_args(argv)
  msg = torch_ref.torch_missing()
  if msg:
    raise SystemExit(msg)
  import torch
  torch.manual_seed(args.seed)
  settings = list(SETTINGS) if args.setting == "all" else [args.setting]
  ok = True
  for setting in settings:
    with contextlib.redirect_stdout(sys.stderr):
      result = check(args.torch_ref, setting, args.seed)
    for variant, r in result.items():
      good = (r["output_max_abs_diff"] <= OUTPUT_TOL and r["grad_max_rel_diff"] <= GRAD_RTOL
              and r["tree_matches_init"])
      ok &= good
      print(json.dumps({"setting": setting, "variant": variant, "ok": good,
                        **{k: v for k, v in r.items() if k != "report"}}))
    print(json.dumps({"setting": setting, "report": result["heads"]["report"]}, indent=1))
  if args.write_fixture:
    write_fixture(args.torch_ref, args.write_fixture, args.seed)
  print("PARITY OK" if ok else "PARITY FAILED")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
