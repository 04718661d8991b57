"""acgan-ensemble's library: the model, data, store, checkpoints, training, metrics and evaluation that the pipeline's
components call. It imports nothing of the project's other packages (components, pipelines, acgan_cli)."""
