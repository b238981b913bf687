"""A tiny MulT for smoke tests and notebooks: trains in seconds on the synthetic default."""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("mult", "synthetic")
  c.epochs = 3
  c.data.synthetic_train, c.data.synthetic_valid, c.data.synthetic_test = 256, 64, 64
  c.net.d_model = 16
  c.net.num_heads = 2
  c.net.num_layers = 1
  c.optim.lr = 1e-2
  c.optim.schedule = "constant"
  return c
