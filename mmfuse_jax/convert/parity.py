"""Our side of the parity check with the official PyTorch code (no torch here).

A parity *record* is a flat dict of numpy arrays, as scripts/torch_parity.py computes it
with the official model (tests/fixtures/parity_<model>.npz store them packed: save_record):

  meta            JSON string: model, net (our net overrides), info (DataInfo fields)
  sd/<name>       the official model's state_dict (random weights, buffers included)
  in/<name>       inputs, and the cotangents cot_<output> of the scalar loss
                  sum_o <output_o, cot_o> (eval mode)
  out/<name>      the official outputs
  grad/<name>     the official gradients of that loss w.r.t. its parameters (PyTorch names)

`check(record)` builds our model from meta, converts sd/ with CONVERTERS, runs the model's
RUNNERS entry on in/ and compares: outputs by max absolute difference (OUTPUT_ATOL),
gradients (ours rearranged into the official tensors' layout) by the max absolute
difference of each official parameter relative to its largest official gradient entry, or
to GRAD_FLOOR times the model's largest official gradient entry if that is larger
(GRAD_RTOL).
"""

from __future__ import annotations

import functools
import json
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax import config as config_lib
from mmfuse_jax.catalog import MODELS
from mmfuse_jax.convert import CONVERTERS
from mmfuse_jax.data.core import Batch
from mmfuse_jax.models.argf import ARGFModel
from mmfuse_jax.models.base import DataInfo

OUTPUT_ATOL = 1e-5    # float32 outputs
GRAD_RTOL = 1e-4      # per parameter: max |ours - theirs| / max(max |theirs|, floor)
GRAD_FLOOR = 1e-3     # floor = GRAD_FLOOR * the largest official gradient entry of the model:
                      # a gradient that is a near-cancelling sum of much larger terms (ARGF's
                      # attention bias: 3e-3 from terms of order 1) carries float32 rounding
                      # of those terms, not of itself


GROUPS = ("sd", "in", "out", "grad")


def save_record(path: str, record: dict) -> None:
  """Writes a record as a compressed .npz with one float32 array per group (sd, in, out,
  grad) and the names, shapes and dtypes in the meta JSON: hundreds of small arrays would
  cost more in archive headers than in data."""
  meta = json.loads(str(np.asarray(record["meta"])))
  meta["packed"], arrays = {}, {}
  for g in GROUPS:
    names = sorted(k for k in record if k.startswith(f"{g}/"))
    meta["packed"][g] = [[k.partition("/")[2], list(np.shape(record[k])),
                          str(np.asarray(record[k]).dtype)] for k in names]
    arrays[g] = (np.concatenate([np.asarray(record[k], np.float32).reshape(-1)
                                 for k in names]) if names else np.zeros(0, np.float32))
  np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)


def load_record(path: str) -> dict:
  """The flat record save_record wrote."""
  with np.load(path) as f:
    meta = json.loads(str(f["meta"]))
    packed = {g: f[g] for g in GROUPS}
  record = {}
  for g, index in meta.pop("packed").items():
    at = 0
    for name, shape, dtype in index:
      n = int(np.prod(shape))
      record[f"{g}/{name}"] = packed[g][at:at + n].reshape(shape).astype(dtype)
      at += n
  record["meta"] = np.array(json.dumps(meta))
  return record


def split_record(record: dict) -> tuple[dict, dict, dict, dict, dict]:
  """(meta, state_dict, inputs, outputs, grads) of a flat record."""
  groups = {g: {} for g in GROUPS}
  for k, v in record.items():
    head, _, name = k.partition("/")
    if head in groups:
      groups[head][name] = np.asarray(v)
  meta = json.loads(str(np.asarray(record["meta"])))
  return meta, groups["sd"], groups["in"], groups["out"], groups["grad"]


def build(meta: dict):
  """Our model for a record's meta: (module, DataInfo, net)."""
  c = config_lib.get_config(meta["model"])
  net = c.net
  net.update(_tuples(meta["net"]))
  i = meta["info"]
  info = DataInfo(tuple(i["modalities"]), i["feature_dims"], i["max_lengths"], i["task"],
                  i.get("num_classes"))
  return MODELS.get(meta["model"]).build(net, info), info, net


def _tuples(d: dict) -> dict:
  return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _batch(features: dict, masks: dict) -> Batch:
  b = next(iter(features.values())).shape[0]
  return Batch(features=features, masks=masks, labels=jnp.zeros((b,), jnp.float32),
               weights=jnp.ones((b,), jnp.float32), index=jnp.arange(b, dtype=jnp.int32))


