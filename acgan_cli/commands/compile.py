"""`acgan compile`: the pipeline as a YAML file to upload in the KFP UI."""

from __future__ import annotations

import argparse
from pathlib import Path

from acgan.cluster_settings import ClusterSettings
from acgan_cli.flags import cluster_options, preset_option, validated


def add_parser(sub) -> None:
    p = sub.add_parser("compile", help="compile the pipeline to a YAML file to upload in the KFP UI")
    p.add_argument("-o", "--output", type=Path, default=Path("acgan-ensemble.yaml"))
    preset_option(p, "paper")
    # No image is published: every pod of a pipeline compiled for a made-up one would wait on its pull for ever.
    cluster_options(p, required={"image"})
    p.set_defaults(run=compile_command)


def compile_command(args: argparse.Namespace) -> dict:
    from pipelines.runs import compile_pipeline

    cluster = validated(args, ClusterSettings)
    return {"pipeline": str(compile_pipeline(cluster, args.output, args.preset)), "image": cluster.image,
            "preset": args.preset}
