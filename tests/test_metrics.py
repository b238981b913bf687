import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from mmfuse_jax.training import metrics as M


def test_weighted_f1_and_accuracy_match_sklearn():
  rng = np.random.default_rng(0)
  for _ in range(5):
    t = rng.integers(0, 3, 50); p = rng.integers(0, 3, 50)
    assert M.accuracy(p, t) == pytest.approx(accuracy_score(t, p))
    assert M.weighted_f1(p, t) == pytest.approx(f1_score(t, p, average="weighted"))


def test_mosi_metrics_hand_case():
  truth = np.array([-2.6, -0.4, 0.0, 0.0, 1.5, 2.5, 3.4])
  pred = np.array([-1.4, 0.3, -0.2, 0.5, 1.5, 2.6, 2.8])
  m = M.mosi_metrics(pred, truth)
  # has0: truth>=0 -> [F,F,T,T,T,T,T]; pred>=0 -> [F,T,F,T,T,T,T]
  assert m["acc2_has0"] == pytest.approx(5 / 7)
  # non0 drops the two zero labels: truth>0 [F,F,T,T,T]; pred>0 [F,T,T,T,T]
  assert m["acc2_non0"] == pytest.approx(4 / 5)
  assert m["f1_non0"] == pytest.approx(
      f1_score([0, 0, 1, 1, 1], [0, 1, 1, 1, 1], average="weighted"))
  # acc7: clip to [-3, 3], round half to even: truth -> [-3,-0,0,0,2,2,3], pred -> [-1,0,-0,0,2,3,3]
  assert m["acc7"] == pytest.approx(5 / 7)
  # acc5: clip to [-2, 2]: truth -> [-2,-0,0,0,2,2,2], pred -> [-1,0,-0,0,2,2,2]
  assert m["acc5"] == pytest.approx(6 / 7)
  assert m["mae"] == pytest.approx(np.mean(np.abs(pred - truth)))
  assert m["corr"] == pytest.approx(np.corrcoef(pred, truth)[0, 1])


def test_round_half_to_even_like_mmsa():
  # 0.5 rounds to 0 and 2.5 to 2 (numpy), so these two count as exact matches.
  m = M.mosi_metrics(np.array([0.5, 2.5]), np.array([0.0, 2.0]))
  assert m["acc7"] == 1.0


def test_sims_metrics_bins():
  truth = np.array([-1.0, -0.6, -0.1, 0.05, 0.1, 0.2, 0.8, 1.4])
  pred = np.array([-0.8, -0.1, 0.0, 0.09, 0.0, 0.5, 0.6, 0.9])
  m = M.sims_metrics(pred, truth)
  # acc2 bins [-1,0] vs (0,1]: truth [0,0,0,1,1,1,1,1], pred [0,0,0,1,0,1,1,1]
  assert m["acc2"] == pytest.approx(7 / 8)
  # acc3: (-1,-0.1] neg, (-0.1,0.1] neutral, (0.1,1] pos:
  # truth [0,0,0,1,1,2,2,2], pred [0,0,1,1,1,2,2,2]
  assert m["acc3"] == pytest.approx(7 / 8)
  # acc5 edges -0.7,-0.1,0.1,0.7: truth [0,1,1,2,2,3,4,4] pred [0,1,2,2,2,3,3,4]
  assert m["acc5"] == pytest.approx(6 / 8)
  assert m["mae"] == pytest.approx(np.mean(np.abs(pred - np.clip(truth, -1, 1))))


def test_iemocap_metrics():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(40, 4, 2)); labels = rng.integers(0, 2, (40, 4))
  m = M.iemocap_metrics(logits, labels)
  for k, e in enumerate(("neutral", "happy", "sad", "angry")):
    p = logits[:, k].argmax(-1)
    assert m[f"{e}_acc"] == pytest.approx(accuracy_score(labels[:, k], p))
    assert m[f"{e}_f1"] == pytest.approx(f1_score(labels[:, k], p, average="weighted"))


def test_classification_metrics():
  logits = np.array([[2.0, 0.1], [0.0, 1.0], [3.0, -1.0], [0.2, 0.1]])
  m = M.classification_metrics(logits, np.array([0, 1, 1, 0]))
  assert m["acc"] == pytest.approx(0.75)
  assert m["f1"] == pytest.approx(f1_score([0, 1, 1, 0], [0, 1, 0, 0], average="weighted"))
