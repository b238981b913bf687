"""Per-epoch logs of a run: metrics.jsonl, metrics.csv, TensorBoard and Weights & Biases.

One row per finished epoch: {"epoch", "time" (wall clock, ISO 8601 UTC), "epoch_s" (seconds
the epoch took, training and validation; the first epoch of a process includes compiling),
"lr" (the learning rate of the epoch's last step), "lr_scale", "selected", "train": {...},
"valid": {...}}. metrics.jsonl and metrics.csv are rewritten from the checkpoint's history
when a run resumes, so they always match the checkpoint. TensorBoard (tensorboardX) is used
when installed; W&B only when `config.wandb` names a project (the package is imported then,
and a missing package is a clear error before any training).
"""

from __future__ import annotations

import csv
import datetime
import importlib
import io
import json
import os
import uuid

import jax

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.methods.optim import make_schedule

_FIRST_COLUMNS = ("epoch", "time", "epoch_s", "lr", "lr_scale", "selected")


def learning_rate(optim, steps_per_epoch: int, step: int, lr_scale: float) -> float:
  """The learning rate of optimizer step `step` (0-based): the configured schedule of
  optim.lr times the plateau factor lr_scale. Methods with several optimizers (ARGF, MDM)
  log their main optimizer's."""
  return float(make_schedule(optim, steps_per_epoch)(step)) * float(lr_scale)


def now_iso() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def flatten_row(row: dict) -> dict:
  """A metrics row as one flat dict: nested splits become 'train/loss', 'valid/mae'."""
  out = {}
  for k, v in row.items():
    if isinstance(v, dict):
      out.update({f"{k}/{name}": value for name, value in v.items()})
    else:
      out[k] = v
  return out


def csv_text(rows: list[dict]) -> str:
  """metrics.csv: the first columns in a fixed order, then every other column in order of
  appearance; a value a row lacks is an empty cell."""
  flat = [flatten_row(r) for r in rows]
  columns = [c for c in _FIRST_COLUMNS if any(c in r for r in flat)]
  for r in flat:
    columns += [c for c in r if c not in columns]
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
  writer.writeheader()
  writer.writerows(flat)
  return buf.getvalue()


def import_wandb():
  """The wandb module, or a ConfigError with the install command."""
  try:
    return importlib.import_module("wandb")
  except ImportError:
    raise ConfigError("--wandb=PROJECT logs to Weights & Biases, which is not installed: "
                      "pip install wandb (or drop --wandb)") from None


def _wandb_run_id(workdir: str) -> str:
  """A W&B run id kept in the workdir, so a resumed run logs to the same W&B run."""
  path = os.path.join(workdir, "wandb_id.txt")
  if os.path.exists(path):
    with open(path) as f:
      return f.read().strip()
  run_id = uuid.uuid4().hex[:12]
  with open(path, "w") as f:
    f.write(run_id + "\n")
  return run_id


def _run_name(workdir: str) -> str:
  """The workdir's last two path components ('lr=1e-3/seed_1' in a sweep)."""
  parts = os.path.normpath(os.path.abspath(workdir)).split(os.sep)
  return "/".join(parts[-2:])


class RunLog:
  """Writes each epoch's row to every destination (process 0 only)."""

  def __init__(self, workdir: str, history: list[dict], config):
    self.active = jax.process_index() == 0
    self.workdir = workdir
    self.rows = list(history)
    self.tb = None
    self.wandb_run = None
    if not self.active:
      return
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      for row in self.rows:
        f.write(json.dumps(row) + "\n")
    self._write_csv()
    try:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # optional
      self.tb = None
    if config.get("wandb", ""):
      wandb = import_wandb()
      self.wandb_run = wandb.init(project=config.wandb, id=_wandb_run_id(workdir),
                                  name=_run_name(workdir),
                                  dir=workdir, config=config.to_dict(), resume="allow")

  def _write_csv(self) -> None:
    path = os.path.join(self.workdir, "metrics.csv")
    with open(path + ".tmp", "w") as f:
      f.write(csv_text(self.rows))
    os.replace(path + ".tmp", path)

  def write(self, row: dict) -> None:
    if not self.active:
      return
    self.rows.append(row)
    with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps(row) + "\n")
    self._write_csv()
    scalars = {k: v for k, v in flatten_row(row).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}
    if self.tb is not None:
      for k, v in scalars.items():
        self.tb.add_scalar(k, v, row["epoch"])
      self.tb.flush()
    if self.wandb_run is not None:
      self.wandb_run.log({**scalars, "epoch": row["epoch"]}, step=row["epoch"])

  def finish(self, results: dict | None = None) -> None:
    """Closes the writers; W&B gets the selected checkpoint's results as its summary."""
    if self.tb is not None:
      self.tb.close()
      self.tb = None
    if self.wandb_run is not None:
      if results is not None:
        summary = {"selected_epoch": results["selected_epoch"]}
        for split in ("valid", "test"):
          summary.update({f"selected/{split}/{k}": v for k, v in results[split].items()})
        self.wandb_run.summary.update(summary)
      self.wandb_run.finish()
      self.wandb_run = None
