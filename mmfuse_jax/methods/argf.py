"""ARGF's training: separate updates per batch, each with its own optimiser over its own
parameter subset (Mai et al., AAAI 2020, text under Eq. 9 and "Experimental details").

Per batch, inside one jit-compiled `train_step` (the order is `net.update_order`; the
paper's text gives autoencoder -> discriminator -> classifier, the public code
autoencoder -> classifier -> discriminator; the fusion update comes last in both):

  ucln           UCLN BiLSTMs + their heads, the task loss of each modality's head (the
                 paper trains the UCLN separately; its outputs enter ARGF as constants).
                 With net.ucln_epochs > 0 it runs alone for that many epochs, then never.
  autoencoder    encoders + decoders: lambda L_fal + (1 - lambda) L_rl        (Eq. 3, 6, 9)
  classifier     encoders + shared classifier: L_cl                          (Eq. 8)
  discriminator  discriminator: 0.5 L_tal on the encodings (constants)       (Eq. 4, 9)
  fusion         fusion network + decision layers: the fusion loss on the encodings
                 (constants): MSE as in the paper (net.fusion_loss)          (Eq. 10-16)

Every update recomputes its activations with the parameters left by the previous update
(the public code reuses stale ones). BatchNorm normalises every training-mode pass with its
batch's statistics; the running averages (used in evaluation) move once per batch by
default (net.bn_update='batch'): the encoders' from their first pass of the step (the public
code runs the encoders once per batch), the other layers' in the one update that runs them
(the reference classifier's three per-modality calls: three moves, as in the public code).
net.bn_update='update' lets every pass move them (the encoders then 4 times per batch).
opt_state is a dict
{update name: optax state}; every optimiser is `make_optimizer(config.optim)` (Adam,
betas (0.5, 0.999) from the model's update_config), except the UCLN's (Adadelta).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.losses import adversarial as adv
from mmfuse_jax.losses.task import per_sample_task_loss, weighted_mean
from mmfuse_jax.methods.base import Method, TrainState
from mmfuse_jax.methods.optim import make_optimizer, scale_updates
from mmfuse_jax.models.argf import (ARGFModel, active_updates, check_net, context_error)
from mmfuse_jax.registry import METHODS

# Top-level parameter names (ARGFModel.setup) owned by each update.
GROUPS = {
    "ucln": ("ucln_", "ucln_head_"),
    "autoencoder": ("encoders_", "decoders_"),
    "classifier": ("encoders_", "classifier_net"),
    "discriminator": ("discriminator",),
    "fusion": ("fusion", "decision"),
}
METRIC_KEYS = ("ucln_loss", "fal", "rl", "cl", "tal", "d_target", "d_source", "fusion_loss")


def param_subset(params: dict, update: str) -> dict:
  """The top-level entries of `params` that `update` trains."""
  return {k: v for k, v in params.items() if k.startswith(GROUPS[update])}


@METHODS.register("argf")
class ARGFMethod(Method):

  def __init__(self, config, model, spec, info, steps_per_epoch):
    super().__init__(config, model, spec, info, steps_per_epoch)
    net = config.net
    if "target_modality" not in net or not isinstance(model, ARGFModel):
      raise ConfigError("method 'argf' trains the 'argf' model only")
    check_net(net, info)
    if net.ucln and not config.data.context:
      raise context_error()
    self.updates = active_updates(net)
    self.tx = {u: make_optimizer(config.optim, steps_per_epoch) for u in self.updates}
    if net.ucln:
      self.tx["ucln"] = (optax.adadelta(net.ucln_lr) if net.ucln_optimizer == "adadelta"
                         else make_optimizer(config.optim, steps_per_epoch))

  # --- helpers ---------------------------------------------------------------------------
  def task_loss_per_sample(self, pred, batch):
    """The fusion network's loss: the paper's MSE, or the library's task loss."""
    if self.config.net.fusion_loss == "mse":
      return adv.probability_mse_per_sample(pred, batch.labels, self.info.task)
    return per_sample_task_loss(pred, batch.labels, self.info.task, self.config.loss.task)

  def run(self, params, model_state, fn, *args, train: bool, rng=None):
    """Applies `fn(module, *args, train=...)`; returns (output, updated model_state).
    Under precision='bf16' params and floating inputs go in as bfloat16 and the outputs
    come back as float32 (Method.to_compute / to_float32)."""
    variables = {"params": self.to_compute(params), **model_state}
    args = tuple(self.to_compute(a) for a in args)
    rngs = {"dropout": rng} if rng is not None else None
    if train and model_state:
      out, new = self.model.apply(variables, *args, train=True, rngs=rngs, method=fn,
                                  mutable=list(model_state))
      return self.to_float32(out), {**model_state, **self.to_float32(new)}
    out = self.model.apply(variables, *args, train=train, rngs=rngs, method=fn)
    return self.to_float32(out), model_state

  def _update(self, name, loss_fn, params, model_state, opt_state, lr_scale):
    """One optimiser step of `name` on its parameter subset; loss_fn(full params) ->
    (loss, (metrics, model_state))."""
    sub = param_subset(params, name)
    def f(s):
      return loss_fn({**params, **s})
    grads, (metrics, model_state) = jax.grad(f, has_aux=True)(sub)
    updates, new_opt = self.tx[name].update(grads, opt_state[name], sub)
    sub = optax.apply_updates(sub, scale_updates(updates, lr_scale))
    metrics[f"grad_norm_{name}"] = optax.tree.norm(grads)
    return {**params, **sub}, model_state, {**opt_state, name: new_opt}, metrics

  # --- the losses of each update ------------------------------------------------------
  def ucln_loss(self, params, model_state, batch, rng):
    (_, preds), _ = self.run(params, model_state, ARGFModel.inputs, batch, train=True, rng=rng)
    per = sum(per_sample_task_loss(preds[m], batch.labels, self.info.task,
                                   self.config.loss.task) for m in preds) / len(preds)
    loss = weighted_mean(per, batch.weights)
    return loss, ({"ucln_loss": loss}, model_state)

  def autoencoder_loss(self, params, model_state, x, batch, rng):
    net, w = self.config.net, batch.weights
    row_mask = w > 0
    def fn(mdl, x, row_mask, *, train):
      enc = mdl.encode(x, row_mask, train=train)
      rec = mdl.decode(enc, row_mask, train=train) if net.decoder else None
      logits = mdl.discriminate({m: enc[m] for m in mdl.sources}, train=train) \
          if net.adversarial else None
      return rec, logits
    (rec, logits), model_state = self.run(params, model_state, fn, x, row_mask, train=True,
                                          rng=rng)
    metrics, loss = {}, 0.0
    both = net.decoder and net.adversarial
    if net.adversarial:
      fal = adv.fake_adversarial_loss(list(logits.values()), w, net.adv_weight)
      loss = loss + (net.adv_lambda if both else 1.0) * fal
      metrics["fal"] = fal
    if net.decoder:
      mods = self.info.modalities
      rl = adv.reconstruction_loss([rec[m] for m in mods], [x[m] for m in mods], w,
                                   net.distance)
      loss = loss + ((1.0 - net.adv_lambda) if both else 1.0) * rl
      metrics["rl"] = rl
    return loss, (metrics, model_state)

  def classifier_loss(self, params, model_state, x, batch, rng):
    net, w = self.config.net, batch.weights
    def fn(mdl, x, row_mask, *, train):
      return mdl.classify(mdl.encode(x, row_mask, train=train), row_mask, train=train)
    out, model_state = self.run(params, model_state, fn, x, w > 0, train=True, rng=rng)
    target = adv.one_hot_targets(batch.labels, self.info.task, self.info.output_dim)
    cl = adv.classification_loss(list(out.values()), target, w, net.distance)
    return cl, ({"cl": cl}, model_state)

  def discriminator_loss(self, params, model_state, enc, batch, rng):
    net, w = self.config.net, batch.weights
    def fn(mdl, enc, *, train):
      return mdl.discriminate(enc, train=train)
    logits, model_state = self.run(params, model_state, fn, enc, train=True, rng=rng)
    t = net.target_modality
    src = [logits[m] for m in logits if m != t]
    tal = adv.true_adversarial_loss(logits[t], src, w, net.adv_weight)
    metrics = {"tal": tal, "d_target": weighted_mean(jax.nn.sigmoid(logits[t]), w),
               "d_source": weighted_mean(sum(jax.nn.sigmoid(z) for z in src) / len(src), w)}
    return 0.5 * tal, (metrics, model_state)

  def fusion_loss(self, params, model_state, enc, batch, rng):
    def fn(mdl, enc, row_mask, *, train):
      return mdl.fuse(enc, row_mask, train=train)[0]
    pred, model_state = self.run(params, model_state, fn, enc, batch.weights > 0, train=True,
                                 rng=rng)
    loss = weighted_mean(self.task_loss_per_sample(pred, batch), batch.weights)
    return loss, ({"fusion_loss": loss}, model_state)

  def encodings(self, params, model_state, x, batch, rng):
    """Encoder outputs in training mode (updates BatchNorm statistics), as constants."""
    def fn(mdl, x, row_mask, *, train):
      return mdl.encode(x, row_mask, train=train)
    enc, model_state = self.run(params, model_state, fn, x, batch.weights > 0, train=True,
                                rng=rng)
    return jax.lax.stop_gradient(enc), model_state

  # --- the contract ----------------------------------------------------------------------
  def init_state(self, rng, batch) -> TrainState:
    variables = dict(self.init_variables(rng, batch))
    params = variables.pop("params")
    opt_state = {u: self.tx[u].init(param_subset(params, u)) for u in self.tx}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                      opt_state=opt_state, lr_scale=jnp.ones((), jnp.float32), extras={})

  def _keep_first_encoder_stats(self, before, after, encoded_already: bool):
    """net.bn_update='batch': once the encoders ran in training mode this step, later
    passes leave their running averages as the first pass set them."""
    if not encoded_already or self.config.net.get("bn_update", "batch") != "batch":
      return after
    return {col: {k: (before[col][k] if k.startswith(GROUPS["autoencoder"][0]) else v)
                  for k, v in tree.items()} for col, tree in after.items()}

  def _argf_updates(self, params, model_state, opt_state, batch, rng, lr_scale):
    """The ARGF updates in order on frozen UCLN outputs."""
    metrics = {}
    (x, _), _ = self.run(params, model_state, ARGFModel.inputs, batch, train=False)
    x = jax.lax.stop_gradient(x)
    encoded = False   # whether an encoder pass of this step has moved the running averages
    for i, name in enumerate(self.updates):
      state_before = model_state
      r = jax.random.fold_in(rng, i + 1)
      r_enc, r_loss = jax.random.split(r)
      if name in ("autoencoder", "classifier"):
        loss_fn = lambda p, name=name: getattr(self, f"{name}_loss")(  # noqa: E731
            p, model_state, x, batch, r_loss)
      else:
        enc, model_state = self.encodings(params, model_state, x, batch, r_enc)
        loss_fn = lambda p, name=name, enc=enc: getattr(self, f"{name}_loss")(  # noqa: E731
            p, model_state, enc, batch, r_loss)
      params, model_state, opt_state, m = self._update(name, loss_fn, params, model_state,
                                                       opt_state, lr_scale)
      model_state = self._keep_first_encoder_stats(state_before, model_state, encoded)
      encoded = True   # every ARGF update runs the encoders in training mode
      metrics.update(m)
    return params, model_state, opt_state, metrics

  def _ucln_update(self, params, model_state, opt_state, batch, rng, lr_scale):
    loss_fn = lambda p: self.ucln_loss(p, model_state, batch, rng)  # noqa: E731
    return self._update("ucln", loss_fn, params, model_state, opt_state, lr_scale)

  def _fill(self, metrics):
    keys = list(METRIC_KEYS) + [f"grad_norm_{u}" for u in self.tx]
    return {k: jnp.asarray(metrics.get(k, 0.0), jnp.float32) for k in keys}

  def train_step(self, state: TrainState, batch, rng):
    net = self.config.net
    rng = jax.random.fold_in(rng, state.step)
    args = (state.params, state.model_state, state.opt_state)

    def argf_only(params, model_state, opt_state):
      return self._argf_updates(params, model_state, opt_state, batch, rng, state.lr_scale)

    def ucln_then_argf(params, model_state, opt_state):
      params, model_state, opt_state, m0 = self._ucln_update(
          params, model_state, opt_state, batch, jax.random.fold_in(rng, 0), state.lr_scale)
      params, model_state, opt_state, m = argf_only(params, model_state, opt_state)
      return params, model_state, opt_state, {**m0, **m}

    def ucln_only(params, model_state, opt_state):
      return self._ucln_update(params, model_state, opt_state, batch,
                               jax.random.fold_in(rng, 0), state.lr_scale)

    def filled(fn):
      def g(*a):
        p, s, o, m = fn(*a)
        return p, s, o, self._fill(m)
      return g

    if not net.ucln:
      out = filled(argf_only)(*args)
    elif net.ucln_epochs <= 0:
      out = filled(ucln_then_argf)(*args)
    else:
      stage1 = state.step < net.ucln_epochs * self.steps_per_epoch
      out = jax.lax.cond(stage1, filled(ucln_only), filled(argf_only), *args)
    params, model_state, opt_state, metrics = out
    metrics["embedding_loss"] = adv.embedding_objective(
        metrics["fal"], metrics["rl"], metrics["tal"], metrics["cl"],
        net.adv_lambda)
    metrics["loss"] = metrics["fusion_loss"]
    return state.replace(step=state.step + 1, params=params, model_state=model_state,
                         opt_state=opt_state), metrics