def _loss(outputs: dict, inputs: dict):
  return sum(jnp.sum(outputs[k] * inputs[f"cot_{k}"]) for k in outputs
             if f"cot_{k}" in inputs)


def _mult_forward(model, params, inputs):
  """MulT on inputs['batch']: 'output' (B, out) and 'last_hs' (the fused last steps)."""
  pred, aux = model.apply({"params": params}, inputs["batch"], train=False)
  return {"output": pred.reshape(pred.shape[0], -1), "last_hs": aux["fused"]}


def _argf_forward(model, params, inputs):
  """ARGF parts, each on its own inputs (eval mode, BatchNorm running averages, which
  inputs['stats'] holds): encoders on x_{m}, decoders on z_dec, the discriminator on
  z_disc, the shared classifier on z_cls_{m}, the graph fusion network + decision network
  on z_fuse (B, 3, k) in the order audio, vision, text."""
  mods = model.info.modalities
  v = {"params": params, **inputs["stats"]}
  rows = jnp.ones((inputs["z_disc"].shape[0],), bool)
  out = {}
  enc = model.apply(v, {m: inputs[f"x_{m}"] for m in mods}, rows, method=ARGFModel.encode)
  out.update({f"enc_{m}": enc[m] for m in mods})
  dec = model.apply(v, {m: inputs["z_dec"] for m in mods}, rows, method=ARGFModel.decode)
  out.update({f"dec_{m}": dec[m] for m in mods})
  logit = model.apply(v, {"z": inputs["z_disc"]}, method=ARGFModel.discriminate)["z"]
  out["disc"] = jax.nn.sigmoid(logit)[:, None]
  cls = model.apply(v, {m: inputs[f"z_cls_{m}"] for m in mods}, rows,
                    method=ARGFModel.classify)
  out.update({f"cls_{m}": cls[m] for m in mods})
  z = {m: inputs["z_fuse"][:, i] for i, m in enumerate(mods)}
  logits, faux = model.apply(v, z, rows, method=ARGFModel.fuse)
  out["fusion_logits"] = logits
  out["fusion"] = jax.nn.softmax(logits, axis=-1)
  out["fusion_weights"] = jnp.concatenate([faux["unimodal"], faux["bimodal"],
                                           faux["trimodal"]], axis=-1)
  return out


def run_mult(model, variables, inputs, meta, compiled):
  """MulT on x_{text,audio,vision} (every step valid); with padded_x_* also
  'output_padded' (masks from the zero rows, as the data pipeline makes them)."""
  mods = model.info.modalities
  feats = {m: jnp.asarray(inputs[f"x_{m}"]) for m in mods}
  batch = _batch(feats, {m: jnp.ones(x.shape[:2], bool) for m, x in feats.items()})
  cots = {k: v for k, v in inputs.items() if k.startswith("cot_")}
  out, grads = compiled(variables["params"], {"batch": batch, **cots})
  if "padded_x_text" in inputs:   # the same compiled function (same shapes)
    padded = {m: jnp.asarray(inputs[f"padded_x_{m}"]) for m in mods}
    pb = _batch(padded, {m: jnp.any(x != 0, axis=-1) for m, x in padded.items()})
    out["output_padded"] = compiled(variables["params"], {"batch": pb, **cots})[0]["output"]
  return out, {"params": grads}


def run_argf(model, variables, inputs, meta, compiled):
  """ARGF parts (_argf_forward); outputs of the decoders in meta['decoders'] only."""
  stats = {k: v for k, v in variables.items() if k != "params"}
  out, grads = compiled(variables["params"], {**inputs, "stats": stats})
  out = {k: v for k, v in out.items()
         if not k.startswith("dec_") or k[4:] in meta["decoders"]}
  return out, {"params": grads}


# model name -> (forward(model, params, inputs) -> outputs, run(model, variables, inputs,
# meta, compiled) -> (outputs, grads)); compiled(params, inputs) -> (outputs, grads of
# sum_o <output_o, inputs['cot_' + o]>), one jit per model configuration.
RUNNERS: dict[str, tuple[Callable, Callable]] = {"mult": (_mult_forward, run_mult),
                                                  "argf": (_argf_forward, run_argf)}


@functools.lru_cache(maxsize=8)
def _prepared(meta_json: str):
  """(model, info, template (shapes), compiled) for a record's meta, built and compiled
  once per configuration."""
  meta = json.loads(meta_json)
  model, info, _ = build(meta)
  forward = RUNNERS[meta["model"]][0]

  def value_and_grads(params, inputs):
    def loss(p):
      out = forward(model, p, inputs)
      return _loss(out, inputs), out
    (_, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return out, grads
  return model, info, template_for(model, info), jax.jit(value_and_grads)


def _leaves(tree) -> dict[str, np.ndarray]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
          for path, leaf in flat}


