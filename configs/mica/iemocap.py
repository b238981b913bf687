"""MICA on IEMOCAP (4 emotions, unaligned) (Liang et al. 2021, Table 1, IEMOCAP column).

The task is 'iemocap': (B, 4, 2) logits, cross-entropy averaged over the four emotions,
per-emotion accuracy / weighted F1 (training/metrics.py iemocap_metrics).
"""

from mmfuse_jax import config as config_lib


def get_config():
  c = config_lib.get_config("mica", "iemocap")
  # The public feature files hold -inf in some audio steps (the reference loaders set
  # them to 0); replace NaN/inf by 0 and log the count instead of stopping.
  c.data.nan_policy = "zero"
  c.optim.name = "adam"
  c.batch_size = 32
  c.epochs = 80
  c.optim.lr = 1e-3
  c.net.d_model = 40
  c.net.num_heads = 10
  c.net.tau = 0.25
  c.net.alpha = 0.7
  c.net.beta = 0.5
  c.net.proj_kernel_text = 3
  c.net.proj_kernel_vision = 3
  c.net.proj_kernel_audio = 5
  c.net.pe_distance = "squared"  # Eq. 2 as printed: squared distances of raw q, k,
  c.net.pe_normalize = "sum"     # summed over the selected pairs
  c.net.num_layers = 4
  return c
