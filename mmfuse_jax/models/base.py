"""What every model shares: the registry entry and the task head sizes."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import ml_collections

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.registry import MODELS


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What a model may know about the data when it is built."""
  modalities: tuple[str, ...]
  feature_dims: dict[str, int]
  max_lengths: dict[str, int]
  task: str
  num_classes: int | None = None

  @property
  def output_dim(self) -> int:
    return output_dim(self.task, self.num_classes)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A registered model.

  build(net_config, data_info) -> flax Module whose __call__(batch, *, train) returns
  (prediction, aux). regularizer(aux, batch, config, rng) -> (scalar, metrics dict) is added
  to the task loss by the standard method. default_net() returns the model's hyper-parameters
  (config.net); update_config(config) may change other defaults (optimizer, epochs, method).

  input_kind: the data the model is built for: 'sequence' (time steps per modality) or
  'utterance' (one vector per utterance, utterances grouped into videos); it picks the
  built-in synthetic dataset used when no data is named. synthetic_setting(config), applied
  after update_config only on the built-in synthetic datasets, changes what the paper's
  settings need changed to learn that data in a few minutes on a CPU (config.preset records
  it; docs/results.md lists each model's).
  """
  name: str
  build: Callable[[ml_collections.ConfigDict, DataInfo], Any]
  default_net: Callable[[], ml_collections.ConfigDict]
  method: str = "standard"
  regularizer: Callable | None = None
  update_config: Callable[[ml_collections.ConfigDict], None] | None = None
  modalities: tuple[str, ...] = ("text", "audio", "vision")
  doc: str = ""
  input_kind: str = "sequence"
  synthetic_setting: Callable[[ml_collections.ConfigDict], None] | None = None
  min_modalities: int = 1
  modality_reason: str = ""


def check_model_modalities(spec: ModelSpec, requested: tuple[str, ...]) -> None:
  """A ConfigError naming the model and what it needs when `requested` cannot feed it.

  Checked before any data is read. `spec.modalities` are the ones the model can use;
  it needs at least `spec.min_modalities` of them (MulT and MICA fuse pairs of modalities:
  two or more; MCER all three). `spec.modality_reason` says why, in the message.
  """
  given = ",".join(requested) or "nothing"
  unknown = [m for m in requested if m not in spec.modalities]
  if unknown:
    raise ConfigError(f"model {spec.name!r} reads the modalities {', '.join(spec.modalities)}; "
                      f"--data.modalities={given} names {', '.join(unknown)}")
  if len(requested) < spec.min_modalities:
    need = ("all of " + ", ".join(spec.modalities)
            if spec.min_modalities >= len(spec.modalities)
            else f"at least {spec.min_modalities} modalities")
    why = f" ({spec.modality_reason})" if spec.modality_reason else ""
    raise ConfigError(f"model {spec.name!r} needs {need}{why}; got --data.modalities={given}")


INPUT_KINDS = ("sequence", "utterance")


def register_model(spec: ModelSpec) -> ModelSpec:
  if spec.input_kind not in INPUT_KINDS:
    raise ValueError(f"model {spec.name!r}: input_kind must be one of {INPUT_KINDS}, got "
                     f"{spec.input_kind!r}")
  return MODELS.register(spec.name)(spec)


def output_dim(task: str, num_classes: int | None) -> int:
  if task in ("regression", "sims"):
    return 1
  if task == "iemocap":
    return 8  # 4 emotions x 2 logits (MulT protocol)
  if task == "classification":
    if not num_classes:
      raise ValueError("classification needs num_classes")
    return num_classes
  raise ValueError(f"unknown task {task!r}")


def format_output(raw: jnp.ndarray, task: str) -> jnp.ndarray:
  """(B, output_dim) -> (B,) regression, (B, 4, 2) IEMOCAP logits or (B, C) class logits."""
  if task in ("regression", "sims"):
    return raw[:, 0]
  if task == "iemocap":
    return raw.reshape(raw.shape[0], 4, 2)
  return raw
