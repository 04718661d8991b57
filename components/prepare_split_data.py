"""Component: build one split's data shard from the source, reading only that split's classes, unless it is complete.

Runs inside the fan-out, one task per split, so a large data set is read in parallel across the cluster; a shard
already complete (its checksum sidecar written) is not rebuilt on a rerun."""

from kfp import dsl

from acgan.cluster_settings import ClusterSettings


@dsl.component(base_image=ClusterSettings().image, install_kfp_package=False)
def prepare_split_data(store: str, split: int) -> int:
    from acgan.experiment import prepare_split_data
    from acgan.store import open_store
    from components import run_step

    return run_step("prepare-split-data", lambda: prepare_split_data(open_store(store), split))
