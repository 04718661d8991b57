"""Component: map every class to the verified checkpoint of the split that owns it (`ensemble.json`)."""

from kfp import dsl

from components.settings import ClusterSettings


@dsl.component(base_image=ClusterSettings().image, install_kfp_package=False)
def assemble_ensemble(store: str, trained_splits: list) -> str:
    from components.ensemble import ENSEMBLE_KEY, assemble_ensemble
    from components.experiment import load_settings
    from components.steps import run_step
    from components.store import open_store

    def assemble() -> str:
        s = open_store(store)
        manifest = assemble_ensemble(s, load_settings(s).steps)
        return f"{s.uri}/{ENSEMBLE_KEY}: {len(manifest.classes)} classes from {len(trained_splits)} trained splits"

    return run_step("assemble-ensemble", assemble)
