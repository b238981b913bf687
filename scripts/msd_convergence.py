"""Final Sinkhorn marginal error of RERD's MSD regulariser at CMU-MOSI-like shapes.

Builds RERD (configs/rerd.py:<dataset> unless --config) for unaligned MOSI shapes (text
50 x 300, audio 375 x 5, vision 500 x 20; --dataset=mosei: 50 x 300, 500 x 74, 500 x 35;
random features, random valid lengths), runs the model at
initialisation (or after --train_steps training steps on random labels) and solves the MSD
exactly as training does (`msd_per_sample` with the config's solver settings). Prints JSON:
per modality pair the largest and mean final marginal error (ott's L1 error of the last
iteration block), the most iterations run, the mean ground cost and the eps used.

  python scripts/msd_convergence.py                      # the library defaults
  python scripts/msd_convergence.py --net.msd_epsilon=0.5 --net.msd_relative_epsilon=false \\
      --net.msd_iterations=30 --net.msd_threshold=1e-3   # the settings before they changed
  python scripts/msd_convergence.py --net.msd_variant=reference
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.catalog import METHODS, MODELS
from mmfuse_jax.config import load_config_file
from mmfuse_jax.data.core import Batch
from mmfuse_jax.losses.sinkhorn import mask_to_weights, mean_cost, msd_per_sample
from mmfuse_jax.models.base import DataInfo
from mmfuse_jax.models.rerd import REFERENCE_MSD_EPSILON, msd_inputs

HERE = os.path.dirname(os.path.abspath(__file__))
DATASETS = {"mosi": {"text": (50, 300), "audio": (375, 5), "vision": (500, 20)},
            "mosei": {"text": (50, 300), "audio": (500, 74), "vision": (500, 35)}}


def make_batch(shapes: dict, batch: int, seed: int = 0) -> Batch:
  rng = np.random.default_rng(seed)
  feats, masks = {}, {}
  for m, (t, d) in shapes.items():
    valid = rng.integers(t // 4, t + 1, size=batch)
    mask = np.arange(t)[None] < valid[:, None]
    feats[m] = np.where(mask[..., None], rng.normal(size=(batch, t, d)), 0).astype(np.float32)
    masks[m] = mask
  return Batch(features=feats, masks=masks, labels=rng.normal(size=batch).astype(np.float32),
               weights=np.ones(batch, np.float32), index=np.arange(batch, dtype=np.int32))


def _override(config, items):
  for item in items:
    key, value = item.lstrip("-").split("=", 1)
    node, parts = config, key.split(".")
    for p in parts[:-1]:
      node = node[p]
    old = node[parts[-1]]
    if isinstance(old, bool):
      value = value.lower() in ("1", "true", "yes")
    node[parts[-1]] = type(old)(value)


def solver_settings(net) -> dict:
  """The keyword arguments msd_regularizer passes to the solver."""
  kw = dict(max_iterations=net.msd_iterations, threshold=net.msd_threshold,
            implicit_diff=net.msd_implicit_diff)
  if net.msd_variant == "reference":
    return kw | dict(epsilon=REFERENCE_MSD_EPSILON, relative_epsilon=False, kind="transport",
                     cost="sqeuclidean", pair_reduce="sum")
  return kw | dict(epsilon=net.msd_epsilon, relative_epsilon=net.msd_relative_epsilon,
                   kind=net.msd_kind, cost=net.msd_cost)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dataset", default="mosi", choices=tuple(DATASETS))
  p.add_argument("--config", default="", help="default: configs/rerd.py:<dataset>")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--train_steps", type=int, default=0)
  p.add_argument("--seed", type=int, default=0)
  args, overrides = p.parse_known_args(argv)
  args.config = args.config or os.path.join(HERE, "..", "configs", "rerd.py") + f":{args.dataset}"
  shapes = DATASETS[args.dataset]
  config = load_config_file(args.config)
  _override(config, overrides)
  net = config.net
  spec = MODELS.get("rerd")
  info = DataInfo(modalities=tuple(shapes), feature_dims={m: d for m, (_, d) in shapes.items()},
                  max_lengths={m: t for m, (t, _) in shapes.items()}, task="regression")
  model = spec.build(net, info)
  method = METHODS.get(config.method or spec.method)(config, model, spec, info,
                                                     steps_per_epoch=100)
  batch = make_batch(shapes, args.batch, args.seed)
  state = jax.jit(method.init_state)(jax.random.PRNGKey(args.seed), batch)
  step = jax.jit(method.train_step)
  for i in range(args.train_steps):
    state, _ = step(state, make_batch(shapes, args.batch, args.seed + 1 + i),
                    jax.random.PRNGKey(100 + i))
  variables = {"params": state.params, **(state.model_state or {})}
  _, aux = jax.jit(lambda v, b: model.apply(v, b, train=False))(variables, batch)
  seqs, masks = msd_inputs(aux, net)
  kw = solver_settings(net)
  names = list(seqs)
  out = {"dataset": args.dataset, "config": os.path.relpath(args.config), "overrides": overrides,
         "train_steps": args.train_steps, "batch": args.batch,
         "settings": kw, "pairs": {}}
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      pair = {a: seqs[a], b: seqs[b]}
      pm = {a: masks[a], b: masks[b]}
      t0 = time.perf_counter()
      _, _, info_ = jax.jit(lambda s, m: msd_per_sample(s, m, **kw))(pair, pm)
      jax.block_until_ready(info_)
      wa, wb = jax.vmap(mask_to_weights)(masks[a]), jax.vmap(mask_to_weights)(masks[b])
      scale = jax.vmap(lambda x, y, u, v: mean_cost(x, y, u, v, kw["cost"]))(
          seqs[a], seqs[b], wa, wb)
      err = np.asarray(info_["error"])[0]
      out["pairs"][f"{a}-{b}"] = {
          "points": [int(seqs[a].shape[1]), int(seqs[b].shape[1])],
          "final_error_max": float(err.max()), "final_error_mean": float(err.mean()),
          "iterations_max": int(np.asarray(info_["iterations"]).max()),
          "mean_cost": float(np.mean(scale)),
          "seconds_incl_compile": round(time.perf_counter() - t0, 2)}
  out["final_error_max"] = max(v["final_error_max"] for v in out["pairs"].values())
  out["converged"] = out["final_error_max"] < net.msd_threshold
  print(json.dumps(out, indent=2))
  return out


if __name__ == "__main__":
  main()
  sys.exit(0)
