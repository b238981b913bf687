"""LMF: Low-rank Multimodal Fusion with modality-specific factors (Liu et al., ACL 2018).

Unimodal subnetworks as in TFN (models/tfn.py: mean-pooled audio/vision MLPs, text LSTM).
Fusion (paper Eq. 6-7): with z_m <- [z_m; 1], rank-r factors W_m^(i) in R^{(d_m+1) x d_h},

    h = sum_i lambda_i  prod_m (W_m^(i) z_m)  + b        (elementwise product over m)

which equals a TFN weight tensor of rank r applied to the outer product, without ever
building it. lambda (the public code's fusion weights) and b are learned.

The LMF paper's h is the prediction itself (d_h = output size). For the MDM penalty a
fused representation is needed, so by default d_h = net.fusion_dim (32) and a dropout +
linear layer A_theta_p maps h to the output (aux['fused'] = h); net.fusion_dim=0 gives
the original (d_h = output size, no head; aux['fused'] = h then).

Sizes: LMF paper / MMSA-like MOSI setting (rank 4, text 128 -> 64, audio 16, vision 16).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from mmfuse_jax.layers.dropout import Dropout
from mmfuse_jax.models.base import DataInfo, ModelSpec, format_output, register_model
from mmfuse_jax.models.mdm_critic import add_mdm_defaults
from mmfuse_jax.models.tfn import small_recurrent_setting, squash, unimodal_embeddings


def default_net() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.text_hidden = 128
  c.text_out = 64
  c.audio_hidden = 16
  c.vision_hidden = 16
  c.rank = 4
  c.fusion_dim = 32         # d_h; 0: the original LMF (h is the output)
  c.dropout_text = 0.3
  c.dropout_audio = 0.3
  c.dropout_vision = 0.3
  c.dropout_post = 0.5      # before the output layer (fusion_dim > 0)
  c.output_range = 0.0      # > 0: range * sigmoid(out) - range / 2 (public LMF code)
  c.audio_vision_pool = "mean"  # audio/vision subnet input: 'mean' over steps (paper),
                                # 'attention' (learned weights; the synthetic preset) or
                                # 'lstm' (last LSTM state)
  return add_mdm_defaults(c)


class LowRankFusion(nn.Module):
  """h = sum_i lambda_i prod_m ([z_m; 1] W_m^(i)) + b  (LMF Eq. 6-7). zs: list of (B, d_m)."""
  rank: int
  out_dim: int

  @nn.compact
  def __call__(self, zs: list[jnp.ndarray]) -> jnp.ndarray:
    prod = None
    for k, z in enumerate(zs):
      z1 = jnp.concatenate([z, jnp.ones(z.shape[:-1] + (1,), z.dtype)], axis=-1)
      factor = self.param(f"factor_{k}", nn.initializers.xavier_normal(),
                          (self.rank, z1.shape[-1], self.out_dim))
      f = jnp.einsum("bd,rdo->rbo", z1, factor)
      prod = f if prod is None else prod * f
    lam = self.param("fusion_weights", nn.initializers.xavier_normal(), (1, self.rank))
    bias = self.param("fusion_bias", nn.initializers.zeros, (1, self.out_dim))
    return jnp.einsum("r,rbo->bo", lam[0], prod) + bias


class LMF(nn.Module):
  net: ml_collections.ConfigDict
  info: DataInfo

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    net, mods = self.net, self.info.modalities
    uni = unimodal_embeddings(net, mods, batch, train)
    d_h = net.fusion_dim or self.info.output_dim
    fused = LowRankFusion(net.rank, d_h, name="fusion")([uni[m] for m in mods])
    if net.fusion_dim:
      h = Dropout(net.dropout_post, deterministic=not train)(fused)
      out = nn.Dense(self.info.output_dim, name="out")(h)
    else:
      out = fused
    out = squash(out, net)
    return format_output(out, self.info.task), {"fused": fused, "unimodal": uni}


def update_config(config: ml_collections.ConfigDict) -> None:
  """MDM paper App. A.1.2 training (AdamW, LR grid, selection on validation MAE);
  batch size 32."""
  config.optim.name = "adamw"
  config.optim.lr = 1e-3
  config.optim.weight_decay = 0.01
  config.batch_size = 32


SPEC = register_model(ModelSpec(
    name="lmf", build=lambda net, info: LMF(net, info), default_net=default_net,
    method="mdm", update_config=update_config, synthetic_setting=small_recurrent_setting,
    doc="Low-rank Multimodal Fusion (Liu et al. 2018)"))
