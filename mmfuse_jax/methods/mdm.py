"""MDM: task loss minus a mutual-dependency penalty (Colombo et al., EMNLP 2021).

Eq. 5:  L = L_down - lambda * L_MDM, where L_MDM is one of the bounds of Th. 1
(losses/dependency.py: 'kl' Eq. 6, 'f' Eq. 7, 'w' Eq. 8) evaluated by a statistic network
T_theta (Table 4). Algorithm 1 inside one jit-compiled `train_step`:

  1. `net.mdm_unroll` = K critic updates (lax.fori_loop; AdamW, App. A.1.2) maximising the
     bound; update i draws a fresh batch, the i-th of the K further batches the step
     receives in `batch.more` (the loop supplies the next K batches of the epoch,
     `extra_batches`), and fresh negatives: a forward pass of the model (no gradient) on
     that batch and, in 'fused' mode, on the batch with its modalities permuted
     independently (in 'unimodal' mode its unimodal representations permuted);
  2. one model update with the gradient of Eq. 5 on the step's own batch (and its fresh
     negatives) under the updated critic: one forward pass (two in 'fused' mode) kept as a
     VJP, one backward pass.

Critic parameters live in `TrainState.extras['critic']`; the optimiser states are
`opt_state = {'model': ..., 'critic': ...}`. With net.mdm='none' the method is exactly the
standard one (same state layout as `standard`), so `--net.mdm=none|kl|f|w` alone switches
the penalty: the four baselines register method='mdm'.

Critic input (`net.mdm_input`):
  'fused'    (default; paper Fig. 3 and Table 4): T scores the fused representation Z_avl
             = aux['fused'] of the batch (joint) and of the negative batch built by
             permuting each modality's features and mask independently (Algorithm 1,
             'Build Negative Dataset'); costs a second forward pass of the model.
  'unimodal' T scores concat_m aux['unimodal'][m]; negatives permute each modality's
             representation independently within the batch (no second forward pass).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.losses import dependency as dep
from mmfuse_jax.losses.task import weighted_mean
from mmfuse_jax.methods.base import TrainState
from mmfuse_jax.methods.optim import scale_updates
from mmfuse_jax.methods.standard import StandardMethod
from mmfuse_jax.models.mdm_critic import StatisticNetwork
from mmfuse_jax.registry import METHODS

MDM_KINDS = ("none",) + dep.BOUNDS
MDM_INPUTS = ("fused", "unimodal")


def _check(net) -> None:
  if "mdm" not in net:
    raise ConfigError("method 'mdm' needs the net.mdm* fields; add them to the model's "
                      "default_net() with mmfuse_jax.models.mdm_critic.add_mdm_defaults")
  if net.mdm not in MDM_KINDS:
    raise ConfigError(f"net.mdm must be one of {', '.join(MDM_KINDS)}, got {net.mdm!r}")
  if net.mdm_input not in MDM_INPUTS:
    raise ConfigError(f"net.mdm_input must be one of {', '.join(MDM_INPUTS)}, got "
                      f"{net.mdm_input!r}")
  if net.mdm_unroll < 0:
    raise ConfigError(f"net.mdm_unroll must be >= 0, got {net.mdm_unroll}")
  if net.mdm_critic_output not in ("sigmoid", "linear"):
    raise ConfigError(f"net.mdm_critic_output must be sigmoid or linear, got "
                      f"{net.mdm_critic_output!r}")


@METHODS.register("mdm")
class MDMMethod(StandardMethod):
  # The named random streams of one train step (`step_rngs`).
  STREAMS = ("model", "negatives", "negative_model", "critic", "regularizer", "marginals",
             "bound")

  def __init__(self, config, model, spec, info, steps_per_epoch):
    super().__init__(config, model, spec, info, steps_per_epoch)
    net = config.net
    _check(net)
    self.kind = net.mdm
    self.critic = StatisticNetwork(dropout=net.mdm_critic_dropout,
                                   output=net.mdm_critic_output)
    lr = net.mdm_critic_lr or config.optim.lr
    self.critic_tx = optax.adamw(lr, b1=config.optim.b1, b2=config.optim.b2,
                                 weight_decay=net.mdm_critic_weight_decay)

  @property
  def active(self) -> bool:
    return self.kind != "none"

  # --- critic inputs -----------------------------------------------------------------
  def negative_batch(self, rng, batch):
    """The batch with each modality's (features, mask) permuted independently."""
    per_mod = {m: (batch.features[m], batch.masks[m]) for m in batch.features}
    shuffled = dep.shuffle_modalities(rng, per_mod, batch.weights)
    return batch.replace(features={m: shuffled[m][0] for m in batch.features},
                         masks={m: shuffled[m][1] for m in batch.features})

  def joint_inputs(self, aux):
    if self.config.net.mdm_input == "fused":
      return aux["fused"]
    return jnp.concatenate([aux["unimodal"][m] for m in self.info.modalities], axis=-1)

  def marginal_inputs(self, aux, neg_fused, rng, weights):
    if self.config.net.mdm_input == "fused":
      return neg_fused
    parts = dep.shuffle_modalities(rng, {m: aux["unimodal"][m] for m in self.info.modalities},
                                   weights)
    return jnp.concatenate([parts[m] for m in self.info.modalities], axis=-1)

  def _critic_apply(self, cparams, z, rng):
    return self.critic.apply({"params": cparams}, z, train=True, rngs={"dropout": rng})

  def _bound(self, cparams, z_j, z_m, weights, ma, rng):
    net = self.config.net
    r1, r2 = jax.random.split(rng)
    tj = self._critic_apply(cparams, z_j, r1)
    tm = self._critic_apply(cparams, z_m, r2)
    return dep.dependency_bound(self.kind, tj, tm, weights, ma_state=ma,
                                ma_rate=net.mdm_ma_rate, log_marginal=net.mdm_w_log)

  def critic_loss(self, cparams, z_j, z_m, weights, ma, rng):
    """-(bound) [+ gp * gradient penalty for 'w']; returns (loss, (estimate, new_ma))."""
    b_rng, gp_rng, drop_rng = jax.random.split(rng, 3)
    est, sur, new_ma = self._bound(cparams, z_j, z_m, weights, ma, b_rng)
    loss = -sur
    if self.kind == "w" and self.config.net.mdm_gp > 0:
      critic = lambda z: self._critic_apply(cparams, z, drop_rng)  # noqa: E731
      loss = loss + self.config.net.mdm_gp * dep.gradient_penalty(critic, z_j, z_m, weights,
                                                                  gp_rng)
    return loss, (est, new_ma)

  # --- the contract ----------------------------------------------------------------
  def init_state(self, rng, batch) -> TrainState:
    state = super().init_state(rng, batch)
    if not self.active:
      return state
    z = jax.eval_shape(
        lambda p: self.joint_inputs(self.apply(p, state.model_state, batch, train=False)[0][1]),
        state.params)
    cparams = self.critic.init(jax.random.fold_in(rng, 17),
                               jnp.zeros(z.shape, z.dtype))["params"]
    return state.replace(
        opt_state={"model": state.opt_state, "critic": self.critic_tx.init(cparams)},
        extras={"critic": cparams, "ma": jnp.zeros((), jnp.float32),
                "ma_count": jnp.zeros((), jnp.float32)})

  @property
  def extra_batches(self) -> int:
    """Algorithm 1 samples a fresh batch, with fresh negatives, for every critic update: the
    step receives net.mdm_unroll further batches in `batch.more`."""
    return self.config.net.mdm_unroll if self.active else 0

  def step_rngs(self, rng, step) -> dict:
    """The named random streams of one train step (so tests can rebuild the step)."""
    keys = jax.random.split(jax.random.fold_in(rng, step), len(self.STREAMS))
    return dict(zip(self.STREAMS, keys))

  def critic_inputs(self, params, model_state, batch, rng):
    """(z_joint, z_marginal) of one batch for a critic update, without gradient: the model's
    representation of the batch (training mode) and of its negatives, drawn with `rng`
    (fused mode: a new forward pass of the batch with its modalities permuted
    independently; unimodal mode: the unimodal representations permuted)."""
    model_rng, neg_rng, neg_model_rng = jax.random.split(rng, 3)
    (_, aux), _ = self.apply(params, model_state, batch, train=True, rng=model_rng,
                             mutable=True)
    z_j = self.joint_inputs(aux)
    if self.config.net.mdm_input == "fused":
      (_, neg_aux), _ = self.apply(params, model_state, self.negative_batch(neg_rng, batch),
                                   train=True, rng=neg_model_rng, mutable=True)
      z_m = neg_aux["fused"]
    else:
      z_m = self.marginal_inputs(aux, None, neg_rng, batch.weights)
    return jax.lax.stop_gradient((z_j, z_m))

  def update_critic(self, state: TrainState, more, rng):
    """Algorithm 1's inner loop: net.mdm_unroll critic updates (AdamW) maximising the bound,
    update i on the i-th further batch `more` (arrays (B, K, ...)) with fresh negatives.
    Returns (critic params, critic optimiser state, (ma, ma_count), last estimate)."""
    net = self.config.net

    def critic_update(i, carry):
      cparams, copt, ma, _ = carry
      b = jax.tree_util.tree_map(
          lambda x: jax.lax.dynamic_index_in_dim(x, i, axis=1, keepdims=False), more)
      in_rng, loss_rng = jax.random.split(jax.random.fold_in(rng, i))
      z_j, z_m = self.critic_inputs(state.params, state.model_state, b, in_rng)
      grads, (est, ma) = jax.grad(self.critic_loss, has_aux=True)(cparams, z_j, z_m,
                                                                  b.weights, ma, loss_rng)
      updates, copt = self.critic_tx.update(grads, copt, cparams)
      updates = scale_updates(updates, state.lr_scale)
      return optax.apply_updates(cparams, updates), copt, ma, est

    ma0 = (state.extras["ma"], state.extras["ma_count"])
    carry = (state.extras["critic"], state.opt_state["critic"], ma0, jnp.zeros((), jnp.float32))
    if not net.mdm_unroll:
      return carry
    return jax.lax.fori_loop(0, net.mdm_unroll, critic_update, carry)

  def model_outputs(self, params, *, model_state, batch, rngs):
    """The model's forward pass(es) whose outputs Eq. 5 reads: {'pred', 'aux'} on the batch
    and, in 'fused' mode, 'neg', the fused representation of its negative batch (modalities
    permuted independently). Returns (outputs, new model_state)."""
    (pred, aux), new_ms = self.apply(params, model_state, batch, train=True,
                                     rng=rngs["model"], mutable=True)
    outs = {"pred": pred, "aux": aux}
    if self.config.net.mdm_input == "fused":
      (_, neg_aux), _ = self.apply(params, model_state,
                                   self.negative_batch(rngs["negatives"], batch),
                                   train=True, rng=rngs["negative_model"], mutable=True)
      outs["neg"] = neg_aux["fused"]
    return outs, new_ms

  def model_loss(self, outs, *, batch, critic_params, ma, rngs):
    """Eq. 5, L = L_down - lambda * L_MDM, on the outputs of `model_outputs`: the task
    loss (plus the model's own regularizer, if any) minus net.mdm_lambda times the bound
    (Eq. 6-8, surrogate form) of the critic's scores of the joint representation and its
    negatives. Returns (loss, metrics)."""
    net, w = self.config.net, batch.weights
    task = weighted_mean(self.task_loss_per_sample(outs["pred"], batch), w)
    metrics = {"task_loss": task}
    total = task
    if self.spec.regularizer is not None:
      reg, reg_metrics = self.spec.regularizer(outs["aux"], batch, self.config,
                                               rngs["regularizer"])
      total = total + reg
      metrics.update(reg_metrics)
    zj = self.joint_inputs(outs["aux"])
    zm = self.marginal_inputs(outs["aux"], outs.get("neg"), rngs["marginals"], w)
    est, sur, _ = self._bound(critic_params, zj, zm, w, ma, rngs["bound"])
    total = total - net.mdm_lambda * sur
    metrics.update(mdm_estimate=est, loss=total)
    return total, metrics

  def model_gradient(self, state: TrainState, batch, rng):
    """Algorithm 1, one outer iteration, without the model's optimiser step: the critic
    updates on the further batches, then the gradient of Eq. 5 on `batch` under the updated
    critic. Returns (grads, metrics, new model_state, (critic params, critic opt state,
    (ma, ma_count)))."""
    net = self.config.net
    k = net.mdm_unroll
    if k and (batch.more is None or batch.more.weights.shape[1] != k):
      got = None if batch.more is None else batch.more.weights.shape[1]
      raise ValueError(f"MDM's train step needs net.mdm_unroll = {k} further batches in "
                       f"batch.more (one per critic update, Algorithm 1), got {got}; build "
                       f"batches with iterate_batches(..., extra_batches={k}) or "
                       f"make_batch(..., more_rows=...)")
    rngs = self.step_rngs(rng, state.step)
    more, batch = batch.more, batch.replace(more=None)
    cparams, copt, ma, critic_est = self.update_critic(state, more, rngs["critic"])
    forward = functools.partial(self.model_outputs, model_state=state.model_state,
                                batch=batch, rngs=rngs)
    outs, model_vjp, new_model_state = jax.vjp(forward, state.params, has_aux=True)
    loss = functools.partial(self.model_loss, batch=batch, critic_params=cparams, ma=ma,
                             rngs=rngs)
    total, loss_vjp, metrics = jax.vjp(loss, outs, has_aux=True)
    (cotangent,) = loss_vjp(jnp.ones_like(total))
    (grads,) = model_vjp(cotangent)
    metrics["mdm_critic_estimate"] = critic_est
    return grads, metrics, new_model_state, (cparams, copt, ma)

  def train_step(self, state: TrainState, batch, rng):
    if not self.active:
      return super().train_step(state, batch, rng)
    grads, metrics, new_model_state, (cparams, copt, ma) = self.model_gradient(
        state, batch, rng)
    updates, opt_state = self.tx.update(grads, state.opt_state["model"], state.params)
    updates = scale_updates(updates, state.lr_scale)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    extras = {"critic": cparams, "ma": ma[0], "ma_count": ma[1]}
    return state.replace(step=state.step + 1, params=params, model_state=new_model_state,
                         opt_state={"model": opt_state, "critic": copt},
                         extras=extras), metrics

  # --- interpretation (paper Sec. 5.4, Tables 3 and 5) ------------------------------
  def dependency_scores(self, state: TrainState, batch) -> jnp.ndarray:
    """(B,) T_theta of each sample's own (joint) representation, deterministic: high =
    the modalities agree/complement each other, low = they contradict (paper Sec. 5.4)."""
    if not self.active:
      raise ConfigError("dependency scores need a run trained with net.mdm = kl, f or w")
    (_, aux), _ = self.apply(state.params, state.model_state, batch, train=False)
    return self.critic.apply({"params": state.extras["critic"]}, self.joint_inputs(aux),
                             train=False)
