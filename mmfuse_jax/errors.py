"""Errors the library raises for bad input: one clear message, no traceback wall."""


class MmfuseError(Exception):
  """Base class; the CLIs print these as a single line and exit with status 2."""


class DataError(MmfuseError):
  """A data file is missing, corrupt, or has the wrong keys, shapes or values."""


class ConfigError(MmfuseError):
  """A configuration value is unknown or out of range."""
