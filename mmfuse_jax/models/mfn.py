"""MFN: Memory Fusion Network (Zadeh et al., AAAI 2018).

Three components, run over a common time grid (MFN needs time-aligned views; unaligned
data are resampled onto the text grid by `ef_lstm.align_modalities`, see that module):

* System of LSTMs: one LSTM cell per modality reads its own features (Sec. 3.1).
* Delta-memory Attention Network (DMAN, Sec. 3.2): c^[t-1,t] = the cell memories of all
  LSTMs at t-1 and t concatenated (window 2); a = softmax(D_a(c^[t-1,t])) over the
  dimensions; c_hat = a * c^[t-1,t].
* Multi-view Gated Memory (Sec. 3.3): u_hat = tanh(D_u(c_hat)), gates
  gamma_1 = sigmoid(D_g1([c_hat; u_{t-1}])), gamma_2 = sigmoid(D_g2([c_hat; u_{t-1}])),
  u_t = gamma_1 * u_{t-1} + gamma_2 * u_hat. (The gates also see u_{t-1} as in the public
  MFN code; the paper's equations write D_g(c_hat).)
* Output: [h_T^l; h_T^a; h_T^v; u_T] -> Dense -> ReLU (= aux['fused'], Z_avl) ->
  Dropout -> Dense(out). Each D_* is Dense -> ReLU -> Dropout -> Dense.

Padding: every state stops changing after the last valid grid step (the final states are
those of the last valid step), so padding does not change the output.
Sizes: MMSA-like MOSI setting (hidden text 128, audio 16, vision 64, memory 128).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmfuse_jax.layers.dropout import Dropout
from mmfuse_jax.models.base import DataInfo, ModelSpec, format_output, register_model
from mmfuse_jax.models.ef_lstm import align_modalities, reference_modality
from mmfuse_jax.models.mdm_critic import add_mdm_defaults


def default_net() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.text_hidden = 128
  c.audio_hidden = 16
  c.vision_hidden = 64
  c.mem = 128               # multi-view gated memory width
  c.attn_hidden = 128       # D_a hidden (NN1)
  c.mem_hidden = 64         # D_u hidden (NN2)
  c.gamma_hidden = 64       # D_gamma1, D_gamma2 hidden
  c.out_hidden = 64
  c.dropout_attn = 0.2
  c.dropout_mem = 0.2
  c.dropout_gamma = 0.2
  c.dropout_out = 0.2
  c.align_to = "text"       # reference modality of the common time grid
  return add_mdm_defaults(c)


class _MLP(nn.Module):
  """Dense -> ReLU -> Dropout -> Dense (MFN's D_a, D_u, D_gamma, output network)."""
  hidden: int
  out: int
  dropout: float
  train: bool = False

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(self.hidden, name="fc1")(x))
    h = Dropout(self.dropout, deterministic=not self.train)(h)
    return nn.Dense(self.out, name="fc2")(h)


class MFNCell(nn.Module):
  """One MFN time step: LSTMs, DMAN and gated memory; a step with valid=False keeps the
  carry unchanged."""
  net: ml_collections.ConfigDict
  mods: tuple[str, ...]
  train: bool = False

  @nn.compact
  def __call__(self, carry, inputs):
    net = self.net
    lstm_states, mem = carry
    xs, valid = inputs
    new_states = {}
    for m in self.mods:
      new_states[m], _ = nn.OptimizedLSTMCell(net[f"{m}_hidden"], name=f"lstm_{m}")(
          lstm_states[m], xs[m])
    # carry of flax LSTM cells is (c, h): the memories are the c's
    c_star = jnp.concatenate([lstm_states[m][0] for m in self.mods]
                             + [new_states[m][0] for m in self.mods], axis=-1)
    attn = jax.nn.softmax(_MLP(net.attn_hidden, c_star.shape[-1], net.dropout_attn,
                               self.train, name="d_attn")(c_star), axis=-1)
    c_hat = attn * c_star
    u_hat = jnp.tanh(_MLP(net.mem_hidden, net.mem, net.dropout_mem, self.train,
                          name="d_mem")(c_hat))
    both = jnp.concatenate([c_hat, mem], axis=-1)
    g1 = nn.sigmoid(_MLP(net.gamma_hidden, net.mem, net.dropout_gamma, self.train,
                         name="d_gamma1")(both))
    g2 = nn.sigmoid(_MLP(net.gamma_hidden, net.mem, net.dropout_gamma, self.train,
                         name="d_gamma2")(both))
    new_mem = g1 * mem + g2 * u_hat
    keep = valid[:, None]
    new_states = jax.tree_util.tree_map(lambda n, o: jnp.where(keep, n, o), new_states,
                                        lstm_states)
    new_mem = jnp.where(keep, new_mem, mem)
    return (new_states, new_mem), attn


class MFN(nn.Module):
  net: ml_collections.ConfigDict
  info: DataInfo

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    net, mods = self.net, self.info.modalities
    ref = reference_modality(net, self.info)
    aligned, mask, _ = align_modalities(batch.features, batch.masks, ref,
                                        self.info.max_lengths[ref])
    b = mask.shape[0]
    dtype = aligned[mods[0]].dtype   # the compute dtype (bf16 under precision='bf16')
    zeros = lambda d: jnp.zeros((b, d), dtype)  # noqa: E731
    carry = ({m: (zeros(net[f"{m}_hidden"]), zeros(net[f"{m}_hidden"])) for m in mods},
             zeros(net.mem))
    scan = nn.scan(MFNCell, variable_broadcast="params",
                   split_rngs={"params": False, "dropout": True}, in_axes=1, out_axes=1)
    (states, mem), attn = scan(net, mods, train, name="mfn")(carry, (aligned, mask))
    hs = {m: states[m][1] for m in mods}
    final = jnp.concatenate([hs[m] for m in mods] + [mem], axis=-1)
    fused = nn.relu(nn.Dense(net.out_hidden, name="out_fc1")(final))
    h = Dropout(net.dropout_out, deterministic=not train)(fused)
    out = nn.Dense(self.info.output_dim, name="out_fc2")(h)
    return format_output(out, self.info.task), {"fused": fused, "unimodal": hs, "memory": mem,
                                                "attention": attn}


def update_config(config: ml_collections.ConfigDict) -> None:
  """MDM paper App. A.1.2 training (AdamW, LR grid, selection on validation MAE);
  batch size 32."""
  config.optim.name = "adamw"
  config.optim.lr = 1e-3
  config.optim.weight_decay = 0.01
  config.batch_size = 32


def synthetic_setting(config: ml_collections.ConfigDict) -> None:
  """The built-in synthetic data (docs/results.md): the paper-sized MFN memorises the 1200
  noisy training sequences (train L1 0.19 against validation MAE 1.04 after 40 epochs), so
  the preset uses widths of 32 (LSTMs 32 / 16 / 16, memory and gate networks 32), 8x the
  training sequences (same test split), LR 3e-3 and 10 epochs."""
  config.data.synthetic_train = 9600
  config.epochs = 10
  config.optim.lr = 3e-3
  n = config.net
  n.text_hidden, n.audio_hidden, n.vision_hidden = 32, 16, 16
  n.mem = n.attn_hidden = n.mem_hidden = n.gamma_hidden = n.out_hidden = 32


SPEC = register_model(ModelSpec(
    name="mfn", build=lambda net, info: MFN(net, info), default_net=default_net,
    method="mdm", update_config=update_config, synthetic_setting=synthetic_setting,
    doc="Memory Fusion Network (Zadeh et al. 2018)"))