def template_for(model, info: DataInfo) -> dict:
  """Our variables' shapes (jax.ShapeDtypeStructs; no computation) for a model and its
  data info."""
  feats = {m: jnp.zeros((2, info.max_lengths[m], info.feature_dims[m]), jnp.float32)
           for m in info.modalities}
  batch = _batch(feats, {m: jnp.ones(x.shape[:2], bool) for m, x in feats.items()})
  return jax.eval_shape(lambda k: model.init(k, batch, train=False), jax.random.PRNGKey(0))


def grads_in_official_layout(conv_fn, sd: dict, model, template: dict, grads: dict
                              ) -> dict[str, np.ndarray]:
  """Our parameter gradients rearranged into the official tensors' layout.

  The converters only move or copy entries (transposes, reshapes, slices), so converting a
  state_dict whose entries are their own global indices tells, for each of our parameter
  entries, which official entry it came from; the gradients of copies add up, as those of
  a shared tensor do. Entries of ours that no official entry provides (kept from the
  template, or constants such as an identity projection) are left out; official entries
  that none of ours came from stay 0."""
  first = 2   # indices start above the constants 0 and 1 a converter may write
  offsets, ids, total = {}, {}, 0
  for name, t in sd.items():
    if np.issubdtype(np.asarray(t).dtype, np.floating):
      offsets[name] = total
      ids[name] = np.arange(first + total, first + total + t.size,
                            dtype=np.float64).reshape(t.shape)
      total += t.size
  if first + total >= 2 ** 24:
    raise ValueError("state_dict too large for float32 entry indices")
  id_template = jax.tree_util.tree_map(lambda x: np.full(x.shape, -1.0, np.float32),
                                       template)
  id_params = _leaves(conv_fn({**sd, **ids}, model, id_template).variables["params"])
  flat = np.zeros(total, np.float32)
  for path, g in _leaves(grads["params"]).items():
    idx = id_params[path].reshape(-1)
    keep = idx >= first
    np.add.at(flat, idx[keep].astype(np.int64) - first,
              np.asarray(g, np.float32).reshape(-1)[keep])
  return {name: flat[off:off + sd[name].size].reshape(sd[name].shape)
          for name, off in offsets.items()}


def check(record: dict) -> dict:
  """Compares our converted model with a parity record. Returns {'output_diff': {name:
  max abs diff}, 'grad_rel': {official parameter: max |ours - theirs| / max |theirs|},
  'max_output_diff', 'max_grad_rel', 'ok', 'report' and 'unmatched' (the converter's)};
  official parameters without a counterpart here are not compared."""
  meta, sd, inputs, ref_out, ref_grads = split_record(record)
  model, info, template, compiled = _prepared(json.dumps(meta, sort_keys=True))
  convert = CONVERTERS[meta["model"]]
  conv = convert(sd, model, template)
  out, grads = RUNNERS[meta["model"]][1](model, conv.variables, inputs, meta, compiled)
  missing = sorted(set(ref_out) - set(out))
  if missing:
    raise ValueError(f"our runner gives no outputs {missing}")
  out_diff = {k: float(np.max(np.abs(np.asarray(out[k]) - ref_out[k]))) for k in ref_out}
  ours = grads_in_official_layout(convert, sd, model, template, grads)
  grad_rel = {}
  floor = GRAD_FLOOR * max(float(np.max(np.abs(g))) for g in ref_grads.values())
  for name, g in ref_grads.items():
    if name in conv.unmatched:   # e.g. graph11_new's unused `norm`
      continue
    scale = max(float(np.max(np.abs(g))), floor)
    diff = float(np.max(np.abs(ours[name] - g)))
    grad_rel[name] = diff / scale if scale > 0 else diff
  max_out = max(out_diff.values())
  max_grad = max(grad_rel.values())
  return {"output_diff": out_diff, "grad_rel": grad_rel, "max_output_diff": max_out,
          "max_grad_rel": max_grad, "report": conv.report(), "unmatched": conv.unmatched,
          "ok": max_out <= OUTPUT_ATOL and max_grad <= GRAD_RTOL}


__all__ = ["check", "build", "split_record", "save_record", "load_record", "template_for",
           "grads_in_official_layout", "RUNNERS", "OUTPUT_ATOL", "GRAD_RTOL", "GRAD_FLOOR"]
