"""MulT on CMU-MOSEI, unaligned, public code defaults (as configs/mult/mosi.py)."""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("mult", "mosei")
  c.epochs = 40
  return c
