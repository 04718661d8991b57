"""`acgan unlock`: remove a split's lease whose trainer is gone."""

from __future__ import annotations

import argparse

from acgan_cli.flags import ready_store


def add_parser(sub) -> None:
    p = sub.add_parser("unlock", help="remove a split's lease whose trainer is gone (its lease lapsed, or its process "
                       "on this machine ended), so that a rerun can train the split now")
    p.add_argument("--store", required=True)
    p.add_argument("--split", type=int, required=True)
    p.add_argument("--force", action="store_true", help="also a live lease, for a trainer known to be gone (a lost "
                   "node); a trainer still running stops at its next renewal")
    p.set_defaults(run=unlock)


def unlock(args: argparse.Namespace) -> dict:
    from acgan.data.plan import load_plan
    from acgan.lease import unlock

    store = ready_store(args.store)
    load_plan(store).check_split(args.split)
    removed = unlock(store, args.split, args.force)
    return {"store": store.uri, "split": args.split, "removed": removed}
