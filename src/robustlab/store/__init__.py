"""Run storage in one place: the run directory's layout, checkpoints and weights, and
rebuilding a trained model from a run. It imports config, models and data, never train,
evaluate or experiments, so every layer above can read runs."""
