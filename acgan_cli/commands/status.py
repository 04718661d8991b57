"""`acgan status`: per split, its classes, newest complete step / target and state."""

from __future__ import annotations

import argparse

from acgan_cli.flags import ready_store


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="per split: classes, newest complete step / target, state")
    p.add_argument("--store", required=True)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--verify", action="store_true", help="check each split's newest checkpoint against its "
                   "checksums (reads the weights) instead of trusting its completion marker")
    p.set_defaults(run=status)


def status(args: argparse.Namespace) -> dict | None:
    from acgan.collapse import describe
    from acgan.experiment import split_statuses

    store = ready_store(args.store)
    statuses = split_statuses(store, args.verify)
    if args.json:
        return {"store": store.uri, "splits": [s.model_dump() for s in statuses]}
    print(f"{'split':>5}  {'classes':<24} {'step / target':>15}  state")
    for s in statuses:
        classes = ",".join(map(str, s.classes))
        progress = f"{s.step if s.step is not None else '-'} / {s.target if s.target is not None else '?'}"
        print(f"{s.split:>5}  {classes[:24]:<24} {progress:>15}  {s.state}{f' by {s.trainer}' if s.trainer else ''}"
              f"{', COLLAPSING' if s.collapse else ''}")
    done = sum(s.state == "complete" for s in statuses)
    print(f"{done} of {len(statuses)} splits complete")
    for s in statuses:
        if s.collapse:
            print(f"split {s.split}: {describe(s.collapse, store.uri)}")
    return None
