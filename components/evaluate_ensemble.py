"""Component: evaluate the assembled ensemble; the summary appears as KFP metrics, the report as an HTML artifact."""

from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from acgan.settings import ClusterSettings


@dsl.component(base_image=ClusterSettings().image, install_kfp_package=False)
def evaluate_ensemble(store: str, ensemble: str, seed: int, samples_per_class: int, pairs: int,
                      classifier_steps: int, classifier: str, analyses: list,
                      metrics: Output[Metrics], report: Output[HTML]):
    # The seed, and one parameter per EvaluationSettings field (tests/pipelines): the evaluation's settings.
    settings = {k: v for k, v in locals().items() if k not in ("store", "ensemble", "metrics", "report")}
    from acgan.evaluation.analyses import REPORT_KEY, evaluate
    from acgan.settings import EvalSettings
    from acgan.evaluation.report import flat_summary
    from components import run_step
    from acgan.store import open_store

    def run() -> None:
        s = open_store(store)
        summary = evaluate(s, EvalSettings(**settings))
        for name, value in flat_summary(summary).items():
            if value is not None:
                metrics.log_metric(name, value)
        with open(report.path, "wb") as f:
            f.write(s.read_bytes(REPORT_KEY))

    run_step("evaluate-ensemble", run)
