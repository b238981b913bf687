"""Name -> object registries: the only module-level state in the library.

Readers, models and methods register themselves when their modules are imported;
mmfuse_jax/catalog.py imports them all and is where look-ups take the registries from.
"""

from __future__ import annotations

from typing import Any, Callable


class Registry:
  """A named mapping filled by decorators; unknown names list the valid ones."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, Any] = {}

  def register(self, name: str) -> Callable[[Any], Any]:
    def wrap(obj):
      if name in self._items:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._items[name] = obj
      return obj
    return wrap

  def get(self, name: str) -> Any:
    if name not in self._items:
      valid = ", ".join(self.names()) or "none registered (import mmfuse_jax.catalog)"
      raise KeyError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}")
    return self._items[name]

  def names(self) -> list[str]:
    return sorted(self._items)

  def __contains__(self, name: str) -> bool:
    return name in self._items


MODELS = Registry("model")
DATASETS = Registry("dataset")
METHODS = Registry("method")
