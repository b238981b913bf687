"""Export: params + serialized inference function agree with in-process predictions."""

import json
import os

import numpy as np
import pytest
from jax import export as jax_export

from mmfuse_jax import export as export_cli
from mmfuse_jax.data.pipeline import standardize
from mmfuse_jax.inference import load_exported
from mmfuse_jax.training.experiment import restore_selected
from mmfuse_jax.training.evaluation import predict_split
from mmfuse_jax.training.experiment import build_experiment
from mmfuse_jax.training.loop import train_and_evaluate
from tests.helpers import tiny_config, tiny_synthetic


def test_export_roundtrip(tmp_path):
  raw = tiny_synthetic(4, n_train=64, n_valid=32, n_test=16, modalities=("text", "audio"))
  ds, stats = standardize(raw)
  c = tiny_config("mult", epochs=1, **{"net.d_model": 8, "net.num_heads": 2,
                                       "net.num_layers": 1})
  work, out = str(tmp_path / "w"), str(tmp_path / "exported")
  train_and_evaluate(c, work, dataset=ds, data_stats={"standardize": stats})
  assert export_cli.main([f"--workdir={work}", f"--out={out}"]) == 0
  for name in ("params.msgpack", "inference.jax.bin", "metadata.json", "orbax"):
    assert os.path.exists(os.path.join(out, name))
  exp = build_experiment(c, ds, {"standardize": stats})
  state, _ = restore_selected(work, exp)
  expected, _ = predict_split(exp, state, ds.splits["test"])
  predict = load_exported(out)
  test_raw = raw.splits["test"]
  got = predict(test_raw.features, test_raw.masks)   # raw features: standardised inside
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  one = predict({m: x[:1] for m, x in test_raw.features.items()},
                {m: x[:1] for m, x in test_raw.masks.items()})
  np.testing.assert_allclose(one, expected[:1], rtol=1e-4, atol=1e-5)
  meta = json.load(open(os.path.join(out, "metadata.json")))
  assert meta["model"] == "mult" and meta["task"] == "regression"
  # Lowered for CPU, GPU and TPU by default (made here on CPU, it still ran above on CPU).
  with open(os.path.join(out, "inference.jax.bin"), "rb") as f:
    exported = jax_export.deserialize(bytearray(f.read()))
  assert tuple(exported.platforms) == ("cpu", "cuda", "tpu") == tuple(meta["platforms"])
  with pytest.raises(ValueError, match="expected shape"):
    predict({m: x[:, :2] for m, x in test_raw.features.items()})
