"""Mechanism-acts checks: does each method's ingredient change what it is meant to change?

The mechanism benchmark (docs/mechanisms.md) compares each method with its ablation on test
accuracy. An accuracy difference (or its absence) is easier to read next to a number that
says whether the ingredient did its job in the trained model. One pure function per method
takes a trained workdir (its validation-selected checkpoint, `load_trained`) and returns a
small dict of floats measured on a split (test by default); every function measures the
mechanism arm and the ablation arm the same way, so the two can be compared:

- `rerd_check`: the Multimodal Sinkhorn Distance (RERD Eq. 9-10) between the modalities'
  sequences that the MSD regulariser reads, with the run's own net.msd_* settings
  (`models.rerd.msd_settings`), per sample and averaged over the split; 'msd_shuffled' is
  the same with the modalities of different samples paired (rows permuted per modality), the
  value of unrelated sequences. Lower 'msd' with MSD training = the mechanism acts.
- `mica_check`: MMD^2 (median-heuristic multi-bandwidth Gaussian kernel) and the proxy
  A-distance between the queries and the keys of MICA's last crossmodal layer (MICA Table 6),
  per direction and their mean. Lower = queries and keys aligned.
- `mdm_check`: the dependency the MDM critic estimates, Wasserstein bound E_P[T] - E_Q[T]
  (MDM Eq. 8) of the critic's input (the fused representation) on the split: P the samples
  as they are, Q the samples with each modality's rows permuted independently (the product
  of the marginals, Algorithm 1's negatives). A run without a critic (net.mdm=none) cannot
  report its own, so a fresh critic of the same form (Table 4 widths and output, the run's
  critic learning rate, weight decay and gradient penalty; no dropout, since it measures
  rather than regularises) is fitted for a fixed number of steps on the frozen
  representations of the train split (one fixed permutation for Q) and evaluated on the
  split, for both arms ('dependency_fresh'); the trained critic's estimate comes too where
  one exists.
- `argf_check`: how well the source modality can be told from the joint-space embeddings
  (the encoders' outputs): test accuracy of a multinomial logistic regression fitted on the
  train split's embeddings (chance 1 / M for M modalities), for both arms; for a run with
  adversarial training also its own discriminator's balanced accuracy (target vs sources).
  Nearer chance = more modality-invariant.
- `mcer_check`: D_m, the mean over train rows of |y_m,gen - y_M| for each modality's
  generated (SLGM) label in the selected checkpoint's label state, g = D_audio - (D_text +
  D_vision) / 2, and each modality's noise level from the config (data.shared_noise_*).

`mechanism_check(workdir)` dispatches on the run's model (and on method 'mdm').
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmfuse_jax.catalog import MODELS
from mmfuse_jax.data import iterate_batches, shard_batch
from mmfuse_jax.data.core import Split
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.losses import dependency as dep
from mmfuse_jax.losses.mmd import mmd2
from mmfuse_jax.losses.sinkhorn import msd_per_sample
from mmfuse_jax.models.mdm_critic import StatisticNetwork
from mmfuse_jax.models.rerd import msd_inputs, msd_settings
from mmfuse_jax.training.evaluation import analysis_outputs, predict_split
from mmfuse_jax.training.experiment import load_trained, load_workdir_config

# MCER's generated-label keys of each modality (methods/mcer.py, SLGM).
MCER_LABEL_KEYS = {"text": "t", "audio": "a", "vision": "v"}
CRITIC_STEPS = 500          # fresh critic of mdm_check: AdamW steps on the train split
CRITIC_DROPOUT = 0.0        # ... without Table 4's dropout: it measures, it does not regularise
PROBE_L2 = 1e-3             # argf_check: L2 weight of the logistic regression (standardised x)


def _split(exp, name: str) -> Split:
  if name not in exp.dataset.splits:
    raise ConfigError(f"unknown split {name!r}; valid: {sorted(exp.dataset.splits)}")
  return exp.dataset.splits[name]


def _concat_aux(auxes, select) -> dict:
  """{key: rows of every batch concatenated} of `select(aux)` ({key: (n, ...)}) per batch."""
  parts = [select(a) for a in auxes]
  return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def permute_rows(arrays: dict, seed: int, skip_first: bool = False) -> dict:
  """Each entry's rows permuted by its own permutation drawn from (seed, position in the
  dict's sorted order): samples of the product of the marginals. An entry may be a tuple
  of arrays that move together (features and mask). skip_first keeps the first (sorted)
  entry in place, which pairs the others' rows with it at random just the same."""
  out = {}
  for i, key in enumerate(sorted(arrays)):
    value = arrays[key]
    n = len(value[0] if isinstance(value, tuple) else value)
    if skip_first and i == 0:
      out[key] = value
      continue
    order = np.random.default_rng([seed, i]).permutation(n)
    out[key] = (tuple(v[order] for v in value) if isinstance(value, tuple)
                else value[order])
  return out


