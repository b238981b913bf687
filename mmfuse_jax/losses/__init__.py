"""Losses: pure functions of arrays with explicit masks/weights."""
