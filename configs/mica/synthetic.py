"""MICA on the built-in synthetic default (the Table 5 ablation table in
docs/methods/mica.md).

MulT-sized (d = 30, 5 heads, 3 crossmodal layers: the MulT default in this library is
d = 30 / 5 heads), batch 32, Adam 1e-3, 12 epochs (the library's quick default), selection
on validation MAE. The alignment losses use the paper's alpha = 0.8, beta = 0.5,
tau = 0.25; each MMD subsamples 256 elements per side.

python -m mmfuse_jax.train --config=configs/mica/synthetic.py [--net.mmd=false --net.pe=false]
"""

from mmfuse_jax import config as config_lib


def get_config():
  c = config_lib.get_config("mica", "synthetic")
  c.epochs = 12
  c.batch_size = 32
  c.patience = 0
  c.optim.schedule = "constant"
  c.net.d_model = 30
  c.net.num_heads = 5
  c.net.num_layers = 3
  c.net.mmd_max_elements = 256
  return c
