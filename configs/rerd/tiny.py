"""A tiny RERD for smoke tests and notebooks: the synthetic preset
(models/rerd.synthetic_setting) on 256/64/64 synthetic samples, 12 short epochs (about a
minute on a CPU, mostly compilation)."""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("rerd", "synthetic")
  c.data.synthetic_train, c.data.synthetic_valid, c.data.synthetic_test = 256, 64, 64
  return c
