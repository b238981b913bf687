"""torch layer weights (numpy arrays) -> flax parameter dicts."""

from __future__ import annotations

import numpy as np


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
