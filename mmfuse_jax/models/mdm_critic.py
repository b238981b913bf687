"""MDM's statistic network T_theta (Colombo et al., EMNLP 2021, Table 4) and the net.mdm*
fields of the models that train with the MDM penalty (EF-LSTM, TFN, LMF, MFN).

The critic scores a fused representation; the bounds it feeds (Eq. 6-8) are
losses/dependency.py and the training procedure (Algorithm 1) is methods/mdm.py.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from mmfuse_jax.layers.dropout import Dropout


def add_mdm_defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The MDM fields of a model's `net` config (set with --net.mdm=kl etc.)."""
  c.mdm = "none"                  # none | kl (Eq. 6) | f (Eq. 7) | w (Eq. 8)
  c.mdm_lambda = 0.1              # lambda of Eq. 5 (the paper gives no value)
  c.mdm_unroll = 10               # critic updates per model update (App. A.1.2)
  c.mdm_input = "fused"           # 'fused' (Fig. 3) | 'unimodal' (see methods/mdm.py)
  c.mdm_critic_lr = 0.0           # 0: the model's optim.lr
  c.mdm_critic_weight_decay = 0.01  # AdamW (torch default)
  c.mdm_critic_dropout = 0.4      # Table 4
  c.mdm_critic_output = "sigmoid"  # Table 4; 'linear': MINE's unbounded critic
  c.mdm_gp = 10.0                 # gradient-penalty weight, Lipschitz constraint of Eq. 8
  c.mdm_ma_rate = 0.0             # > 0: MINE moving-average bias correction ('kl' only)
  c.mdm_w_log = False             # True: the printed Eq. 8 with log E_Q[T]
  return c


def table4_widths(d_in: int) -> tuple[int, ...]:
  """Hidden widths of Table 4 for an input of width d_in: d/2, d, d, d/4, d/4 (>= 1)."""
  return tuple(max(1, w) for w in (d_in // 2, d_in, d_in, d_in // 4, d_in // 4))


class StatisticNetwork(nn.Module):
  """T_theta of paper Table 4: Dense(d/2) -> Dense(d) -> Dense(d) -> Dense(d/4) ->
  Dense(d/4), each followed by LeakyReLU and Dropout(0.4), then Dense(1) and a sigmoid.

  output: 'sigmoid' (Table 4; T in (0, 1), which caps the DV estimate at 1 nat) or
  'linear' (MINE's unbounded critic). widths overrides the Table 4 widths.
  Returns (B,) scores.
  """
  dropout: float = 0.4
  output: str = "sigmoid"
  widths: Sequence[int] | None = None
  negative_slope: float = 0.01  # LeakyReLU slope (PyTorch's default, as in MINE's code)

  @nn.compact
  def __call__(self, z: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    widths = self.widths or table4_widths(z.shape[-1])
    h = z
    for i, w in enumerate(widths):
      h = nn.leaky_relu(nn.Dense(w, name=f"dense_{i}")(h), self.negative_slope)
      h = Dropout(self.dropout, deterministic=not train)(h)
    t = nn.Dense(1, name="out")(h)[:, 0]
    if self.output == "sigmoid":
      return nn.sigmoid(t)
    if self.output == "linear":
      return t
    raise ValueError(f"StatisticNetwork.output must be 'sigmoid' or 'linear', got {self.output!r}")
