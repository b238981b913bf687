"""Test-time noise and distribution shift of one modality, for any trained run.

Like the modality-drop table (robustness.py, `evaluate --drop`), these evaluate a run's
validation-selected checkpoint on a split whose inputs were changed at inference time
(training saw clean data), and report each condition's metrics next to the clean ones:

  noise 'MOD:LEVEL'          x <- x + LEVEL sd eps,      eps ~ N(0, 1) per step and feature
  shift 'MOD:scale:AMOUNT'   x <- mu + AMOUNT (x - mu)
  shift 'MOD:offset:AMOUNT'  x <- x + AMOUNT sd

mu and sd are the per-feature mean and standard deviation of the run's train split over
valid steps (`fit_standardizer`), so LEVEL and AMOUNT are in standardised units: with
`data.standardize` on (the default) the model's inputs already have mu = 0 and sd = 1, and
noise of LEVEL 1 is as large as the feature's own spread. Only valid steps of the named
modality change; its padding, every mask and the other modalities stay as they were.

The noise is seeded by (seed, modality): every LEVEL of one modality scales the same eps, so
levels are paired (the clean split is level 0 exactly) and reruns give the same table.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from mmfuse_jax.data.core import Split
from mmfuse_jax.data.pipeline import fit_standardizer
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import robustness
from mmfuse_jax.training.evaluation import evaluate_split

SHIFT_KINDS = ("scale", "offset")
FORMS = {"noise": "MOD:LEVEL[,MOD:LEVEL...] with LEVEL a number >= 0 (e.g. audio:0.5,audio:2)",
         "shift": "MOD:KIND:AMOUNT[,MOD:KIND:AMOUNT...] with KIND scale or offset and AMOUNT a "
                  "number (e.g. vision:scale:2,vision:offset:1)"}


def _number(text: str, flag: str, spec: str) -> float:
  try:
    value = float(text)
  except ValueError:
    value = float("nan")
  if not np.isfinite(value):
    raise ConfigError(f"--{flag}={spec!r}: {text!r} is not a number; expected {FORMS[flag]}")
  return value


def _modality(name: str, flag: str, spec: str, modalities) -> str:
  if modalities is not None and name not in modalities:
    raise ConfigError(f"--{flag}={spec!r}: unknown modality {name!r} (this run has "
                      f"{', '.join(modalities)}); expected {FORMS[flag]}")
  return name


def parse_noise(spec: str, modalities=None) -> tuple[str, float]:
  """'audio:0.5' -> ('audio', 0.5); errors name --noise and the expected form (modalities
  None: the form alone is checked, before a run is loaded)."""
  parts = spec.split(":")
  if len(parts) != 2:
    raise ConfigError(f"--noise={spec!r}: expected {FORMS['noise']}")
  level = _number(parts[1], "noise", spec)
  if level < 0:
    raise ConfigError(f"--noise={spec!r}: LEVEL must be >= 0; expected {FORMS['noise']}")
  return _modality(parts[0].strip(), "noise", spec, modalities), level


def parse_shift(spec: str, modalities=None) -> tuple[str, str, float]:
  """'vision:scale:2' -> ('vision', 'scale', 2.0); errors name --shift and the form."""
  parts = spec.split(":")
  if len(parts) != 3:
    raise ConfigError(f"--shift={spec!r}: expected {FORMS['shift']}")
  kind = parts[1].strip()
  if kind not in SHIFT_KINDS:
    raise ConfigError(f"--shift={spec!r}: KIND must be one of {', '.join(SHIFT_KINDS)}; "
                      f"expected {FORMS['shift']}")
  return (_modality(parts[0].strip(), "shift", spec, modalities), kind,
          _number(parts[2], "shift", spec))


def _replace_valid(split: Split, modality: str, new_values: np.ndarray) -> Split:
  """The split with `modality`'s valid steps replaced (padding and masks kept)."""
  x, mask = split.features[modality], split.masks[modality]
  feats = dict(split.features)
  feats[modality] = np.where(mask[..., None], new_values, x).astype(x.dtype)
  return dataclasses.replace(split, features=feats)


