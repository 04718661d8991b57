"""The ImageNet path at full class count, on one machine: a synthetic ImageNet-like tree (class folders of 500x375
JPEGs) served by the S3-protocol test server (moto) or written to a local folder, then `acgan run --dataset folder`
on it: the plan from the listing, one shard task per split inside the fan-out, training, assembly, evaluation.

    python bench/imagenet_like.py --source s3 --out /tmp/imagenet-like    # 1000 classes x 20 JPEGs, 100 splits
    python bench/imagenet_like.py --source local --out /tmp/imagenet-like # the same tree from a local folder
    python bench/imagenet_like.py --archives --out /tmp/imagenet-like     # each class one .tar, as ImageNet ships
    python bench/imagenet_like.py --classes 6 --per-class 3 --classes-per-split 3 --out /tmp/x -- --classifier-steps 20

The JPEGs are generated once into `--tree` (default OUT/train) and kept: a later run, of either source, reads them
from there (the s3 source uploads them to a fresh test server).

Prints one JSON line: wall times (tree, run), the images the shards hold, and the shard tasks' decoding rates from
their last "decoded N images, K / K classes, R images/s" lines in the task logs (kfp-local/logs/). The run's console output is written
beside the store.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acgan.data.sources import usable_cores  # noqa: E402
from acgan.store import open_store  # noqa: E402


def synset(c: int) -> str:
    return f"n{1440764 + 37 * c:08d}"  # ImageNet-like folder names, sorted in class order


def class_jpegs(job: tuple[int, int]) -> list[tuple[str, bytes]]:
    """Class c's JPEGs: 500x375, smooth structure of the class plus noise, quality 90 (the benchmark's JPEGs)."""
    import io

    c, per_class = job
    rng = np.random.default_rng(c)
    yy, xx = np.mgrid[:375, :500] / 500.0
    f = rng.uniform(2, 12, 3)
    out = []
    for i in range(per_class):
        img = np.stack([127 + 100 * np.sin(f[k] * xx + f[(k + 1) % 3] * yy + i) for k in range(3)], axis=-1)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, "JPEG", quality=90)
        out.append((f"{synset(c)}/{synset(c)}_{i}.JPEG", buffer.getvalue()))
    return out


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("moto server did not start: install the test extras (pip install -e .[test])")


def write_tree(tree: Path, classes: int, per_class: int) -> int:
    """Generates the classes missing from the local tree (a class folder is complete once renamed into place);
    returns the number of images the tree holds."""
    missing = [(c, per_class) for c in range(classes) if not (tree / synset(c)).is_dir()]
    with Pool(usable_cores()) as pool:
        for files in pool.imap_unordered(class_jpegs, missing, chunksize=4):
            partial = tree / f".partial-{files[0][0].split('/')[0]}"
            partial.mkdir(parents=True, exist_ok=True)
            for name, data in files:
                (partial / name.split("/")[1]).write_bytes(data)
            partial.rename(tree / files[0][0].split("/")[0])
    return sum(len(list((tree / synset(c)).iterdir())) for c in range(classes))


def class_archive(folder: Path) -> bytes:
    """A class folder as an uncompressed tar of its images, as ImageNet's train set ships each class."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for f in sorted(folder.iterdir()):
            archive.add(f, arcname=f.name)
    return buffer.getvalue()


def archive_tree(tree: Path, classes: int, archives: Path) -> None:
    """The local tree's classes as `<class>.tar` files in `archives` (made where missing)."""
    archives.mkdir(parents=True, exist_ok=True)
    for c in range(classes):
        if not (archives / f"{synset(c)}.tar").exists():
            (archives / f".{synset(c)}.tar").write_bytes(class_archive(tree / synset(c)))
            (archives / f".{synset(c)}.tar").rename(archives / f"{synset(c)}.tar")


def upload_tree(tree: Path, classes: int, source: str, archives: bool = False) -> None:
    """The local tree under the S3 prefix `source`: an object per image, or with `archives` one tar per class."""
    bucket = open_store(source)
    bucket.ensure_ready(create=True)
    if archives:
        def put(c: int) -> None:
            bucket.write_bytes(f"{synset(c)}.tar", class_archive(tree / synset(c)))
        jobs = range(classes)
    else:
        def put(f: Path) -> None:
            bucket.write_bytes(f"{f.parent.name}/{f.name}", f.read_bytes())
        jobs = [f for c in range(classes) for f in sorted((tree / synset(c)).iterdir())]
    with ThreadPoolExecutor(8) as uploads:
        list(uploads.map(put, jobs))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=["s3", "local"], default="s3")
    p.add_argument("--out", type=Path, required=True, help="working directory: the store and kfp outputs")
    p.add_argument("--tree", type=Path, help="the local JPEG tree, made if missing (default: OUT/train)")
    p.add_argument("--archives", action="store_true", help="each class as one <class>.tar (as ImageNet's train set "
                   "ships) instead of a folder of JPEGs")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--classes-per-split", type=int, default=10)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("run_options", nargs=argparse.REMAINDER, help="after --: more `acgan run` options")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tree = args.tree or args.out / "train"
    moto = None
    if args.source == "s3":
        moto, endpoint = start_moto()
        os.environ.update(ACGAN_S3_ENDPOINT=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        source, store = "s3://imagenet-like/train", "s3://acgan-bench/run"
        open_store(store).ensure_ready(create=True)
    else:
        source, store = str(args.out / "train-archives" if args.archives else tree), str(args.out / "store")
    try:
        start = time.perf_counter()
        images = write_tree(tree, args.classes, args.per_class)
        tree_s = time.perf_counter() - start
        start = time.perf_counter()
        if moto:
            upload_tree(tree, args.classes, source, args.archives)
        elif args.archives:
            archive_tree(tree, args.classes, Path(source))
        upload_s = time.perf_counter() - start
        # --pairs: the evaluation's MS-SSIM pairs per class must fit the real images a class has (20 give 190).
        pairs = min(100, args.per_class * (args.per_class - 1) // 2)
        command = ["acgan", "run", "--store", store, "--dataset", "folder", "--source", source,
                   "--classes-per-split", str(args.classes_per_split), "--resolution", str(args.resolution),
                   "--steps", str(args.steps), "--pairs", str(pairs), "--pipeline-root", str(args.out / "kfp-local"),
                   *[o for o in args.run_options if o != "--"]]
        log_path = args.out / f"run-{args.source}.log"
        start = time.perf_counter()
        with open(log_path, "w") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        run_s = time.perf_counter() - start
        task_logs = "".join(p.read_text() for p in (args.out / "kfp-local" / "logs").glob("*/*-prepare-split-data.log"))
        finished = re.findall(r"decoded \d+ images, (\d+) / \1 classes, ([\d.]+) images/s", task_logs)
        rates = [float(rate) for _, rate in finished]
        print(json.dumps({"source": args.source, "classes": args.classes, "images": images, "tree_s": round(tree_s, 1),
                          "upload_s": round(upload_s, 1),
                          "run_s": round(run_s, 1), "exit": code, "shard_tasks": len(rates),
                          "decode_images_per_s_per_task": round(float(np.mean(rates)), 1) if rates else None,
                          "cores": usable_cores(), "command": " ".join(command), "log": str(log_path)}))
    finally:
        if moto:
            moto.terminate()


if __name__ == "__main__":
    main()
