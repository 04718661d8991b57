"""`acgan train-split`: train (or continue) the AC-GAN of one class split."""

from __future__ import annotations

import argparse

from acgan_cli.flags import ready_store, settings_options, validated


def add_parser(sub) -> None:
    from acgan.training.loop import TrainConfig

    p = sub.add_parser("train-split", help="train (or continue) the AC-GAN of one class split")
    p.add_argument("--store", required=True)
    settings_options(p, TrainConfig, "paper", required={"split"})  # the split's default serves the library
    p.set_defaults(run=train_split)


def train_split(args: argparse.Namespace) -> dict:
    from acgan.training.loop import TrainConfig, train_split

    cfg = validated(args, TrainConfig)
    store = ready_store(args.store)
    return train_split(store, cfg)
