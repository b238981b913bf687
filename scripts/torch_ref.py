"""Times the official PyTorch implementations next to ours (used by bench_train.py --torch-ref).

Nothing of the original code lives in this project: the models are imported at run time from
a user's checkout. PATH is a checkout of one repository, a folder holding several checkouts
(under their GitHub names), or a comma list `mult=DIR,rerd=DIR,argf=DIR`:

  mult  yaohungt/Multimodal-Transformer   src/models.py        MULTModel(hyp_params)
  rerd  Redaimao/RERD                     src/models.py        RERDModel(hyp_params)
  argf  TmacMai/ARGF_multimodal_fusion    ARGF/ARGF_context2/model.py  Encoder_5, Decoder2,
                                                               Discriminator, graph11_new,
                                                               classifier3

Run-time adaptations (their files are never edited):
  * models and tensors go to the device JAX uses (cpu or cuda) via
    torch.set_default_device (their `.cuda()` calls live in the training scripts, which
    are not used; the step below is written here after their training loops);
  * MulT, RERD: their sinusoidal position embedding gets a contiguous input (it calls
    .view on a clone of a transposed slice, which fails since PyTorch 1.x keeps strides);
  * RERD: `modules.BertTextEncoder` is replaced by an empty stub (it loads BERT weights from
    a hard-coded path in the constructor and is unused with use_bert=False), and `np.int`
    (removed in NumPy 1.24) is aliased to `int` while the model is built;
  * ARGF: its loop reuses one encoder forward for four optimiser steps (retain_graph), which
    current PyTorch rejects (parameters modified in place by an earlier step); each update
    recomputes the encoder outputs, as our methods/argf.py does;
  * MulT at another width than its hard-coded d = 30 (`build_mult(..., width=d)`, used for
    the small parity fixtures): a subclass sets d_l = d_a = d_v = d where their constructor
    assigns 30; nothing else changes.

Scripts that build or unpickle their models themselves (torch_parity.py,
convert_torch_checkpoint.py) use `_imported_from(checkout)` and `_patch_positions()`.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
import types

REPOS = {"mult": ("Multimodal-Transformer", ("src/models.py", "modules/transformer.py")),
         "rerd": ("RERD", ("src/models.py", "modules/distillation_net.py", "src/sinkhorn.py")),
         "argf": ("ARGF_multimodal_fusion", ("ARGF/ARGF_context2/model.py",))}
_PURGE = ("modules", "src", "model", "utils")


def resolve(model: str, path: str) -> tuple[str | None, str]:
  """(checkout dir or None, message) for `model` under the --torch-ref value."""
  if model not in REPOS:
    return None, f"no PyTorch reference adapter for {model!r} (have {sorted(REPOS)})"
  name, files = REPOS[model]
  cands = []
  if "=" in path:
    mapping = dict(kv.split("=", 1) for kv in path.split(",") if "=" in kv)
    if model not in mapping:
      return None, f"--torch-ref names no checkout for {model}"
    cands.append(mapping[model])
  else:
    cands += [path, os.path.join(path, name)]
  for c in cands:
    if all(os.path.isfile(os.path.join(c, f)) for f in files):
      return os.path.abspath(c), ""
  return None, (f"{cands[0]} is not a checkout of {name} (missing {', '.join(files)}); "
                f"pass --torch-ref=DIR of a clone of the official code")


def torch_missing() -> str:
  try:
    import torch  # noqa: F401
  except ImportError as e:
    return f"torch is not importable ({e}); install a CPU or CUDA build of PyTorch"
  return ""


@contextlib.contextmanager
def _imported_from(path: str):
  """sys.path[0] = path with their top-level packages (modules, src, ...) freshly imported;
  everything restored afterwards so two checkouts can be loaded in one process."""
  def purge():
    for k in list(sys.modules):
      if k.split(".")[0] in _PURGE:
        del sys.modules[k]
  purge()
  sys.path.insert(0, path)
  try:
    yield
  finally:
    sys.path.remove(path)
    purge()


def _rerd_stub_bert(torch):
  mod = types.ModuleType("modules.BertTextEncoder")

  class BertTextEncoder(torch.nn.Module):  # unused with use_bert=False
    def __init__(self, *args, **kwargs):
      super().__init__()
  mod.BertTextEncoder = BertTextEncoder
  return mod


def _patch_positions():
  """Their SinusoidalPositionalEmbedding views a clone of a transposed slice, which current
  PyTorch keeps non-contiguous (clone preserves strides): hand it a contiguous input."""
  import modules.position_embedding as pe
  cls = pe.SinusoidalPositionalEmbedding
  if not getattr(cls, "_mmfuse_patched", False):
    orig = cls.forward
    cls.forward = lambda self, input: orig(self, input.contiguous())
    cls._mmfuse_patched = True


def _common_hyp(dims, lengths, out_dim):
  return dict(orig_d_l=dims["text"], orig_d_a=dims["audio"], orig_d_v=dims["vision"],
              l_len=lengths["text"], a_len=lengths["audio"], v_len=lengths["vision"],
              lonly=True, aonly=True, vonly=True, output_dim=out_dim, use_cuda=False)


def _narrowed(cls, width: int):
  """A subclass of their MULTModel whose d_l, d_a, d_v are `width` (their constructor
  assigns the literal 30; every size after that is derived from these attributes)."""
  class Narrowed(cls):
    def __setattr__(self, name, value):
      if name in ("d_l", "d_a", "d_v"):
        value = width
      super().__setattr__(name, value)
  Narrowed.__name__ = Narrowed.__qualname__ = f"{cls.__name__}_d{width}"
  return Narrowed


def build_mult(path, net, dims, lengths, out_dim, width: int = 30):
  """MULTModel with our net config; attn_mask = our net.causal (their default: True).
  width != 30 builds it at that width (module docstring)."""
  with _imported_from(path):
    from src.models import MULTModel
    _patch_positions()
    if width != 30:
      MULTModel = _narrowed(MULTModel, width)
    hyp = types.SimpleNamespace(
        **_common_hyp(dims, lengths, out_dim), num_heads=net.num_heads, layers=net.num_layers,
        attn_dropout=net.attn_dropout, attn_dropout_a=net.attn_dropout_audio,
        attn_dropout_v=net.attn_dropout_vision, relu_dropout=net.relu_dropout,
        res_dropout=net.res_dropout, out_dropout=net.out_dropout,
        embed_dropout=net.embed_dropout, attn_mask=bool(net.causal))
    model = MULTModel(hyp)
  notes = []
  if net.d_model != width:
    notes.append(f"their d is {width} (ours {net.d_model})")
  if net.proj_kernel != 1:
    notes.append(f"their projection kernel is 1 (ours {net.proj_kernel})")
  return model, (lambda out: out[0]), notes


def build_rerd(path, net, dims, lengths, out_dim, modalities=("text", "audio", "vision")):
  """RERDModel with our net config (Table IX widths); loss adds lambda * their Sinkhorn.
  `modalities`: the ones their model fuses (lonly / aonly / vonly); dims and lengths still
  need all three (their forward projects every input and P_a's length counts all)."""
  import numpy as np
  import torch
  with _imported_from(path):
    import modules  # noqa: F401  (their package; the stub goes under it)
    sys.modules["modules.BertTextEncoder"] = _rerd_stub_bert(torch)
    had_int = "int" in np.__dict__
    if not had_int:
      np.int = int
    try:
      from src.models import RERDModel
      _patch_positions()
      hyp = types.SimpleNamespace(
          **(_common_hyp(dims, lengths, out_dim)
             | {"lonly": "text" in modalities, "aonly": "audio" in modalities,
                "vonly": "vision" in modalities}),
          use_bert=False, bert_path="",
          num_heads=net.fusion_heads, layers=net.fusion_layers, attn_dropout=net.dropout,
          attn_dropout_a=net.dropout, attn_dropout_v=net.dropout, relu_dropout=net.dropout,
          res_dropout=net.dropout, out_dropout=net.out_dropout, embed_dropout=net.dropout,
          attn_mask=False, dis_factor=net.factor, dis_d_model=net.latent_dim,
          dis_n_heads=net.distill_heads, dis_e_layers=net.distill_layers,
          dis_d_ff=net.distill_ff, dis_dropout=net.dropout, dis_attn="prob")
      import io
      with contextlib.redirect_stdout(io.StringIO()):  # their constructor prints
        model = RERDModel(hyp)
    finally:
      if not had_int:
        del np.int
  lam = net.msd_weight if net.use_msd else 0.0
  notes = ["their head reads the flattened fused sequence (T*90 wide; ours: "
           f"head_input={net.head_input!r})",
           "their DistNet also builds an unused decoder embedding (counted in params)"]
  return model, (lambda out: (out[0], lam * out[2][-1])), notes


def _argf_modules(path, net, dims, out_dim):
  with _imported_from(path + "/ARGF/ARGF_context2"):
    import model as argf
  k, p = net.hidden, net.dropout
  m = {"enc": {x: argf.Encoder_5(dims[x], k, p) for x in ("audio", "vision", "text")},
       "dec": {x: argf.Decoder2(k, dims[x]) for x in ("audio", "vision", "text")},
       "disc": argf.Discriminator(k), "fusion": argf.graph11_new(in_size=k, output_dim=out_dim),
       "cls": argf.classifier3(in_size=k, output_dim=out_dim, dropout=p)}
  return m


def _params(mods):
  out = []
  for v in mods:
    out += list(v.parameters())
  return out


def bench_argf(path, config, dims, lengths, out_dim, batch, steps, warmup):
  """Their modules, the paper's four updates (autoencoder, discriminator, classifier,
  fusion) with their losses and Adam(b1=0.5); encoder outputs recomputed per update."""
  import torch
  import torch.nn.functional as F
  net = config.net
  m = _argf_modules(path, net, dims, out_dim)
  encs, decs = list(m["enc"].values()), list(m["dec"].values())
  all_mods = encs + decs + [m["disc"], m["fusion"], m["cls"]]
  for mod in all_mods:
    mod.train()
  adam = dict(lr=config.optim.lr, betas=(config.optim.b1, config.optim.b2))
  opt_g = torch.optim.Adam(_params(encs + decs), **adam)
  opt_e = torch.optim.Adam(_params(encs + [m["cls"]]), **adam)
  opt_d = torch.optim.Adam(m["disc"].parameters(), **adam)
  opt_c = torch.optim.Adam(m["fusion"].parameters(), **adam)
  g = torch.Generator().manual_seed(0)
  x = {k: torch.randn(batch, dims[k], generator=g, device="cpu").to(torch.get_default_device())
       for k in ("audio", "vision", "text")}
  y = torch.randn(batch, out_dim, generator=g, device="cpu").to(torch.get_default_device())
  ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)
  lam = net.adv_lambda
  tgt = net.target_modality
  src = [k for k in x if k != tgt]

  def encode():
    return {k: m["enc"][k](x[k]) for k in x}

  def step():
    opt_g.zero_grad()                                   # autoencoder (generator)
    e = encode()
    rl = sum(F.l1_loss(m["dec"][k](e[k]), x[k], reduction="sum") for k in x)
    fal = sum(F.binary_cross_entropy(m["disc"](e[k]), ones) for k in src)
    (lam * fal + (1 - lam) * rl).backward()
    opt_g.step()
    opt_d.zero_grad()                                   # discriminator
    e = {k: v.detach() for k, v in encode().items()}
    tal = F.binary_cross_entropy(m["disc"](e[tgt]), ones) + sum(
        F.binary_cross_entropy(m["disc"](e[k]), zeros) for k in src)
    (0.5 * tal).backward()
    opt_d.step()
    opt_e.zero_grad()                                   # shared classifier
    e = encode()
    sum(F.l1_loss(m["cls"](e[k]), y, reduction="sum") for k in x).backward()
    opt_e.step()
    opt_c.zero_grad()                                   # graph fusion
    e = {k: v.detach() for k, v in encode().items()}
    fused = torch.stack([e["audio"], e["vision"], e["text"]], 1)
    F.l1_loss(m["fusion"](fused)[0], y, reduction="sum").backward()
    opt_c.step()

  n_params = sum(p.numel() for p in _params(all_mods))
  return _time(step, steps, warmup) | {
      "params": n_params,
      "notes": ["no UCLN on their side (their scripts load UCLN outputs from disk): compare "
                "with ours at net.ucln=false",
                "their decoder dropout is hard-coded 0.5, their discriminator has no dropout"]}


