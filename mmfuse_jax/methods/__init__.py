"""Methods: how a model is trained (one train step each), each registering itself on import
(mmfuse_jax/catalog.py imports them all); this package exports the method contract."""

from mmfuse_jax.methods.base import Method, TrainState

__all__ = ["Method", "TrainState"]
