"""Models, one per file; importing this package registers them all."""

from mmfuse_jax.models import mult  # noqa: F401
from mmfuse_jax.models import mica  # noqa: F401
from mmfuse_jax.models import rerd  # noqa: F401
from mmfuse_jax.models import ef_lstm  # noqa: F401
from mmfuse_jax.models import tfn  # noqa: F401
from mmfuse_jax.models import lmf  # noqa: F401
from mmfuse_jax.models import mfn  # noqa: F401
from mmfuse_jax.models import argf  # noqa: F401
from mmfuse_jax.models import mcer  # noqa: F401
from mmfuse_jax.models.base import DataInfo, ModelSpec, format_output, output_dim, register_model

__all__ = ["DataInfo", "ModelSpec", "format_output", "output_dim", "register_model"]