def noise_split(split: Split, modality: str, level: float, sd: np.ndarray, *,
                seed: int = 0) -> Split:
  """`modality` with Gaussian noise of `level` * sd (per feature) on its valid steps; eps is
  drawn from (seed, modality) alone, so every level scales the same draw."""
  x = split.features[modality]
  rng = np.random.default_rng([seed, zlib.crc32(modality.encode())])
  eps = rng.standard_normal(size=x.shape, dtype=np.float32)
  return _replace_valid(split, modality, x + np.float32(level) * sd.astype(np.float32) * eps)


def shift_split(split: Split, modality: str, kind: str, amount: float, mean: np.ndarray,
                sd: np.ndarray) -> Split:
  """`modality`'s valid steps scaled about the train mean ('scale') or moved by amount * sd
  ('offset')."""
  x = split.features[modality]
  mean, sd = mean.astype(np.float32), sd.astype(np.float32)
  if kind == "scale":  # = mean + amount (x - mean), written so amount 1 returns x exactly
    new = x + np.float32(amount - 1.0) * (x - mean)
  elif kind == "offset":
    new = x + np.float32(amount) * sd
  else:
    raise ConfigError(f"unknown shift kind {kind!r} (valid: {', '.join(SHIFT_KINDS)})")
  return _replace_valid(split, modality, new)


def condition_table(workdir: str, *, noise=(), shift=(), split: str = "test", dataset=None,
                    seed: int = 0) -> dict:
  """Evaluates the selected checkpoint of `workdir` clean and under each noise / shift spec.

  Returns {'split', 'workdir', 'model', 'seed', 'clean': metrics, 'noise': {spec: row},
  'shift': {spec: row}}; a row holds the parsed spec, 'metrics' and the accuracy ratios
  '<acc>_ratio' = Acc(condition) / Acc(clean) of the drop table."""
  exp, state = robustness.load_trained(workdir, dataset=dataset)
  if split not in exp.dataset.splits:
    raise ConfigError(f"unknown split {split!r}; valid: {sorted(exp.dataset.splits)}")
  mods = exp.info.modalities
  parsed_noise = {s: parse_noise(s, mods) for s in noise}  # every spec checked before any run
  parsed_shift = {s: parse_shift(s, mods) for s in shift}
  stats = fit_standardizer(exp.dataset.splits["train"])
  base = exp.dataset.splits[split]
  clean = evaluate_split(exp, state, base)
  table = {"split": split, "workdir": workdir, "model": exp.config.model, "seed": seed,
           "clean": clean, "noise": {}, "shift": {}}

  def row(changed: Split, **spec) -> dict:
    metrics = evaluate_split(exp, state, changed)
    return {**spec, "metrics": metrics,
            **robustness.accuracy_ratios(exp.info.task, metrics, clean)}

  for spec, (m, level) in parsed_noise.items():
    table["noise"][spec] = row(noise_split(base, m, level, stats[m]["std"], seed=seed),
                               modality=m, level=level)
  for spec, (m, kind, amount) in parsed_shift.items():
    changed = shift_split(base, m, kind, amount, stats[m]["mean"], stats[m]["std"])
    table["shift"][spec] = row(changed, modality=m, kind=kind, amount=amount)
  return table


def format_table(table: dict, kind: str) -> list[str]:
  """Printed lines of one part ('noise' or 'shift') of a condition table."""
  rows = table[kind]
  main = "mae" if "mae" in table["clean"] else next(iter(table["clean"]))
  lines = [f"{table['split']}: clean " + "  ".join(f"{k}={v:.4f}"
                                                  for k, v in table["clean"].items())]
  for spec, r in rows.items():
    ratios = "  ".join(f"{k}={v:.4f}" for k, v in r.items() if k.endswith("_ratio"))
    lines.append(f"  {kind} {spec:22s} {main}={r['metrics'][main]:.4f}  {ratios}")
  return lines
