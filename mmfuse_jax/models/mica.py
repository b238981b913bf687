"""MICA: Modality-Invariant Crossmodal Attention (Liang et al., ICCV 2021).

Backbone (Sec. 3.4, "Network backbone"): MulT's Conv1d projections to d per modality
(kernel sizes per modality, Table 1), sqrt(d) scaling + sinusoidal positions, then D layers
in which every target modality t is reinforced by its two sources s1, s2 with MulT's
pre-LN crossmodal blocks (`layers.transformer.TransformerLayer`) and the two streams are
merged by a gate at every layer:

  G_t^[i] = sigmoid(Z_{s1->t}^[i] W_{s1->t}^[i] + Z_{s2->t}^[i] W_{s2->t}^[i] + b_t^[i]),
  Z_t^[i+1] = G_t^[i] * Z_{s1->t}^[i] + (1 - G_t^[i]) * Z_{s2->t}^[i],   b_t^[i]: (T_t, d).

Then a self-attention transformer per target (`layers.transformer.TransformerEncoder`),
the last valid steps concatenated, and MulT's residual MLP head.

aux['crossmodal'][f'{s}->{t}'] holds the queries, keys and attention probabilities of every
layer stacked on a leading layer axis: q (D, B, T_t, H, d_h), k (D, B, T_s, H, d_h),
probs (D, B, H, T_t, T_s). The alignment losses L_m and L_e (losses/alignment.py) are the
model's regulariser: L = L_p + alpha L_m + beta L_e. Choices where the paper is silent are
listed in docs/methods/mica.md and switchable in `default_net()`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmfuse_jax.layers.attention import causal_mask
from mmfuse_jax.layers.dropout import Dropout
from mmfuse_jax.layers.transformer import TransformerLayer, sinusoidal_positions
from mmfuse_jax.losses.alignment import mica_alignment
from mmfuse_jax.models.base import DataInfo, ModelSpec, format_output, register_model
from mmfuse_jax.models.mult import crossmodal_attn_dropout, memory_last_step, residual_head


def default_net() -> ml_collections.ConfigDict:
  """Paper Table 1, CMU-MOSI column; other choices documented in docs/methods/mica.md."""
  c = ml_collections.ConfigDict()
  c.d_model = 40
  c.num_heads = 8
  c.num_layers = 4              # D crossmodal layers (each: six blocks + three gates)
  c.memory_layers = 0           # self-attention layers per target; 0: max(num_layers, 3) (MulT)
  c.proj_kernel_text = 3        # Table 1 kernel sizes L/V/A
  c.proj_kernel_audio = 3
  c.proj_kernel_vision = 3
  c.source = "layer"            # keys/values of block s->t at layer i: 'layer' Z_s^[i], 'input' Z_s^[0]
  c.causal = False
  c.scan_layers = True          # one compiled layer body (nn.scan) instead of a Python loop
  # Dropouts: the paper is silent; MulT public-code values. Attention dropout is keyed by
  # the SOURCE (keys/values) of a crossmodal block, as in MulT's `get_network`.
  c.attn_dropout = 0.1          # blocks whose keys/values are text; memory transformers
  c.attn_dropout_audio = 0.0    # blocks whose keys/values are audio
  c.attn_dropout_vision = 0.0   # blocks whose keys/values are vision
  c.relu_dropout = 0.1
  c.res_dropout = 0.1
  c.embed_dropout = 0.25
  c.out_dropout = 0.0
  # Alignment losses (Sec. 3.4). Table 5 ablations: mmd=False,pe=False (backbone only);
  # pe=False (MMD align); propagate=False (MMD + PE w/o propagation).
  c.alpha = 0.8                 # weight of L_m
  c.beta = 0.5                  # weight of L_e
  c.tau = 0.25                  # selection rate of the element-level alignment
  c.mmd = True
  c.pe = True
  c.propagate = True
  c.pe_heads = "per_head"       # 'per_head' | 'mean' (threshold the head-averaged attention)
  # Eq. 2 as printed: squared distances of the raw q, k, summed over the selected pairs.
  c.pe_normalize = "sum"        # 'sum' (Eq. 2) | 'mean': divided by the number of selected pairs
  c.pe_distance = "squared"     # 'squared' (Eq. 2) | 'cosine': ||q - k||^2 of fixed-norm q, k
                                # (scale-free; configs/mica.py:synthetic, docs/methods/mica.md)
  c.mmd_pool = "batch"          # 'batch' (all elements of the batch) | 'sample' (per sample)
  c.mmd_max_elements = 512      # batch pool: subsample each side to this many (0: all)
  c.mmd_bandwidth = "median"    # 'median' | 'mean' | a number (sigma0^2)
  c.mmd_scales = (0.25, 0.5, 1.0, 2.0, 4.0)
  c.mmd_estimator = "biased"    # 'biased' (paper) | 'unbiased'
  return c


class MICALayer(nn.Module):
  """One MICA layer: every crossmodal block s->t, then the merging gate per target."""
  net: ml_collections.ConfigDict
  modalities: tuple[str, ...]
  max_lengths: tuple[tuple[str, int], ...]

  @nn.compact
  def __call__(self, z, z0, masks, *, train: bool = False):
    net = self.net
    max_lengths = dict(self.max_lengths)
    new, details = {}, {}
    for t in self.modalities:
      streams = []
      sources = [s for s in self.modalities if s != t]
      for s in sources:
        kv = z[s] if net.source == "layer" else z0[s]
        attn_mask = causal_mask(z[t].shape[1], kv.shape[1]) if net.causal else None
        h, det = TransformerLayer(net.num_heads, attn_dropout=crossmodal_attn_dropout(net, s),
                                  relu_dropout=net.relu_dropout, res_dropout=net.res_dropout,
                                  # the alignment losses read every layer's probabilities
                                  attention_impl="explicit", name=f"cross_{s}_to_{t}")(
                                      z[t], kv, masks[s], attn_mask, train=train)
        streams.append(h)
        details[f"{s}->{t}"] = det
      if len(streams) == 1:
        new[t] = streams[0]
        continue
      if len(streams) != 2:
        raise ValueError(f"MICA's gate merges two streams per target, got {len(streams)}")
      d, length = streams[0].shape[-1], streams[0].shape[1]
      if length > max_lengths[t]:
        raise ValueError(f"{t} has {length} steps but the gate bias was built for "
                         f"{max_lengths[t]}")
      bias = self.param(f"gate_bias_{t}", nn.initializers.zeros, (max_lengths[t], d))
      logits = (nn.Dense(d, use_bias=False, name=f"gate_{sources[0]}_to_{t}")(streams[0])
                + nn.Dense(d, use_bias=False, name=f"gate_{sources[1]}_to_{t}")(streams[1])
                + bias[:length][None])
      g = jax.nn.sigmoid(logits)
      new[t] = g * streams[0] + (1.0 - g) * streams[1]
    return new, details


class MICAModel(nn.Module):
  net: ml_collections.ConfigDict
  info: DataInfo

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    net, mods = self.net, self.info.modalities
    if len(mods) < 2:
      raise ValueError(f"MICA needs at least two modalities, got {mods}")
    if net.source not in ("layer", "input"):
      raise ValueError(f"net.source must be 'layer' or 'input', got {net.source!r}")
    d = net.d_model
    masks = {m: batch.masks[m] for m in mods}
    z0 = {}
    for m in mods:
      x = jnp.where(masks[m][..., None], batch.features[m], 0.0)
      if m == "text":
        x = Dropout(net.embed_dropout, deterministic=not train)(x)
      kernel = net.get(f"proj_kernel_{m}", 1)
      x = nn.Conv(d, (kernel,), padding="SAME", use_bias=False, name=f"proj_{m}")(x)
      x = jnp.where(masks[m][..., None], x, 0.0)
      # MulT's embedding: scale by sqrt(d), add sinusoidal positions, dropout.
      # A Python-float scale and the table in x.dtype keep bf16 activations bf16.
      x = float(np.sqrt(d)) * x + sinusoidal_positions(x.shape[1], d)[None].astype(x.dtype)
      z0[m] = Dropout(net.embed_dropout, deterministic=not train)(x)

    layer_args = dict(net=net, modalities=tuple(mods),
                      max_lengths=tuple((m, int(self.info.max_lengths[m])) for m in mods))
    if net.scan_layers:
      def body(layer, carry, _):
        return layer(carry, z0, masks, train=train)
      stack = nn.scan(body, variable_axes={"params": 0},
                      split_rngs={"params": True, "dropout": True}, length=net.num_layers)
      z, crossmodal = stack(MICALayer(**layer_args, name="layers"), z0, None)
    else:
      z, per_layer = z0, []
      for i in range(net.num_layers):
        z, det = MICALayer(**layer_args, name=f"layer_{i}")(z, z0, masks, train=train)
        per_layer.append(det)
      crossmodal = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *per_layer)

    aux = {"crossmodal": crossmodal, "unimodal": {}}
    finals = []
    memory_layers = net.memory_layers or max(net.num_layers, 3)
    for t in mods:
      h = nn.LayerNorm(name=f"ln_cross_{t}")(z[t])
      h = jnp.where(masks[t][..., None], h, 0.0)
      last = memory_last_step(net, h, masks[t], memory_layers, f"memory_{t}", train)
      aux["unimodal"][t] = last
      finals.append(last)
    fused = jnp.concatenate(finals, axis=-1)
    out = residual_head(fused, self.info.output_dim, net.out_dropout, train)
    aux["fused"] = fused
    return format_output(out, self.info.task), aux


def _bandwidth(value):
  if isinstance(value, str) and value not in ("median", "mean"):
    try:
      return float(value)
    except ValueError:
      raise ValueError(f"net.mmd_bandwidth must be 'median', 'mean' or a number, got "
                       f"{value!r}") from None
  return value


def regularizer(aux, batch, config, rng):
  """alpha * L_m + beta * L_e (MICA Sec. 3.4) from the crossmodal queries/keys in aux."""
  net = config.net
  use_mmd = bool(net.mmd) and net.alpha > 0
  use_pe = bool(net.pe) and net.beta > 0
  if not (use_mmd or use_pe):
    return jnp.zeros((), jnp.float32), {}
  l_m, l_e, details = mica_alignment(
      aux["crossmodal"], batch.masks, batch.weights, rng, use_mmd=use_mmd, use_pe=use_pe,
      tau=net.tau, propagate_layers=net.propagate, pe_heads=net.pe_heads,
      pe_normalize=net.pe_normalize, pe_distance=net.pe_distance, mmd_pool=net.mmd_pool,
      mmd_max_elements=net.mmd_max_elements, mmd_bandwidth=_bandwidth(net.mmd_bandwidth),
      mmd_scales=tuple(net.mmd_scales), mmd_estimator=net.mmd_estimator,
      # bf16 compute: the distance products in bfloat16 too (float32 accumulation, losses.matmul)
      matmul_dtype=jnp.bfloat16 if config.get("precision", "float32") == "bf16" else None)
  metrics = {}
  if use_mmd:
    metrics["l_m"] = l_m
  if use_pe:
    metrics["l_e"] = l_e
    sel = [v for k, v in details.items() if k.startswith("pe_selected/")]
    metrics["pe_selected"] = sum(sel) / len(sel)
  return net.alpha * l_m * use_mmd + net.beta * l_e * use_pe, metrics


def _update_config(config: ml_collections.ConfigDict) -> None:
  # Paper Table 1 (MOSI column): Adam, batch 64, lr 1e-3, 120 epochs. Gradient clipping and
  # the plateau schedule are MulT's (the backbone's) public-code settings; the paper is silent.
  config.batch_size = 64
  config.epochs = 120
  config.optim.name = "adam"
  config.optim.lr = 1e-3
  config.optim.clip_norm = 0.8
  config.optim.schedule = "plateau"
  config.optim.plateau_patience = 20
  config.optim.plateau_factor = 0.1


def synthetic_setting(config: ml_collections.ConfigDict) -> None:
  """The built-in synthetic data (docs/results.md, docs/methods/mica.md): a MulT-sized
  d = 30 / 5 heads / 3 layers setting with MulT's dropouts and Adam 1e-3 stays near the
  label mean in 12 epochs, with and without alignment; this narrow one learns it: d = 16,
  2 heads, 2 crossmodal layers, 3 self-attention layers per target, no dropout, Adam 1e-2
  constant, batch 32, 12 epochs, each MMD on 256 elements per side, and L_e in its
  scale-free form (distances of fixed-norm q, k averaged over the selected pairs: with raw
  squared distances L_e starts near 600 and its updates swamp the task)."""
  config.epochs = 12
  config.batch_size = 32
  config.patience = 0
  config.optim.lr = 1e-2
  config.optim.schedule = "constant"
  n = config.net
  n.d_model, n.num_heads, n.num_layers, n.memory_layers = 16, 2, 2, 3
  for k in ("attn_dropout", "attn_dropout_audio", "attn_dropout_vision", "relu_dropout",
            "res_dropout", "embed_dropout", "out_dropout"):
    n[k] = 0.0
  n.mmd_max_elements = 256
  n.pe_distance = "cosine"
  n.pe_normalize = "mean"


SPEC = register_model(ModelSpec(
    name="mica", build=lambda net, info: MICAModel(net, info), default_net=default_net,
    regularizer=regularizer, update_config=_update_config, synthetic_setting=synthetic_setting,
    min_modalities=2,
    modality_reason="its crossmodal attention and alignment losses work on modality pairs",
    doc="Modality-Invariant Crossmodal Attention (Liang et al. 2021)"))
