"""MulT on CMU-MOSI, unaligned, with the public code's default settings (d = 30, 5 heads,
5 layers, Adam 1e-3, batch 24, clip 0.8, plateau schedule with patience 20, 40 epochs).

python -m mmfuse_jax.train --config=configs/mult/mosi.py --data_dir=DIR_WITH_mosi_data_noalign.pkl
"""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("mult", "mosi")
  # The public feature files hold -inf in some audio steps (the reference loaders set
  # them to 0); replace NaN/inf by 0 and log the count instead of stopping.
  c.data.nan_policy = "zero"
  c.epochs = 40
  return c