def permute_modalities(split: Split, seed: int) -> Split:
  """The split with each modality's features and mask permuted over rows independently
  (labels, ids and weights stay): the product of the modalities' marginals."""
  moved = permute_rows({m: (split.features[m], split.masks[m]) for m in split.features}, seed)
  return dataclasses.replace(split, features={m: v[0] for m, v in moved.items()},
                             masks={m: v[1] for m, v in moved.items()})


# ----------------------------------------------------------------------------------------
# RERD: Multimodal Sinkhorn Distance
# ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _jitted_msd(settings: tuple):
  """One compiled `msd_per_sample` per settings (its shapes are the chunk's)."""
  return jax.jit(functools.partial(msd_per_sample, **dict(settings)))


def per_sample_msd(seqs: dict, masks: dict, settings: dict, *, chunk: int = 128
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Eq. 10 per sample (`losses.sinkhorn.msd_per_sample` with `settings`) for N samples,
  computed `chunk` samples at a time (the last chunk padded with empty rows, so one program
  serves every chunk). seqs: modality -> (N, T_m, d); masks: modality -> (N, T_m) bool.
  Returns (values (N,), valid (N,) bool: at least one modality pair had valid steps)."""
  fn = _jitted_msd(tuple(sorted(settings.items())))
  n = len(next(iter(seqs.values())))
  values, valid = [], []
  for start in range(0, n, chunk):
    stop = min(start + chunk, n)
    pad = lambda a: np.concatenate(  # noqa: E731
        [a[start:stop], np.zeros((chunk - (stop - start),) + a.shape[1:], a.dtype)])
    v, ok, _ = fn({m: pad(np.asarray(x, np.float32)) for m, x in seqs.items()},
                  {m: pad(np.asarray(x, bool)) for m, x in masks.items()})
    values.append(np.asarray(v)[:stop - start]); valid.append(np.asarray(ok)[:stop - start])
  return np.concatenate(values), np.concatenate(valid)


def msd_summary(seqs: dict, masks: dict, settings: dict, *, seed: int = 0,
                chunk: int = 128) -> dict:
  """{'msd': mean per-sample MSD over the samples with a valid pair, 'msd_shuffled': the
  same with the rows of every modality but the first permuted (unrelated sequences)}."""
  v, ok = per_sample_msd(seqs, masks, settings, chunk=chunk)
  moved = permute_rows({m: (seqs[m], masks[m]) for m in seqs}, seed, skip_first=True)
  vs, oks = per_sample_msd({m: a for m, (a, _) in moved.items()},
                           {m: b for m, (_, b) in moved.items()}, settings, chunk=chunk)
  return {"msd": float(v[ok].mean()), "msd_shuffled": float(vs[oks].mean())}


def rerd_measure(exp, state, split: str = "test", *, seed: int = 0) -> dict:
  """`rerd_check` on a loaded experiment and state."""
  net = exp.config.net
  _, _, auxes = predict_split(exp, state, _split(exp, split), with_aux=True)

  def clouds(aux):
    seqs, masks = msd_inputs(aux, net)
    return {**{f"x:{m}": v for m, v in seqs.items()}, **{f"m:{m}": v for m, v in masks.items()}}
  flat = _concat_aux(auxes, clouds)
  mods = [k[2:] for k in flat if k.startswith("x:")]
  out = msd_summary({m: flat[f"x:{m}"] for m in mods}, {m: flat[f"m:{m}"] for m in mods},
                    msd_settings(net), seed=seed)
  return {**out, "msd_trained": float(bool(net.use_msd))}


def rerd_check(workdir: str, *, split: str = "test", dataset=None) -> dict:
  """RERD: mean Multimodal Sinkhorn Distance of the split's samples under the selected
  checkpoint ('msd'), of unrelated samples ('msd_shuffled'), and whether the run trained
  with the MSD ('msd_trained' 1 or 0)."""
  exp, state = load_trained(workdir, dataset=dataset)
  if exp.config.model != "rerd":
    raise ConfigError(f"{workdir} is a {exp.config.model!r} run; rerd_check needs rerd")
  return rerd_measure(exp, state, split)


# ----------------------------------------------------------------------------------------
# MICA: query / key distances of the last crossmodal layer (MICA Table 6)
# ----------------------------------------------------------------------------------------
def last_layer_sets(exp, state, split: Split) -> dict:
  """{direction 's->t': (queries (n, d), keys (m, d))}: the valid queries (target steps) and
  keys (source steps) of MICA's last crossmodal layer over a split, heads concatenated."""
  sets: dict = {}
  for batch in iterate_batches(split, exp.config.eval_batch_size,
                               num_buckets=exp.config.data.num_buckets):
    _, _, aux = analysis_outputs(exp, state, shard_batch(batch, exp.batch_sharding))
    cross = jax.device_get(aux["crossmodal"])
    keep = np.asarray(batch.weights) > 0
    for direction, d in cross.items():
      s, t = direction.split("->")
      q = np.asarray(d["q"][-1])                     # (B, T_t, H, d_h)
      k = np.asarray(d["k"][-1])                     # (B, T_s, H, d_h)
      qm = np.asarray(batch.masks[t]) & keep[:, None]
      km = np.asarray(batch.masks[s]) & keep[:, None]
      qs, ks = sets.setdefault(direction, ([], []))
      qs.append(q.reshape(*q.shape[:2], -1)[qm])
      ks.append(k.reshape(*k.shape[:2], -1)[km])
  return {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in sets.items()}


def proxy_a_distance(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> float:
  """Proxy A-distance 2 (1 - 2 err) (Ben-David et al.): err the held-out error of a
  ridge-regularised linear least-squares classifier telling x from y (balanced classes,
  fitted on one half, tested on the other). 0: indistinguishable, 2: linearly separable."""
  n = min(len(x), len(y))
  x = x[rng.permutation(len(x))[:n]]; y = y[rng.permutation(len(y))[:n]]
  feats = np.concatenate([x, y]); labels = np.concatenate([np.ones(n), -np.ones(n)])
  order = rng.permutation(2 * n); feats, labels = feats[order], labels[order]
  half = n
  mu, sd = feats[:half].mean(0), feats[:half].std(0) + 1e-6
  a = np.concatenate([(feats - mu) / sd, np.ones((2 * n, 1))], axis=1)
  w = np.linalg.solve(a[:half].T @ a[:half] + 1e-3 * np.eye(a.shape[1]),
                      a[:half].T @ labels[:half])
  err = float(np.mean(np.sign(a[half:] @ w) != labels[half:]))
  return 2.0 * (1.0 - 2.0 * min(err, 0.5))


# Compiled once per shape: op by op, the median bandwidth's bisection takes ~20 s on a CPU.
_mmd2_median = jax.jit(functools.partial(mmd2, bandwidth="median"))


def query_key_distances(sets: dict, max_elements: int = 1500, seed: int = 0) -> dict:
  """Per direction {'mmd2', 'a_distance', 'n_queries', 'n_keys'} of `last_layer_sets` and
  their 'mean' over directions. MMD^2 uses at most max_elements random elements per side
  (its cost is quadratic); the A-distance uses every element."""
  rng = np.random.default_rng(seed)
  out = {}
  for direction, (q, k) in sorted(sets.items()):
    qs = q[rng.permutation(len(q))[:max_elements]]
    ks = k[rng.permutation(len(k))[:max_elements]]
    out[direction] = {"mmd2": float(_mmd2_median(qs, ks)),
                      "a_distance": proxy_a_distance(q, k, rng),
                      "n_queries": int(len(q)), "n_keys": int(len(k))}
  out["mean"] = {m: float(np.mean([v[m] for v in out.values()]))
                 for m in ("mmd2", "a_distance")}
  return out


def mica_measure(exp, state, split: str = "test", *, max_elements: int = 1500) -> dict:
  """`mica_check` on a loaded experiment and state."""
  dist = query_key_distances(last_layer_sets(exp, state, _split(exp, split)), max_elements)
  out = {"mmd2": dist["mean"]["mmd2"], "a_distance": dist["mean"]["a_distance"]}
  for direction, row in dist.items():
    if direction != "mean":
      out[f"mmd2:{direction}"] = row["mmd2"]
      out[f"a_distance:{direction}"] = row["a_distance"]
  out["alignment_trained"] = float(bool(exp.config.net.mmd) or bool(exp.config.net.pe))
  return out


def mica_check(workdir: str, *, split: str = "test", dataset=None,
               max_elements: int = 1500) -> dict:
  """MICA: last-layer query/key MMD^2 and proxy A-distance ('mmd2', 'a_distance': mean over
  directions; 'mmd2:s->t', 'a_distance:s->t' per direction) and whether the run trained with
  an alignment loss ('alignment_trained')."""
  exp, state = load_trained(workdir, dataset=dataset)
  if exp.config.model != "mica":
    raise ConfigError(f"{workdir} is a {exp.config.model!r} run; mica_check needs mica")
  return mica_measure(exp, state, split, max_elements=max_elements)


# ----------------------------------------------------------------------------------------
# MDM: the critic's dependency estimate
# ----------------------------------------------------------------------------------------
def critic_views(exp, state, split: Split, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(z_joint (N, d), z_marginal (N, d)): the MDM critic's input of every row of a split
  (deterministic forward pass) and of the product of the marginals: in 'fused' mode the
  model's fused representation of the split with each modality's rows permuted
  independently (`permute_modalities`), in 'unimodal' mode the unimodal representations
  permuted independently (methods/mdm.py, Algorithm 1's negatives)."""
  method = exp.method
  _, _, auxes = predict_split(exp, state, split, with_aux=True)
  z_joint = np.concatenate([np.asarray(method.joint_inputs(a)) for a in auxes])
  if exp.config.net.mdm_input == "fused":
    _, _, neg = predict_split(exp, state, permute_modalities(split, seed), with_aux=True)
    z_marg = np.concatenate([np.asarray(method.joint_inputs(a)) for a in neg])
  else:
    uni = _concat_aux(auxes, lambda a: a["unimodal"])
    moved = permute_rows(uni, seed)
    z_marg = np.concatenate([moved[m] for m in exp.info.modalities], axis=-1)
  return z_joint, z_marg


def critic_estimate(critic: StatisticNetwork, params, z_joint, z_marg, kind: str = "w"
                    ) -> float:
  """The bound of `kind` (Eq. 6-8) of a critic's deterministic scores of joint and
  product-of-marginals samples, every row weighted 1."""
  t_j = critic.apply({"params": params}, jnp.asarray(z_joint), train=False)
  t_m = critic.apply({"params": params}, jnp.asarray(z_marg), train=False)
  est, _, _ = dep.dependency_bound(kind, t_j, t_m, jnp.ones(t_j.shape[0]))
  return float(est)


def fit_critic(z_joint: np.ndarray, z_marg: np.ndarray, *, kind: str = "w",
               steps: int = CRITIC_STEPS, batch_size: int = 64, lr: float = 1e-3,
               weight_decay: float = 0.01, gp: float = 10.0, dropout: float = 0.4,
               output: str = "sigmoid", seed: int = 0):
  """A fresh statistic network (Table 4) fitted to maximise the bound of `kind` between
  rows of z_joint and rows of z_marg (the same objective as MDM's critic updates:
  -bound, plus gp times the gradient penalty for 'w'), `steps` AdamW steps on random
  minibatches of `batch_size` rows of each. Returns (critic module, params)."""
  critic = StatisticNetwork(dropout=dropout, output=output)
  z_joint = jnp.asarray(z_joint, jnp.float32)
  z_marg = jnp.asarray(z_marg, jnp.float32)
  params = _fit_critic(critic, kind, batch_size, float(lr), float(weight_decay), float(gp),
                       z_joint, z_marg, jax.random.PRNGKey(seed), jnp.int32(steps))
  return critic, params


@functools.partial(jax.jit, static_argnums=tuple(range(6)))
def _fit_critic(critic, kind, batch_size, lr, weight_decay, gp, z_joint, z_marg, key, steps):
  """`fit_critic`'s loop, compiled once per settings and shapes (the data and the number
  of steps are arguments)."""
  init_key, loop_key = jax.random.split(key)
  params = critic.init(init_key, z_joint[:1])["params"]
  tx = optax.adamw(lr, weight_decay=weight_decay)
  ones = jnp.ones((batch_size,), jnp.float32)

  def loss_fn(p, zj, zm, rng):
    r_j, r_m, r_gp, r_d = jax.random.split(rng, 4)
    tj = critic.apply({"params": p}, zj, train=True, rngs={"dropout": r_j})
    tm = critic.apply({"params": p}, zm, train=True, rngs={"dropout": r_m})
    _, surrogate, _ = dep.dependency_bound(kind, tj, tm, ones)
    loss = -surrogate
    if kind == "w" and gp > 0:
      apply = lambda z: critic.apply({"params": p}, z, train=True,  # noqa: E731
                                     rngs={"dropout": r_d})
      loss = loss + gp * dep.gradient_penalty(apply, zj, zm, ones, r_gp)
    return loss

  def step(i, carry):
    p, opt = carry
    r_j, r_m, r_loss = jax.random.split(jax.random.fold_in(loop_key, i), 3)
    zj = z_joint[jax.random.randint(r_j, (batch_size,), 0, z_joint.shape[0])]
    zm = z_marg[jax.random.randint(r_m, (batch_size,), 0, z_marg.shape[0])]
    grads = jax.grad(loss_fn)(p, zj, zm, r_loss)
    updates, opt = tx.update(grads, opt, p)
    return optax.apply_updates(p, updates), opt

  return jax.lax.fori_loop(0, steps, step, (params, tx.init(params)))[0]


def mdm_measure(exp, state, split: str = "test", *, steps: int = CRITIC_STEPS,
                seed: int = 0) -> dict:
  """`mdm_check` on a loaded experiment and state."""
  net = exp.config.net
  if "mdm" not in net:
    raise ConfigError(f"model {exp.config.model!r} has no MDM critic settings (net.mdm*)")
  train_j, train_m = critic_views(exp, state, _split(exp, "train"), seed=seed)
  test_j, test_m = critic_views(exp, state, _split(exp, split), seed=seed + 1)
  critic, params = fit_critic(
      train_j, train_m, kind="w", steps=steps, batch_size=exp.config.batch_size,
      lr=net.mdm_critic_lr or exp.config.optim.lr, weight_decay=net.mdm_critic_weight_decay,
      gp=net.mdm_gp, dropout=CRITIC_DROPOUT, output=net.mdm_critic_output, seed=seed)
  out = {"dependency_fresh": critic_estimate(critic, params, test_j, test_m),
         "dependency_fresh_train": critic_estimate(critic, params, train_j, train_m),
         "dependency_trained": float("nan"), "mdm_trained": float(net.mdm != "none")}
  if net.mdm != "none":
    out["dependency_trained"] = critic_estimate(exp.method.critic, state.extras["critic"],
                                                test_j, test_m, net.mdm)
  return out


def mdm_check(workdir: str, *, split: str = "test", dataset=None,
              steps: int = CRITIC_STEPS) -> dict:
  """MDM (any model of method 'mdm'): the Wasserstein dependency estimate E_P[T] - E_Q[T] on
  the split of a fresh critic fitted on the train split ('dependency_fresh'; on the train
  split itself 'dependency_fresh_train'), the trained critic's own estimate with the run's
  bound ('dependency_trained', NaN without one) and 'mdm_trained' (1: a penalty was on)."""
  exp, state = load_trained(workdir, dataset=dataset)
  return mdm_measure(exp, state, split, steps=steps)


# ----------------------------------------------------------------------------------------
# ARGF: can the source modality be told from the joint embedding?
# ----------------------------------------------------------------------------------------
def fit_softmax_regression(x: np.ndarray, y: np.ndarray, num_classes: int, *,
                           l2: float = PROBE_L2, iterations: int = 50) -> np.ndarray:
  """Multinomial logistic regression by damped Newton steps: minimises
  mean_i -log softmax(x_i W + b)_{y_i} + l2 / 2 ||W||^2 with the last class's logit fixed at
  0 (identifiable). x (n, d) should be standardised. Returns the (d + 1, K) coefficients
  [W; b] (last column 0) for `softmax_predict`."""
  n, d = x.shape
  k = num_classes - 1
  a = np.concatenate([x, np.ones((n, 1))], axis=1).astype(np.float64)
  onehot = np.eye(num_classes)[y][:, :k]
  reg = np.full(d + 1, l2); reg[-1] = 1e-8  # the bias is not shrunk (a tiny ridge)
  w = np.zeros((d + 1, k))

  def objective(w):
    logits = np.concatenate([a @ w, np.zeros((n, 1))], axis=1)
    logz = np.logaddexp.reduce(logits, axis=1)
    return float(np.mean(logz - logits[np.arange(n), y]) + 0.5 * np.sum(reg[:, None] * w ** 2))

  f = objective(w)
  for _ in range(iterations):
    logits = np.concatenate([a @ w, np.zeros((n, 1))], axis=1)
    p = np.exp(logits - np.logaddexp.reduce(logits, axis=1, keepdims=True))[:, :k]
    grad = a.T @ (p - onehot) / n + reg[:, None] * w
    # Hessian of the mean cross-entropy: sum_i (diag(p_i) - p_i p_i^T) (x) a_i a_i^T / n
    hess = np.empty((d + 1, k, d + 1, k))
    for j in range(k):
      for c in range(k):
        curvature = p[:, j] * ((j == c) - p[:, c])                  # (n,)
        hess[:, j, :, c] = (a * curvature[:, None]).T @ a / n
    hess = hess.reshape((d + 1) * k, (d + 1) * k) + np.diag(np.repeat(reg, k))
    direction = np.linalg.solve(hess, grad.reshape(-1)).reshape(d + 1, k)
    step = 1.0
    while step > 1e-8:  # backtracking: Newton steps may overshoot on separable data
      f_new = objective(w - step * direction)
      if f_new <= f - 1e-4 * step * float(np.sum(grad * direction)):
        break
      step *= 0.5
    if step <= 1e-8:
      break
    w, f_old, f = w - step * direction, f, f_new
    if f_old - f < 1e-10:
      break
  return np.concatenate([w, np.zeros((d + 1, 1))], axis=1)


def softmax_predict(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
  """Class predictions (n,) of `fit_softmax_regression` coefficients."""
  return np.argmax(np.concatenate([x, np.ones((len(x), 1))], axis=1) @ coef, axis=1)


def modality_probe_accuracy(train: dict, test: dict, *, l2: float = PROBE_L2) -> float:
  """Test accuracy of a multinomial logistic regression telling the modality an embedding
  came from: fitted on `train` ({modality: (n_m, d)}), evaluated on `test` (same keys);
  features standardised with the train statistics. Chance is 1 / len(train) for balanced
  classes."""
  mods = sorted(train)
  x_train = np.concatenate([train[m] for m in mods]).astype(np.float64)
  y_train = np.concatenate([np.full(len(train[m]), i) for i, m in enumerate(mods)])
  x_test = np.concatenate([test[m] for m in mods]).astype(np.float64)
  y_test = np.concatenate([np.full(len(test[m]), i) for i, m in enumerate(mods)])
  mu, sd = x_train.mean(0), x_train.std(0) + 1e-8
  coef = fit_softmax_regression((x_train - mu) / sd, y_train, len(mods), l2=l2)
  return float(np.mean(softmax_predict(coef, (x_test - mu) / sd) == y_test))


def discriminator_accuracy(scores: dict, target: str) -> float:
  """Balanced accuracy of ARGF's discriminator from its outputs D = sigmoid(logit) per
  modality ({modality: (n,)}): the mean of its accuracy on the target modality (D > 0.5,
  'true') and on the sources (D <= 0.5, 'fake'; the sources pooled)."""
  on_target = np.mean(np.asarray(scores[target]) > 0.5)
  on_sources = np.mean(np.concatenate([np.asarray(v) <= 0.5 for m, v in scores.items()
                                       if m != target]))
  return float(0.5 * (on_target + on_sources))


def argf_measure(exp, state, split: str = "test") -> dict:
  """`argf_check` on a loaded experiment and state."""
  def views(name):
    _, _, auxes = predict_split(exp, state, _split(exp, name), with_aux=True)
    enc = _concat_aux(auxes, lambda a: a["encoded"])
    disc = _concat_aux(auxes, lambda a: a["discriminator"]) if exp.config.net.adversarial \
        else None
    return enc, disc
  train_enc, _ = views("train")
  test_enc, test_disc = views(split)
  return {"probe_accuracy": modality_probe_accuracy(train_enc, test_enc),
          "probe_chance": 1.0 / len(test_enc),
          "discriminator_accuracy": (float("nan") if test_disc is None else
                                     discriminator_accuracy(test_disc,
                                                            exp.config.net.target_modality)),
          "adversarial_trained": float(bool(exp.config.net.adversarial))}


def argf_check(workdir: str, *, split: str = "test", dataset=None) -> dict:
  """ARGF: 'probe_accuracy', the split accuracy of a logistic regression (fitted on the
  train split) telling the source modality from the encoders' joint-space embeddings
  ('probe_chance' = 1 / modalities); 'discriminator_accuracy', the trained discriminator's
  balanced accuracy (NaN without adversarial training); 'adversarial_trained' 1 or 0."""
  exp, state = load_trained(workdir, dataset=dataset)
  if exp.config.model != "argf":
    raise ConfigError(f"{workdir} is a {exp.config.model!r} run; argf_check needs argf")
  return argf_measure(exp, state, split)


# ----------------------------------------------------------------------------------------
# MCER: generated unimodal labels
# ----------------------------------------------------------------------------------------
def generated_label_distances(extras: dict) -> dict:
  """{'D_text', 'D_audio', 'D_vision', 'g'} of MCER's label state (TrainState.extras):
  D_m = mean over the train rows seen in training of |y_m,gen - y_M|, g = D_audio -
  (D_text + D_vision) / 2 (docs/mechanisms.md, H5). NaN when the run generates no unimodal
  labels (net.tasks without 's')."""
  labels = extras.get("labels") or {}
  seen = np.asarray(extras["seen"]) > 0
  y_m = np.asarray(extras["y_m"])
  out = {}
  for m, k in MCER_LABEL_KEYS.items():
    out[f"D_{m}"] = (float(np.mean(np.abs(np.asarray(labels[k])[seen] - y_m[seen])))
                     if k in labels and seen.any() else float("nan"))
  out["g"] = out["D_audio"] - (out["D_text"] + out["D_vision"]) / 2.0
  return out


def mcer_check(workdir: str, *, dataset=None) -> dict:
  """MCER: `generated_label_distances` of the selected checkpoint's label state, and the
  noise level sigma_m of each modality from the run's config ('noise_text', ...;
  data.shared_noise_*, the knobs of the 'synthetic_shared' data)."""
  exp, state = load_trained(workdir, dataset=dataset)
  if exp.config.model != "mcer":
    raise ConfigError(f"{workdir} is a {exp.config.model!r} run; mcer_check needs mcer")
  out = generated_label_distances(jax.device_get(state.extras))
  for m in MCER_LABEL_KEYS:
    out[f"noise_{m}"] = float(exp.config.data[f"shared_noise_{m}"])
  return out


# ----------------------------------------------------------------------------------------
CHECKS = {"rerd": rerd_check, "mica": mica_check, "argf": argf_check, "mcer": mcer_check,
          "mdm": mdm_check}


def check_name(config) -> str:
  """The check a run's config calls for: its model's, or 'mdm' for method 'mdm'."""
  if config.model in CHECKS:
    return config.model
  if (config.method or MODELS.get(config.model).method) == "mdm":
    return "mdm"
  raise ConfigError(f"no mechanism check for model {config.model!r} (checks: rerd, mica, "
                    f"argf, mcer and the models trained with method 'mdm')")


def mechanism_check(workdir: str, *, split: str = "test", dataset=None) -> dict:
  """The mechanism check of a workdir's run (module docstring), chosen by its config."""
  name = check_name(load_workdir_config(workdir))
  if name == "mcer":
    return mcer_check(workdir, dataset=dataset)
  return CHECKS[name](workdir, split=split, dataset=dataset)
