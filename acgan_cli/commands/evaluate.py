"""`acgan evaluate`: the paper's discriminability and diversity analyses of the ensemble."""

from __future__ import annotations

import argparse
import sys

from acgan.presets import preset_defaults
from acgan.settings import EvalSettings
from acgan_cli.flags import settings_flags, validated


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="the paper's discriminability and diversity analyses of the ensemble")
    p.add_argument("--store", required=True, help="the store to evaluate, with its ensemble assembled: a directory, "
                   "or s3://BUCKET/PREFIX (see ACGAN_S3_ENDPOINT)")
    settings_flags(p, EvalSettings, defaults=preset_defaults(EvalSettings, None))
    p.set_defaults(run=evaluate)


def evaluate(args: argparse.Namespace) -> dict:
    from acgan.evaluation.analyses import evaluate
    from acgan.evaluation.report import flat_summary
    from acgan.layout import METRICS_KEY, REPORT_KEY
    from acgan.store import open_store

    settings = validated(args, EvalSettings)
    store = open_store(args.store)
    store.ensure_ready()
    summary = evaluate(store, settings)
    print(f"{'metric':<48} value", file=sys.stderr)
    for name, value in flat_summary(summary).items():
        print(f"{name:<48} {'n/a' if value is None else f'{value:.4f}'}", file=sys.stderr)
    return {"metrics": f"{store.uri}/{METRICS_KEY}", "report": f"{store.uri}/{REPORT_KEY}", "summary": summary}
