"""`acgan submit`: start a run on a Kubeflow Pipelines server."""

from __future__ import annotations

import argparse

from acgan.cluster_settings import ClusterSettings
from acgan.settings import RunSettings
from acgan_cli.flags import cluster_options, settings_flags, settings_options, validated


def add_parser(sub) -> None:
    from pipelines.launch_settings import KfpTarget, SubmitSettings

    p = sub.add_parser("submit", help="start a run on a Kubeflow Pipelines server")
    p.add_argument("--store", required=True, help="s3://BUCKET/PREFIX that every training pod reaches")
    g = p.add_argument_group("submission")
    settings_flags(g, SubmitSettings, required={"host"})
    settings_flags(g, KfpTarget)
    settings_options(p, RunSettings, "paper", skip={"store"}, title="run settings (pipeline parameters)")
    cluster_options(p)
    p.set_defaults(run=submit)


def submit(args: argparse.Namespace) -> dict:
    from pipelines.launch_settings import KfpTarget, SubmitSettings
    from pipelines.runs import submit

    return submit(validated(args, RunSettings), cluster=validated(args, ClusterSettings),
                  target=validated(args, KfpTarget), submission=validated(args, SubmitSettings))
