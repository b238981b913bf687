"""The random keys of a run, from `config.seed` and `config.prng_impl`.

JAX's default generator, threefry2x32 (a counter-based hash, Salmon et al. 2011), is
computed with integer arithmetic and costs real time where a model draws many bits (every
dropout mask). TPUs have a hardware random-bit generator, which JAX's 'rbg' implementation
uses for the bits (keeping threefry for split/fold_in) and 'unsafe_rbg' uses for
split/fold_in too (cheaper still, without threefry's guarantees on derived keys). Their
streams differ from threefry's and may differ between backends and XLA versions, so
`prng_impl` changes a run's numbers: it is part of the checked config (a workdir refuses
another value), and 'auto' is resolved once per run and recorded with the checkpoints so a
resumed run never continues with other keys.

config.prng_impl: 'auto' (rbg on TPU, threefry elsewhere: CPU and GPU runs draw exactly
the numbers they drew before the option existed), 'threefry', 'rbg' or 'unsafe_rbg'.
Keys are typed key arrays (`jax.random.key(seed, impl=...)`): they carry their
implementation through jit, lax.scan and every jax.random call. None is ever checkpointed:
a resumed run rebuilds them from seed and implementation, and the steps fold in
`state.step`.
"""

from __future__ import annotations

import jax

from mmfuse_jax.config_base import PRNG_IMPL_CHOICES
from mmfuse_jax.errors import ConfigError

# config value -> JAX's implementation name (every choice but 'auto')
PRNG_IMPLS = {"threefry": "threefry2x32", "rbg": "rbg", "unsafe_rbg": "unsafe_rbg"}


def resolve_prng_impl(name: str, backend: str | None = None) -> str:
  """JAX's implementation name for a config value; 'auto': 'rbg' on TPU, 'threefry2x32'
  elsewhere (backend: JAX's default backend when None)."""
  if name == "auto":
    name = "rbg" if (backend or jax.default_backend()) == "tpu" else "threefry"
  if name not in PRNG_IMPLS:
    raise ConfigError(f"prng_impl must be one of {', '.join(PRNG_IMPL_CHOICES)}, got {name!r}")
  return PRNG_IMPLS[name]


def seed_key(config, backend: str | None = None) -> jax.Array:
  """The run's root key: `config.seed` under `config.prng_impl` (a typed key array). With
  threefry its bits equal `jax.random.PRNGKey(config.seed)`'s, the key runs used before."""
  impl = resolve_prng_impl(config.get("prng_impl", "auto"), backend)
  return jax.random.key(config.seed, impl=impl)


def check_resumed_impl(saved: str | None, impl: str, workdir: str = "") -> None:
  """A run resumes only with the implementation its checkpoints were made with (saved:
  the name recorded in them; None for checkpoints made before the option, all threefry)."""
  saved = saved or PRNG_IMPLS["threefry"]
  if saved != impl:
    raise ConfigError(
        f"{workdir or 'the workdir'} was trained with {saved} random keys but this run "
        f"would use {impl} (prng_impl='auto' resolves by backend); resume it with "
        f"--prng_impl={_config_name(saved)} or use another --workdir")


def _config_name(impl: str) -> str:
  return {v: k for k, v in PRNG_IMPLS.items()}.get(impl, impl)


__all__ = ["PRNG_IMPLS", "check_resumed_impl", "resolve_prng_impl", "seed_key"]
