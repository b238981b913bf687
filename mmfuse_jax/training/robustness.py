"""Robustness to modality drop (MDM paper Sec. 5.3, Fig. 2 and 4), for any model.

A trained run's validation-selected checkpoint is evaluated on a split with one or more
modalities corrupted at inference time (training used all modalities):

  'zero'    the modality's features are set to 0 (its mask is kept: the model still sees
            steps, they carry no information; 0 is the train mean after standardisation);
  'remove'  the modality's mask is all False (no valid step: models that pool or run an
            LSTM over valid steps see an empty sequence).

The table reports, per corruption, the task metrics and the paper's ratio
Acc_2^corrupt / Acc_2 (both MOSI binarisations for regression; the accuracy for
classification tasks; mean accuracy for IEMOCAP).

Drop specs: 'MODE:MOD[+MOD...]' with MODE in {zero, remove} (default zero), e.g.
'text', 'zero:text', 'remove:text+audio'. The paper's setting (keep A, V or A+V; text
always dropped) is `PAPER_DROPS`.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np

from mmfuse_jax.data.core import Split
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training.experiment import load_trained
from mmfuse_jax.training.evaluation import evaluate_split

MODES = ("zero", "remove")
PAPER_DROPS = ("zero:text+vision", "zero:text+audio", "zero:text")  # keep A, V, A+V
ACC_KEYS = {"regression": ("acc2_has0", "acc2_non0"), "sims": ("acc2",),
            "classification": ("acc",), "iemocap": ("mean_acc",)}


def parse_drop(spec: str, modalities) -> tuple[str, tuple[str, ...]]:
  """'remove:text+audio' -> ('remove', ('text', 'audio')); errors name what is valid."""
  mode, _, mods = spec.rpartition(":")
  mode = mode or "zero"
  if mode not in MODES:
    raise ConfigError(f"drop {spec!r}: mode must be one of {', '.join(MODES)}")
  names = tuple(m.strip() for m in mods.replace(",", "+").split("+") if m.strip())
  bad = [m for m in names if m not in modalities]
  if not names or bad:
    raise ConfigError(f"drop {spec!r}: modalities must be a '+'-joined subset of "
                      f"{list(modalities)}")
  return mode, names


def corrupt_split(split: Split, mode: str, modalities) -> Split:
  """A copy of the split with the named modalities zeroed or removed."""
  feats, masks = dict(split.features), dict(split.masks)
  for m in modalities:
    if mode == "zero":
      feats[m] = np.zeros_like(split.features[m])
    elif mode == "remove":
      masks[m] = np.zeros_like(split.masks[m])
      feats[m] = np.zeros_like(split.features[m])
    else:
      raise ConfigError(f"unknown drop mode {mode!r} (valid: {', '.join(MODES)})")
  return dataclasses.replace(split, features=feats, masks=masks)


def accuracy_ratios(task: str, corrupt: dict, clean: dict) -> dict[str, float]:
  """'<acc>_ratio' = Acc(changed inputs) / Acc(clean) per accuracy metric of the task (NaN
  where the clean accuracy is 0): the drop table's and the noise/shift tables' ratios."""
  out = {}
  for k in ACC_KEYS[task]:
    out[f"{k}_ratio"] = float(corrupt[k] / clean[k]) if clean[k] else float("nan")
  return out


def modality_drop_table(workdir: str, drops=PAPER_DROPS, *, split: str = "test",
                        dataset=None) -> dict:
  """Evaluates the selected checkpoint of `workdir` clean and under each drop spec.

  Returns {'split', 'clean': metrics, 'drops': {spec: {'mode', 'modalities', 'metrics',
  '<acc>_ratio', ...}}}; the ratios are Acc_2^corrupt / Acc_2 (paper Fig. 2)."""
  exp, state = load_trained(workdir, dataset=dataset)
  if split not in exp.dataset.splits:
    raise ConfigError(f"unknown split {split!r}; valid: {sorted(exp.dataset.splits)}")
  base = exp.dataset.splits[split]
  clean = evaluate_split(exp, state, base)
  table = {"split": split, "workdir": workdir, "model": exp.config.model,
           "mdm": exp.config.net.get("mdm", "none"), "clean": clean, "drops": {}}
  for spec in drops:
    mode, mods = parse_drop(spec, exp.info.modalities)
    metrics = evaluate_split(exp, state, corrupt_split(base, mode, mods))
    table["drops"][spec] = {"mode": mode, "modalities": list(mods), "metrics": metrics,
                            **accuracy_ratios(exp.info.task, metrics, clean)}
  return table


def write_table(table: dict, path: str) -> None:
  if jax.process_index() == 0:
    with open(path, "w") as f:
      json.dump(table, f, indent=2, sort_keys=True, default=float)
