"""acgan-ensemble: the code every pipeline component runs (model, data, store, checkpoints, training, metrics)."""
