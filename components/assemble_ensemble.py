"""Component: map every class to the verified checkpoint of the split that owns it (`ensemble.json`), also output
as an artifact so that the KFP UI shows and links it. A batch run (`run_splits`: its split_ids) whose splits are all
complete while other runs' are not assembles nothing and says so (`whole` false): the run that completes the last
split assembles the whole ensemble."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Output

from acgan.cluster_settings import ClusterSettings


@dsl.component(base_image=ClusterSettings().image, install_kfp_package=False)
def assemble_ensemble(store: str, trained_splits: list, run_splits: list, manifest: Output[Artifact]
                      ) -> NamedTuple("Assembled", ensemble=str, whole=bool):
    import logging

    from acgan.ensemble import assemble_ensemble
    from acgan.experiment import left_to_other_runs, load_settings
    from acgan.layout import ENSEMBLE_KEY
    from components import run_step
    from acgan.store import open_store

    def assemble() -> tuple[str, bool]:
        s = open_store(store)
        others = left_to_other_runs(s, [int(x) for x in run_splits])
        if others:
            logging.getLogger("assemble-ensemble").info(
                "this run's splits %s are complete; splits %s are other runs': the run that completes the last of "
                "them assembles the ensemble", list(run_splits), others)
            with open(manifest.path, "w") as f:
                f.write("")
            return f"{s.uri}: waiting for splits {others} of other runs", False
        assembled = assemble_ensemble(s, load_settings(s).steps)
        with open(manifest.path, "wb") as f:
            f.write(s.read_bytes(ENSEMBLE_KEY))
        manifest.metadata.update({"store": s.uri, "key": ENSEMBLE_KEY, "classes": len(assembled.classes)})
        return f"{s.uri}/{ENSEMBLE_KEY}: {len(assembled.classes)} classes, {len(trained_splits)} splits trained", True

    from collections import namedtuple
    return namedtuple("Assembled", ["ensemble", "whole"])(*run_step("assemble-ensemble", assemble))
