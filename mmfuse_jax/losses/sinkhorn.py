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
The value is differentiable: by default with ott's implicit differentiation
(`implicit_diff=True`, ott's default; compiles ~3x faster), or through the unrolled
iterations (`implicit_diff=False`). Both give finite gradients with zero-mass points.
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


def _cost_fn(cost: str):
  if cost == "sqeuclidean":
    return costs.SqEuclidean()
  if cost == "euclidean":
    return costs.Euclidean()
  raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")


def _solver(max_iterations: int, threshold: float, implicit_diff: bool):
  inner = min(10, max_iterations)
  kwargs = dict(max_iterations=max_iterations, threshold=threshold, inner_iterations=inner)
  if not implicit_diff:
    kwargs["implicit_diff"] = None
  return sinkhorn.Sinkhorn(**kwargs)


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


def sinkhorn_cost(x, y, a, b, *, epsilon: float = 0.5, max_iterations: int = 30,
                  threshold: float = 1e-3, kind: str = "entropic", cost: str = "sqeuclidean",
                  implicit_diff: bool = True) -> jnp.ndarray:
  """L_s of Eq. 9 between one pair of weighted point clouds x (n, d) with weights a (n,) and
  y (m, d) with weights b (m,) (zero weight = absent point). Returns a scalar."""
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  solver = _solver(max_iterations, threshold, implicit_diff)
  cost_fn = _cost_fn(cost)
  if kind == "divergence":
    div, _ = sinkhorn_divergence.sinkhorn_divergence(
        pointcloud.PointCloud, x, y, a=a, b=b, cost_fn=cost_fn, epsilon=epsilon,
        solve_kwargs=dict(max_iterations=max_iterations, threshold=threshold,
                          inner_iterations=min(10, max_iterations),
                          **({} if implicit_diff else {"implicit_diff": None})))
    return div
  geom = pointcloud.PointCloud(x, y, cost_fn=cost_fn, epsilon=epsilon)
  out = solver(linear_problem.LinearProblem(geom, a=a, b=b))
  if kind == "entropic":
    return out.reg_ot_cost
  return jnp.sum(out.matrix * geom.cost_matrix)


def msd_per_sample(seqs: dict, masks: dict, *, pairs=None, **kwargs
                   ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Eq. 10 per sample: the mean of L_s over modality pairs, vmapped over the batch.

  seqs: modality -> (B, T_m, d); masks: modality -> (B, T_m) bool. pairs defaults to every
  unordered pair in the dict's order ((L, A), (L, V), (A, V) for three modalities).
  A pair with an empty modality (no valid step) is left out of that sample's mean.
  Returns (values (B,), valid (B,) bool: at least one pair counts; values 0 otherwise).
  kwargs go to `sinkhorn_cost`.
  """
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
  costs_ = jax.vmap(lambda x, y, a, b: sinkhorn_cost(x, y, a, b, **kwargs))(xs, ys, a, b)
  costs_ = costs_.reshape(len(pairs), -1)                              # (P, B)
  # A pair counts for a sample when both of its modalities have a valid step.
  ok = jnp.stack([masks[p].any(-1) & masks[q].any(-1) for p, q in pairs])
  n_ok = ok.sum(0)
  values = jnp.where(ok, costs_, 0.0).sum(0) / jnp.maximum(n_ok, 1)
  valid = n_ok > 0
  return values, valid


def msd_loss(seqs: dict, masks: dict, weights: jnp.ndarray, **kwargs) -> jnp.ndarray:
  """L_MSD of Eq. 10 averaged over the batch with sample weights (filler rows and samples
  without any valid pair count 0): sum(w v) / max(sum(w), 1) (`weighted_mean`)."""
  values, valid = msd_per_sample(seqs, masks, **kwargs)
  return weighted_mean(values, weights.astype(jnp.float32) * valid.astype(jnp.float32))
