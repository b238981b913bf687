"""RERD on the built-in synthetic default (the ablation table in docs/methods/rerd.md): the
model's synthetic preset (models/rerd.synthetic_setting: a narrow RERD of the paper's
structure, Adam 1e-2, 12 epochs), which `python -m mmfuse_jax.train --model=rerd` applies by
itself on this data; this file names it for the table scripts.

python -m mmfuse_jax.train --config=configs/rerd/synthetic.py [--net.use_msd=false]
"""

from mmfuse_jax.config import get_config as library_config


def get_config():
  return library_config("rerd", "synthetic")
