"""`acgan`: a thin command line over the library. Bad input -> one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from components.errors import UserError


def _prepare(args: argparse.Namespace) -> dict:
    from components.data.prepare import PrepareConfig, prepare
    from components.store import open_store

    cfg = PrepareConfig.model_validate(_given(args, PrepareConfig.model_fields))
    plan = prepare(cfg, open_store(args.store))
    return {"store": args.store, "classes": plan.num_classes, "splits": len(plan.splits),
            "images": sum(c.images for c in plan.classes), "resolution": plan.resolution}


def _train_split(args: argparse.Namespace) -> dict:
    from components.store import open_store
    from components.training.loop import TrainConfig, train_split

    cfg = TrainConfig.model_validate(_given(args, TrainConfig.model_fields))
    store = open_store(args.store)
    store.ensure_ready()
    return train_split(store, cfg)


def _sample(args: argparse.Namespace) -> dict:
    from components.sampling import sample
    from components.store import open_store

    store = open_store(args.store)
    store.ensure_ready()
    return sample(store, args.class_, args.n, args.seed, args.out, args.device)


def _given(args: argparse.Namespace, fields: dict) -> dict:
    """Only the options the user gave, so the validated model's defaults apply to the rest."""
    return {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acgan", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="read a data set into per-split shards and a split plan in the store")
    p.add_argument("--store", required=True, help="a directory, or s3://BUCKET/PREFIX (see ACGAN_S3_ENDPOINT)")
    p.add_argument("--dataset", help="digits | cifar10 | folder | synthetic (default digits)")
    p.add_argument("--source", type=Path, help="cifar10: directory or .tar.gz; folder: root with a sub-folder per class")
    p.add_argument("--resolution", type=int, help="32 | 64 | 128 (default 32)")
    p.add_argument("--classes-per-split", type=int, help="classes per sub-model (default 10, the paper's)")
    p.add_argument("--plan-file", type=Path, help='JSON {"splits": [[class, ...], ...]} instead of contiguous groups')
    p.add_argument("--num-classes", type=int, help="synthetic: number of classes (default 10)")
    p.add_argument("--images-per-class", type=int, help="synthetic: images per class (default 100)")
    p.add_argument("--strict", action="store_true", default=None, help="folder: fail on an unreadable image")
    p.add_argument("--seed", type=int)
    p.set_defaults(run=_prepare)

    p = sub.add_parser("train-split", help="train (or continue) the AC-GAN of one class split")
    p.add_argument("--store", required=True)
    p.add_argument("--split", type=int, required=True)
    p.add_argument("--steps", type=int, help="target step count (default 50000, the paper's)")
    p.add_argument("--batch-size", type=int, help="default 100")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 2e-4)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 1000)")
    p.add_argument("--tick-every", type=int, help="steps between stats lines (default 100)")
    p.add_argument("--keep-checkpoints", type=int, help="newest complete checkpoints kept (default 2, at least 2)")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-d-fake-class-loss", dest="d_fake_class_loss", action="store_false", default=None,
                   help="drop D's class term on fake images (the paper keeps it)")
    p.add_argument("--width", type=float, help="multiplies G's channel counts, for CPU runs (default 1.0, the paper's network)")
    p.add_argument("--device", help="auto | cpu | cuda")
    p.set_defaults(run=_train_split)

    p = sub.add_parser("sample", help="draw samples of one class from the newest checkpoint of its split")
    p.add_argument("--store", required=True)
    p.add_argument("--class", dest="class_", required=True, help="class id or class name")
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help=".png (grid) or .npz (images, labels)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=_sample)
    return parser


def describe_validation_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(part) for part in err["loc"])
    option = f"--{loc.replace('_', '-')}" if loc else "settings"
    message = err["msg"].removeprefix("Value error, ")
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{option}: {message}{more}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("urllib3", "minio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        result = args.run(args)
    except UserError as e:
        print(f"acgan {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:
        print(f"acgan {args.command}: error: {describe_validation_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"acgan {args.command}: interrupted; complete checkpoints are kept", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
