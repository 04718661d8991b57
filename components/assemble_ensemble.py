"""Component: map every class to the verified checkpoint of the split that owns it (`ensemble.json`), also output
as an artifact so that the KFP UI shows and links it."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from acgan.settings import ClusterSettings


@dsl.component(base_image=ClusterSettings().image, install_kfp_package=False)
def assemble_ensemble(store: str, trained_splits: list, manifest: Output[Artifact]) -> str:
    from acgan.ensemble import ENSEMBLE_KEY, assemble_ensemble
    from acgan.experiment import load_settings
    from components import run_step
    from acgan.store import open_store

    def assemble() -> str:
        s = open_store(store)
        assembled = assemble_ensemble(s, load_settings(s).steps)
        with open(manifest.path, "wb") as f:
            f.write(s.read_bytes(ENSEMBLE_KEY))
        manifest.metadata.update({"store": s.uri, "key": ENSEMBLE_KEY, "classes": len(assembled.classes)})
        return f"{s.uri}/{ENSEMBLE_KEY}: {len(assembled.classes)} classes from {len(trained_splits)} trained splits"

    return run_step("assemble-ensemble", assemble)
