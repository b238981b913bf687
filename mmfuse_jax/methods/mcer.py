"""The 'mcer' method: MCER's multi-task training with generated labels (Eq. 20-33).

State. `TrainState.extras` holds, for every train row r (arrays indexed by `batch.index`,
so they are checkpointed and resumed with the rest of the state):
- 'y_m' (N,): the human label of row r; 'seen' (N,): 1 once row r was trained on;
- 'labels': {'t', 'a', 'v'} s-labels (SLGM) and {'mt', 'ma', 'mv'} c-labels (CLGM), (N,);
- 'features': the last representation of row r seen in training: 'm' F'_m (N, fusion_dim),
  't'/'a'/'v' H_s (N, uni_dim), 'mt'/'ma'/'mv' h_c (N, head_dim).
N is the `capacity`: the train size when the loop sets `method.train_labels` (the hook
below), else steps_per_epoch * batch_size >= N (rows past N are never touched and never
count). Generated labels equal y_m until the first update (Eq. 31, i = 1): a row's label
is set to its y_m the first time the row is seen, so without the hook the labels still
start at y_m for every row that is ever used.

Schedule (Eq. 31). Epoch i (1-based) trains against y^(i); y^(1) = y_m. At the end of
epoch i (`end_of_epoch`) the centres of every representation are computed from the stored
features of the rows seen (class sign from that representation's current labels; F'_m
from y_m), new labels come from Eq. 30, and y^(i+1) = i/(i+2) y^(i) + 2/(i+2) y_new
(Eq. 31 with index i+1). So the labels move after epoch 1 and epoch 2 is the first epoch
trained on generated labels ("updated from epoch 2 on").

Loss (Eq. 33): L = L_m-task + sum_s W_s L_s-task + sum_c W_c L_c-task + alpha L_m
+ beta L_avl + gamma L_dc + eta L_MI, W = tanh(|y_gen - y_m|) per sample (Eq. 32).
Eq. 26 / 29 print a beta inside L_m and L_avl as well. `net.kl_weighting='once'` (default)
applies Table III's alpha, beta once, as the Eq. 33 weights: L_m = KL_m, L_avl = sum_s KL_s.
'literal' keeps the printed beta (`net.ib_beta`) inside too, so the KL terms weigh
alpha * ib_beta and beta * ib_beta (beta^2 = 1e-6 on MOSI).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.losses import label_generation as lg
from mmfuse_jax.losses import vib
from mmfuse_jax.losses.modality_discriminator import (discriminator_regularizer,
                                                      modality_discriminator_loss)
from mmfuse_jax.losses.mutual_information import gaussian_mi_lower_bound
from mmfuse_jax.methods.base import Method, TrainState
from mmfuse_jax.methods.optim import make_optimizer, scale_updates
from mmfuse_jax.models.mcer import active_tasks, dc_group_size
from mmfuse_jax.registry import METHODS

ENCODER_GROUPS = {"text_encoder": "text", "audio_encoder": "audio", "vision_encoder": "vision"}
KL_WEIGHTINGS = ("once", "literal")


def param_groups(params) -> dict:
  """Label every parameter by its optimizer group (Table III's learning rates)."""
  return {k: jax.tree_util.tree_map(lambda _, g=ENCODER_GROUPS.get(k, "other"): g, v)
          for k, v in params.items()}


@METHODS.register("mcer")
class MCERMethod(Method):
  # Hook: the loop (or a user) may set this to the train split's labels (N,) before
  # init_state; then the label arrays have exactly N rows and start at y_m.
  train_labels: np.ndarray | None = None

  def __init__(self, config, model, spec, info, steps_per_epoch):
    super().__init__(config, model, spec, info, steps_per_epoch)
    if info.task not in ("regression", "sims"):
      raise ConfigError(f"method 'mcer' needs regression labels, got task {info.task!r}")
    self.net = config.net
    self.tasks, self.heads = active_tasks(config.net)
    # Configs saved before the switch existed used the literal reading.
    weighting = config.net.get("kl_weighting", "literal")
    if weighting not in KL_WEIGHTINGS:
      raise ConfigError(f"net.kl_weighting must be one of {', '.join(KL_WEIGHTINGS)}, got "
                        f"{weighting!r}")
    # The factor inside Eq. 26 / 29: 1 when alpha, beta weigh the KL terms once (Eq. 33).
    self.kl_factor = config.net.ib_beta if weighting == "literal" else 1.0
    optim = config.optim
    lrs = {"text": config.net.lr_text, "audio": config.net.lr_audio,
           "vision": config.net.lr_vision, "other": 0.0}
    self.tx = optax.multi_transform(
        {g: make_optimizer(optim, steps_per_epoch, lr=(lr if lr > 0 else None))
         for g, lr in lrs.items()}, param_groups)
    self._update_labels = jax.jit(self.update_labels)

  # --- label keys and state ------------------------------------------------------------
  @property
  def label_keys(self) -> tuple[str, ...]:
    keys = ("t", "a", "v") if "s" in self.tasks else ()
    return keys + tuple("m" + c for c in self.heads)

  def feature_dims(self) -> dict[str, int]:
    n = self.net
    dims = {"m": n.fusion_dim}
    for k in self.label_keys:
      dims[k] = n.uni_dim if len(k) == 1 else n.head_dim
    return dims

  @property
  def capacity(self) -> int:
    if self.train_labels is not None:
      return int(len(self.train_labels))
    return self.steps_per_epoch * self.config.batch_size

  def init_extras(self) -> dict:
    n = self.capacity
    if self.train_labels is not None:
      y_m = jnp.asarray(np.asarray(self.train_labels, np.float32).reshape(n))
      seen = jnp.zeros((n,), jnp.float32)
    else:
      y_m = jnp.zeros((n,), jnp.float32)
      seen = jnp.zeros((n,), jnp.float32)
    return {"y_m": y_m, "seen": seen,
            "labels": {k: y_m for k in self.label_keys},
            "features": {k: jnp.zeros((n, d), jnp.float32)
                         for k, d in self.feature_dims().items()}}

  def init_state(self, rng, batch) -> TrainState:
    variables = dict(self.init_variables(rng, batch))
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                      opt_state=self.tx.init(params), lr_scale=jnp.ones((), jnp.float32),
                      extras=self.init_extras())

  # --- one step ------------------------------------------------------------------------
  def batch_labels(self, extras, batch):
    """Generated labels of the batch's rows (y_m for rows not seen yet and filler)."""
    idx, valid = self._rows(batch)
    y_m = batch.labels.astype(jnp.float32)
    seen = (extras["seen"][idx] > 0) & valid
    return {k: jnp.where(seen, extras["labels"][k][idx], y_m) for k in self.label_keys}

  def _rows(self, batch):
    valid = (batch.index >= 0) & (batch.index < self.capacity) & (batch.weights > 0)
    return jnp.where(valid, batch.index, 0), valid

  def losses(self, pred, aux, batch, gen):
    """Every term of Eq. 33 as a dict of scalars (Eq. 33's weights not applied; 'kl_m' and
    'kl_avl' are L_m and L_avl, which hold net.ib_beta only under kl_weighting='literal')."""
    n = self.net
    w = batch.weights
    y_m = batch.labels.astype(jnp.float32)
    out = {"m_task": vib.l1_task_loss(pred, y_m, w),                          # Eq. 24-25
           "kl_m": self.kl_factor * vib.weighted_kl(*aux["vib"]["m"], w)}     # Eq. 26
    zero = jnp.zeros((), jnp.float32)
    if "s" in self.tasks:
      out["s_task"] = sum(vib.l1_task_loss(aux["pred_s"][s], gen[s], w,       # Eq. 28, 32
                                           lg.loss_weights(gen[s], y_m)) for s in "tav")
      out["kl_avl"] = self.kl_factor * sum(vib.weighted_kl(*aux["vib"][s], w)  # Eq. 29
                                           for s in "tav")
    else:
      out["s_task"], out["kl_avl"] = zero, zero
    if self.heads:
      out["c_task"] = sum(vib.l1_task_loss(aux["pred_c"][c], gen["m" + c], w,  # Eq. 20, 32
                                           lg.loss_weights(gen["m" + c], y_m))
                          for c in self.heads)
      per_layer = jax.vmap(jax.vmap(modality_discriminator_loss, (0, 0, None)),
                           (0, 0, None))(aux["dc_logits"], aux["dc_targets"],
                                         aux["dc_group_weights"])         # Eq. 21, (L, P)
      k = dc_group_size(batch.weights.shape[0], n)
      out["dc"] = discriminator_regularizer(per_layer, k, n.dc_lambda)  # Eq. 22
    else:
      out["c_task"], out["dc"] = zero, zero
    out["mi"] = sum(gaussian_mi_lower_bound(*aux["mi"][p], w) for p in ("ta", "tv"))
    return out

  def total(self, terms):
    n = self.net
    return (terms["m_task"] + terms["s_task"] + terms["c_task"] + n.alpha * terms["kl_m"]
            + n.beta * terms["kl_avl"] + n.gamma * terms["dc"] + n.eta * terms["mi"])

  def loss(self, params, model_state, batch, gen, rng):
    (pred, aux), new_model_state = self.apply(params, model_state, batch, train=True,
                                              rng=rng, mutable=True)
    terms = self.losses(pred, aux, batch, gen)
    total = self.total(terms)
    reps = jax.tree_util.tree_map(jax.lax.stop_gradient, aux["repr"])
    return total, ({**terms, "loss": total}, new_model_state, reps)

  def train_step(self, state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    extras = state.extras
    gen = self.batch_labels(extras, batch)
    grads, (metrics, model_state, reps) = jax.grad(self.loss, has_aux=True)(
        state.params, state.model_state, batch, gen, rng)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    updates = scale_updates(updates, state.lr_scale)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    extras = self.store(extras, batch, gen, reps)
    return state.replace(step=state.step + 1, params=params, model_state=model_state,
                         opt_state=opt_state, extras=extras), metrics

  def store(self, extras, batch, gen, reps):
    """Writes the batch's rows into the label memory (filler rows are dropped)."""
    idx, valid = self._rows(batch)
    at = jnp.where(valid, idx, self.capacity)  # out of range -> dropped
    put = lambda arr, val: arr.at[at].set(val.astype(arr.dtype), mode="drop")
    return {"y_m": put(extras["y_m"], batch.labels),
            "seen": put(extras["seen"], jnp.ones_like(batch.weights)),
            "labels": {k: put(extras["labels"][k], gen[k]) for k in self.label_keys},
            "features": {k: put(extras["features"][k], reps[k]) for k in extras["features"]}}

  # --- label generation (Eq. 30-31) ------------------------------------------------------
  def update_labels(self, extras, i):
    """New labels for every seen row from the stored representations; Eq. 31 with index i."""
    n = self.net
    seen = extras["seen"]
    y_m = extras["y_m"]
    feats = extras["features"]
    cp, cn = lg.class_centres(feats["m"], y_m, seen, exclude_zero=n.exclude_zero)
    alpha_m = lg.relative_distance(feats["m"], cp, cn)
    labels = {}
    for k in self.label_keys:
      old = extras["labels"][k]
      cp, cn = lg.class_centres(feats[k], old, seen, exclude_zero=n.exclude_zero)
      alpha_k = lg.relative_distance(feats[k], cp, cn)
      new = lg.generate_labels(y_m, alpha_k, alpha_m, n.label_clip)
      labels[k] = jnp.where(seen > 0, lg.momentum_update(old, new, i), old)
    return {**extras, "labels": labels}

  def end_of_epoch(self, state: TrainState, epoch: int) -> TrainState:
    """After 0-based epoch e (paper epoch e + 1): y^(e+2) from Eq. 30-31."""
    if not self.label_keys:
      return state
    i = jnp.asarray(epoch + 2, jnp.float32)
    return state.replace(extras=self._update_labels(state.extras, i))


def label_case_study(state: TrainState, rows, ids=None, *, digits: int = 2) -> str:
  """A table like the paper's Table VI: m-labels, s-labels (t/a/v) and c-labels
  (m_t/m_a/m_v) of the given train rows, read from a trained state's extras.
  ids: optional names of the rows (e.g. Split.ids). Returns the text (and prints nothing)."""
  ex = jax.device_get(state.extras)
  labels = ex["labels"]
  fmt = lambda v: f"{float(v):.{digits}f}"
  group = lambda keys, r: "/".join(fmt(labels[k][r]) for k in keys if k in labels) or "-"
  lines = ["row\tid\tm-labels\ts-labels(t/a/v)\tc-labels(m_t/m_a/m_v)"]
  for r in rows:
    name = str(ids[r]) if ids is not None else "-"
    lines.append(f"{r}\t{name}\t{fmt(ex['y_m'][r])}\t{group(('t', 'a', 'v'), r)}\t"
                 f"{group(('mt', 'ma', 'mv'), r)}")
  return "\n".join(lines)


def print_case_study(state: TrainState, rows, ids=None) -> None:
  print(label_case_study(state, rows, ids))


__all__ = ["MCERMethod", "label_case_study", "print_case_study", "param_groups"]
