"""Checkpoint directories go through etils.epath: URLs kept, local paths made absolute."""

import os

from mmfuse_jax.training.checkpoint import checkpoint_dir


def test_checkpoint_dir_keeps_urls_and_absolutises_local_paths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  url = checkpoint_dir("gs://bucket/run", "checkpoints", "latest")
  assert str(url) == "gs://bucket/run/checkpoints/latest"
  local = checkpoint_dir("run", "checkpoints", "best")
  assert str(local) == os.path.join(os.path.realpath(str(tmp_path)), "run", "checkpoints", "best") \
      or str(local) == os.path.join(str(tmp_path), "run", "checkpoints", "best")
