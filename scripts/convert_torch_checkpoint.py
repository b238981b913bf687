"""Imports a checkpoint trained with the official PyTorch code into a workdir of ours.

    python scripts/convert_torch_checkpoint.py --model=mult --checkpoint=FILE.pt --out=DIR \\
        [--torch-ref=PATH] [--config=FILE] [--data_dir=PATH] [--any.config.field=VALUE]
    python -m mmfuse_jax.evaluate --workdir=DIR
    python -m mmfuse_jax.export --workdir=DIR --out=EXPORTED

FILE is what the official code saved: a whole pickled model (yaohungt/Multimodal-Transformer
saves `torch.save(model)`; unpickling it imports their classes, so --torch-ref must name
a checkout of their repository, as in scripts/torch_ref.py) or a state_dict. The model's
hyper-parameters come from the pickled model (heads, layers, width, attn_mask, dropouts);
for a bare state_dict the widths and layer counts come from the tensor shapes, and the
number of heads and the causal mask from --net.num_heads (default 5) and --net.causal
(default true, the public code's attn_mask default).

DIR becomes a workdir: config.json (our config with the settings that compute the official
function: net.position_offset=1, net.layer_norm_eps=1e-5, net.attend_padding=true, and
data.standardize=false since the public code feeds raw features), preprocessing.json, the
converted weights as the selected Orbax checkpoint, and imported.json (what was converted,
and the converter's report of official tensors without a counterpart). The data is loaded
as for training (--config, --dataset, --data_dir: the same data the official model was
trained on), so that evaluate can run; its feature widths must be the checkpoint's.
Training in DIR is not supported (it would start from scratch).

SAFETY: loading a pickled model runs code from the file; convert only files you trust.
"""

from __future__ import annotations

import json
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_ref  # noqa: E402  (scripts/ is not a package)

from mmfuse_jax import config as config_lib  # noqa: E402
from mmfuse_jax.cli import parse_flags, run_main  # noqa: E402
from mmfuse_jax.convert import CONVERTERS  # noqa: E402
from mmfuse_jax.convert.mult import PUBLIC  # noqa: E402
from mmfuse_jax.errors import ConfigError  # noqa: E402

KNOWN = {"model": None, "checkpoint": None, "out": None, "torch-ref": None, "config": None,
         "dataset": None, "data_dir": None, "help": None}
SUPPORTED = ("mult",)   # models whose official checkpoint is one module


def load_checkpoint(path: str, checkout: str | None):
  """(state_dict as numpy, hyper-parameters found in a pickled module or {}). torch is
  imported here only."""
  import torch
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception:   # a pickled module: their classes must be importable
    if checkout is None:
      raise ConfigError(f"{path} holds a pickled model, not a state_dict: pass "
                        f"--torch-ref=DIR (a checkout of the official code) to unpickle it")
    with torch_ref._imported_from(checkout):
      torch_ref._patch_positions()
      obj = torch.load(path, map_location="cpu", weights_only=False)
  hyper = {}
  if isinstance(obj, torch.nn.Module):
    hyper = {k: getattr(obj, k) for k in (
        "d_l", "num_heads", "layers", "attn_mask", "attn_dropout", "attn_dropout_a",
        "attn_dropout_v", "relu_dropout", "res_dropout", "out_dropout", "embed_dropout")
        if hasattr(obj, k)}
    obj = obj.state_dict()
  if not isinstance(obj, dict):
    raise ConfigError(f"{path} holds a {type(obj).__name__}, neither a model nor a "
                      f"state_dict")
  sd = {k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
        for k, v in obj.items()}
  return sd, hyper


def mult_net_from_checkpoint(net, sd: dict, hyper: dict) -> list[str]:
  """Sets our MulT net to the checkpoint's sizes and the public code's numerics; returns
  what was set, for imported.json."""
  d = sd["trans_l_with_a.layer_norm.weight"].shape[0]
  layers = len({k.split(".")[2] for k in sd if k.startswith("trans_l_with_a.layers.")})
  set_ = dict(PUBLIC, d_model=d, num_layers=layers)
  if not hyper:   # a bare state_dict: heads and mask as configured (the overrides)
    set_.update(num_heads=net.num_heads, causal=net.causal)
  else:
    set_.update(num_heads=hyper["num_heads"], causal=bool(hyper["attn_mask"]),
                attn_dropout=hyper["attn_dropout"], attn_dropout_audio=hyper["attn_dropout_a"],
                attn_dropout_vision=hyper["attn_dropout_v"], relu_dropout=hyper["relu_dropout"],
                res_dropout=hyper["res_dropout"], out_dropout=hyper["out_dropout"],
                embed_dropout=hyper["embed_dropout"])
  net.update(set_)
  return sorted(f"net.{k}={v!r}" for k, v in set_.items())


