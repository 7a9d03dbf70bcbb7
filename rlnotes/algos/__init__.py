"""Training algorithms: each `train(config) -> history`, plus the exact tabular methods."""
