"""What the converters share: PyTorch layer tensors -> flax variables, and the bookkeeping
that says which tensors of an official state_dict found no counterpart.

A state_dict here is a plain dict {name: numpy array} (PyTorch names, PyTorch layouts); the
library never imports torch (scripts/convert_torch_checkpoint.py reads .pt files). Layouts:

  nn.Linear            weight (out, in), bias (out)   -> Dense kernel (in, out), bias (out)
  nn.Conv1d            weight (out, in, k)            -> Conv kernel (k, in, out)
  nn.LayerNorm         weight, bias (d)               -> LayerNorm scale, bias
  nn.BatchNorm1d       weight, bias, running_mean, running_var (d), num_batches_tracked
                                                      -> BatchNorm params scale, bias and
                                                         batch_stats mean, var
  fairseq MultiheadAttention  in_proj_weight (3d, d) = [W_q; W_k; W_v], in_proj_bias (3d),
                       out_proj (d, d)                -> our MultiHeadAttention: query / key /
                                                         value DenseGeneral kernels (d, H, d/H),
                                                         out kernel (H, d/H, d); heads split
                                                         the d outputs head-major, as
                                                         PyTorch's .view(T, B * H, d / H)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from mmfuse_jax.errors import ConfigError


class StateDict:
  """A state_dict that records which tensors were used; `take` returns float32 copies."""

  def __init__(self, tensors: dict[str, Any]):
    self.tensors = {k: np.asarray(v) for k, v in tensors.items()}
    self.used: set[str] = set()
    self.skipped: set[str] = set()

  def __contains__(self, name: str) -> bool:
    return name in self.tensors

  def has_prefix(self, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in self.tensors)

  def take(self, name: str) -> np.ndarray:
    if name not in self.tensors:
      near = sorted(k for k in self.tensors if k.rsplit(".", 1)[0] == name.rsplit(".", 1)[0])
      hint = f" (tensors of that module: {near})" if near else ""
      raise ConfigError(f"the state_dict has no tensor {name!r}{hint}")
    self.used.add(name)
    return np.array(self.tensors[name], dtype=np.float32)

  def skip(self, name: str) -> None:
    """Marks a tensor as having no counterpart by design (reported, not an error)."""
    self.used.add(name)
    self.skipped.add(name)

  def unmatched(self) -> list[str]:
    """Tensors not mapped: skipped ones and those no converter rule took."""
    return sorted((set(self.tensors) - self.used) | self.skipped)


def linear(sd: StateDict, prefix: str, bias: bool = True) -> dict:
  """nn.Linear `prefix` -> {'kernel', 'bias'} of nn.Dense."""
  out = {"kernel": sd.take(f"{prefix}.weight").T}
  if bias:
    out["bias"] = sd.take(f"{prefix}.bias")
  return out


def conv1d(sd: StateDict, prefix: str, bias: bool = False) -> dict:
  """nn.Conv1d `prefix` -> {'kernel' (k, in, out)[, 'bias']} of nn.Conv."""
  out = {"kernel": sd.take(f"{prefix}.weight").transpose(2, 1, 0)}
  if bias:
    out["bias"] = sd.take(f"{prefix}.bias")
  return out


def layer_norm(sd: StateDict, prefix: str) -> dict:
  """nn.LayerNorm `prefix` -> {'scale', 'bias'}."""
  return {"scale": sd.take(f"{prefix}.weight"), "bias": sd.take(f"{prefix}.bias")}


def batch_norm(sd: StateDict, prefix: str) -> tuple[dict, dict]:
  """nn.BatchNorm1d `prefix` -> (params {'scale', 'bias'}, batch_stats {'mean', 'var'}).
  num_batches_tracked has no counterpart (flax keeps no counter); it is marked skipped."""
  if f"{prefix}.num_batches_tracked" in sd:
    sd.skip(f"{prefix}.num_batches_tracked")
  return ({"scale": sd.take(f"{prefix}.weight"), "bias": sd.take(f"{prefix}.bias")},
          {"mean": sd.take(f"{prefix}.running_mean"), "var": sd.take(f"{prefix}.running_var")})


def multihead_attention(sd: StateDict, prefix: str, num_heads: int) -> dict:
  """fairseq-style MultiheadAttention (in_proj_weight/in_proj_bias + out_proj) -> our
  MultiHeadAttention's {'query', 'key', 'value', 'out'}."""
  w = sd.take(f"{prefix}.in_proj_weight")
  b = sd.take(f"{prefix}.in_proj_bias")
  d = w.shape[1]
  if w.shape[0] != 3 * d or d % num_heads:
    raise ConfigError(f"{prefix}.in_proj_weight has shape {w.shape}: expected (3d, d) with "
                      f"d divisible by {num_heads} heads")
  head = d // num_heads
  out = {}
  for i, name in enumerate(("query", "key", "value")):
    wi, bi = w[i * d:(i + 1) * d], b[i * d:(i + 1) * d]
    out[name] = {"kernel": wi.T.reshape(d, num_heads, head),
                 "bias": bi.reshape(num_heads, head)}
  wo = sd.take(f"{prefix}.out_proj.weight")
  out["out"] = {"kernel": wo.T.reshape(num_heads, head, d),
                "bias": sd.take(f"{prefix}.out_proj.bias")}
  return out


