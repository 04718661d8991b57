"""Kubeflow pipelines, and the functions that compile, run locally, submit and rerun them."""
