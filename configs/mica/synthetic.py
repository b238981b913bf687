"""MICA on the built-in synthetic default (the Table 5 ablation table in
docs/methods/mica.md): the model's synthetic preset (models/mica.synthetic_setting), which
`python -m mmfuse_jax.train --model=mica` applies by itself on this data; this file names it
for the table scripts.

A narrow, fast setting that learns this data in 12 epochs: d = 16, 2 heads, 2 crossmodal
layers (so that propagation across layers, Table 5's last row, has something to do),
3 self-attention layers per target, no dropout, Adam 1e-2 constant, batch 32, selection on
validation MAE. The alignment losses use the paper's alpha = 0.8, beta = 0.5, tau = 0.25;
each MMD subsamples 256 elements per side. L_e is NOT Eq. 2 as printed here but its
scale-free option: the squared distance of q, k scaled to a fixed norm (so 2 - 2 cos),
averaged over the selected pairs (`pe_distance='cosine'`, `pe_normalize='mean'`); the
evidence is in docs/methods/mica.md.

python -m mmfuse_jax.train --config=configs/mica/synthetic.py [--net.mmd=false --net.pe=false]
python scripts/run_table.py --table mica --config configs/mica/synthetic.py
"""

from mmfuse_jax import config as config_lib


def get_config():
  return config_lib.get_config("mica", "synthetic")
