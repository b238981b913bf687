"""A tiny EF-LSTM + L_W run on the synthetic default: trains in seconds (smoke tests,
notebooks). Switch the penalty with --net.mdm=none|kl|f|w."""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("ef_lstm", "synthetic")
  c.epochs = 3
  c.batch_size = 32
  c.data.synthetic_train, c.data.synthetic_valid, c.data.synthetic_test = 256, 64, 64
  c.net.hidden = 16
  c.net.num_layers = 1
  c.net.dropout = 0.0
  c.net.mdm = "w"
  c.net.mdm_unroll = 2
  c.optim.lr = 5e-3
  return c
