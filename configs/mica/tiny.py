"""A tiny MICA on the built-in synthetic data: seconds on a CPU (smoke tests, demos)."""

from mmfuse_jax import config as config_lib


def get_config():
  c = config_lib.get_config("mica", "synthetic")
  c.epochs = 3
  c.batch_size = 32
  c.progress = False
  c.optim.lr = 1e-2
  c.optim.schedule = "constant"
  c.data.synthetic_train = 256
  c.data.synthetic_valid = 64
  c.data.synthetic_test = 64
  c.net.d_model = 8
  c.net.num_heads = 2
  c.net.num_layers = 1
  c.net.memory_layers = 1
  c.net.mmd_max_elements = 128
  c.net.pe_distance = "cosine"   # the scale-free L_e of configs/mica/synthetic.py
  c.net.pe_normalize = "mean"
  for k in ("attn_dropout", "relu_dropout", "res_dropout", "embed_dropout"):
    c.net[k] = 0.0
  return c
