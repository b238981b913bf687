"""ARGF on utterance-level CMU-MOSI as regression of the sentiment score in [-3, 3]
(not in the paper; the fusion network's MSE and Eq. 8 on the scalar target). Selection
on validation MAE; metrics are the MOSI ones (Acc-2 has0/non0, Acc-7, MAE, Corr)."""

from mmfuse_jax.config import get_config as library_config


def get_config():
  c = library_config("argf", "mosi_utterance")
  c.data.split = "poria"
  c.data.context = True
  c.data.valid_fraction = 0.2
  c.epochs = 50
  c.batch_size = 32
  c.net.target_modality = "text"
  return c
