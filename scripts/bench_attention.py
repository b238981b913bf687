"""Attention paths of layers/attention.py side by side, forward + backward, in one process.

    python scripts/bench_attention.py                      # MulT's long blocks, batch 24
    python scripts/bench_attention.py --shapes=24x500x375,24x500x500 --heads=5 --head_dim=6

For each shape (batch x T_q x T_k) it times `jax.value_and_grad` of sum(out ** 2) with
respect to q, k and v, jitted, for the paths `explicit` (scores and probabilities
materialised), `xla` (`jax.nn.dot_product_attention`'s XLA implementation) and `chunked`
(online softmax over key chunks), each plain and under `jax.checkpoint` (what
`remat_attention` does to a layer), with a padding mask whose valid lengths are drawn
between T_k / 2 and T_k. Checks that the three paths agree, prints median milliseconds and
each path's time relative to `explicit`, and writes them with --json: the measurement for
`choose_implementation`'s choice of path on a backend (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_dropout import median_time  # noqa: E402  (scripts/ is not a package)

from mmfuse_jax.layers.attention import (  # noqa: E402
    chunked_attention, explicit_attention, fused_attention)

PATHS = {
    "explicit": lambda q, k, v, mask: explicit_attention(q, k, v, mask)[0],
    "xla": lambda q, k, v, mask: fused_attention(q, k, v, mask, "xla"),
    "chunked": lambda q, k, v, mask: chunked_attention(q, k, v, mask),
}


def inputs(batch: int, len_q: int, len_k: int, heads: int, head_dim: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  normal = lambda t: jnp.asarray(rng.normal(size=(batch, t, heads, head_dim)), jnp.float32)  # noqa: E731
  lengths = rng.integers(max(1, len_k // 2), len_k + 1, size=batch)
  mask = jnp.asarray(np.arange(len_k)[None] < lengths[:, None])[:, None, None, :]
  return normal(len_q), normal(len_k), normal(len_k), mask


def time_path(fn, q, k, v, mask, *, remat: bool, repeats: int) -> tuple[float, jnp.ndarray]:
  """(median seconds of one jitted forward + backward, the output)."""
  attend = jax.checkpoint(fn) if remat else fn
  grad = jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(attend(q, k, v, mask) ** 2),
                                    argnums=(0, 1, 2)))
  return median_time(grad, q, k, v, repeats=repeats), jax.jit(fn)(q, k, v, mask)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--shapes", default="24x500x375,24x500x500",
                 help="comma list of BATCHxT_QxT_K")
  p.add_argument("--heads", type=int, default=5)
  p.add_argument("--head_dim", type=int, default=6)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--json", default="")
  args = p.parse_args(argv)
  rows = []
  print(f"backend {jax.default_backend()}, heads {args.heads}, head width {args.head_dim}")
  print(f"{'shape':>14s} {'path':>9s} {'remat':>6s} {'ms':>9s} {'vs explicit':>12s}")
  for shape in (s.strip() for s in args.shapes.split(",") if s.strip()):
    batch, len_q, len_k = (int(x) for x in shape.lower().split("x"))
    q, k, v, mask = inputs(batch, len_q, len_k, args.heads, args.head_dim)
    for remat in (False, True):
      base, reference = None, None
      for name, fn in PATHS.items():
        seconds, out = time_path(fn, q, k, v, mask, remat=remat, repeats=args.repeats)
        if reference is None:
          reference, base = out, seconds
        err = float(jnp.max(jnp.abs(out - reference)))
        if err > 1e-4:
          raise SystemExit(f"{name} differs from explicit by {err:.2e} at {shape}")
        rows.append({"shape": shape, "path": name, "remat": remat, "ms": 1e3 * seconds,
                     "vs_explicit": seconds / base, "max_abs_diff": err})
        print(f"{shape:>14s} {name:>9s} {str(remat):>6s} {1e3 * seconds:9.1f} "
              f"{seconds / base:11.2f}x", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"backend": jax.default_backend(), "heads": args.heads,
                 "head_dim": args.head_dim, "rows": rows}, f, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