def _sync():
  import torch
  if torch.get_default_device().type == "cuda":
    torch.cuda.synchronize()


def _time(step, steps, warmup) -> dict:
  t0 = time.perf_counter()
  step()
  _sync()
  first = time.perf_counter() - t0
  for _ in range(warmup):
    step()
  _sync()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    step()
    _sync()
    times.append(time.perf_counter() - t)
  med = statistics.median(times)
  return {"first_step_s": first, "step_s_median": med, "steps_per_s": 1.0 / med}


def make_step(name, path, config, dims, lengths, out_dim, batch):
  """(step, n_params, notes): one forward + backward + (clip) + Adam step of MulT or RERD
  on fixed random inputs, as a closure."""
  import torch
  import torch.nn.functional as F
  build = {"mult": build_mult, "rerd": build_rerd}[name]
  model, loss_parts, notes = build(path, config.net, dims, lengths, out_dim)
  model.train()
  o = config.optim
  opt = torch.optim.Adam(model.parameters(), lr=o.lr, betas=(o.b1, o.b2))
  g = torch.Generator().manual_seed(0)
  dev = torch.get_default_device()
  xs = [torch.randn(batch, lengths[k], dims[k], generator=g, device="cpu").to(dev)
        for k in ("text", "audio", "vision")]
  y = torch.randn(batch, out_dim, generator=g, device="cpu").to(dev)

  def step():
    opt.zero_grad()
    parts = loss_parts(model(*xs))
    pred, reg = parts if isinstance(parts, tuple) else (parts, 0.0)
    loss = F.l1_loss(pred, y) + reg
    loss.backward()
    if o.clip_norm:
      torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_norm)
    opt.step()

  return step, sum(p.numel() for p in model.parameters()), notes


