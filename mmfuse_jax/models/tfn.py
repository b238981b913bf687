"""TFN: Tensor Fusion Network (Zadeh et al., EMNLP 2017).

Audio and vision: mean over the valid time steps, then a 3-layer subnetwork
(dropout -> Dense -> ReLU, Dense -> ReLU, Dense -> ReLU; paper Sec. 3.1 "Audio/Visual
Embedding Subnetwork"). Text: an LSTM over the valid words, its last state through
dropout -> Dense (the "Spoken Language Embedding Subnetwork", Sec. 3.2). Fusion (Eq. 1):
z_m <- [z_m; 1] for each modality, and the 3-fold outer product z_l (x) z_a (x) z_v
(flattened: unimodal, bimodal and trimodal terms). Sentiment inference subnetwork:
dropout -> Dense(post) -> ReLU -> Dense(post) -> ReLU -> Dense(out). aux['fused'] is the
input of the last linear layer (Z_avl of the MDM paper), aux['tensor'] the outer product.

Sizes: the TFN paper's (text 128, audio/vision 32, post-fusion 128). Documented
differences: no input BatchNorm in the audio/vision subnetworks (features are standardised
with train statistics by the data pipeline); a linear output (TFN's public code, like
MMSA's, squashes with 6 sigmoid - 3: set net.output_range=6 for that).
Works with any subset of modalities (the outer product is over those present).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from mmfuse_jax.layers.dropout import Dropout
from mmfuse_jax.layers.transformer import masked_mean
from mmfuse_jax.models.base import DataInfo, ModelSpec, format_output, register_model
from mmfuse_jax.layers.recurrent import MaskedLSTM
from mmfuse_jax.models.ef_lstm import mdm_net_fields


def default_net() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.text_hidden = 128       # LSTM width
  c.text_out = 128          # text embedding width
  c.audio_hidden = 32
  c.vision_hidden = 32
  c.post_fusion = 128
  c.dropout_text = 0.15
  c.dropout_audio = 0.15
  c.dropout_vision = 0.15
  c.dropout_post = 0.15
  c.output_range = 0.0      # > 0: range * sigmoid(out) - range / 2 (public TFN code)
  return mdm_net_fields(c)


class SubNet(nn.Module):
  """Mean-pooled sequence -> Dropout -> 3 x (Dense -> ReLU) (TFN's audio/visual subnet)."""
  hidden: int
  dropout: float

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    h = masked_mean(x, mask)
    h = Dropout(self.dropout, deterministic=not train)(h)
    for i in range(3):
      h = nn.relu(nn.Dense(self.hidden, name=f"dense_{i}")(h))
    return h


class TextSubNet(nn.Module):
  """LSTM over the valid words -> last state -> Dropout -> Dense."""
  hidden: int
  out: int
  dropout: float

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    _, h = MaskedLSTM(self.hidden, bidirectional=False, name="lstm")(x, mask, train=train)
    h = Dropout(self.dropout, deterministic=not train)(h)
    return nn.Dense(self.out, name="dense")(h)


def unimodal_embeddings(net, mods, batch, train):
  """TFN/LMF unimodal subnetworks: {m: (B, d_m)}."""
  out = {}
  for m in mods:
    x, mask = batch.features[m], batch.masks[m]
    if m == "text":
      out[m] = TextSubNet(net.text_hidden, net.text_out, net.dropout_text,
                          name="text_subnet")(x, mask, train=train)
    else:
      out[m] = SubNet(net[f"{m}_hidden"], net[f"dropout_{m}"], name=f"{m}_subnet")(
          x, mask, train=train)
  return out


def squash(out, net):
  if net.output_range > 0:
    return net.output_range * nn.sigmoid(out) - net.output_range / 2.0
  return out


def tensor_fusion(zs: list[jnp.ndarray]) -> jnp.ndarray:
  """TFN Eq. 1: flatten([z_1; 1] (x) [z_2; 1] (x) ...) -> (B, prod (d_m + 1))."""
  out = None
  for z in zs:
    z1 = jnp.concatenate([z, jnp.ones(z.shape[:-1] + (1,), z.dtype)], axis=-1)
    out = z1 if out is None else (out[:, :, None] * z1[:, None, :]).reshape(z.shape[0], -1)
  return out


class TFN(nn.Module):
  net: ml_collections.ConfigDict
  info: DataInfo

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    net, mods = self.net, self.info.modalities
    uni = unimodal_embeddings(net, mods, batch, train)
    tensor = tensor_fusion([uni[m] for m in mods])
    h = Dropout(net.dropout_post, deterministic=not train)(tensor)
    h = nn.relu(nn.Dense(net.post_fusion, name="post_1")(h))
    fused = nn.relu(nn.Dense(net.post_fusion, name="post_2")(h))
    out = squash(nn.Dense(self.info.output_dim, name="out")(fused), net)
    return format_output(out, self.info.task), {"fused": fused, "unimodal": uni,
                                                "tensor": tensor}


def update_config(config: ml_collections.ConfigDict) -> None:
  """MDM paper App. A.1.2 training (AdamW, LR grid {2e-3, 1e-3, 5e-4, 1e-4}, selection on
  validation MAE); batch size 32 (TFN paper)."""
  config.optim.name = "adamw"
  config.optim.lr = 1e-3
  config.optim.weight_decay = 0.01
  config.batch_size = 32


SPEC = register_model(ModelSpec(
    name="tfn", build=lambda net, info: TFN(net, info), default_net=default_net,
    method="mdm", update_config=update_config, doc="Tensor Fusion Network (Zadeh et al. 2017)"))
