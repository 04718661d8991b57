"""`acgan compare`: the class-split study, mean MS-SSIM against classes per model over evaluated stores."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acgan.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="the class-split study: mean MS-SSIM against classes per model, over stores")
    p.add_argument("stores", nargs="+", metavar="STORE", help="evaluated stores (acgan evaluate)")
    p.add_argument("--out", type=Path, default=Path("ms-ssim-by-classes-per-model.png"), help="the figure (.png)")
    p.set_defaults(run=compare)


def compare(args: argparse.Namespace) -> dict:
    from acgan.evaluation.comparison import compare
    from acgan.store import open_store

    if len(args.stores) < 2:
        raise UserError("give two or more stores, trained with different --classes-per-split and evaluated")
    if args.out.suffix.lower() != ".png" or not args.out.parent.is_dir():
        raise UserError(f"--out {args.out}: give a .png file name in an existing directory")
    stores = [open_store(uri) for uri in args.stores]
    for store in stores:
        store.ensure_ready()
    runs, png = compare(stores)
    args.out.write_bytes(png)
    print(f"{'classes per model':>17}  {'MS-SSIM':>8}  {'real':>6}  {'accuracy':>8}  store", file=sys.stderr)
    for r in sorted(runs, key=lambda r: r["classes_per_model"]):
        print(f"{r['classes_per_model']:>17.1f}  {r['ms_ssim_mean']:>8.3f}  {r['real_ms_ssim_mean']:>6.3f}  "
              f"{r['accuracy']:>8.3f}  {r['store']}", file=sys.stderr)
    return {"figure": str(args.out), "runs": runs}
