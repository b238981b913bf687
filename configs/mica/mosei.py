"""MICA on CMU-MOSEI, unaligned (Liang et al. 2021, Table 1, CMU-MOSEI column)."""

from mmfuse_jax import config as config_lib


def get_config():
  c = config_lib.get_config("mica", "mosei")
  # The public feature files hold -inf in some audio steps (the reference loaders set
  # them to 0); replace NaN/inf by 0 and log the count instead of stopping.
  c.data.nan_policy = "zero"
  c.optim.name = "adam"
  c.batch_size = 64
  c.epochs = 120
  c.optim.lr = 5e-4
  c.net.d_model = 40
  c.net.num_heads = 10
  c.net.tau = 0.3
  c.net.alpha = 0.8
  c.net.beta = 0.5
  c.net.proj_kernel_text = 3
  c.net.proj_kernel_vision = 3
  c.net.proj_kernel_audio = 3
  c.net.pe_distance = "squared"  # Eq. 2 as printed: squared distances of raw q, k,
  c.net.pe_normalize = "sum"     # summed over the selected pairs
  c.net.num_layers = 6
  return c
