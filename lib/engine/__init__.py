"""Training and evaluation engine: stage specs, per-family train steps, trainer, evaluator."""
