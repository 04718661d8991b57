"""`acgan evaluate`: the paper's discriminability and diversity analyses of the ensemble."""

from __future__ import annotations

import argparse
import sys

from acgan.settings import EvalSettings
from acgan_cli.flags import ready_store, settings_flags, validated


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="the paper's discriminability and diversity analyses of the ensemble")
    p.add_argument("--store", required=True, help="the store to evaluate, with its ensemble assembled: a directory, "
                   "or s3://BUCKET/PREFIX (see ACGAN_S3_ENDPOINT)")
    settings_flags(p, EvalSettings)
    p.set_defaults(run=evaluate)


def evaluate(args: argparse.Namespace) -> dict:
    from acgan.evaluation.analyses import evaluate
    from acgan.evaluation.report import flat_summary
    from acgan.layout import METRICS_KEY, REPORT_KEY

    settings = validated(args, EvalSettings)
    store = ready_store(args.store)
    summary = evaluate(store, settings)
    print(f"{'metric':<48} value", file=sys.stderr)
    for name, value in flat_summary(summary).items():
        print(f"{name:<48} {'n/a' if value is None else f'{value:.4f}'}", file=sys.stderr)
    return {"metrics": f"{store.uri}/{METRICS_KEY}", "report": f"{store.uri}/{REPORT_KEY}", "summary": summary}
