"""Sort-based vs bisection order statistics, side by side in one process.

The two places MICA needs order statistics (losses/order.py):
  median     the MMD median heuristic over all pairs of a pooled sample of n vectors:
             jnp.nanmedian of the masked (n, n) distance matrix vs order.masked_median
  threshold  the element-level selection gamma (top tau of every T_t x T_s attention
             matrix): a per-matrix sort vs order.kth_largest

  python scripts/bench_order_stats.py                 # n = 512, 1024; MOSEI-like matrices
  python scripts/bench_order_stats.py --n 256,512 --repeats 10 --json out.json

Both give the same values (checked here); the script prints the median time of each and
the ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.losses.mmd import squared_distances
from mmfuse_jax.losses.order import kth_largest, masked_median


def timed(fn, *args, repeats: int) -> tuple[float, np.ndarray]:
  out = jax.block_until_ready(fn(*args))  # compile
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), np.asarray(out)


def bench_median(n: int, repeats: int) -> dict:
  rng = np.random.default_rng(n)
  z = rng.normal(size=(n, 40)).astype(np.float32)
  valid = rng.random(n) > 0.1
  pair = valid[:, None] & valid[None, :] & ~np.eye(n, dtype=bool)
  d2 = squared_distances(z, z)
  sort_s, a = timed(jax.jit(lambda d, p: jnp.nanmedian(jnp.where(p, d, jnp.nan))), d2, pair,
                    repeats=repeats)
  bis_s, b = timed(jax.jit(masked_median), d2, pair, repeats=repeats)
  assert a == b, (a, b)
  return {"what": f"median of {int(pair.sum())} pairs (n={n})", "sort_ms": 1e3 * sort_s,
          "bisection_ms": 1e3 * bis_s, "ratio": sort_s / bis_s}


def bench_threshold(batch: int, heads: int, t_t: int, t_s: int, tau: float,
                    repeats: int) -> dict:
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(batch, heads, t_t, t_s)).astype(np.float32)
  probs = jax.nn.softmax(jnp.asarray(logits), -1).reshape(batch, heads, -1)
  valid = jnp.ones(probs.shape, bool)
  k = jnp.full((batch, heads), int(np.ceil(tau * t_t * t_s)), jnp.int32)
  sort_fn = jax.jit(lambda p, kk: jnp.take_along_axis(-jnp.sort(-p, -1), kk[..., None] - 1,
                                                      -1)[..., 0])
  sort_s, a = timed(sort_fn, probs, k, repeats=repeats)
  bis_s, b = timed(jax.jit(kth_largest), probs, valid, k, repeats=repeats)
  np.testing.assert_array_equal(a, b)
  return {"what": f"top-{tau} threshold of {batch}x{heads} matrices {t_t}x{t_s}",
          "sort_ms": 1e3 * sort_s, "bisection_ms": 1e3 * bis_s, "ratio": sort_s / bis_s}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--n", default="512,1024", help="pooled sample sizes for the median")
  p.add_argument("--matrix", default="8,10,500,500",
                 help="batch,heads,T_t,T_s of the attention matrices (MOSEI audio->vision)")
  p.add_argument("--tau", type=float, default=0.3)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  rows = [bench_median(int(n), args.repeats) for n in args.n.split(",") if n.strip()]
  b, h, tt, ts = (int(x) for x in args.matrix.split(","))
  rows.append(bench_threshold(b, h, tt, ts, args.tau, args.repeats))
  print(f"device: {jax.devices()[0]}")
  print(f"| what | sort (ms) | bisection (ms) | sort / bisection |\n|---|---|---|---|")
  for r in rows:
    print(f"| {r['what']} | {r['sort_ms']:.1f} | {r['bisection_ms']:.1f} | {r['ratio']:.2f} |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"device": str(jax.devices()[0]), "rows": rows}, f, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
