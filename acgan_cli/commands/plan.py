"""`acgan plan`: GPU-hours, wall time and GPU nodes of a run, from the measured throughput."""

from __future__ import annotations

import argparse

from acgan_cli.flags import settings_flags, validated


def add_parser(sub) -> None:
    from acgan.capacity import PlanInput

    p = sub.add_parser("plan", help="GPU-hours, wall time and GPU nodes of a run, from the measured throughput")
    settings_flags(p, PlanInput)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=plan)


def plan(args: argparse.Namespace) -> dict | None:
    from acgan.capacity import PlanInput, make_plan, plan_table

    p = validated(args, PlanInput)
    plan = make_plan(p)
    if args.images_per_second is None:
        plan.notes.append(f"the throughput is the project's target for one H100 at 128 px ({p.images_per_second:,.0f} "
                          "images/s, bench/RESULTS.md), not a measurement: give --images-per-second with yours "
                          "(`acgan bench --device cuda --only training`, or the images/s `acgan train-split` reports)")
    if args.json:
        return {"input": p.model_dump(), "plan": plan.model_dump()}
    for name, value in plan_table(p, plan):
        print(f"{name:<28} {value}")
    for note in plan.notes:
        print(f"note: {note}")
    return None
