"""MDM's critic as a per-sample dependency score of a trained run (Colombo et al. 2021,
Sec. 5.4, Tables 3 and 5).

`score_split` gives T_theta (`MDMMethod.dependency_scores`) of every row of a split;
`dependency_table` the samples of a split with the highest and lowest scores under a
workdir's validation-selected checkpoint.
"""

from __future__ import annotations

import jax
import numpy as np

from mmfuse_jax.data import iterate_batches, shard_batch
from mmfuse_jax.training.experiment import load_trained


def score_split(exp, state, split) -> np.ndarray:
  """T_theta score of every row of a split (an Experiment, training/experiment.py)."""
  fn = jax.jit(exp.method.dependency_scores)
  out = []
  bs = -(-exp.config.eval_batch_size // exp.num_devices) * exp.num_devices
  for batch in iterate_batches(split, bs):
    n = int(batch.weights.sum())
    out.append(np.asarray(jax.device_get(fn(state, shard_batch(batch, exp.batch_sharding))))[:n])
  return np.concatenate(out)


def dependency_table(workdir: str, *, split: str = "test", top: int = 5, dataset=None) -> dict:
  """Paper Table 3: the samples of a split with the highest and lowest T_theta scores
  under the selected checkpoint of a run trained with an MDM penalty.

  Returns {'ids', 'scores' (every row), 'high': [(id, score, label)...], 'low': [...]}."""
  exp, state = load_trained(workdir, dataset=dataset)
  s = exp.dataset.splits[split]
  scores = score_split(exp, state, s)
  order = np.argsort(scores)
  pick = lambda rows: [(str(s.ids[i]), float(scores[i]), s.labels[i].tolist())  # noqa: E731
                       for i in rows]
  return {"ids": [str(i) for i in s.ids], "scores": scores.tolist(),
          "high": pick(order[::-1][:top]), "low": pick(order[:top])}
