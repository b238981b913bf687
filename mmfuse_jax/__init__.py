"""mmfuse_jax: multimodal sequence fusion in JAX/Flax."""

__version__ = "0.1.0"
