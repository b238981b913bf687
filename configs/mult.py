"""MulT (Tsai et al., ACL 2019) settings: `--config=configs/mult.py:SETTING`.

  mosi, mosei   unaligned, with the public code's default settings (d = 30, 5 heads,
                5 layers, Adam 1e-3, batch 24, clip 0.8, plateau schedule with patience 20,
                40 epochs)
  iemocap       the same on IEMOCAP (4 emotions x 2 logits, MulT protocol), unaligned
  tiny          a tiny MulT for smoke tests and notebooks: trains in seconds on the
                synthetic default

python -m mmfuse_jax.train --config=configs/mult.py:mosi --data_dir=DIR_WITH_mosi_data_noalign.pkl
"""

import functools

from mmfuse_jax.config import get_config as library_config
from mmfuse_jax.config import select_setting


def public_code(dataset: str):
  """The public code's defaults (the library's MulT defaults) for 40 epochs."""
  c = library_config("mult", dataset)
  # The public feature files hold -inf in some audio steps (the reference loaders set
  # them to 0); replace NaN/inf by 0 and log the count instead of stopping.
  c.data.nan_policy = "zero"
  c.epochs = 40
  return c


def tiny():
  """A tiny MulT: trains in seconds on the synthetic default."""
  c = library_config("mult", "synthetic")
  c.epochs = 3
  c.data.synthetic_train, c.data.synthetic_valid, c.data.synthetic_test = 256, 64, 64
  c.net.d_model = 16
  c.net.num_heads = 2
  c.net.num_layers = 1
  c.optim.lr = 1e-2
  c.optim.schedule = "constant"
  return c


SETTINGS = {d: functools.partial(public_code, d) for d in ("mosi", "mosei", "iemocap")}
SETTINGS["tiny"] = tiny


def get_config(arg=None):
  return select_setting(__file__, SETTINGS, arg)
