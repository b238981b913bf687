"""A tiny ARGF for smoke tests and notebooks: synthetic data, small widths, no UCLN
(the synthetic default has sequences, not utterances; see tests/test_argf.py for UCLN on
utterance data with video context)."""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("argf", "synthetic")
  c.epochs = 3
  c.data.synthetic_train, c.data.synthetic_valid, c.data.synthetic_test = 256, 64, 64
  c.net.ucln = False
  c.net.hidden = 8
  c.net.encoder_expand = 2
  c.net.decoder_widths = (16, 8)
  c.net.classifier_hidden = 8
  c.net.discriminator_widths = (8, 4)
  c.net.gfn_hidden = 8
  c.net.decision_hidden = 8
  c.optim.lr = 3e-3
  return c
