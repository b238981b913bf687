"""MulT: Multimodal Transformer for unaligned sequences (Tsai et al., ACL 2019).

Conv1d projections to d per modality, crossmodal transformers for all six directions
(Sec. 3.2, Eq. 4), a self-attention memory transformer per target modality over the
concatenated crossmodal outputs, last-step concatenation, and a residual MLP head (Sec. 3.3).
Defaults follow the public code's MOSI unaligned setting. Documented differences, each a
switch (docs/methods/mult.md): the causal mask is off by default (`net.causal`); "last
step" is the last *valid* step under the padding mask rather than index T-1, and padding
steps are masked out of attention (`net.attend_padding`); positions are numbered from 0
(`net.position_offset`); LayerNorm epsilon is flax's 1e-6 (`net.layer_norm_eps`). With the
public code's values of these four the model computes the official MULTModel's function
(weights imported by mmfuse_jax/convert/mult.py).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.layers.dropout import Dropout
from mmfuse_jax.layers.transformer import TransformerEncoder, last_valid
from mmfuse_jax.models.base import DataInfo, ModelSpec, format_output, register_model


def default_net() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.d_model = 30            # width per modality (public code hard-codes 30)
  c.num_heads = 5
  c.num_layers = 5          # crossmodal layers; memory transformers use max(num_layers, 3)
  # Attention dropout is keyed by the SOURCE modality (keys/values) of a crossmodal block,
  # as in the public code's `get_network` ('la', text attending to audio: attn_dropout_a).
  c.attn_dropout = 0.1      # blocks whose keys/values are text (audio/vision attend to
                            # text) and the three self-attention memory transformers
  c.attn_dropout_audio = 0.0  # blocks whose keys/values are audio (text/vision attend to it)
  c.attn_dropout_vision = 0.0  # blocks whose keys/values are vision (text/audio attend to it)
  c.relu_dropout = 0.1
  c.res_dropout = 0.1
  c.embed_dropout = 0.25
  c.out_dropout = 0.0
  c.proj_kernel = 1         # Conv1d kernel of the input projections
  c.causal = False          # public code: True (shifted future mask); paper: not specified
  c.position_offset = 0     # position index of the first step; public code: 1 (fairseq
                            # numbering, index 0 being its padding position)
  c.layer_norm_eps = 1e-6   # flax default; public code (PyTorch nn.LayerNorm): 1e-5
  c.attend_padding = False  # True: the public code's (absent) padding handling: attention
                            # reads padding steps too, the last step is index T-1, and
                            # padding steps of the inputs get no position embedding
  c.scan_layers = True      # one compiled layer body per stack (nn.scan; faster compiles);
                            # False unrolls the layers (no per-layer residual copies, longer
                            # compiles; a different parameter tree)
  c.remat_attention = True  # recompute attention scores in the backward pass instead of
                            # storing them per layer (3.5x less temp memory at MOSI batch
                            # 24, ~1.1x faster on CPU; same values, same parameters)
  return c


class MulTModel(nn.Module):
  net: ml_collections.ConfigDict
  info: DataInfo

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    net, mods = self.net, self.info.modalities
    check_net(net)
    d = net.d_model
    masks, position_masks = attention_masks(net, batch.masks)
    proj = {}
    for m in mods:
      x = batch.features[m]
      if m == "text":
        x = Dropout(net.embed_dropout, deterministic=not train)(x)
      x = nn.Conv(d, (net.proj_kernel,), padding="SAME", use_bias=False, name=f"proj_{m}")(x)
      proj[m] = jnp.where(batch.masks[m][..., None], x, 0.0)
    aux = {"crossmodal": {}, "unimodal": {}}
    finals = []
    for t in mods:
      streams = []
      for s in mods:
        if s == t:
          continue
        h, details = TransformerEncoder(
            net.num_heads, net.num_layers, attn_dropout=crossmodal_attn_dropout(net, s),
            relu_dropout=net.relu_dropout, res_dropout=net.res_dropout,
            embed_dropout=net.embed_dropout, causal=net.causal,
            scan_layers=net.get("scan_layers", True),
            remat_attention=net.get("remat_attention", True), **encoder_numerics(net),
            name=f"cross_{s}_to_{t}")(
                proj[t], masks[t], proj[s], masks[s], q_position_mask=position_masks[t],
                kv_position_mask=position_masks[s], train=train)
        streams.append(h)
        aux["crossmodal"][f"{s}->{t}"] = details
      h = jnp.concatenate(streams, axis=-1)
      last = memory_last_step(net, h, masks[t], max(net.num_layers, 3), f"memory_{t}", train)
      aux["unimodal"][t] = last
      finals.append(last)
    fused = jnp.concatenate(finals, axis=-1)
    out = residual_head(fused, self.info.output_dim, net.out_dropout, train)
    aux["fused"] = fused
    return format_output(out, self.info.task), aux


def crossmodal_attn_dropout(net, source: str) -> float:
  """Attention-dropout rate of the crossmodal block whose keys and values come from
  `source`: net.attn_dropout_audio / net.attn_dropout_vision for an audio / vision source,
  net.attn_dropout for text (and any other modality). The rate follows the source, not the
  target: MulT's public code builds the block in which text attends to audio with
  `get_network('la')`, which uses `attn_dropout_a`. The memory transformers use
  net.attn_dropout (`get_network('l_mem' / 'a_mem' / 'v_mem')`)."""
  return {"audio": net.attn_dropout_audio,
          "vision": net.attn_dropout_vision}.get(source, net.attn_dropout)


def check_net(net) -> None:
  """ConfigErrors for the parity switches (absent fields keep their defaults)."""
  if net.get("position_offset", 0) < 0:
    raise ConfigError(f"net.position_offset must be >= 0, got {net.position_offset}")
  if net.get("layer_norm_eps", 1e-6) <= 0:
    raise ConfigError(f"net.layer_norm_eps must be > 0, got {net.layer_norm_eps}")


def attention_masks(net, masks: dict) -> tuple[dict, dict]:
  """(masks attention reads, masks of the steps that get a position embedding (None: all)).

  Default: the padding masks, positions everywhere. net.attend_padding (the public code):
  every step is attended and read, and the padding steps of the inputs get no position
  embedding (fairseq's padding index: the public code detects padding as an exact 0 in the
  first feature of the projected input, which zero-padded features give).
  """
  if not net.get("attend_padding", False):
    return masks, {m: None for m in masks}
  return {m: jnp.ones_like(k) for m, k in masks.items()}, masks


def encoder_numerics(net) -> dict:
  """TransformerEncoder arguments of the public-code parity switches."""
  return dict(position_offset=net.get("position_offset", 0),
              layer_norm_eps=net.get("layer_norm_eps", 1e-6))


def memory_last_step(net, h, mask, num_layers: int, name: str, train: bool):
  """MulT's per-target self-attention memory (Eq. 4's transformer), read at the last valid
  step. Call inside a compact method: the encoder becomes the caller's submodule `name`."""
  h, _ = TransformerEncoder(
      net.num_heads, num_layers, attn_dropout=net.attn_dropout, relu_dropout=net.relu_dropout,
      res_dropout=net.res_dropout, embed_dropout=net.embed_dropout, causal=net.causal,
      scan_layers=net.get("scan_layers", True),
      remat_attention=net.get("remat_attention", True), **encoder_numerics(net),
      name=name)(h, mask, train=train)
  return last_valid(h, mask)


