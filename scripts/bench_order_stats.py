"""Sort-based vs bisection order statistics, side by side in one process.

The two places MICA needs order statistics (losses/order.py):
  median     the MMD median heuristic over all pairs of a pooled sample of n vectors:
             jnp.nanmedian of the masked (n, n) distance matrix vs order.masked_median
  threshold  the element-level selection gamma (top tau of every T_t x T_s attention
             matrix): a per-matrix sort vs order.kth_largest

  python scripts/bench_order_stats.py                 # n = 512, 1024; MOSEI-like matrices
  python scripts/bench_order_stats.py --n 256,512 --repeats 10 --json out.json

Both give the same values (checked here); the script prints the median time of each and
the ratio. --ways also times the multi-way bisection (thresholds per pass + 1; binary = 2,
the CPU default, is the 'bisection' column): the same values in fewer passes over the data,
which pays on accelerators, where each pass re-reads the values from memory.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.losses.mmd import squared_distances
from mmfuse_jax.losses.order import bisection_passes, kth_largest, masked_median


def timed(fn, *args, repeats: int) -> tuple[float, np.ndarray]:
  out = jax.block_until_ready(fn(*args))  # compile
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), np.asarray(out)


def multiway_ms(fn, args, want, ways: list[int], repeats: int) -> dict:
  """{ways: median ms} of fn(*args, ways), each checked equal to `want`."""
  out = {}
  for w in ways:
    t, got = timed(jax.jit(fn, static_argnums=len(args)), *args, w, repeats=repeats)
    np.testing.assert_array_equal(got, want)
    out[w] = 1e3 * t
  return out


def bench_median(n: int, repeats: int, ways: list[int] = ()) -> dict:
  rng = np.random.default_rng(n)
  z = rng.normal(size=(n, 40)).astype(np.float32)
  valid = rng.random(n) > 0.1
  pair = valid[:, None] & valid[None, :] & ~np.eye(n, dtype=bool)
  d2 = squared_distances(z, z)
  sort_s, a = timed(jax.jit(lambda d, p: jnp.nanmedian(jnp.where(p, d, jnp.nan))), d2, pair,
                    repeats=repeats)
  bis_s, b = timed(jax.jit(masked_median, static_argnums=2), d2, pair, 2, repeats=repeats)
  assert a == b, (a, b)
  return {"what": f"median of {int(pair.sum())} pairs (n={n})", "sort_ms": 1e3 * sort_s,
          "bisection_ms": 1e3 * bis_s, "ratio": sort_s / bis_s,
          "ways_ms": multiway_ms(masked_median, (d2, pair), b, ways, repeats)}


def bench_threshold(batch: int, heads: int, t_t: int, t_s: int, tau: float,
                    repeats: int, ways: list[int] = ()) -> dict:
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(batch, heads, t_t, t_s)).astype(np.float32)
  probs = jax.nn.softmax(jnp.asarray(logits), -1).reshape(batch, heads, -1)
  valid = jnp.ones(probs.shape, bool)
  k = jnp.full((batch, heads), int(np.ceil(tau * t_t * t_s)), jnp.int32)
  sort_fn = jax.jit(lambda p, kk: jnp.take_along_axis(-jnp.sort(-p, -1), kk[..., None] - 1,
                                                      -1)[..., 0])
  sort_s, a = timed(sort_fn, probs, k, repeats=repeats)
  bis_s, b = timed(jax.jit(kth_largest, static_argnums=3), probs, valid, k, 2,
                   repeats=repeats)
  np.testing.assert_array_equal(a, b)
  return {"what": f"top-{tau} threshold of {batch}x{heads} matrices {t_t}x{t_s}",
          "sort_ms": 1e3 * sort_s, "bisection_ms": 1e3 * bis_s, "ratio": sort_s / bis_s,
          "ways_ms": multiway_ms(kth_largest, (probs, valid, k), b, ways, repeats)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--n", default="512,1024", help="pooled sample sizes for the median")
  p.add_argument("--matrix", default="8,10,500,500",
                 help="batch,heads,T_t,T_s of the attention matrices (MOSEI audio->vision)")
  p.add_argument("--tau", type=float, default=0.3)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--ways", default="16",
                 help="comma list of multi-way bisections to time too (empty: none)")
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  ways = [int(w) for w in args.ways.split(",") if w.strip()]
  rows = [bench_median(int(n), args.repeats, ways) for n in args.n.split(",") if n.strip()]
  b, h, tt, ts = (int(x) for x in args.matrix.split(","))
  rows.append(bench_threshold(b, h, tt, ts, args.tau, args.repeats, ways))
  print(f"device: {jax.devices()[0]}")
  extra = "".join(f" {w}-way, {bisection_passes(w)} passes (ms) |" for w in ways)
  print(f"| what | sort (ms) | bisection, 31 passes (ms) | sort / bisection |{extra}")
  print("|---|---|---|---|" + "---|" * len(ways))
  for r in rows:
    cols = "".join(f" {r['ways_ms'][w]:.1f} |" for w in ways)
    print(f"| {r['what']} | {r['sort_ms']:.1f} | {r['bisection_ms']:.1f} | {r['ratio']:.2f} |"
          f"{cols}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"device": str(jax.devices()[0]), "rows": rows}, f, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
