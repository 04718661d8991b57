"""Image sources. Each turns its input into class names and, per class, a uint8 array of shape (N, C, R, R).

- digits:    the 8x8 digits that ship with scikit-learn, upsampled bilinearly (1 channel, 10 classes).
- cifar10:   the standard python-pickle batches, a directory or the .tar.gz (read with a restricted unpickler).
- folder:    per class a sub-folder of JPEG/PNG images, as ImageNet's train set is laid out once extracted, or an
             uncompressed tar of them named after the class (`n01440764.tar`), as ImageNet's train set ships.
- synthetic: procedurally drawn shapes (acgan/data/synthetic.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
import pickle
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from acgan.errors import UserError
from acgan.store import open_store

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
ARCHIVE_SUFFIX = ".tar"
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD", or "max PERIOD" without a CPU limit
PROGRESS_SECONDS = 10.0
# Longest side over shortest of an image that is decoded: its centre square is at least a twentieth of it.
MAX_ASPECT = 20
ARCHIVE_HEAD_BYTES = 1 << 16  # of a class archive in a bucket: its first member headers, to tell it holds an image


@dataclass
class Source:
    dataset: str
    channels: int
    class_names: list[str]
    load_classes: Callable[[list[int]], list[np.ndarray]]  # class ids -> per class (N, C, R, R) uint8
    skipped: dict[str, int] = field(default_factory=dict)  # class name -> unreadable files skipped
    check_classes: Callable[[], None] = lambda: None  # UserError for a class that holds no image, found by name


def each_class(load_class: Callable[[int], np.ndarray]) -> Callable[[list[int]], list[np.ndarray]]:
    return lambda members: [load_class(c) for c in members]


def resize_batch(images: np.ndarray, resolution: int) -> np.ndarray:
    """(N, C, h, w) uint8 -> (N, C, R, R) uint8, bilinear."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    x = torch.from_numpy(images).float()
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def digits_source(resolution: int) -> Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    images = resize_batch(images, resolution)
    labels = bunch.target
    return Source("digits", 1, [str(n) for n in bunch.target_names], each_class(lambda c: images[labels == c]))


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only what they contain (numpy arrays and plain containers)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # how protocol-2 pickles written by Python 3 spell bytes

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def _load_cifar_batch(data: bytes, name: str) -> dict:
    try:
        batch = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise UserError(f"{name} is not a CIFAR-10 python batch ({e})") from None
    if not isinstance(batch, dict):
        raise UserError(f"{name} is not a CIFAR-10 python batch (not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def cifar10_source(path: Path, resolution: int) -> Source:
    files: dict[str, bytes] = {}
    if path.is_dir():
        files = {p.name: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    elif path.is_file():
        try:
            with tarfile.open(path, "r:*") as tar:
                for m in tar.getmembers():
                    if m.isfile():
                        files[Path(m.name).name] = tar.extractfile(m).read()
        except tarfile.TarError as e:
            raise UserError(f"{path} is neither a CIFAR-10 directory nor a readable .tar.gz ({e})") from None
    else:
        raise UserError(f"CIFAR-10 source {path} does not exist: pass --source DIR or --source cifar-10-python.tar.gz")
    batch_names = sorted(n for n in files if n.startswith("data_batch_"))
    if not batch_names:
        raise UserError(f"{path} holds no data_batch_* files: is it the CIFAR-10 *python* version?")
    data, labels = [], []
    for name in batch_names:
        batch = _load_cifar_batch(files[name], name)
        data.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    images, targets = resize_batch(np.concatenate(data), resolution), np.concatenate(labels)
    names = [str(i) for i in range(int(targets.max()) + 1)]
    if "batches.meta" in files:
        meta = _load_cifar_batch(files["batches.meta"], "batches.meta")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", names)]
    return Source("cifar10", 3, names, each_class(lambda c: images[targets == c]))


def usable_cores(cpu_max: Path = CPU_MAX) -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (a pod's CPU limit).
    os.cpu_count() is the node's count, which oversubscribes a pod given a few of a large node's cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2 file (cgroup v1, macOS) or an unexpected format: no quota known
        pass
    return max(1, cores)


def _decode(job: tuple[str | bytes, int]) -> np.ndarray | None:
    """One image (a path or its bytes) -> (3, R, R) uint8: shorter side resized to R, then centre-cropped.
    The format is sniffed from the content, so a PNG named .jpg decodes; CMYK and greyscale become RGB.
    None if unreadable, or longer than MAX_ASPECT times its width (by its header, before decoding).
    Memory is bounded by the image's shape: only the centre square is resized (Pillow's `box`), never the whole
    image, whose long side resizing the short one to R would stretch (a 1 x 3,000,000 PNG of a few kB: 16 GB)."""
    image, resolution = job
    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as img:
            if max(img.size) > MAX_ASPECT * min(img.size):
                return None
            img.draft("RGB", (resolution, resolution))  # JPEG: decode at reduced size, much faster
            img = img.convert("RGB")
            w, h = img.size
            scale = resolution / min(w, h)
            # The R x R crop of the image resized to (W, H), as a box of the source: the same pixels.
            W, H = max(resolution, round(w * scale)), max(resolution, round(h * scale))
            left, top = (W - resolution) // 2 * w / W, (H - resolution) // 2 * h / H
            box = (left, top, left + resolution * w / W, top + resolution * h / H)
            img = img.resize((resolution, resolution), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except Exception:  # noqa: BLE001 - a file from outside may break Pillow's decoders in any way; it is skipped
        return None


def _archive_images(tar: Path | bytes, where: str) -> tuple[list[str], list[bytes]]:
    """The images of one class's tar (a file, or its bytes read from a bucket), in member order: their names (for
    messages) and bytes."""
    names, images = [], []
    try:
        opened = tarfile.open(tar, "r:") if isinstance(tar, Path) else tarfile.open(fileobj=io.BytesIO(tar), mode="r:")
        with opened as archive:
            for member in archive:
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    names.append(f"{where}:{member.name}")
                    images.append(archive.extractfile(member).read())
    except (tarfile.TarError, EOFError) as e:
        raise UserError(f"class archive {where} is not a readable tar ({e}): replace it with an uncompressed tar "
                        "of the class's images, or leave the class out (--class-list)") from None
    return names, images


def _archive_has_images(tar: Path | bytes, where: str, whole: bool = True) -> bool | None:
    """Whether a class archive holds an image, from its member headers up to the first image (no image is read).
    `tar` may be only the head of the archive (`whole` False): None if that head ends before an image."""
    try:
        opened = tarfile.open(tar, "r:") if isinstance(tar, Path) else tarfile.open(fileobj=io.BytesIO(tar), mode="r:")
        with opened as archive:
            for member in archive:  # a truncated head reads as the archive's end: hence `whole`
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    return True
    except (tarfile.TarError, EOFError) as e:
        raise UserError(f"class archive {where} is not a readable tar ({e}): replace it with an uncompressed tar "
                        "of the class's images, or leave the class out (--class-list)") from None
    return False if whole else None


def _check_classes(tree: LocalTree | BucketTree, names: list[str]) -> None:
    """Every class holds at least one JPEG/PNG by name, asked of all classes before anything is written (a bucket's
    in parallel, one listing or ranged read each): a class found empty after the plan was written could not be
    left out without a new store."""
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(tree.has_images, names))
    empty = [name for name, has in zip(names, found) if has is False]
    if empty:
        more = f" (and {len(empty) - 1} more: {', '.join(empty[1:10])}{', ...' if len(empty) > 10 else ''})"
        raise UserError(f"class {empty[0]} of {tree.uri} has no JPEG/PNG images{more if len(empty) > 1 else ''}: "
                        "add images, or leave the class out (remove its folder or archive, or use --class-list)")


def _class_names(folders: list[str], archives: list[str], uri: str) -> list[str]:
    """Class names from the sub-folders and the `<class>.tar` files of a tree; a class in both is ambiguous."""
    stems = [a.removesuffix(ARCHIVE_SUFFIX) for a in archives]
    both = sorted(set(folders) & set(stems))
    if both:
        raise UserError(f"class {both[0]} is both a folder and an archive in {uri} ({both[0]}/ and "
                        f"{both[0]}{ARCHIVE_SUFFIX}): keep one of them")
    return sorted(folders + stems)


class LocalTree:
    """A class tree in a directory (local, or a volume mounted into the pod). Workers read a folder's files; an
    archive is read here, one class at a time."""

    def __init__(self, root: str):
        self.root, self.uri = Path(root), root
        if not self.root.is_dir():
            raise UserError(f"folder source {root} does not exist or is not a directory: pass --source DIR "
                            "with one sub-folder (or .tar) per class (in a pod: a mounted volume, see `acgan "
                            "compile --data-pvc`), or s3://BUCKET/PREFIX")

    def classes(self) -> list[str]:
        entries = [p for p in self.root.iterdir() if not p.name.startswith(".")]
        for entry in entries:
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(f"class {os.fsencode(entry)!r} has a name that is not UTF-8: rename it (class names "
                                "are written to the plan as JSON)") from None
        archives = [p.name for p in entries if p.is_file() and p.name.endswith(ARCHIVE_SUFFIX)]
        return _class_names([p.name for p in entries if p.is_dir()], archives, self.uri)

    def has_images(self, name: str) -> bool:
        path = self.root / f"{name}{ARCHIVE_SUFFIX}"
        if path.is_file():
            return bool(_archive_has_images(path, str(path)))
        return any(p.suffix.lower() in IMAGE_SUFFIXES for p in (self.root / name).iterdir())

    def read(self, name: str) -> tuple[list[str], list[str] | list[bytes]]:
        """One class's images: their names, and what a worker decodes (a path, or the bytes from an archive)."""
        path = self.root / f"{name}{ARCHIVE_SUFFIX}"
        if path.is_file():  # `classes` refused a class that is both a folder and an archive
            return _archive_images(path, str(path))
        files = sorted(str(p) for p in (self.root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return files, files


class BucketTree:
    """A class tree under an S3 prefix, read through the store's client (`open_store(uri, source=True)`, which says
    where its endpoint and keys come from): a class folder costs one request per image, a class archive one request
    for the class."""

    def __init__(self, uri: str):
        self.bucket, self.uri = open_store(uri, source=True), uri
        self.archives: set[str] = set()  # from the listing `classes` makes: no request per class to tell

    def classes(self) -> list[str]:
        folders, files = self.bucket.top_level()
        archives = [f for f in files if f.endswith(ARCHIVE_SUFFIX)]
        self.archives = {a.removesuffix(ARCHIVE_SUFFIX) for a in archives}
        return _class_names(folders, archives, self.uri)

    def has_images(self, name: str) -> bool | None:
        """From the listing of a class folder; from the head of a class archive (None: no image in its head)."""
        if name in self.archives:
            key = f"{name}{ARCHIVE_SUFFIX}"
            head = self.bucket.read_tagged(key, ARCHIVE_HEAD_BYTES)[0]
            return _archive_has_images(head, f"{self.uri}/{key}", whole=len(head) < ARCHIVE_HEAD_BYTES)
        return any(Path(k).suffix.lower() in IMAGE_SUFFIXES for k in self.bucket.list(f"{name}/"))

    def read(self, name: str) -> tuple[list[str], list[bytes]]:
        if name in self.archives:
            key = f"{name}{ARCHIVE_SUFFIX}"
            return _archive_images(self.bucket.read_bytes(key), f"{self.uri}/{key}")
        files = [k for k in self.bucket.list(f"{name}/") if Path(k).suffix.lower() in IMAGE_SUFFIXES]
        # Requests wait on the network: as many at once as the client's connection pool holds.
        with ThreadPoolExecutor(8) as pool:
            return [f"{self.uri}/{k}" for k in files], list(pool.map(self.bucket.read_bytes, files))


def _read_class_list(path: str) -> list[str]:
    try:
        if path.startswith("s3://"):
            folder, _, name = path.rpartition("/")
            data = open_store(folder, source=True).read_bytes(name)
        else:
            data = Path(path).read_bytes()
        lines = data.decode("utf-8").splitlines()
    except (KeyError, FileNotFoundError, IsADirectoryError):
        raise UserError(f"class list {path} does not exist: give a text file of class folder names, one a "
                        "line") from None
    except UnicodeDecodeError:
        raise UserError(f"class list {path} is not UTF-8 text: give class folder names, one a line") from None
    return [line.strip() for line in lines if line.strip()]


def _select(tree: LocalTree | BucketTree, class_list: str | None) -> list[str]:
    names = tree.classes()
    if not names:
        raise UserError(f"{tree.uri} has no class sub-folders or archives: lay it out as {tree.uri}/<class "
                        f"name>/<image>.jpg or {tree.uri}/<class name>.tar")
    if class_list is None:
        return names
    wanted = _read_class_list(class_list)
    known = set(names)
    for i, name in enumerate(wanted):
        if name not in known:
            raise UserError(f"class list {class_list}, line {i + 1}: {name!r} is not a class (folder or .tar) of "
                            f"{tree.uri}")
        if name in wanted[:i]:
            raise UserError(f"class list {class_list}, line {i + 1}: {name!r} is listed twice")
    if not wanted:
        raise UserError(f"class list {class_list} names no classes: give class folder names, one a line")
    return wanted


def folder_source(root: str, resolution: int, strict: bool, class_list: str | None = None,
                  workers: int | None = None) -> Source:
    """One sub-folder or `<class>.tar` per class; classes sorted by name (ImageNet's synset order gives its standard
    ids), or those of `class_list` in its order. Listing the classes reads names only; `load_classes` reads the
    images."""
    tree = BucketTree(root) if root.startswith("s3://") else LocalTree(root)
    names = _select(tree, class_list)
    skipped: dict[str, int] = {}

    def load_classes(members: list[int]) -> list[np.ndarray]:
        done, start, last_log = 0, time.perf_counter(), 0.0
        cores = workers or usable_cores()
        log.info("decoding the images of %d classes on %d core(s)", len(members), cores)
        out = []
        # The next class is read while this one decodes: reading waits on the network or the disk, decoding on
        # the cores, and a bucket's round trips would otherwise leave the cores idle between classes.
        with Pool(cores) if cores > 1 else contextlib.nullcontext() as pool, ThreadPoolExecutor(1) as reader:
            read = reader.submit(tree.read, names[members[0]])
            for i, c in enumerate(members):
                files, data = read.result()
                if i + 1 < len(members):
                    read = reader.submit(tree.read, names[members[i + 1]])
                jobs = [(image, resolution) for image in data]
                decoded = pool.map(_decode, jobs, chunksize=16) if pool else [_decode(j) for j in jobs]
                bad = [f for f, img in zip(files, decoded) if img is None]
                if bad and strict:
                    raise UserError(f"unreadable image {bad[0]} (--strict): remove or replace it, or drop --strict "
                                    "to skip")
                if bad:
                    skipped[names[c]] = len(bad)
                    log.warning("class %s: skipped %d unreadable file(s), e.g. %s", names[c], len(bad), bad[0])
                good = [img for img in decoded if img is not None]
                if not good:
                    raise UserError(f"class {names[c]} of {tree.uri} has no readable JPEG/PNG images: add images, "
                                    "or leave the class out (remove its folder or archive, or use --class-list)")
                out.append(np.stack(good))
                done += len(jobs)
                elapsed = time.perf_counter() - start
                if elapsed - last_log >= PROGRESS_SECONDS or i + 1 == len(members):
                    last_log = elapsed
                    log.info("decoded %d images, %d / %d classes, %.0f images/s", done, i + 1, len(members),
                             done / max(elapsed, 1e-9))
        return out

    return Source("folder", 3, names, load_classes, skipped, lambda: _check_classes(tree, names))
