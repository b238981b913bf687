"""MulT on IEMOCAP (4 emotions x 2 logits, MulT protocol), unaligned, public code defaults."""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("mult", "iemocap")
  # The public feature files hold -inf in some audio steps (the reference loaders set
  # them to 0); replace NaN/inf by 0 and log the count instead of stopping.
  c.data.nan_policy = "zero"
  c.epochs = 40
  return c
