"""`acgan sample`: draw samples of one class, through the ensemble when assembled."""

from __future__ import annotations

import argparse
from pathlib import Path

from acgan.settings import SampleSettings
from acgan_cli.flags import ready_store, settings_flags, validated


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw samples of one class, through the ensemble when assembled")
    p.add_argument("--store", required=True)
    p.add_argument("--class", dest="class_", required=True, help="class id or class name")
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", type=Path, required=True, help=".png (grid) or .npz (images, labels)")
    settings_flags(p, SampleSettings)
    p.set_defaults(run=sample)


def sample(args: argparse.Namespace) -> None:
    from acgan.ensemble import sample

    settings = validated(args, SampleSettings)
    store = ready_store(args.store)
    s = sample(store, args.class_, args.n, settings.seed, args.out, settings.torch_device, settings.raw)
    generator = "trained G" if s["raw"] else "sampling snapshot"
    print(f"{args.n} samples of class {s['class']} ({s['name']}) written to {s['out']}: split {s['split']}'s "
          f"{generator} at step {s['step']}, through the {s['via']}")
