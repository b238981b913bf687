"""Checkpoints: directories through etils.epath (URLs kept, local paths made absolute), the
packed state (one array per dtype plus a layout) and its exact round trip, clear errors for a
checkpoint of another model, and checkpoints written unpacked by earlier versions."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training.checkpoint import (Checkpoints, abstract_like, checkpoint_dir,
                                            pack_state, unpack_nested, unpack_state)
from mmfuse_jax.training.mesh import replicated


def test_checkpoint_dir_keeps_urls_and_absolutises_local_paths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  url = checkpoint_dir("gs://bucket/run", "checkpoints", "latest")
  assert str(url) == "gs://bucket/run/checkpoints/latest"
  local = checkpoint_dir("run", "checkpoints", "best")
  assert str(local) == os.path.join(os.path.realpath(str(tmp_path)), "run", "checkpoints", "best") \
      or str(local) == os.path.join(str(tmp_path), "run", "checkpoints", "best")


def _state():
  """A TrainState-like tree with float32, int32 and bfloat16 leaves, a tuple (optax-like)
  and an empty dict."""
  rng = np.random.default_rng(0)
  return {"step": jnp.asarray(7, jnp.int32),
          "params": {"dense": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
                               "bias": jnp.zeros(4, jnp.float32)}},
          "model_state": {},
          "opt_state": (jnp.asarray([1, 2, 3], jnp.int32),
                        {"mu": jnp.asarray(rng.normal(size=(2, 2)), jnp.bfloat16)}),
          "key": jax.random.key(3, impl="rbg")}


def test_pack_state_one_array_per_dtype_and_exact_round_trip():
  state = _state()
  arrays, layout = pack_state(state)
  assert sorted(arrays) == ["bfloat16", "float32", "int32", "uint32"]
  assert arrays["float32"].shape == (16,) and arrays["int32"].shape == (4,)
  sharding = replicated(jax.make_mesh((1,), ("data",)))
  back = unpack_state(arrays, layout, abstract_like(state, sharding))
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(state)
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(back)):
    assert a.dtype == b.dtype and a.shape == b.shape
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert back["params"]["dense"]["kernel"].sharding == sharding


def test_unpack_names_the_first_differing_array_and_nested_needs_no_template():
  state = _state()
  arrays, layout = pack_state(state)
  other = dict(state, params={"dense": {"kernel": jnp.zeros((3, 5)), "bias": jnp.zeros(4)}})
  with pytest.raises(ConfigError, match=r"\['params'\]\['dense'\]\['kernel'\].*\(3, 4\).*\(3, 5\)"):
    unpack_state(arrays, layout, abstract_like(other, None), "ckpt/3")
  with pytest.raises(ConfigError, match="holds 6 arrays.*have 5"):
    unpack_state(arrays, layout, abstract_like({k: v for k, v in state.items() if k != "key"},
                                               None))
  nested = unpack_nested(arrays, layout)
  np.testing.assert_array_equal(nested["params"]["dense"]["kernel"],
                                np.asarray(state["params"]["dense"]["kernel"]))
  assert nested["opt_state"][1]["mu"].dtype == jnp.bfloat16 and nested["step"] == 7


def test_checkpoints_save_packed_and_restore_earlier_unpacked_checkpoints(tmp_path):
  state = _state()
  del state["key"]
  sharding = replicated(jax.make_mesh((1,), ("data",)))
  ckpt = Checkpoints(str(tmp_path / "new"))
  ckpt.save_best(2, state, {"epoch": 2})
  assert (tmp_path / "new/checkpoints/best/2/packed").exists()
  back, meta = ckpt.restore_best(abstract_like(state, sharding))
  assert meta == {"epoch": 2} and int(back["step"]) == 7
  nested, _ = ckpt.restore_best_untyped()
  assert sorted(nested) == ["opt_state", "params", "step"]
  ckpt.close()
  # A checkpoint in the earlier layout (the state saved leaf by leaf as item 'state').
  old = ocp.CheckpointManager(str(tmp_path / "old/checkpoints/latest"),
                              options=ocp.CheckpointManagerOptions(create=True))
  old.save(5, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      meta=ocp.args.JsonSave({"epoch": 5})))
  old.wait_until_finished()
  old.close()
  ckpt = Checkpoints(str(tmp_path / "old"))
  back, meta = ckpt.restore_latest(abstract_like(state, sharding))
  ckpt.close()
  assert meta == {"epoch": 5}
  np.testing.assert_array_equal(np.asarray(back["opt_state"][1]["mu"], np.float32),
                                np.asarray(state["opt_state"][1]["mu"], np.float32))
