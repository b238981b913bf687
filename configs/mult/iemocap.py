"""MulT on IEMOCAP (4 emotions x 2 logits, MulT protocol), unaligned, public code defaults."""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("mult", "iemocap")
  c.epochs = 40
  return c
