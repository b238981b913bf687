"""RERD on CH-SIMS (MMSA unaligned_39.pkl; paper Table IX, column "MOSEI / CH-SIMS").

Same settings as configs/rerd/mosei.py: latent 64, 4 distillation heads, 3 layers,
5 crossmodal heads, 3 layers, Adam with a cyclic LR 1e-3 .. 5e-3, batch 32, lambda 0.2,
out dropout 0.5.

python -m mmfuse_jax.train --config=configs/rerd/sims.py --data_dir=DIR_WITH_unaligned_39.pkl
"""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("rerd", "sims")
  # The public feature files hold -inf in some audio steps (the reference loaders set
  # them to 0); replace NaN/inf by 0 and log the count instead of stopping.
  c.data.nan_policy = "zero"
  c.net.latent_dim = 64
  c.net.distill_heads = 4
  c.net.distill_layers = 3
  c.net.fusion_heads = 5
  c.net.fusion_layers = 3
  c.net.msd_weight = 0.2
  c.net.out_dropout = 0.5
  c.batch_size = 32
  c.epochs = 50
  c.patience = 7
  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.schedule = "cyclic"
  c.optim.cyclic_max_lr = 5e-3
  c.optim.cyclic_half_period_epochs = 2.0
  return c
