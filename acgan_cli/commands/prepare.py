"""`acgan prepare`: read a data set into per-split shards and a split plan in the store."""

from __future__ import annotations

import argparse

from acgan_cli.flags import given, settings_options


def add_parser(sub) -> None:
    from acgan.data.prepare import PrepareConfig

    p = sub.add_parser("prepare", help="read a data set into per-split shards and a split plan in the store")
    p.add_argument("--store", required=True, help="a directory, or s3://BUCKET/PREFIX (see ACGAN_S3_ENDPOINT)")
    settings_options(p, PrepareConfig, "paper")
    p.set_defaults(run=prepare, preset=None)  # a store's recorded preset, else paper: only a given one changes it


def prepare(args: argparse.Namespace) -> dict:
    from acgan.data.prepare import PrepareConfig, continued_prepare_config, prepare, shard_info
    from acgan.store import open_store

    store = open_store(args.store)
    plan = prepare(continued_prepare_config(store, given(args, PrepareConfig.model_fields)), store)
    infos = [shard_info(store, split) for split in range(len(plan.splits))]
    return {"store": args.store, "classes": plan.num_classes, "splits": len(plan.splits),
            "images": sum(sum(i.images.values()) for i in infos),
            "skipped": sum(sum(i.skipped.values()) for i in infos), "resolution": plan.resolution}
