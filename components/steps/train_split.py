"""Component: train one class split to the run's target steps, resuming from its own checkpoints in the store.

The task is safe to run again, which its retries (pipelines/acgan_ensemble.py) and a clone of the run in the KFP UI
rely on: a split already at its target returns at once, and an interrupted one continues from its newest complete
checkpoint (after SIGTERM, one saved at the step it reached)."""

from kfp import dsl

from components.settings import ClusterSettings


@dsl.component(base_image=ClusterSettings().image, install_kfp_package=False)
def train_split(store: str, split: int) -> int:
    from components.experiment import train_one_split
    from components.steps import run_step

    return run_step("train-split", lambda: train_one_split(store, split))
