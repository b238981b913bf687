"""Multimodal Sinkhorn Distance (RERD, Guo et al. 2022, Eq. 7-10), computed with ott-jax.

Each sample's distilled sequence of a modality is a point cloud in R^d (one point per time
step); padded steps carry zero mass, the valid steps uniform mass (marginals a, b). For a
pair of modalities the entropic OT problem (Eq. 9)

    L_s(p_a, p_b) = min_{pi in Pi(a, b)} <pi, C> - eps H(pi)

is solved by ott's Sinkhorn solver (log domain) on a PointCloud geometry, and Eq. 10
averages L_s over the modality pairs. Three values are offered (`kind`):

- 'entropic' (default): ott's `reg_ot_cost` = <pi, C> + eps KL(pi | a b^T), which is Eq. 9
  up to eps (H(a) + H(b)), a constant of the masks (no gradient with respect to features).
- 'transport': <pi*, C>, Cuturi's (2013) "Sinkhorn distance" at the entropic plan.
- 'divergence': ott's debiased Sinkhorn divergence, S(a, b) = OT(a, b) - (OT(a, a) +
  OT(b, b)) / 2, zero for identical clouds.

cost 'sqeuclidean' (default; the reference code) or 'euclidean' (Eq. 9's W_1 ground cost).

Epsilon. With `relative_epsilon=True` (default) the solver's eps is `epsilon` times the
mean ground cost under the independent coupling, sum_ij a_i b_j C_ij (valid steps only;
no gradient flows through it): the problem then has the same conditioning whatever the
scale of the features: RERD's 30-d clouds (mean costs 50-100 at initialisation) converge
in 10-20 iterations, where an absolute eps = 0.5 leaves a marginal error of 1e-3 to 5e-3
after 30 (docs/methods/rerd.md, "Measured"). ott's own `relative_epsilon='mean'` is not
used because it averages over the whole padded cost matrix, so the value would depend on
how much padding a batch has.
`relative_epsilon=False` uses `epsilon` as is.

The solver stops when ott's marginal error (L1) falls below `threshold`, after at most
`max_iterations`; every function returns the final error and the iterations used, so
training can watch convergence. The value is differentiable: by default with ott's
implicit differentiation (`implicit_diff=True`, which assumes a converged solve), or
through the unrolled iterations (`implicit_diff=False`). Both give finite gradients with
zero-mass points.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from ott.geometry import costs, pointcloud
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn
from ott.tools import sinkhorn_divergence

from mmfuse_jax.losses.task import weighted_mean

KINDS = ("entropic", "transport", "divergence")
COSTS = ("sqeuclidean", "euclidean")
PAIR_REDUCTIONS = ("mean", "sum")


def _cost_fn(cost: str):
  if cost == "sqeuclidean":
    return costs.SqEuclidean()
  if cost == "euclidean":
    return costs.Euclidean()
  raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")


def _solver_kwargs(max_iterations: int, threshold: float, implicit_diff: bool) -> dict:
  kwargs = dict(max_iterations=max_iterations, threshold=threshold,
                inner_iterations=min(10, max_iterations))
  if not implicit_diff:
    kwargs["implicit_diff"] = None
  return kwargs


def final_error(errors: jnp.ndarray) -> jnp.ndarray:
  """The last marginal error ott recorded (its `errors` vector holds one entry per
  `inner_iterations` block and -1 for blocks that did not run)."""
  n = jnp.sum(errors != -1)
  return errors[jnp.maximum(n - 1, 0)]


def mask_to_weights(mask: jnp.ndarray) -> jnp.ndarray:
  """(T,) bool -> uniform probability weights on the valid steps (uniform on all steps
  when none is valid, so the solver stays finite; such a sample is weighted 0 later)."""
  w = mask.astype(jnp.float32)
  n = w.sum()
  return jnp.where(n > 0, w / jnp.maximum(n, 1.0), jnp.full_like(w, 1.0 / w.shape[0]))


def pairwise_cost(x: jnp.ndarray, y: jnp.ndarray, cost: str = "sqeuclidean") -> jnp.ndarray:
  """(..., T_x, d), (..., T_y, d) -> (..., T_x, T_y) ground cost between time steps (the
  distance maps of the paper's Fig. 5)."""
  d2 = jnp.sum((x[..., :, None, :] - y[..., None, :, :]) ** 2, -1)
  if cost == "sqeuclidean":
    return d2
  if cost == "euclidean":
    return jnp.sqrt(jnp.maximum(d2, 1e-12))
  raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")


def mean_cost(x, y, a, b, cost: str = "sqeuclidean") -> jnp.ndarray:
  """sum_ij a_i b_j C_ij: the mean ground cost between the weighted clouds (zero-mass
  points do not count), without gradient. The scale of a relative epsilon."""
  c = pairwise_cost(x, y, cost)
  return jax.lax.stop_gradient(a @ c @ b)


def sinkhorn_cost(x, y, a, b, *, epsilon: float = 0.1, relative_epsilon: bool = True,
                  max_iterations: int = 200, threshold: float = 1e-4,
                  kind: str = "entropic", cost: str = "sqeuclidean",
                  implicit_diff: bool = True) -> tuple[jnp.ndarray, dict]:
  """L_s of Eq. 9 between one pair of weighted point clouds x (n, d) with weights a (n,) and
  y (m, d) with weights b (m,) (zero weight = absent point).

  Returns (value, info): info 'error' is the solver's final marginal error (for
  'divergence' the largest of its three solves), 'iterations' the iterations run (the
  most of the three), 'epsilon' the eps used. None of them carries a gradient.
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  eps = epsilon
  if relative_epsilon:
    # The floor keeps eps positive when every mass-carrying pair coincides (C = 0 there,
    # so any eps gives the same plan), e.g. the all-zero clouds of a filler row.
    eps = epsilon * jnp.maximum(mean_cost(x, y, a, b, cost), 1e-12)
  solve_kwargs = _solver_kwargs(max_iterations, threshold, implicit_diff)
  cost_fn = _cost_fn(cost)
  if kind == "divergence":
    value, out = sinkhorn_divergence.sinkhorn_divergence(
        pointcloud.PointCloud, x, y, a=a, b=b, cost_fn=cost_fn, epsilon=eps,
        solve_kwargs=solve_kwargs)
    errors = jnp.stack([final_error(e) for e in out.errors if e is not None])
    info = {"error": errors.max(), "iterations": jnp.max(jnp.stack(out.n_iters))}
  else:
    geom = pointcloud.PointCloud(x, y, cost_fn=cost_fn, epsilon=eps)
    out = sinkhorn.Sinkhorn(**solve_kwargs)(linear_problem.LinearProblem(geom, a=a, b=b))
    if kind == "entropic":
      value = out.reg_ot_cost
    else:
      value = jnp.sum(out.matrix * geom.cost_matrix)
    info = {"error": final_error(out.errors), "iterations": out.n_iters}
  info["epsilon"] = jnp.asarray(eps, jnp.float32)
  info = jax.tree_util.tree_map(jax.lax.stop_gradient, info)
  return value, info


def msd_per_sample(seqs: dict, masks: dict, *, pairs=None, pair_reduce: str = "mean",
                   **kwargs) -> tuple[jnp.ndarray, jnp.ndarray, dict]:
  """Eq. 10 per sample: the mean of L_s over modality pairs, vmapped over the batch.

  seqs: modality -> (B, T_m, d); masks: modality -> (B, T_m) bool. pairs defaults to every
  unordered pair in the dict's order ((L, A), (L, V), (A, V) for three modalities).
  A pair with an empty modality (no valid step) is left out of that sample's mean.
  pair_reduce 'sum' adds the pairs instead (the reference code's reduction).
  Returns (values (B,), valid (B,) bool: at least one pair counts; values 0 otherwise,
  info: 'error', 'iterations' (P, B) per pair and sample, 'counted' (P, B) bool).
  kwargs go to `sinkhorn_cost`.
  """
  if pair_reduce not in PAIR_REDUCTIONS:
    raise ValueError(f"pair_reduce must be one of {PAIR_REDUCTIONS}, got {pair_reduce!r}")
  names = list(seqs)
  pairs = list(itertools.combinations(names, 2)) if pairs is None else list(pairs)
  if not pairs:
    raise ValueError(f"the MSD needs at least two modalities, got {names}")
  # One solver for all pairs: pad every modality to the longest sequence with zero-mass
  # steps (which change no value) and stack the pairs along the batch axis.
  t_max = max(seqs[m].shape[1] for m in names)
  pad = lambda a: jnp.pad(a, ((0, 0), (0, t_max - a.shape[1])) + ((0, 0),) * (a.ndim - 2))
  xs = jnp.concatenate([pad(seqs[p].astype(jnp.float32)) for p, _ in pairs])
  ys = jnp.concatenate([pad(seqs[q].astype(jnp.float32)) for _, q in pairs])
  a = jax.vmap(mask_to_weights)(jnp.concatenate([pad(masks[p]) for p, _ in pairs]))
  b = jax.vmap(mask_to_weights)(jnp.concatenate([pad(masks[q]) for _, q in pairs]))
  costs_, info = jax.vmap(lambda x, y, a, b: sinkhorn_cost(x, y, a, b, **kwargs))(xs, ys, a, b)
  n_pairs = len(pairs)
  costs_ = costs_.reshape(n_pairs, -1)                                # (P, B)
  # A pair counts for a sample when both of its modalities have a valid step.
  ok = jnp.stack([masks[p].any(-1) & masks[q].any(-1) for p, q in pairs])
  n_ok = ok.sum(0)
  values = jnp.where(ok, costs_, 0.0).sum(0)
  if pair_reduce == "mean":
    values = values / jnp.maximum(n_ok, 1)
  valid = n_ok > 0
  info = {"error": info["error"].reshape(n_pairs, -1),
          "iterations": info["iterations"].reshape(n_pairs, -1), "counted": ok}
  return values, valid, info


def msd_loss(seqs: dict, masks: dict, weights: jnp.ndarray, **kwargs
             ) -> tuple[jnp.ndarray, dict]:
  """L_MSD of Eq. 10 averaged over the batch with sample weights (filler rows and samples
  without any valid pair count 0): sum(w v) / max(sum(w), 1) (`weighted_mean`).

  Returns (loss, stats): 'error' the largest final marginal error and 'iterations' the
  most iterations over the solves that count (weighted samples, pairs with both
  modalities present); 0 when none counts.
  """
  values, valid, info = msd_per_sample(seqs, masks, **kwargs)
  w = weights.astype(jnp.float32) * valid.astype(jnp.float32)
  counted = info["counted"] & (weights > 0)[None, :]
  stats = {"error": jnp.where(counted, info["error"], 0.0).max(),
           "iterations": jnp.where(counted, info["iterations"], 0).max()}
  return weighted_mean(values, w), stats


def flatten_to_scalars(seqs: dict, masks: dict) -> tuple[dict, dict]:
  """(B, T, d) sequences -> (B, T * d, 1) one-dimensional clouds of their entries (the
  reference code's MSD input: `reshape(bs, -1).unsqueeze(-1)`), masks repeated per entry."""
  flat = {m: x.reshape(x.shape[0], -1, 1) for m, x in seqs.items()}
  flat_masks = {m: jnp.repeat(masks[m], seqs[m].shape[2], axis=1) for m in seqs}
  return flat, flat_masks