def stack_layers(layers: list[dict]) -> dict:
  """Per-layer trees -> one tree with a leading layer axis (nn.scan's parameter layout)."""
  return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *layers)


@dataclasses.dataclass
class Conversion:
  """A converted checkpoint: flax `variables` ({'params', ['batch_stats']}), the official
  tensors that found no counterpart {name: why}, our leaves the state_dict did not provide
  (kept from the template), and notes on settings that make the function differ."""
  variables: dict
  unmatched: dict[str, str]
  kept: list[str]
  notes: list[str]

  def report(self) -> str:
    lines = []
    if self.unmatched:
      lines.append(f"{len(self.unmatched)} official tensors without a counterpart here:")
      lines += [f"  {k}: {why}" for k, why in sorted(self.unmatched.items())]
    if self.kept:
      lines.append(f"{len(self.kept)} of our variables not in the state_dict (kept as "
                   f"initialised):")
      lines += [f"  {k}" for k in self.kept]
    lines += [f"note: {n}" for n in self.notes]
    return "\n".join(lines) if lines else "every tensor mapped, nothing left over"


def _paths(tree) -> dict[str, Any]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in flat}


def merge_into_template(template: dict, built: dict, *, allow_missing: bool = False
                        ) -> tuple[dict, list[str]]:
  """`built` (nested dicts of arrays) checked against `template` (our variables, arrays or
  ShapeDtypeStructs): every built leaf must exist in the template with the same shape.
  Template leaves absent from `built` are an error unless allow_missing, in which case
  they keep the template's values, zeros where it holds only shapes (their paths are
  returned as the second value). Returns (variables as float32 numpy arrays in the
  template's structure, kept leaf paths)."""
  want, have = _paths(template), _paths(built)
  extra = sorted(set(have) - set(want))
  if extra:
    raise ConfigError(f"converted variables {extra[:8]} do not exist in this model "
                      f"(its config builds a different structure)")
  bad = [f"{k}: official {np.shape(have[k])}, ours {tuple(want[k].shape)}"
         for k in have if tuple(np.shape(have[k])) != tuple(want[k].shape)]
  if bad:
    raise ConfigError("shape mismatch between the checkpoint and this model's config:\n  "
                      + "\n  ".join(bad[:12]))
  kept = sorted(set(want) - set(have))
  if kept and not allow_missing:
    raise ConfigError(f"the state_dict leaves {len(kept)} variables of this model unset: "
                      f"{kept[:8]}")

  def pick(path, leaf):
    key = "/".join(str(getattr(k, "key", k)) for k in path)
    if key in have:
      return np.asarray(have[key], np.float32)
    if isinstance(leaf, jax.ShapeDtypeStruct):
      return np.zeros(leaf.shape, leaf.dtype)
    return np.asarray(leaf)
  return jax.tree_util.tree_map_with_path(pick, template), kept


def finish(sd: StateDict, template: dict, built: dict, notes: list[str],
           reasons: Callable[[str], str], *, allow_missing: bool = False) -> Conversion:
  """Merges `built` into the template and explains every unused tensor with `reasons`."""
  variables, kept = merge_into_template(template, built, allow_missing=allow_missing)
  unmatched = {k: reasons(k) for k in sd.unmatched()}
  return Conversion(variables, unmatched, kept, notes)


def set_path(tree: dict, path: str, value) -> None:
  """tree['a']['b']... = value for path 'a/b/...' (creating dicts)."""
  parts = path.split("/")
  for p in parts[:-1]:
    tree = tree.setdefault(p, {})
  tree[parts[-1]] = value


# Raw layer conversions (arrays in, flax parameter dicts out), used by convert/rerd.py.
def torch_linear(weight: np.ndarray, bias: np.ndarray | None = None) -> dict:
  """nn.Linear (out, in) weight -> nn.Dense {'kernel': (in, out), 'bias': (out,)}."""
  out = {"kernel": np.asarray(weight, np.float32).T}
  if bias is not None:
    out["bias"] = np.asarray(bias, np.float32)
  return out


def torch_conv1d(weight: np.ndarray, bias: np.ndarray | None = None) -> dict:
  """nn.Conv1d (out, in, k) weight -> nn.Conv {'kernel': (k, in, out), 'bias': (out,)}
  (both are cross-correlations; padding is the layer's business)."""
  out = {"kernel": np.asarray(weight, np.float32).transpose(2, 1, 0)}
  if bias is not None:
    out["bias"] = np.asarray(bias, np.float32)
  return out


def torch_layernorm(weight: np.ndarray, bias: np.ndarray) -> dict:
  """nn.LayerNorm / the affine part of nn.BatchNorm1d -> {'scale', 'bias'}."""
  return {"scale": np.asarray(weight, np.float32), "bias": np.asarray(bias, np.float32)}
