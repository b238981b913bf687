"""MCER on the built-in synthetic default (the Table IV ablation table in
docs/methods/mcer.md): the library's MCER defaults (Table III MOSI learning rates and loss
weights, feature-input text encoder), 12 epochs (the library's quick default) without
early stopping; selection on validation MAE.

python -m mmfuse_jax.train --config=configs/mcer/synthetic.py [--net.alpha=0 ...]
python scripts/run_table.py --table mcer --config configs/mcer/synthetic.py
"""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("mcer", "synthetic")
  c.epochs = 12
  c.patience = 0
  return c
