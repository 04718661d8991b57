"""`acgan rerun`: train only the splits that are not complete, then re-assemble the ensemble."""

from __future__ import annotations

import argparse

from acgan.cluster_settings import ClusterSettings
from acgan.settings import CompileSetting
from acgan_cli.commands.run import local_result
from acgan_cli.flags import cluster_options, given_values, settings_flags, validated, verbose_option


def add_parser(sub) -> None:
    from pipelines.launch_settings import KfpTarget, LocalSettings, SubmitSettings

    p = sub.add_parser("rerun", help="train only the splits that are not complete, then re-assemble the ensemble; "
                       "on a cluster with the settings `acgan submit` recorded in the store, each option given "
                       "replacing its recorded value")
    p.add_argument("--store", required=True)
    p.add_argument("--local", action="store_true", help="run on this machine through kfp.local")
    settings_flags(p, LocalSettings, skip={"parallelism"})
    verbose_option(p)
    settings_flags(p.add_argument_group("on a cluster (--host), as `acgan submit`"), SubmitSettings)
    settings_flags(p.add_argument_group("on a cluster: default as `acgan submit` recorded them in the store"),
                   KfpTarget, recorded=True)
    cluster_options(p, recorded=True)
    settings_flags(p.add_argument_group("run settings (default: the recorded ones)"), CompileSetting,
                   recorded=True)
    p.set_defaults(run=rerun)


def rerun(args: argparse.Namespace) -> dict:
    from acgan.store import open_store
    from pipelines.launch_settings import KfpTarget, LocalSettings, SubmitSettings
    from pipelines.runs import RecordedChanges, rerun

    changes = RecordedChanges(run=given_values(args, CompileSetting), cluster=given_values(args, ClusterSettings),
                              target=given_values(args, KfpTarget))
    result = rerun(open_store(args.store), local=validated(args, LocalSettings) if args.local else None,
                   submission=validated(args, SubmitSettings) if args.host is not None else None, changes=changes,
                   quiet=not args.verbose)
    if "pipeline_root" not in result:  # on a cluster, or nothing left to train here
        return result
    return local_result(result, args.verbose)
