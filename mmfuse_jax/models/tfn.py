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
import ml_collections

from mmfuse_jax.layers.dropout import Dropout
from mmfuse_jax.layers.fusion import tensor_fusion
from mmfuse_jax.layers.recurrent import MaskedLSTM
from mmfuse_jax.layers.transformer import AttentionPool, masked_mean
from mmfuse_jax.models.base import DataInfo, ModelSpec, format_output, register_model
from mmfuse_jax.models.mdm_critic import add_mdm_defaults


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
  c.audio_vision_pool = "mean"  # audio/vision subnet input: 'mean' over steps (paper),
                                # 'attention' (learned weights; the synthetic preset) or
                                # 'lstm' (last LSTM state)
  return add_mdm_defaults(c)


class SubNet(nn.Module):
  """Pooled sequence -> Dropout -> 3 x (Dense -> ReLU) (TFN's audio/visual subnet).

  pool 'mean': the mean over valid steps (the paper); 'attention': a learned softmax
  weighting of the steps (layers/transformer.AttentionPool); 'lstm': the last state of an
  LSTM of width `hidden`. The last two are for sequences whose information sits at a few
  steps, which a mean dilutes."""
  hidden: int
  dropout: float
  pool: str = "mean"

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    if self.pool == "lstm":
      _, h = MaskedLSTM(self.hidden, bidirectional=False, name="lstm")(x, mask, train=train)
    elif self.pool == "attention":
      h = AttentionPool(name="pool")(x, mask)
    else:
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
      out[m] = SubNet(net[f"{m}_hidden"], net[f"dropout_{m}"], net.audio_vision_pool,
                      name=f"{m}_subnet")(x, mask, train=train)
  return out


def squash(out, net):
  if net.output_range > 0:
    return net.output_range * nn.sigmoid(out) - net.output_range / 2.0
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


def small_recurrent_setting(config: ml_collections.ConfigDict) -> None:
  """What TFN and LMF need on the built-in synthetic data (docs/results.md): its audio and
  vision signals sit at one marked step, which the paper's mean over time dilutes (pooling
  over time barely beats the label mean there), so the subnetworks read a learned attention
  pool; a small text LSTM (32, embedding 16) and 4x the training sequences (same test split),
  because the paper-sized networks memorise the 1200 noisy training sequences (LMF: train
  L1 0.50 against validation MAE 1.04); LR 3e-3, 20 epochs."""
  config.data.synthetic_train = 4800
  config.epochs = 20
  config.optim.lr = 3e-3
  config.net.audio_vision_pool = "attention"
  config.net.text_hidden = 32
  config.net.text_out = 16


def synthetic_setting(config: ml_collections.ConfigDict) -> None:
  """`small_recurrent_setting` with audio/vision subnetworks of 16 and a post-fusion width
  of 32 (the paper's 32 / 128 make a 140k-wide tensor layer, slow on a CPU)."""
  small_recurrent_setting(config)
  config.net.audio_hidden = 16
  config.net.vision_hidden = 16
  config.net.post_fusion = 32


SPEC = register_model(ModelSpec(
    name="tfn", build=lambda net, info: TFN(net, info), default_net=default_net,
    method="mdm", update_config=update_config, synthetic_setting=synthetic_setting, doc="Tensor Fusion Network (Zadeh et al. 2017)"))