def bench_model(name, path, config, dims, lengths, out_dim, batch, steps, warmup):
  """Times make_step's step of MulT or RERD."""
  step, n_params, notes = make_step(name, path, config, dims, lengths, out_dim, batch)
  return _time(step, steps, warmup) | {"params": n_params, "notes": notes}


def bench_reference(name, path, config, dims, lengths, out_dim, batch, steps, warmup,
                    threads: int, device: str = "cpu") -> dict:
  """Times the original `name` model on `device` ('cpu' or 'cuda': every tensor, theirs
  included, is created there through torch.set_default_device); {'skipped': reason} when
  torch or PATH is missing."""
  ckout, msg = resolve(name, path)
  if ckout is None:
    return {"skipped": msg}
  msg = torch_missing()
  if msg:
    return {"skipped": msg}
  import warnings
  import torch
  if device == "cuda" and not torch.cuda.is_available():
    return {"skipped": "device cuda asked (JAX runs on a GPU) but torch sees no CUDA device"}
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  torch.set_default_device(device)
  try:
    with warnings.catch_warnings():  # their SyntaxWarnings ('is' with literals), deprecations
      warnings.simplefilter("ignore")
      if name == "argf":
        r = bench_argf(ckout, config, dims, lengths, out_dim, batch, steps, warmup)
      else:
        r = bench_model(name, ckout, config, dims, lengths, out_dim, batch, steps, warmup)
  finally:
    torch.set_default_device("cpu")
  return r | {"checkout": ckout, "torch": torch.__version__, "threads": threads,
              "device": device}
