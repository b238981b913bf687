"""What a model's compiled steps cost an accelerator, measured without one.

    python scripts/accel_report.py                      # every registered model
    python scripts/accel_report.py --models=mult,mica --no-compile

For every model, at MOSI unaligned shapes (text 50x300, audio 375x5, vision 500x20; the
utterance-level models: 100/73/100-wide utterances in videos of 16) and the model's default
training batch, prints

* eval_out: bytes the jitted eval step returns for an eval batch of --eval_batch (128), from
  `jax.eval_shape` (no compile): what every validation batch sends back to the host;
* bf16 dots (step): the share of `dot_general` ops in the lowered train step under
  precision='bf16' whose two operands are both bfloat16 (the rest run in float32: parts
  of losses and regularisers that stay float32 by design; MICA's alignment losses take
  bfloat16 operands with float32 accumulation, losses/matmul.py);
* bf16 dots (model): the same for the model alone (forward and backward of its summed
  predictions through `Method.apply`);
* temp: XLA's temporary buffer bytes of the compiled bf16 train step
  (`compiled.memory_analysis().temp_size_in_bytes`, the host backend's schedule; the
  accelerator's differs, the trend holds). --no-compile skips it (compiles take minutes).

Everything is traced on synthetic data of the right shapes; no data set is read.
"""

from __future__ import annotations

import argparse
import re
import sys

import jax
import numpy as np

from mmfuse_jax import config as config_lib
from mmfuse_jax.catalog import MODELS
from mmfuse_jax.data import make_synthetic
from mmfuse_jax.data.context import dataset_with_video_context
from mmfuse_jax.data.pipeline import make_batch
from mmfuse_jax.data.synthetic import make_synthetic_utterances
from mmfuse_jax.training.experiment import build_experiment

SHAPES = {
    "sequence": ({"text": 50, "audio": 375, "vision": 500},
                 {"text": 300, "audio": 5, "vision": 20}),
    "utterance": ({"text": 1, "audio": 1, "vision": 1},
                  {"text": 100, "audio": 73, "vision": 100}),
}
_DOT = re.compile(r"stablehlo\.dot_general.*:\s*\((tensor<[^>]*>),\s*(tensor<[^>]*>)\)")


def element_type(tensor_type: str) -> str:
  """'tensor<24x50x300xbf16>' -> 'bf16' (the text after the last 'x', or the whole body
  for a scalar)."""
  body = tensor_type[len("tensor<"):-1]
  return body.rsplit("x", 1)[-1]


def dot_operand_types(hlo_text: str) -> list[tuple[str, str]]:
  """(lhs, rhs) element types of every stablehlo.dot_general in a lowered module's text."""
  return [(element_type(a), element_type(b)) for a, b in _DOT.findall(hlo_text)]


def bf16_dot_share(hlo_text: str) -> tuple[int, int]:
  """(dot_generals whose operands are both bf16, all dot_generals)."""
  types = dot_operand_types(hlo_text)
  return sum(a == b == "bf16" for a, b in types), len(types)


def model_grad_text(exp, state, batch) -> str:
  """The lowered text of the gradient of the model's summed predictions (forward and
  backward of the model alone, through `Method.apply`: no losses or regularisers)."""
  method = exp.method

  def forward(params, model_state, batch, rng):
    (pred, _), _ = method.apply(params, model_state, batch, train=True, rng=rng)
    return pred.astype("float32").sum()
  return jax.jit(jax.grad(forward)).lower(state.params, state.model_state, batch,
                                          jax.random.PRNGKey(0)).as_text()


def tree_bytes(tree) -> int:
  """Total bytes of the arrays (or ShapeDtypeStructs) of a pytree."""
  return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
                 for x in jax.tree_util.tree_leaves(tree)))


def setup(model: str, *, precision: str = "float32", batch: int | None = None,
          eval_batch: int = 128, shapes: dict | None = None, net: dict | None = None):
  """(experiment, abstract train state, train batch, eval batch) for `model` at MOSI shapes
  (or `shapes`: (lengths, dims)) on a few synthetic rows padded to the batch sizes."""
  spec = MODELS.get(model)
  lengths, dims = shapes or SHAPES[spec.input_kind]
  c = config_lib.get_config(model, preset=False)
  c.num_devices = 1
  c.progress = False
  c.precision = precision
  c.eval_batch_size = eval_batch
  if batch:
    c.batch_size = batch
  for key, value in (net or {}).items():
    c.net[key] = value
  rows = 8
  if spec.input_kind == "utterance":  # utterances grouped into videos (MOSI: up to ~30)
    rows = 32
    ds = dataset_with_video_context(make_synthetic_utterances(
        0, sizes={"train": rows, "valid": rows, "test": rows}, dims=dims,
        video_lengths=(16, 16)))
    c.data.context = True
  else:
    ds = make_synthetic(0, sizes={"train": rows, "valid": rows, "test": rows}, dims=dims,
                        lengths=lengths)
  exp = build_experiment(c, ds)
  idx = np.arange(rows)
  more = [np.roll(idx, k + 1) for k in range(exp.method.extra_batches)]
  train_batch = make_batch(ds.splits["train"], idx, c.batch_size, more_rows=more)
  eval_batch_ = make_batch(ds.splits["valid"], idx, eval_batch)
  state = jax.eval_shape(exp.method.init_state, jax.random.PRNGKey(0), train_batch)
  return exp, state, train_batch, eval_batch_


def measure(model: str, *, compile_step: bool = True, eval_batch: int = 128) -> dict:
  exp, state, _, eval_b = setup(model, eval_batch=eval_batch)
  row = {"model": model,
         "eval_out_bytes": tree_bytes(jax.eval_shape(exp.method.eval_step, state, eval_b))}
  exp, state, train_b, _ = setup(model, precision="bf16", eval_batch=eval_batch)
  lowered = jax.jit(exp.method.train_step).lower(state, train_b, jax.random.PRNGKey(0))
  row["bf16_dots"], row["dots"] = bf16_dot_share(lowered.as_text())
  row["model_bf16_dots"], row["model_dots"] = bf16_dot_share(
      model_grad_text(exp, state, train_b))
  row["batch"] = exp.config.batch_size
  if compile_step:
    row["temp_bytes"] = int(lowered.compile().memory_analysis().temp_size_in_bytes)
  return row


def _human(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB"):
    if abs(n) < 1024 or unit == "GiB":
      return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
    n /= 1024
  return str(n)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--models", default="", help="comma list (default: every registered model)")
  p.add_argument("--eval_batch", type=int, default=128)
  p.add_argument("--no-compile", dest="compile", action="store_false",
                 help="skip the compile (and the temp-memory column)")
  args = p.parse_args(argv)
  names = args.models.split(",") if args.models else MODELS.names()
  print(f"{'model':8s} {'batch':>5s} {'eval_out':>11s} {'bf16 dots (step)':>17s} "
        f"{'bf16 dots (model)':>18s} {'temp (bf16 step)':>17s}")
  for name in names:
    r = measure(name, compile_step=args.compile, eval_batch=args.eval_batch)
    temp = _human(r["temp_bytes"]) if "temp_bytes" in r else "-"
    step = f"{r['bf16_dots']}/{r['dots']} {r['bf16_dots'] / max(r['dots'], 1):4.0%}"
    model = (f"{r['model_bf16_dots']}/{r['model_dots']} "
             f"{r['model_bf16_dots'] / max(r['model_dots'], 1):4.0%}")
    print(f"{name:8s} {r['batch']:5d} {_human(r['eval_out_bytes']):>11s} {step:>17s} "
          f"{model:>18s} {temp:>17s}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
