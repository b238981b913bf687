"""config.prng_impl: random keys by backend (training/rng.py), in steps, scans and resumes."""

import json
import os

import jax
import numpy as np
import pytest

from mmfuse_jax import config as config_lib
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.layers.dropout import fused_bernoulli
from mmfuse_jax.training import checkpoint as checkpoint_lib
from mmfuse_jax.training import loop as loop_lib
from mmfuse_jax.training.loop import train_and_evaluate
from mmfuse_jax.training.rng import check_resumed_impl, resolve_prng_impl, seed_key
from tests.helpers import shared_compilation_cache, tiny_config, tiny_synthetic

TIMING_KEYS = ("wall_time_s", "compile_s", "train_steps_per_s")
# a small EF-LSTM whose dropout (0.3, its default) draws random bits in every step
EF_LSTM = {"net.hidden": 8, "net.num_layers": 2, "data.modalities": "text,audio",
           "batch_size": 16}


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """A run and its resumption share their programs: compile them once."""
  with shared_compilation_cache(tmp_path_factory.mktemp("xla_cache")):
    yield


def test_resolve_by_backend_and_validation():
  assert resolve_prng_impl("auto", "tpu") == "rbg"
  assert resolve_prng_impl("auto", "gpu") == resolve_prng_impl("auto", "cpu") == "threefry2x32"
  assert resolve_prng_impl("unsafe_rbg", "cpu") == "unsafe_rbg"
  assert resolve_prng_impl("threefry", "tpu") == "threefry2x32"
  with pytest.raises(ConfigError, match="prng_impl"):
    resolve_prng_impl("philox")
  c = tiny_config("lmf", prng_impl="philox")
  with pytest.raises(ConfigError, match="prng_impl must be one of auto, threefry, rbg"):
    config_lib.validate_config(c)
  check_resumed_impl(None, "threefry2x32")       # checkpoints from before the option
  with pytest.raises(ConfigError, match="--prng_impl=threefry"):
    check_resumed_impl(None, "rbg", "run1")
  with pytest.raises(ConfigError, match="--prng_impl=unsafe_rbg"):
    check_resumed_impl("unsafe_rbg", "rbg")


def _draws(key):
  """Every way the library consumes a key: split/fold_in (per step, per stream), Dropout's
  fused Bernoulli mask, Gumbel top-k subsampling, permutations, normal noise."""
  a, b = jax.random.split(jax.random.fold_in(key, 7))
  return (fused_bernoulli(a, 0.7, (5, 33)), jax.random.gumbel(b, (9,)),
          jax.random.permutation(jax.random.fold_in(b, 1), 11),
          jax.random.normal(jax.random.split(a, 3)[2], (4,)))


def test_auto_on_cpu_is_the_previous_threefry_key_bit_for_bit():
  """'auto' on CPU: the typed key holds PRNGKey(seed)'s bits and every draw, under jit,
  equals the raw key's (the key runs used before the option); rbg keys draw other bits,
  also inside lax.scan (the compiled epoch), step by step as outside it."""
  c = tiny_config("lmf", seed=5)
  key = seed_key(c)
  assert str(jax.random.key_impl(key)) == "threefry2x32"
  np.testing.assert_array_equal(jax.random.key_data(key), jax.random.PRNGKey(5))
  draws = jax.jit(_draws)
  want = draws(jax.random.PRNGKey(5))
  jax.tree_util.tree_map(np.testing.assert_array_equal, draws(key), want)
  for impl in ("rbg", "unsafe_rbg"):
    c.prng_impl = impl
    other = draws(seed_key(c))
    assert str(jax.random.key_impl(seed_key(c))) == impl
    assert not np.array_equal(other[0], want[0]) and not np.array_equal(other[1], want[1])
    scanned = jax.jit(lambda k: jax.lax.scan(
        lambda carry, i: (carry, _draws(jax.random.fold_in(k, i))[1]), 0, np.arange(3))[1])
    np.testing.assert_array_equal(scanned(seed_key(c))[2],
                                  draws(jax.random.fold_in(seed_key(c), 2))[1])


def _strip(results):
  return {k: v for k, v in results.items() if k not in TIMING_KEYS and k != "config"}


@pytest.mark.slow
def test_rbg_run_resumes_exactly(tmp_path, monkeypatch):
  """With rbg keys a run killed after its first epoch resumes from the Orbax checkpoint to
  the same results as an uninterrupted one (the keys are rebuilt from seed and
  implementation, not stored); a resume whose implementation would differ is refused."""
  ds = tiny_synthetic(1, n_train=64, n_valid=16, n_test=16, modalities=("text", "audio"))
  c = tiny_config("ef_lstm", epochs=2, prng_impl="rbg", **EF_LSTM)
  full = train_and_evaluate(c, str(tmp_path / "full"), dataset=ds)
  assert full["prng_impl"] == "rbg"

  original = checkpoint_lib.Checkpoints.save_latest

  def crash_after_first(self, step, state, meta):
    original(self, step, state, meta)
    raise KeyboardInterrupt("simulated kill")

  work = str(tmp_path / "resumed")
  monkeypatch.setattr(checkpoint_lib.Checkpoints, "save_latest", crash_after_first)
  with pytest.raises(KeyboardInterrupt):
    train_and_evaluate(c, work, dataset=ds)
  monkeypatch.setattr(checkpoint_lib.Checkpoints, "save_latest", original)
  assert _strip(train_and_evaluate(c, work, dataset=ds)) == _strip(full)
  rows = [json.loads(line) for line in open(os.path.join(work, "metrics.jsonl"))]
  assert [row["epoch"] for row in rows] == [1, 2]

  # a resume whose implementation would differ (as 'auto' moved to a TPU would) is refused
  c.epochs = 3
  monkeypatch.setattr(loop_lib, "resolve_prng_impl", lambda name, backend=None: "threefry2x32")
  with pytest.raises(ConfigError, match="rbg random keys"):
    train_and_evaluate(c, str(tmp_path / "full"), dataset=ds)
