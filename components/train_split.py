"""Component: train one class split to the run's target steps, resuming from its own checkpoints in the store.

The trainer runs as a child process that the task restarts from the split's newest complete checkpoint when it
crashes, at most `restarts` times (acgan/supervise.py); a failure that would repeat is not restarted. The
task is safe to run again, which a clone of the run in the KFP UI relies on: a split already at its target returns
at once, and an interrupted one continues from its newest complete checkpoint (after SIGTERM, one saved at the step
it reached)."""

from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from acgan.cluster_settings import ClusterSettings


@dsl.component(base_image=ClusterSettings().image, install_kfp_package=False)
def train_split(store: str, split: int, restarts: int, metrics: Output[Metrics], samples: Output[HTML]) -> int:
    """The split's final losses, images/s, steps, diversity and collapse alarm as Metrics, and its sample grid as
    HTML, for the KFP UI; returns the split id for the fan-in."""
    from acgan.split_report import split_metrics, split_page
    from acgan.store import open_store
    from acgan.supervise import supervise_training
    from components import run_step

    def train() -> int:
        s = open_store(store)
        supervise_training(s, split, restarts)
        for name, value in split_metrics(s, split).items():
            metrics.log_metric(name, value)
        with open(samples.path, "w") as f:
            f.write(split_page(s, split))
        return split

    return run_step("train-split", train)
