"""Matrix products of the losses in a low-precision compute dtype, accumulated in float32.

Under `precision='bf16'` the model's matmuls take bfloat16 operands; the losses receive its
outputs cast back to float32. MICA's alignment losses (Sec. 3.4) form distance matrices as
large as the attention scores (|q|^2 + |k|^2 - 2 q.k), so their products dominate the step
on a GPU or TPU when left in float32. `mixed_einsum` runs such a product with operands in
the compute dtype and float32 accumulation and output (`preferred_element_type`), in the
forward AND the backward pass: JAX's own transpose of a float32-output product would pair
the float32 cotangent with a bfloat16 operand, a mixed product that accelerators run in
float32. Here the backward casts the cotangent to the compute dtype too (the rounding every
bfloat16 layer's backward has), and accumulates in float32 again.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _operand_specs(spec: str) -> tuple[str, str, str]:
  inputs, out = spec.replace(" ", "").split("->")
  a, b = inputs.split(",")
  for name, own, other in (("first", a, b), ("second", b, a)):
    lone = set(own) - set(out) - set(other)
    if lone or len(set(own)) != len(own):
      raise ValueError(f"mixed_einsum({spec!r}): every index of the {name} operand must "
                       f"appear once and also in the other operand or the output")
  return a, b, out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def mixed_einsum(spec: str, a: jnp.ndarray, b: jnp.ndarray, dtype) -> jnp.ndarray:
  """einsum(spec, a, b) with both operands cast to `dtype` (e.g. bfloat16) and a float32
  result accumulated in float32; gradients the same way (the cotangent cast to `dtype`).

  spec: a two-operand einsum without traces or indices summed within one operand (each
  operand's index must appear in the other operand or the output), e.g. 'nd,md->nm'.
  Gradients come back in the operands' own dtypes.
  """
  _operand_specs(spec)
  return jnp.einsum(spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def _mixed_fwd(spec, a, b, dtype):
  a_low, b_low = a.astype(dtype), b.astype(dtype)
  out = jnp.einsum(spec, a_low, b_low, preferred_element_type=jnp.float32)
  # residuals in the compute dtype: half the memory of float32 copies
  return out, (a_low, b_low, jnp.zeros((0,), a.dtype), jnp.zeros((0,), b.dtype))


def _mixed_bwd(spec, dtype, residuals, g):
  a_low, b_low, a_proto, b_proto = residuals
  a_spec, b_spec, out_spec = _operand_specs(spec)
  g_low = g.astype(dtype)
  da = jnp.einsum(f"{out_spec},{b_spec}->{a_spec}", g_low, b_low,
                  preferred_element_type=jnp.float32)
  # (a, g), not (g, a): XLA CPU has no bf16 x bf16 -> f32 kernel for some operand orders
  # (e.g. 'bnhd,bhnm->bmhd' fails to run, 'bhnm,bnhd->bmhd' runs); tests/test_accel.py
  # runs every product MICA's losses use, forward and backward, on CPU.
  db = jnp.einsum(f"{a_spec},{out_spec}->{b_spec}", a_low, g_low,
                  preferred_element_type=jnp.float32)
  return da.astype(a_proto.dtype), db.astype(b_proto.dtype)


mixed_einsum.defvjp(_mixed_fwd, _mixed_bwd)


__all__ = ["mixed_einsum"]
