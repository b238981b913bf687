"""Test set-up: 8 simulated CPU devices (multi-device tests pick them up explicitly;
everything else runs on one device so the suite stays fast on a 2-core machine)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The CLIs turn on a persistent compilation cache in ~/.cache by default; tests leave it off.
os.environ.setdefault("MMFUSE_COMPILE_CACHE", "none")

import pytest  # noqa: E402


def pytest_configure(config):
  import jax
  jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def workdir(tmp_path):
  return str(tmp_path / "run")
