"""The filled registries: every dataset reader, model and method, imported in one place.

Each reader, model and method registers itself under its name (registry.py) when its
module is imported; this module imports them all, so that a look-up by name never meets a
half-filled registry. Code that looks names up (config.get_config, the training loop, the
entry points) takes the registries from here:

    from mmfuse_jax.catalog import DATASETS, METHODS, MODELS

The data package imports its own readers (data/__init__.py), because `load_dataset` looks
them up below this module. A new model or method module is added to the lists below.
"""

from __future__ import annotations

import mmfuse_jax.data  # noqa: F401  (the built-in synthetic data and every reader)
import mmfuse_jax.methods.argf  # noqa: F401
import mmfuse_jax.methods.mcer  # noqa: F401
import mmfuse_jax.methods.mdm  # noqa: F401
import mmfuse_jax.methods.standard  # noqa: F401
import mmfuse_jax.models.argf  # noqa: F401
import mmfuse_jax.models.ef_lstm  # noqa: F401
import mmfuse_jax.models.lmf  # noqa: F401
import mmfuse_jax.models.mcer  # noqa: F401
import mmfuse_jax.models.mfn  # noqa: F401
import mmfuse_jax.models.mica  # noqa: F401
import mmfuse_jax.models.mult  # noqa: F401
import mmfuse_jax.models.rerd  # noqa: F401
import mmfuse_jax.models.tfn  # noqa: F401
from mmfuse_jax.registry import DATASETS, METHODS, MODELS

__all__ = ["DATASETS", "METHODS", "MODELS"]
