"""Checkpoints of one split under a deterministic prefix: `splits/split-NNNNN/checkpoints/step-NNNNNNNN/`.

A checkpoint is its files plus `COMPLETE.json`, written last, that lists each file's size and sha256. Without the
marker it does not exist; with a marker whose checksums fail it is corrupt and skipped with a warning. The newest
complete, intact checkpoint is `latest`. A complete checkpoint is never overwritten; retention deletes only the
oldest complete ones beyond `keep` (marker first, so a half-deleted one never looks complete).

Files: `generator.safetensors` + `meta.json` (the sampling snapshot) and `train_state.safetensors` (G, D, both
optimisers and the RNG states: everything needed to continue bit-for-bit).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time

from components.store import Store

log = logging.getLogger(__name__)
MARKER = "COMPLETE.json"
_STEP = re.compile(r"^step-(\d{8})$")


def split_prefix(split: int) -> str:
    return f"splits/split-{split:05d}"


def checkpoint_prefix(split: int, step: int) -> str:
    return f"{split_prefix(split)}/checkpoints/step-{step:08d}"


class CorruptCheckpoint(Exception):
    pass


def checkpoint_steps(store: Store, split: int) -> dict[int, bool]:
    """Every step with any object under its prefix -> whether its completion marker exists."""
    steps: dict[int, bool] = {}
    for key in store.list(f"{split_prefix(split)}/checkpoints/"):
        parts = key.split("/")
        match = _STEP.match(parts[-2]) if len(parts) >= 2 else None
        if match:
            step = int(match.group(1))
            steps[step] = steps.get(step, False) or parts[-1] == MARKER
    return steps


def complete_steps(store: Store, split: int) -> list[int]:
    """Steps with a completion marker, oldest first (markers are trusted; contents are verified on load)."""
    return sorted(step for step, done in checkpoint_steps(store, split).items() if done)


def save_checkpoint(store: Store, split: int, step: int, files: dict[str, bytes]) -> None:
    prefix = checkpoint_prefix(split, step)
    if store.exists(f"{prefix}/{MARKER}"):
        raise FileExistsError(f"checkpoint {prefix} is already complete; a complete checkpoint is never overwritten")
    for name, data in files.items():
        store.write_bytes(f"{prefix}/{name}", data)
    marker = {"step": step, "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                                      for name, data in files.items()}}
    store.write_bytes(f"{prefix}/{MARKER}", json.dumps(marker, indent=2).encode())


def load_checkpoint(store: Store, split: int, step: int, names: list[str] | None = None) -> dict[str, bytes]:
    """The files of a complete checkpoint (or the subset `names`), each verified against the marker."""
    prefix = checkpoint_prefix(split, step)
    try:
        marker = json.loads(store.read_bytes(f"{prefix}/{MARKER}"))
        listed = marker["files"]
    except KeyError:
        raise CorruptCheckpoint(f"{prefix} has no readable completion marker") from None
    except (ValueError, TypeError):
        raise CorruptCheckpoint(f"{prefix}/{MARKER} is not valid JSON") from None
    out = {}
    for name in names or list(listed):
        if name not in listed:
            raise CorruptCheckpoint(f"{prefix}/{MARKER} does not list {name}")
        try:
            data = store.read_bytes(f"{prefix}/{name}")
        except KeyError:
            raise CorruptCheckpoint(f"{prefix}/{name} is missing") from None
        if len(data) != listed[name]["bytes"] or hashlib.sha256(data).hexdigest() != listed[name]["sha256"]:
            raise CorruptCheckpoint(f"{prefix}/{name} does not match its checksum")
        out[name] = data
    return out


def latest_checkpoint(store: Store, split: int, names: list[str] | None = None) -> tuple[int, dict[str, bytes]] | None:
    """The newest complete checkpoint whose files verify, as (step, files); None if there is none."""
    for step in reversed(complete_steps(store, split)):
        try:
            return step, load_checkpoint(store, split, step, names)
        except CorruptCheckpoint as e:
            log.warning("skipping corrupt checkpoint: %s", e)
    return None


def quarantine_checkpoint(store: Store, split: int, step: int) -> str:
    """Move a checkpoint that failed verification out of the way, to `splits/split-N/quarantine/step-N-TIME/`, so
    training can write that step again. Copies first, then deletes (marker first): nothing is lost, and the copy
    stays for inspection."""
    src = checkpoint_prefix(split, step)
    dst = f"{split_prefix(split)}/quarantine/step-{step:08d}-{int(time.time() * 1000)}"
    keys = store.list(f"{src}/")
    for key in keys:
        store.write_bytes(f"{dst}/{key[len(src) + 1:]}", store.read_bytes(key))
    marker = f"{src}/{MARKER}"
    for key in ([marker] if marker in keys else []) + [k for k in keys if k != marker]:
        store.delete(key)
    log.warning("moved corrupt checkpoint %s to %s", src, dst)
    return dst


def prune_checkpoints(store: Store, split: int, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; drop older complete ones and half-written ones older than those."""
    steps = checkpoint_steps(store, split)
    complete = sorted(s for s, done in steps.items() if done)
    if len(complete) <= keep:
        return
    oldest_kept = complete[-keep]
    for step in sorted(s for s in steps if s < oldest_kept):
        prefix = checkpoint_prefix(split, step)
        keys = store.list(f"{prefix}/")
        marker = f"{prefix}/{MARKER}"
        for key in ([marker] if marker in keys else []) + [k for k in keys if k != marker]:
            store.delete(key)
