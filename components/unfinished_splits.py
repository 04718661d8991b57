"""Component: the splits of this run not at their target steps, after a pass of training whose pods may have been
preempted: what the next heal pass trains again (pipelines/acgan_ensemble.py, heal_stage)."""

from typing import NamedTuple

from kfp import dsl

from acgan.cluster_settings import ClusterSettings


@dsl.component(base_image=ClusterSettings().image, install_kfp_package=False)
def unfinished_splits(store: str, run_splits: list) -> NamedTuple("Unfinished", todo=list[int], healing=bool):
    """`run_splits`: the run's split_ids (every split of the plan when empty). `healing`: whether any is unfinished."""
    from collections import namedtuple

    from acgan.experiment import unfinished_splits as unfinished
    from acgan.store import open_store
    from components import run_step

    todo = run_step("unfinished-splits", lambda: unfinished(open_store(store), [int(s) for s in run_splits]))
    return namedtuple("Unfinished", ["todo", "healing"])(todo, bool(todo))
