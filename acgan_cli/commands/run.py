"""`acgan run`: the whole pipeline on this machine (kfp.local), and what it and `acgan rerun --local` end with."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from acgan.settings import RunSettings
from acgan_cli.flags import given, settings_flags, settings_options, validated, verbose_option


def add_parser(sub) -> None:
    from pipelines.launch_settings import LocalSettings

    p = sub.add_parser("run", help="the whole pipeline on this machine (kfp.local): the embedded default")
    p.add_argument("--store", default="./acgan-store", help="default ./acgan-store")
    settings_options(p, RunSettings, "demo", skip={"store"}, title="run settings (pipeline parameters)")
    settings_flags(p, LocalSettings)
    verbose_option(p)
    p.set_defaults(run=run, preset=None)  # a store's recorded preset, else demo: only a given one changes it


def run(args: argparse.Namespace) -> dict | None:
    from acgan.experiment import continued_settings
    from pipelines.launch_settings import LocalSettings
    from pipelines.runs import run_local

    local = validated(args, LocalSettings)
    settings = continued_settings(given(args, RunSettings.model_fields))  # a store's recorded ones, as changed
    return local_result(run_local(settings, local=local, quiet=not args.verbose), args.verbose)


def local_result(result: dict, verbose: bool) -> dict | None:
    """What `acgan run` and `acgan rerun --local` end with: the evaluation's summary, where to look, the result as
    JSON with --verbose, else where the task logs are."""
    from acgan.layout import METRICS_KEY, REPORT_KEY
    from acgan.store import LocalStore, open_store
    from pipelines.console import summary_text

    store = open_store(result["store"])
    local_report = Path(store.root) / REPORT_KEY if isinstance(store, LocalStore) else None
    print(summary_text(json.loads(store.read_bytes(METRICS_KEY)), result["report"], result["samples"],
                       local_report))
    if not verbose:
        print(f"task logs:    {result['logs']}")
        return None
    return result
