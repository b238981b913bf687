"""Device mesh and shardings: data parallel over the 'data' axis, params replicated."""

from __future__ import annotations

import os

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from mmfuse_jax.errors import ConfigError


def make_data_mesh(num_devices: int = 0) -> Mesh:
  """1-D mesh named 'data' over `num_devices` devices (0: all, over every host)."""
  devices = jax.devices()
  n = num_devices or len(devices)
  if n > len(devices):
    raise ConfigError(f"num_devices={n} but only {len(devices)} devices are visible "
                      f"({devices[0].platform}); simulate CPU devices with "
                      f"XLA_FLAGS=--xla_force_host_platform_device_count={n}")
  # Auto axes: the compiler propagates the batch sharding through the model (GSPMD).
  return jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,), devices=devices[:n])


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def maybe_initialize_distributed() -> None:
  """Multi-host: call jax.distributed.initialize() when the usual environment says so
  (JAX_COORDINATOR_ADDRESS, or a cluster JAX auto-detects such as TPU pods / SLURM)."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("MMFUSE_DISTRIBUTED"):
    jax.distributed.initialize()
