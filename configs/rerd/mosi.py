"""RERD on CMU-MOSI, unaligned (paper Table IX and appendix A).

Latent 64, 6 distillation heads, 3 distillation layers, 5 crossmodal heads, 3 crossmodal
layers, Adam 1e-3, batch 16, lambda 0.3, out dropout 0.5; 50 epochs, LR / 10 after 20
epochs, early stopping after 7 epochs without improvement (on the validation split here;
the paper watched the test accuracy).

python -m mmfuse_jax.train --config=configs/rerd/mosi.py --data_dir=DIR_WITH_mosi_data_noalign.pkl
"""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("rerd", "mosi")
  # The public feature files hold -inf in some audio steps (the reference loaders set
  # them to 0); replace NaN/inf by 0 and log the count instead of stopping.
  c.data.nan_policy = "zero"
  c.net.latent_dim = 64
  c.net.distill_heads = 6
  c.net.distill_layers = 3
  c.net.fusion_heads = 5
  c.net.fusion_layers = 3
  c.net.msd_weight = 0.3
  c.net.out_dropout = 0.5
  c.batch_size = 16
  c.epochs = 50
  c.patience = 7
  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.schedule = "step"
  c.optim.step_epochs = 20
  c.optim.step_factor = 0.1
  return c
