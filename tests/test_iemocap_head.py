"""The IEMOCAP 4-emotion head ((B, 4, 2) logits, per-emotion CE, iemocap_metrics) trains
end to end for MICA and MulT on a tiny synthetic IEMOCAP-like dataset built here."""

import dataclasses

import jax
import numpy as np
import pytest

from mmfuse_jax.data.core import IEMOCAP_EMOTIONS, Dataset
from mmfuse_jax.data.pipeline import make_batch
from mmfuse_jax.losses.task import per_sample_task_loss
from mmfuse_jax.models import mica, mult
from mmfuse_jax.models.base import DataInfo
from mmfuse_jax.training import metrics as metrics_lib
from mmfuse_jax.training.loop import train_and_evaluate
from tests.helpers import tiny_config, tiny_synthetic

SMALL = {"net.d_model": 16, "net.num_heads": 2, "net.num_layers": 1,
         "net.embed_dropout": 0.0, "net.res_dropout": 0.0, "net.relu_dropout": 0.0,
         "net.attn_dropout": 0.0, "optim.lr": 1e-2, "optim.schedule": "constant"}


def iemocap_like(seed=0, n_train=384, n_valid=96, n_test=96) -> Dataset:
  """Synthetic sequences (data/synthetic.py) with four binary emotion labels (N, 4) derived
  from the per-modality signals s_m carried at the marked steps:
  neutral = |s_t + s_a| < 0.8, happy = s_t > 0, sad = s_a > 0, angry = s_v > 0."""
  ds, signals = tiny_synthetic(seed, n_train=n_train, n_valid=n_valid, n_test=n_test,
                               distractors=1, noise=0.5, return_signals=True)
  splits = {}
  for name, split in ds.splits.items():
    s = signals[name]
    labels = np.stack([np.abs(s["text"] + s["audio"]) < 0.8, s["text"] > 0,
                       s["audio"] > 0, s["vision"] > 0], axis=1).astype(np.int32)
    splits[name] = dataclasses.replace(split, labels=labels)
  return Dataset(name="iemocap_synthetic", splits=splits, task="iemocap",
                 source=f"iemocap_like(seed={seed})")


def majority_mean_acc(ds) -> float:
  """Mean over emotions of the accuracy of predicting each emotion's train majority."""
  train, test = ds.splits["train"].labels, ds.splits["test"].labels
  major = (train.mean(0) >= 0.5).astype(int)
  return float(np.mean([(test[:, k] == major[k]).mean() for k in range(4)]))


def test_dataset_is_balanced_enough_and_head_shapes():
  ds = iemocap_like(n_train=64, n_valid=16, n_test=16)
  labels = ds.splits["train"].labels
  assert labels.shape == (64, 4) and set(np.unique(labels)) <= {0, 1}
  assert np.all((labels.mean(0) > 0.2) & (labels.mean(0) < 0.8))
  info = DataInfo(modalities=ds.modalities, feature_dims=ds.feature_dims,
                  max_lengths=ds.max_lengths, task="iemocap")
  batch = make_batch(ds.splits["train"], np.arange(4), 4)
  for build, net in ((mica.MICAModel, mica.default_net()), (mult.MulTModel, mult.default_net())):
    net.d_model, net.num_heads, net.num_layers = 8, 2, 1
    if "memory_layers" in net:
      net.memory_layers = 1
    model = build(net, info)
    variables = jax.jit(lambda b: model.init(jax.random.PRNGKey(0), b))(batch)
    out = jax.eval_shape(lambda v, b: model.apply(v, b)[0], variables, batch)
    assert out.shape == (4, 4, 2)
  # The task loss is the mean over emotions of 2-way cross-entropy (closed form check).
  logits = np.random.default_rng(0).normal(size=(4, 4, 2)).astype(np.float32)
  lab = labels[:4]
  want = -np.mean(np.log(np.exp(np.take_along_axis(logits, lab[..., None], -1)[..., 0])
                         / np.exp(logits).sum(-1)), axis=1)
  np.testing.assert_allclose(per_sample_task_loss(logits, lab, "iemocap"), want, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mica", "mult"])
def test_iemocap_head_learns(model, workdir):
  ds = iemocap_like()
  baseline = majority_mean_acc(ds)
  # MICA: the scale-free L_e of configs/mica.py:synthetic (this tests the head, not Eq. 2)
  extra = ({"net.mmd_max_elements": 128, "net.pe_distance": "cosine",
            "net.pe_normalize": "mean"} if model == "mica" else {})
  c = tiny_config(model, epochs=12, **{**SMALL, **extra})
  r = train_and_evaluate(c, workdir, dataset=ds)
  assert r["select_metric"] == "loss"
  keys = {f"{e}_{m}" for e in IEMOCAP_EMOTIONS for m in ("acc", "f1")} | {"mean_acc", "mean_f1"}
  assert keys <= set(r["test"])
  assert r["test"]["mean_acc"] > baseline + 0.15, (r["test"], baseline)
  # The metrics the loop reports are iemocap_metrics of the selected model's predictions.
  assert r["test"]["mean_f1"] == pytest.approx(np.mean([r["test"][f"{e}_f1"]
                                                        for e in IEMOCAP_EMOTIONS]))
  assert metrics_lib.SELECTION_DEFAULTS["iemocap"] == ("loss", "min")
