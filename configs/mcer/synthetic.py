"""MCER on the built-in synthetic default (the Table IV ablation table in
docs/methods/mcer.md): the model's synthetic preset (models/mcer.synthetic_setting: attention
pooling of the text features, the printed bottleneck weights, 4800 training sequences, 12
epochs without early stopping), which `python -m mmfuse_jax.train --model=mcer` applies by
itself on this data; selection on validation MAE.

python -m mmfuse_jax.train --config=configs/mcer/synthetic.py [--net.alpha=0 ...]
python scripts/run_table.py --table mcer --config configs/mcer/synthetic.py
"""

from mmfuse_jax.config import get_config as library_config


def get_config():
  return library_config("mcer", "synthetic")
