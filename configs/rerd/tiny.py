"""A tiny RERD for smoke tests and notebooks: learns the synthetic task in 12 short epochs
(about a minute on a CPU, mostly compilation)."""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("rerd", "synthetic")
  c.epochs = 12
  c.batch_size = 32
  c.patience = 0
  c.optim.lr = 1e-2
  c.optim.schedule = "constant"
  c.data.synthetic_train, c.data.synthetic_valid, c.data.synthetic_test = 256, 64, 64
  c.net.latent_dim = 16
  c.net.distill_heads = 2
  c.net.distill_layers = 2
  c.net.distill_ff = 16
  c.net.out_dim = 8
  c.net.fusion_heads = 2
  c.net.fusion_layers = 1
  c.net.dropout = 0.0
  c.net.out_dropout = 0.0
  c.net.msd_weight = 0.1
  return c
