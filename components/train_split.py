"""Component: train one class split to the run's target steps, resuming from its own checkpoints in the store.

The task is safe to run again, which its retries (pipelines/acgan_ensemble.py) and a clone of the run in the KFP UI
rely on: a split already at its target returns at once, and an interrupted one continues from its newest complete
checkpoint (after SIGTERM, one saved at the step it reached)."""

from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from acgan.settings import ClusterSettings


@dsl.component(base_image=ClusterSettings().image, install_kfp_package=False)
def train_split(store: str, split: int, metrics: Output[Metrics], samples: Output[HTML]) -> int:
    """The split's final losses, images/s, steps, diversity and collapse alarm as Metrics, and its sample grid as
    HTML, for the KFP UI; returns the split id for the fan-in."""
    from acgan.experiment import train_one_split
    from acgan.split_report import split_metrics, split_page
    from components import run_step
    from acgan.store import open_store

    def train() -> int:
        train_one_split(store, split)
        s = open_store(store)
        for name, value in split_metrics(s, split).items():
            metrics.log_metric(name, value)
        with open(samples.path, "w") as f:
            f.write(split_page(s, split))
        return split

    return run_step("train-split", train)
