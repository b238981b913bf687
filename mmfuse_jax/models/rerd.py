"""RERD: Regularized Expressive Representation Distillation (Guo, Kong, Kot; IEEE TMM 2022).

Per modality a multi-head distillation encoder E = P_a o D_n o P_ro (Eq. 5): a Conv1d
projection to the latent width, n distillation attention layers (ProbSparse self-attention
and max-pool halving, Eq. 2-4), a per-step projection to `out_dim` (30 in the reference)
and the post-alignment layer P_a, a Conv1d along time that maps every modality to the
shortest distilled length. The aligned sequences are concatenated along features and fused
by self-attention layers (Eq. 6); the head is Linear-ReLU-Dropout-Linear-Linear (appendix
B). Training adds lambda * L_MSD (Eq. 10-11, `losses/sinkhorn.py`) through the regulariser.

Fixed lengths: P_a has one weight per input time step, so the model is built for the
dataset's padded lengths (`DataInfo.max_lengths`); shorter batches (bucketing) are padded
back to them at the end of the time axis, longer ones are an error.

Ablations (paper Table VII): `use_msd=False` (w/o MSD), `encoder='self_attention'` (w/o
distillation layers: dense self-attention, no pooling), `encoder='none'` (w/o the multi-head
distillation encoder: projection, per-step output projection and post-alignment only).

The official code (Redaimao/RERD) differs in places; each difference is a `net` switch
(`OFFICIAL_ARCHITECTURE` sets them all, `msd_variant='reference'` its regulariser), and
`mmfuse_jax.convert.rerd` loads its weights. See docs/methods/rerd.md ("Deviations") for
every choice the paper leaves open.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.layers.distill import (ACTIVATIONS, ORDERS, PADDINGS, DistillationStack,
                                      check_distill_layers, distilled_lengths)
from mmfuse_jax.layers.dropout import Dropout
from mmfuse_jax.layers.probsparse import LAYOUTS
from mmfuse_jax.layers.transformer import (POSITION_STYLES, TransformerEncoder,
                                           sinusoidal_positions)
from mmfuse_jax.losses.sinkhorn import (COSTS, KINDS, flatten_to_scalars, msd_loss,
                                        pairwise_cost)
from mmfuse_jax.models.base import DataInfo, ModelSpec, format_output, register_model

ENCODERS = ("distill", "self_attention", "none")
HEAD_INPUTS = ("last", "flatten")
MSD_INPUTS = ("distilled", "aligned")
MSD_VARIANTS = ("paper", "reference")
REFERENCE_MSD_EPSILON = 0.5   # the official code's SinkhornDistance(eps=0.5), absolute
# The official code's architecture (Redaimao/RERD) where it differs from the defaults:
# `net.update(OFFICIAL_ARCHITECTURE)` gives the model that scripts/parity_rerd.py matches
# weight for weight (docs/methods/rerd.md, "Deviations"); `msd_variant='reference'` adds
# its regulariser.
OFFICIAL_ARCHITECTURE = dict(
    conv_padding="CIRCULAR_2", distill_order="reference", distill_activation="relu",
    attention_layout="reference_view", token_conv=True, distill_positions_style="interleaved",
    proj_bias=False, align_bias=False, head_input="flatten", head_reduce=True,
    fusion_positions=False)


def default_net() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Multi-head distillation encoder (Table IX, MOSI column).
  c.latent_dim = 64          # width of P_ro and of the distillation layers
  c.distill_heads = 6        # ProbSparse heads (head width latent_dim // heads)
  c.distill_layers = 3       # n of Eq. 2 (n - 1 halvings)
  c.distill_ff = 64          # feed-forward width inside a distillation layer (reference)
  c.factor = 3               # c in U = u = c * ceil(ln L) (reference)
  c.sample_keys = True       # False: Eq. 3 over all valid keys (no sampling)
  c.distill_norm = "batch"   # norm in the distilling conv: 'batch' (Informer) or 'layer'
  # Distilling conv padding: 'SAME' (zeros; t / 2^(n-1) steps as the paper states),
  # 'CIRCULAR' (wraps one step, same lengths), 'CIRCULAR_2' (official: wraps two steps,
  # the conv adds two, 50 -> 26 -> 14).
  c.conv_padding = "SAME"
  c.distill_order = "paper"  # 'paper' (Eq. 2: Attn, Attn+Pool, ...) | 'reference' (Attn+Pool, ..., Attn)
  c.distill_activation = "gelu"  # feed-forward activation: 'gelu' (Informer) | 'relu' (official)
  c.attention_layout = "heads"  # 'heads' (Eq. 4) | 'reference_view' (official `.view` quirk)
  c.token_conv = False       # official: Conv1d(k=3, circular) token embedding after P_ro
  c.distill_positions = True  # add sinusoidal positions after P_ro
  c.distill_positions_style = "concat"  # 'concat' (MulT table) | 'interleaved' (official)
  c.proj_kernel = 1          # kernel of P_ro
  c.proj_bias = True         # bias in P_ro (official: none)
  c.out_dim = 30             # per-modality width after the encoder (reference: 30)
  c.align_kernel = 1         # kernel of the post-alignment conv along time (odd)
  c.align_bias = True        # bias in P_a (official: none)
  c.encoder = "distill"      # 'distill' | 'self_attention' | 'none' (Table VII ablations)
  # Crossmodal fusion (Eq. 6) and head (appendix B).
  c.fusion_heads = 5
  c.fusion_layers = 3
  c.fusion_positions = True  # sinusoidal positions in the fusion transformer
  c.dropout = 0.1            # dropout inside encoders and the fusion transformer
  c.out_dropout = 0.5        # dropout of the head (Table IX)
  c.head_input = "last"      # 'last': last fused step, 90 wide (appendix B); 'flatten': T*90
  c.head_reduce = False      # True: the head's second Linear maps to the fused width (official)
  # Multimodal Sinkhorn distance regulariser (Eq. 7-11).
  c.use_msd = True
  c.msd_weight = 0.3         # lambda of Eq. 11 (Table IX: 0.3 MOSI, 0.2 MOSEI / CH-SIMS)
  # 'paper': Eq. 7-10 with the fields below. 'reference': the official code's quantity
  # (P_a outputs flattened to scalars, transport cost, pairs summed, absolute eps 0.5;
  # msd_input / msd_kind / msd_cost / msd_epsilon / msd_relative_epsilon do not apply).
  c.msd_variant = "paper"
  c.msd_epsilon = 0.1        # entropic eps, a fraction of the mean ground cost (below)
  c.msd_relative_epsilon = True  # False: msd_epsilon is the absolute eps (reference: 0.5)
  c.msd_iterations = 200     # Sinkhorn iterations at most (the reference stops at 30)
  c.msd_threshold = 1e-4     # stop when ott's marginal error (L1) is below this
  c.msd_kind = "entropic"    # 'entropic' (Eq. 9) | 'transport' | 'divergence' (debiased)
  c.msd_cost = "sqeuclidean"  # 'sqeuclidean' (reference) | 'euclidean' (Eq. 9's W_1)
  c.msd_input = "distilled"  # 'distilled' (encoder output, masked) | 'aligned' (after P_a)
  c.msd_implicit_diff = True   # True: ott implicit differentiation; False: unrolled
  return c


def validate_net(net, info: DataInfo) -> None:
  """Checks the RERD settings against the data; ConfigError names the field and limit."""
  def need(ok, msg):
    if not ok:
      raise ConfigError(msg)
  need(net.encoder in ENCODERS, f"net.encoder must be one of {ENCODERS}, got {net.encoder!r}")
  need(net.head_input in HEAD_INPUTS,
       f"net.head_input must be one of {HEAD_INPUTS}, got {net.head_input!r}")
  need(net.msd_input in MSD_INPUTS,
       f"net.msd_input must be one of {MSD_INPUTS}, got {net.msd_input!r}")
  need(net.msd_kind in KINDS, f"net.msd_kind must be one of {KINDS}, got {net.msd_kind!r}")
  need(net.msd_cost in COSTS, f"net.msd_cost must be one of {COSTS}, got {net.msd_cost!r}")
  need(net.distill_norm in ("batch", "layer"),
       f"net.distill_norm must be 'batch' or 'layer', got {net.distill_norm!r}")
  need(net.conv_padding in PADDINGS,
       f"net.conv_padding must be one of {PADDINGS}, got {net.conv_padding!r}")
  need(net.distill_order in ORDERS,
       f"net.distill_order must be one of {ORDERS}, got {net.distill_order!r}")
  need(net.distill_activation in ACTIVATIONS,
       f"net.distill_activation must be one of {tuple(ACTIVATIONS)}, got "
       f"{net.distill_activation!r}")
  need(net.attention_layout in LAYOUTS,
       f"net.attention_layout must be one of {LAYOUTS}, got {net.attention_layout!r}")
  need(net.distill_positions_style in POSITION_STYLES,
       f"net.distill_positions_style must be one of {POSITION_STYLES}, got "
       f"{net.distill_positions_style!r}")
  need(net.align_kernel >= 1 and net.align_kernel % 2 == 1,
       f"net.align_kernel must be a positive odd integer, got {net.align_kernel}")
  need(net.msd_variant in MSD_VARIANTS,
       f"net.msd_variant must be one of {MSD_VARIANTS}, got {net.msd_variant!r}")
  need(net.msd_epsilon > 0, f"net.msd_epsilon must be > 0, got {net.msd_epsilon}")
  need(net.msd_iterations >= 1, f"net.msd_iterations must be >= 1, got {net.msd_iterations}")
  need(net.msd_threshold > 0, f"net.msd_threshold must be > 0, got {net.msd_threshold}")
  need(net.distill_heads >= 1 and net.latent_dim >= net.distill_heads,
       f"net.distill_heads must be in [1, net.latent_dim={net.latent_dim}], got "
       f"{net.distill_heads}")
  width = net.out_dim * len(info.modalities)
  need(width % net.fusion_heads == 0,
       f"the fused width out_dim * modalities = {width} is not divisible by "
       f"net.fusion_heads={net.fusion_heads}")
  # Eq. 2's bound on n; with 'CIRCULAR_2' a layer never maps a length below 2, so the
  # official code has no bound and neither does that mode.
  if net.encoder == "distill" and net.conv_padding != "CIRCULAR_2":
    check_distill_layers(dict(info.max_lengths), net.distill_layers)


def encoded_lengths(net, info: DataInfo) -> dict[str, int]:
  """Length of each modality after its encoder (before post-alignment)."""
  out = {}
  for m in info.modalities:
    t = info.max_lengths[m]
    if net.encoder == "none":
      out[m] = t
    else:
      out[m] = distilled_lengths(t, net.distill_layers, net.encoder == "distill",
                                 net.conv_padding, net.distill_order)[-1]
  return out


def _pad_time(x, mask, length: int, name: str):
  t = x.shape[1]
  if t > length:
    raise ValueError(f"RERD was built for {name} sequences of at most {length} steps "
                     f"(DataInfo.max_lengths) but got {t}")
  if t < length:
    x = jnp.pad(x, ((0, 0), (0, length - t), (0, 0)))
    mask = jnp.pad(mask, ((0, 0), (0, length - t)))
  return x, mask


class RERDModel(nn.Module):
  net: ml_collections.ConfigDict
  info: DataInfo

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    net, info = self.net, self.info
    mods = info.modalities
    lengths = encoded_lengths(net, info)
    t_min = min(lengths.values())
    aux = {"distilled": {}, "distilled_mask": {}, "aligned": {}, "encoder": {},
           "distance_maps": {}}
    for m in mods:
      x, mask = _pad_time(batch.features[m], batch.masks[m],
                          info.max_lengths[m], m)
      x = nn.Conv(net.latent_dim, (net.proj_kernel,), padding="SAME", use_bias=net.proj_bias,
                  name=f"proj_{m}")(x)
      x = jnp.where(mask[..., None], x, 0.0)
      if net.token_conv:
        # Informer's token embedding (official): circular over the padded length.
        x = nn.Conv(net.latent_dim, (3,), padding="CIRCULAR", name=f"token_{m}")(x)
        x = jnp.where(mask[..., None], x, 0.0)
      if net.encoder != "none":
        if net.distill_positions:
          x = x + sinusoidal_positions(x.shape[1], net.latent_dim,
                                       net.distill_positions_style)[None].astype(x.dtype)
        x = Dropout(net.dropout, deterministic=not train)(x)
        x, mask, details = DistillationStack(
            net.distill_heads, net.distill_layers, d_ff=net.distill_ff, factor=net.factor,
            distill=net.encoder == "distill", sample_keys=net.sample_keys,
            dropout=net.dropout, norm=net.distill_norm, padding=net.conv_padding,
            order=net.distill_order, activation=net.distill_activation,
            layout=net.attention_layout, name=f"encoder_{m}")(x, mask, train=train)
        aux["encoder"][m] = details
      x = nn.Dense(net.out_dim, name=f"out_{m}")(x)
      x = jnp.where(mask[..., None], x, 0.0)
      aux["distilled"][m], aux["distilled_mask"][m] = x, mask
      # P_a: a Conv1d whose channels are the time steps (length t_m -> t_min).
      xt = x.transpose(0, 2, 1)                                         # (B, d, t_m)
      xt = nn.Conv(t_min, (net.align_kernel,), padding="SAME", use_bias=net.align_bias,
                   name=f"align_{m}")(xt)
      aux["aligned"][m] = xt.transpose(0, 2, 1)                         # (B, t_min, d)
    # After P_a every step mixes all valid steps: a sample is valid everywhere (when any
    # modality has a valid step) or nowhere (filler rows).
    any_valid = jnp.stack([aux["distilled_mask"][m].any(-1) for m in mods]).any(0)
    fused_mask = jnp.broadcast_to(any_valid[:, None], (any_valid.shape[0], t_min))
    aux["aligned_mask"] = fused_mask
    for i, a in enumerate(mods):
      for b in mods[i + 1:]:
        src = aux["distilled"] if net.msd_input == "distilled" else aux["aligned"]
        aux["distance_maps"][f"{a}-{b}"] = pairwise_cost(src[a], src[b], net.msd_cost)
    h = jnp.concatenate([aux["aligned"][m] for m in mods], axis=-1)
    h, _ = TransformerEncoder(net.fusion_heads, net.fusion_layers, attn_dropout=net.dropout,
                              relu_dropout=net.dropout, res_dropout=net.dropout,
                              embed_dropout=net.dropout, positions=net.fusion_positions,
                              name="fusion")(h, fused_mask, train=train)
    if net.head_input == "last":
      fused = h[:, -1]
    else:
      fused = h.reshape(h.shape[0], -1)
    width = fused.shape[-1]
    y = nn.relu(nn.Dense(width, name="head_1")(fused))
    y = Dropout(net.out_dropout, deterministic=not train)(y)
    y = nn.Dense(net.out_dim * len(mods) if net.head_reduce else width, name="head_2")(y)
    out = nn.Dense(info.output_dim, name="head_out")(y)
    aux["fused"] = fused
    return format_output(out, info.task), aux


def msd_inputs(aux, net) -> tuple[dict, dict]:
  """The MSD's point clouds and their masks: the distilled sequences (paper default), the
  P_a outputs, or for the 'reference' variant the P_a outputs flattened to scalars."""
  if net.msd_variant == "reference":
    return flatten_to_scalars(aux["aligned"], {m: aux["aligned_mask"] for m in aux["aligned"]})
  if net.msd_input == "distilled":
    return aux["distilled"], aux["distilled_mask"]
  return aux["aligned"], {m: aux["aligned_mask"] for m in aux["aligned"]}


def msd_settings(net) -> dict:
  """The keyword arguments of `msd_loss` / `msd_per_sample` that net.msd_* ask for: the
  'paper' variant's fields, or the 'reference' variant's fixed quantity (transport cost,
  absolute eps 0.5, squared cost, pairs summed). Shared by the regulariser and the analyses
  that measure the MSD of a trained run (training/mechanism_checks.py)."""
  solver = dict(max_iterations=net.msd_iterations, threshold=net.msd_threshold,
                implicit_diff=net.msd_implicit_diff)
  if net.msd_variant == "reference":
    return dict(epsilon=REFERENCE_MSD_EPSILON, relative_epsilon=False, kind="transport",
                cost="sqeuclidean", pair_reduce="sum", **solver)
  return dict(epsilon=net.msd_epsilon, relative_epsilon=net.msd_relative_epsilon,
              kind=net.msd_kind, cost=net.msd_cost, **solver)


def msd_regularizer(aux, batch, config, rng):
  """lambda * L_MSD (Eq. 11's second term), weighted by batch.weights.

  Returns (scalar, metrics): 'msd' (L_MSD), 'msd_error' (the largest final marginal error
  of the Sinkhorn solves in the batch) and 'msd_iterations' (the most iterations run); the
  standard method adds them to the step metrics, so epoch logs show convergence.
  'reference' variant: the official code's quantity (see `msd_inputs`), transport cost
  with an absolute eps of 0.5 and the squared cost, the modality pairs summed.
  """
  del rng
  net = config.net
  zero = jnp.zeros((), jnp.float32)
  seqs, masks = msd_inputs(aux, net)
  if not net.use_msd or len(seqs) < 2:
    return zero, {"msd": zero, "msd_error": zero, "msd_iterations": zero}
  value, stats = msd_loss(seqs, masks, batch.weights, **msd_settings(net))
  return net.msd_weight * value, {"msd": value, "msd_error": stats["error"],
                                  "msd_iterations": stats["iterations"].astype(jnp.float32)}


def build(net, info: DataInfo) -> RERDModel:
  validate_net(net, info)
  return RERDModel(net, info)


def _update_config(config: ml_collections.ConfigDict) -> None:
  # Paper appendix A / Table IX (MOSI): Adam 1e-3, batch 16, 50 epochs, LR / 10 after 20.
  # Per-dataset settings live in configs/rerd.py.
  config.batch_size = 16
  config.epochs = 50
  config.optim.lr = 1e-3
  config.optim.schedule = "step"
  config.optim.step_epochs = 20
  config.optim.step_factor = 0.1
  config.patience = 7


def synthetic_setting(config: ml_collections.ConfigDict) -> None:
  """The built-in synthetic data (docs/results.md, docs/methods/rerd.md): the paper's MOSI
  setting (Table IX) barely moves off the label mean there within 5 epochs (validation
  Corr <= 0.35; a constant at LR 3e-3), so the preset is a narrow RERD of the same structure:
  latent 16, 2 heads, 2 distillation layers, width 8 per modality, one fusion layer of 2
  heads, no dropout, lambda 0.1, Adam 1e-2 constant, batch 32, 12 epochs."""
  config.epochs = 12
  config.batch_size = 32
  config.patience = 0
  config.optim.lr = 1e-2
  config.optim.schedule = "constant"
  n = config.net
  n.latent_dim, n.distill_heads, n.distill_layers, n.distill_ff = 16, 2, 2, 16
  n.out_dim, n.fusion_heads, n.fusion_layers = 8, 2, 1
  n.dropout = n.out_dropout = 0.0
  n.msd_weight = 0.1


SPEC = register_model(ModelSpec(
    name="rerd", build=build, default_net=default_net, regularizer=msd_regularizer,
    update_config=_update_config, synthetic_setting=synthetic_setting,
    doc="Regularized Expressive Representation Distillation (Guo et al., IEEE TMM 2022)"))
