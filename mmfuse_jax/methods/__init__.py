"""Methods: how a model is trained (one train step each); importing registers them."""

from mmfuse_jax.methods import standard  # noqa: F401
from mmfuse_jax.methods import mdm  # noqa: F401
from mmfuse_jax.methods import argf  # noqa: F401
from mmfuse_jax.methods import mcer  # noqa: F401
from mmfuse_jax.methods.base import Method, TrainState

__all__ = ["Method", "TrainState"]
