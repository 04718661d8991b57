"""Component: train one class split to the run's target steps, resuming from its own checkpoints in the store.

KFP ignores set_retry inside ParallelFor, so this task is made safe to run again instead: a split already at its
target trains nothing, and an interrupted one continues from its newest complete checkpoint."""

from kfp import dsl

from components.settings import ClusterSettings


@dsl.component(base_image=ClusterSettings().image, install_kfp_package=False)
def train_split(store: str, split: int) -> int:
    from components.experiment import train_one_split
    from components.steps import run_step

    return run_step("train-split", lambda: train_one_split(store, split))