def residual_head(fused, output_dim: int, out_dropout: float, train: bool):
  """MulT's output block: Dense+ReLU -> dropout -> Dense, plus the input (residual), then a
  linear layer (submodules `head_1`, `head_2`, `out` of the calling compact module)."""
  width = fused.shape[-1]
  h = nn.relu(nn.Dense(width, name="head_1")(fused))
  h = Dropout(out_dropout, deterministic=not train)(h)
  h = nn.Dense(width, name="head_2")(h) + fused
  return nn.Dense(output_dim, name="out")(h)


def _update_config(config: ml_collections.ConfigDict) -> None:
  # MulT public code, MOSI: Adam 1e-3, batch 24, grad clip 0.8, ReduceLROnPlateau(patience 20,
  # factor 0.1) on validation loss, 40 epochs, L1 loss.
  config.batch_size = 24
  config.optim.lr = 1e-3
  config.optim.clip_norm = 0.8
  config.optim.schedule = "plateau"
  config.optim.plateau_patience = 20
  config.optim.plateau_factor = 0.1


def synthetic_setting(config: ml_collections.ConfigDict) -> None:
  """The built-in synthetic data (docs/results.md): 10 epochs instead of the quick default's
  12, so that the no-flag first run fits in 5 minutes on a 2-core CPU. Nothing else changes
  and no schedule depends on the epoch count (the plateau scheduler never fires this early),
  so the run is the 12-epoch run stopped after epoch 10, the epoch that run selects on
  validation MAE (seed 0)."""
  config.epochs = 10


SPEC = register_model(ModelSpec(
    name="mult", build=lambda net, info: MulTModel(net, info), default_net=default_net,
    update_config=_update_config, min_modalities=2, synthetic_setting=synthetic_setting,
    modality_reason="each modality attends to the others through crossmodal transformers",
    doc="Multimodal Transformer (Tsai et al. 2019)"))
