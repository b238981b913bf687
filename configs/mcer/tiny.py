"""A tiny MCER for smoke tests and notebooks on the synthetic data (all three tasks, one
gated-transformer layer, width 8). Most of its CPU time is compilation (about 50 s of a
2-minute run on a loaded 2-core CPU).

Measured: on the default synthetic data (3 distractors, noise 0.7) 12 epochs do NOT beat
the label-mean predictor (test MAE 1.066 vs 1.071). On the easier synthetic data of
tests/test_mcer.py (no distractors, noise 0.3) the same sizes learn (test MAE ~0.57 vs
1.11 for the M,S variant)."""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("mcer", "synthetic")
  c.epochs = 12
  c.batch_size = 16
  c.patience = 0
  c.optim.lr = 5e-3
  c.data.synthetic_train, c.data.synthetic_valid, c.data.synthetic_test = 256, 64, 64
  for k in ("text_dim", "audio_dim", "vision_dim", "uni_dim", "z_dim", "cross_dim", "head_dim"):
    c.net[k] = 8
  c.net.fusion_dim = 16
  c.net.cross_layers = 1
  c.net.cross_heads = 2
  c.net.dropout = 0.0
  c.net.lr_audio = 5e-3
  c.net.lr_vision = 5e-3
  return c
