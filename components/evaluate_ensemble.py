"""Component: evaluate the assembled ensemble; the summary appears as KFP metrics, the report as an HTML artifact."""

from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from acgan.cluster_settings import ClusterSettings


@dsl.component(base_image=ClusterSettings().image, install_kfp_package=False)
def evaluate_ensemble(store: str, ensemble: str, metrics: Output[Metrics], report: Output[HTML]):
    """Evaluates with the run's settings as `prepare_data` recorded them in the store (experiment.json), as each
    training task reads its own: the pipeline's evaluation parameters (`analyses`, `pairs`, ...) among them."""
    from acgan.evaluation.analyses import evaluate
    from acgan.evaluation.report import flat_summary
    from acgan.experiment import evaluation_settings
    from acgan.layout import REPORT_KEY
    from acgan.store import open_store
    from components import run_step

    def run() -> None:
        s = open_store(store)
        summary = evaluate(s, evaluation_settings(s))
        for name, value in flat_summary(summary).items():
            if value is not None:
                metrics.log_metric(name, value)
        with open(report.path, "wb") as f:
            f.write(s.read_bytes(REPORT_KEY))

    run_step("evaluate-ensemble", run)
