"""python -m mmfuse_jax.export --workdir=DIR --out=PATH [--platforms=cpu,cuda,tpu]

Writes the validation-selected model of a training workdir to PATH:
  params.msgpack      the variables (flax.serialization msgpack; portable)
  orbax/              the same variables as an Orbax checkpoint
  inference.jax.bin   a serialized inference function (jax.export / StableHLO) taking raw
                      features and masks, with the train-fitted standardisation inside and a
                      symbolic batch size, lowered for every platform in --platforms
                      (default cpu,cuda,tpu: made on a CPU, it runs on a GPU or TPU too)
  metadata.json       modalities, feature dims, time lengths, task, standardisation stats
Load it without the training code with `mmfuse_jax.inference.load_exported(PATH)`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax import export

from mmfuse_jax.catalog import MODELS
from mmfuse_jax.cli import parse_flags, run_main
from mmfuse_jax.data.core import Batch
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.models.base import DataInfo
from mmfuse_jax.training.checkpoint import Checkpoints
from mmfuse_jax.training.experiment import load_workdir_config

KNOWN = {"workdir": None, "out": None, "platforms": "", "help": None}
# Platforms an export is lowered for unless told otherwise (jax.export names).
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")


def _read_preprocessing(workdir: str) -> dict:
  path = os.path.join(workdir, "preprocessing.json")
  if not os.path.exists(path):
    raise ConfigError(f"{workdir} has no preprocessing.json (written when training starts)")
  with open(path) as f:
    return json.load(f)


def inference_function(model, variables, pre: dict):
  """f(features, masks) -> predictions on raw features (standardised inside)."""
  stats = pre["standardize"]

  def fn(features, masks):
    feats = {}
    for m, x in features.items():
      if m in stats:
        x = (x - jnp.asarray(stats[m]["mean"], jnp.float32)) / jnp.asarray(stats[m]["std"],
                                                                           jnp.float32)
      feats[m] = jnp.where(masks[m][..., None], x, 0.0)
    b = next(iter(feats.values())).shape[0]
    batch = Batch(features=feats, masks=masks, labels=jnp.zeros((b,), jnp.float32),
                  weights=jnp.ones((b,), jnp.float32), index=jnp.zeros((b,), jnp.int32))
    pred, _ = model.apply(variables, batch, train=False)
    return pred
  return fn


def export_workdir(workdir: str, out: str, platforms: tuple[str, ...] = DEFAULT_PLATFORMS
                   ) -> dict:
  """Writes the workdir's selected model to `out` (module doc); the inference function is
  lowered for each of `platforms` (empty: DEFAULT_PLATFORMS)."""
  config = load_workdir_config(workdir)
  pre = _read_preprocessing(workdir)
  if pre.get("context"):
    raise ConfigError("exporting models trained with --data.context=true is not supported yet")
  d = pre["data_info"]
  info = DataInfo(tuple(d["modalities"]), d["feature_dims"], d["max_lengths"], d["task"],
                  d["num_classes"])
  model = MODELS.get(config.model).build(config.net, info)
  ckpt = Checkpoints(workdir)
  restored = ckpt.restore_best_untyped()
  ckpt.close()
  if restored is None:
    raise ConfigError(f"{workdir} has no selected checkpoint (checkpoints/best is empty)")
  state, ckpt_meta = restored
  variables = {"params": state["params"], **state.get("model_state", {})}
  variables = jax.tree_util.tree_map(np.asarray, variables)

  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "params.msgpack"), "wb") as f:
    f.write(flax.serialization.msgpack_serialize(variables))
  orbax_dir = os.path.abspath(os.path.join(out, "orbax"))
  if os.path.exists(orbax_dir):
    shutil.rmtree(orbax_dir)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(orbax_dir, variables)
  checkpointer.wait_until_finished()
  checkpointer.close()

  fn = inference_function(model, variables, pre)
  (b,) = export.symbolic_shape("b")
  spec_f = {m: jax.ShapeDtypeStruct((b, info.max_lengths[m], info.feature_dims[m]),
                                    np.float32) for m in info.modalities}
  spec_m = {m: jax.ShapeDtypeStruct((b, info.max_lengths[m]), np.bool_)
            for m in info.modalities}
  exported = export.export(jax.jit(fn), platforms=list(platforms or DEFAULT_PLATFORMS))(
      spec_f, spec_m)
  with open(os.path.join(out, "inference.jax.bin"), "wb") as f:
    f.write(exported.serialize())
  meta = {"model": config.model, "selected_epoch": ckpt_meta["epoch"],
          "modalities": list(info.modalities), "feature_dims": info.feature_dims,
          "max_lengths": info.max_lengths, "task": info.task,
          "num_classes": info.num_classes, "platforms": list(exported.platforms),
          "standardize": pre["standardize"]}
  with open(os.path.join(out, "metadata.json"), "w") as f:
    json.dump(meta, f, indent=2)
  return meta


def _main(argv: list[str]) -> int:
  flags, extra = parse_flags(argv, KNOWN)
  if flags["help"]:
    print(__doc__.strip())
    return 0
  if extra:
    raise ConfigError(f"unknown options {sorted(extra)}; valid: {sorted(KNOWN)}")
  if not flags["workdir"] or not flags["out"]:
    raise ConfigError("--workdir and --out are required")
  platforms = tuple(p for p in flags["platforms"].split(",") if p)
  meta = export_workdir(flags["workdir"], flags["out"], platforms)
  print(f"exported {meta['model']} (epoch {meta['selected_epoch']}) for "
        f"{','.join(meta['platforms'])} to {flags['out']}")
  return 0


def main(argv: list[str] | None = None) -> int:
  return run_main(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
