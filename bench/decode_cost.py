"""What a shard task's decoding costs per image from a bucket and from a local folder, each with a folder of JPEGs
per class or one tar per class, split into our process (its reader thread and decode workers) and the S3 server, so
that a machine that also runs the test server (moto, on the same cores) can still say what the bucket path costs the
pod itself. The same JPEGs as bench/imagenet_like.py.

    python bench/decode_cost.py --out /tmp/decode-cost            # 10 classes x 40 JPEGs, each layout 3 times

Prints one JSON line per trial, then the mean per source: images/s (wall), our CPU ms per image, the server's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from imagenet_like import archive_tree, start_moto, upload_tree, write_tree  # noqa: E402

from acgan.data.sources import folder_source  # noqa: E402


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time of process `pid` (from /proc), or of this process and its ended children (the decode workers)."""
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="where the local tree is written")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--trials", type=int, default=3)
    args = p.parse_args()
    moto, endpoint = start_moto()
    os.environ.update(ACGAN_S3_ENDPOINT=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    sources = {"s3": "s3://decode-cost/train", "s3-archives": "s3://decode-cost/archives",
               "local": str(args.out / "train"), "local-archives": str(args.out / "archives")}
    images = args.classes * args.per_class
    rows: dict[str, list[dict]] = {kind: [] for kind in sources}
    try:
        write_tree(args.out / "train", args.classes, args.per_class)
        archive_tree(args.out / "train", args.classes, args.out / "archives")
        upload_tree(args.out / "train", args.classes, sources["s3"])
        upload_tree(args.out / "train", args.classes, sources["s3-archives"], archives=True)
        for _ in range(args.trials):  # interleaved, so that both sources meet the same load
            for kind, root in sources.items():
                server, ours, start = cpu_seconds(moto.pid), cpu_seconds(), time.perf_counter()
                folder_source(root, args.resolution, strict=False).load_classes(list(range(args.classes)))
                wall = time.perf_counter() - start
                row = {"source": kind, "images_per_s": round(images / wall, 1),
                       "our_cpu_ms_per_image": round(1000 * (cpu_seconds() - ours) / images, 2),
                       "server_cpu_ms_per_image": round(1000 * (cpu_seconds(moto.pid) - server) / images, 2)}
                rows[kind].append(row)
                print(json.dumps(row), flush=True)
    finally:
        moto.terminate()
    for kind, trials in rows.items():
        mean = {k: round(float(np.mean([t[k] for t in trials])), 2) for k in trials[0] if k != "source"}
        print(json.dumps({"source": kind, "mean_of": len(trials), **mean}))


if __name__ == "__main__":
    main()
