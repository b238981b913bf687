"""Models, one per file, each registering itself on import (mmfuse_jax/catalog.py imports
them all); this package exports the model contract of models/base.py."""

from mmfuse_jax.models.base import DataInfo, ModelSpec, format_output, output_dim, register_model

__all__ = ["DataInfo", "ModelSpec", "format_output", "output_dim", "register_model"]
