"""`acgan bench`: speed benchmarks against their targets, as a table and JSON (acgan_cli/benchmarks/)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from acgan.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="speed benchmarks against their targets: a table, and JSON")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu | cuda: where the benchmarks run and "
                   "whose targets they are measured against (default cpu)")
    p.add_argument("--only", help="comma-separated: training,data,ms_ssim,evaluation,run,serve (default all; with "
                                  "--device cuda all but run)")
    p.add_argument("--out", type=Path, default=Path("bench-results.json"), help="the JSON results")
    p.add_argument("--markdown", type=Path, help="also the table as Markdown, with the machine and commit")
    p.set_defaults(run=bench)


def bench(args: argparse.Namespace) -> dict:
    import torch

    from acgan_cli.benchmarks.suite import BENCHMARKS, machine_record, run_benchmarks, table

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible; run on a GPU machine or use --device cpu")
    only = [name.strip() for name in args.only.split(",")] if args.only else None
    unknown = sorted(set(only or []) - set(BENCHMARKS))
    if unknown:
        raise UserError(f"--only {','.join(unknown)}: choose from {','.join(BENCHMARKS)}")
    for path in (args.out, args.markdown):
        if path is not None and not path.parent.is_dir():
            raise UserError(f"{path}: directory {path.parent} does not exist")
    device = torch.device(args.device)
    rows = run_benchmarks(device, only)
    record = {"machine": machine_record(device), "rows": [r.model_dump() for r in rows]}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    if args.markdown:
        m = record["machine"]
        args.markdown.write_text(f"## {m['device']}, {m['date']}, commit {m['commit']}\n\n{m['cpu']}, {m['cores']} "
                                 f"cores, torch {m['torch']}, CUDA {m['cuda'] or '-'}, {m['threads']} threads. "
                                 f"`acgan bench --device {args.device}{f' --only {args.only}' if args.only else ''}`.\n\n{table(rows)}\n")
    print(table(rows), file=sys.stderr)
    print(f"written to {args.out}", file=sys.stderr)
    failed = [r for r in rows if r.error]
    if failed:
        raise UserError(f"{len(failed)} benchmark(s) failed ({'; '.join(f'{r.figure}: {r.error}' for r in failed)}); "
                        f"the other rows are in {args.out}")
    return record["machine"]
