"""Training: mesh and sharding, optimizers, checkpoints, metrics, the loop."""