def write_workdir(config, state_dict: dict, out: str, source: str, set_fields: list[str]
                  ) -> dict:
  """Builds the experiment of `config` (loads its data), converts `state_dict` into its
  TrainState and writes the workdir `out` that mmfuse_jax.evaluate / .export read.
  Returns imported.json's content."""
  from mmfuse_jax.training.checkpoint import Checkpoints
  from mmfuse_jax.training.experiment import build_experiment, init_state
  from mmfuse_jax.training.results import save_preprocessing
  if os.path.exists(os.path.join(out, "config.json")):
    raise ConfigError(f"{out} already holds a workdir; choose a new --out")
  exp = build_experiment(config)
  state = init_state(exp)
  template = {"params": state.params, **state.model_state}
  conv = CONVERTERS[config.model](state_dict, exp.model, template)
  variables = jax.device_put(conv.variables, exp.state_sharding)
  state = state.replace(params=variables["params"],
                        model_state={k: v for k, v in variables.items() if k != "params"})
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "config.json"), "w") as f:
    f.write(config_lib.to_json(config))
  save_preprocessing(out, exp)
  ckpt = Checkpoints(out)
  ckpt.save_best(0, state, {"epoch": 0, "valid": {}, "imported": source})
  ckpt.close()
  info = {"source": os.path.abspath(source), "model": config.model, "set": set_fields,
          "unmatched": conv.unmatched, "kept": conv.kept, "notes": conv.notes}
  with open(os.path.join(out, "imported.json"), "w") as f:
    json.dump(info, f, indent=2)
  return info


def _main(argv: list[str]) -> int:
  flags, overrides = parse_flags(argv, KNOWN)
  if flags["help"]:
    print(__doc__.strip())
    return 0
  for key in ("model", "checkpoint", "out"):
    if not flags[key]:
      raise ConfigError(f"--{key} is required")
  if flags["model"] not in SUPPORTED:
    raise ConfigError(f"--model={flags['model']}: checkpoint import supports {SUPPORTED}")
  msg = torch_ref.torch_missing()
  if msg:
    raise ConfigError(msg)
  checkout = None
  if flags["torch-ref"]:
    checkout, msg = torch_ref.resolve(flags["model"], os.path.expanduser(flags["torch-ref"]))
    if checkout is None:
      raise ConfigError(msg)
  sd, hyper = load_checkpoint(flags["checkpoint"], checkout)
  if flags["config"]:
    config = config_lib.load_config_file(flags["config"])
  else:
    config = config_lib.get_config(flags["model"], flags["dataset"] or "synthetic")
  for key in ("dataset", "data_dir"):
    if flags[key] is not None:
      overrides[key] = flags[key]
  if "data.standardize" in overrides:
    raise ConfigError("the official model reads raw features: data.standardize is set to "
                      "false on import")
  if not hyper and "net.causal" not in overrides:
    overrides["net.causal"] = "true"   # the public code's attn_mask default
  config_lib.apply_overrides(config, overrides)
  if config.data.num_buckets != 1:
    raise ConfigError("net.attend_padding reads every step up to the data's full length, "
                      "as the official code: keep data.num_buckets=1")
  set_fields = mult_net_from_checkpoint(config.net, sd, hyper)
  config.data.standardize = False    # the official code feeds the raw features
  set_fields.append("data.standardize=False")
  config_lib.validate_config(config)
  info = write_workdir(config, sd, flags["out"], flags["checkpoint"], set_fields)
  print(f"imported {flags['checkpoint']} into {flags['out']}")
  print("set: " + ", ".join(info["set"]))
  for name, why in sorted(info["unmatched"].items()):
    print(f"  no counterpart: {name} ({why})")
  for note in info["notes"]:
    print(f"  note: {note}")
  print(f"next: python -m mmfuse_jax.evaluate --workdir={flags['out']}")
  return 0


def main(argv: list[str] | None = None) -> int:
  return run_main(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
