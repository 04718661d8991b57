"""Checkpoints of one split under a deterministic prefix: `splits/split-NNNNN/checkpoints/step-NNNNNNNN/`.

A checkpoint is its files plus `COMPLETE.json`, written last, that lists each file's size and sha256. Without the
marker it does not exist; with a marker whose checksums fail, or that is not a valid marker, it is corrupt and
skipped with a warning. The newest complete, intact checkpoint is `latest`. Retention deletes only the oldest complete
ones beyond `keep` (marker first, so a half-deleted one never looks complete), never one the assembled ensemble
names (`ensemble.json`), which stays until a new assembly replaces it.

A complete checkpoint is never overwritten, even by a writer that lost its lease while paused (a frozen VM, a long
GC): each writer stores its files under names of its own (`<writer token>-generator.safetensors`), the marker lists
those objects, and the marker is created with a conditional create that fails if one exists. So a late writer's
files lie beside the committed ones, unreferenced, and its marker is refused.

Files: `generator.safetensors` + `meta.json` (the sampling snapshot: the averaged G when the run keeps one, else G)
and `train_state.safetensors` (G, the averaged G if any, D, both optimisers and the RNG states: everything needed
to continue bit-for-bit).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acgan.layout import ENSEMBLE_KEY, MARKER, checkpoint_prefix, checkpoints_prefix, quarantine_prefix
from acgan.store import PreconditionFailed, Store, StoreUnavailable

log = logging.getLogger(__name__)
_STEP = re.compile(r"^step-(\d{8,})$")  # eight digits at least: step 10^8 has nine


class CorruptCheckpoint(Exception):
    pass


class CheckpointExists(FileExistsError):
    """Another writer completed this step first."""


_NAME = r"^[A-Za-z0-9._\-]{1,200}$"


class _Listed(BaseModel):
    model_config = ConfigDict(strict=True)

    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    object: str = Field(pattern=_NAME)  # the stored name: `<writer token>-<file name>`


class _Marker(BaseModel):
    model_config = ConfigDict(strict=True)

    step: int
    writer: str
    files: dict[str, _Listed]


def _read_marker(store: Store, prefix: str) -> _Marker:
    try:
        return _Marker.model_validate(json.loads(store.read_bytes(f"{prefix}/{MARKER}")))
    except KeyError:
        raise CorruptCheckpoint(f"{prefix} has no readable completion marker") from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"]))
        raise CorruptCheckpoint(f"{prefix}/{MARKER}: {where}: {err['msg']}") from None
    except (ValueError, RecursionError):
        raise CorruptCheckpoint(f"{prefix}/{MARKER} is not valid JSON") from None


def checkpoint_steps(store: Store, split: int) -> dict[int, bool]:
    """Every step with any object under its prefix -> whether its completion marker exists."""
    steps: dict[int, bool] = {}
    for key in store.list(checkpoints_prefix(split)):
        parts = key.split("/")
        match = _STEP.match(parts[-2]) if len(parts) >= 2 else None
        if match:
            step = int(match.group(1))
            steps[step] = steps.get(step, False) or parts[-1] == MARKER
    return steps


def complete_steps(store: Store, split: int) -> list[int]:
    """Steps with a completion marker, oldest first (markers are trusted; contents are verified on load)."""
    return sorted(step for step, done in checkpoint_steps(store, split).items() if done)


def save_checkpoint(store: Store, split: int, step: int, files: dict[str, bytes],
                    fence: Callable[[], None] | None = None) -> None:
    """Write the files under this writer's own names, call `fence` (the lease's renewal: it raises if the lease is
    lost), then create the marker; CheckpointExists if another writer's marker is there first."""
    prefix = checkpoint_prefix(split, step)
    if store.exists(f"{prefix}/{MARKER}"):
        raise CheckpointExists(f"checkpoint {prefix} is already complete; a complete checkpoint is never overwritten")
    token = uuid.uuid4().hex[:12]
    objects = {name: f"{prefix}/{token}-{name}" for name in files}
    marker = {"step": step, "writer": token, "files": {
        name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "object": objects[name].rsplit("/")[-1]}
        for name, data in files.items()}}
    try:
        if fence is not None:
            fence()  # the upload starts with a full lease period left
        for name, data in files.items():
            store.write_bytes(objects[name], data)
        if fence is not None:
            fence()  # still ours after the upload, with a full period left for the marker
        store.write_if(f"{prefix}/{MARKER}", json.dumps(marker, indent=2).encode(), None)
    except PreconditionFailed:
        _discard(store, objects.values())
        raise CheckpointExists(f"checkpoint {prefix} was completed by another writer first; this one's files were "
                               "discarded") from None
    except StoreUnavailable:
        raise  # deleting would only wait for the store again: prune removes the files with their step
    except BaseException as e:
        _discard(store, objects.values())  # the lease is lost (or the task stopped): no marker will name them
        if fence is not None and isinstance(e, Exception):
            # A writer paused past its lease finds its unfinished write gone: the trainer that took the split over
            # removes earlier trainers' temporaries. If so, the lost lease is what to report, not the missing file.
            fence()
        raise


def _discard(store: Store, keys) -> None:
    """Best effort: a store that fails here leaves files no marker lists, which prune removes with their step."""
    for key in keys:
        try:
            store.delete(key)
        except Exception as e:  # noqa: BLE001 (the error being raised matters more)
            log.warning("could not remove %s (%s)", key, str(e)[:200])
            return


def load_checkpoint(store: Store, split: int, step: int, names: list[str] | None = None) -> dict[str, bytes]:
    """The files of a complete checkpoint (or the subset `names`), each verified against the marker."""
    prefix = checkpoint_prefix(split, step)
    listed = _read_marker(store, prefix).files
    out = {}
    for name in names or list(listed):
        if name not in listed:
            raise CorruptCheckpoint(f"{prefix}/{MARKER} does not list {name}")
        key = f"{prefix}/{listed[name].object}"
        try:
            data = store.read_bytes(key)
        except KeyError:
            raise CorruptCheckpoint(f"{key} is missing") from None
        if len(data) != listed[name].bytes or hashlib.sha256(data).hexdigest() != listed[name].sha256:
            raise CorruptCheckpoint(f"{key} does not match its checksum")
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


def verified_step(store: Store, split: int) -> tuple[int | None, str | None]:
    """The step of the newest complete checkpoint whose files all verify (what training resumes from), and why the
    newest one does not verify, if it does not. The plan, a rerun and the assembly judge a split by it alike."""
    problem = None
    for step in reversed(complete_steps(store, split)):
        try:
            load_checkpoint(store, split, step)
            return step, problem
        except CorruptCheckpoint as e:
            problem = problem or str(e)
    return None, problem


def quarantine_checkpoint(store: Store, split: int, step: int) -> str:
    """Move a checkpoint that failed verification out of the way, to `splits/split-N/quarantine/step-N-TIME/`, so
    training can write that step again. Copies first, then deletes (marker first): nothing is lost, and the copy
    stays for inspection."""
    src = checkpoint_prefix(split, step)
    dst = quarantine_prefix(split, step, int(time.time() * 1000))
    keys = store.list(f"{src}/")
    for key in keys:
        store.write_bytes(f"{dst}/{key[len(src) + 1:]}", store.read_bytes(key))
    marker = f"{src}/{MARKER}"
    for key in ([marker] if marker in keys else []) + [k for k in keys if k != marker]:
        store.delete(key)
    log.warning("moved corrupt checkpoint %s to %s", src, dst)
    return dst


def _ensemble_checkpoints(store: Store) -> set[str] | None:
    """The checkpoints the assembled ensemble names (none without one); None if its manifest cannot be read."""
    try:
        manifest = json.loads(store.read_bytes(ENSEMBLE_KEY))
    except KeyError:
        return set()
    except (ValueError, RecursionError):
        manifest = None
    members = manifest.get("classes") if isinstance(manifest, dict) else None
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        log.warning("%s/%s is not an ensemble manifest: no checkpoint is pruned while it is not", store.uri,
                    ENSEMBLE_KEY)
        return None
    return {m["checkpoint"] for m in members if isinstance(m.get("checkpoint"), str)}


def prune_checkpoints(store: Store, split: int, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints and those the assembled ensemble names; drop older complete ones
    and half-written ones older than those. Nothing while the ensemble's manifest cannot be read."""
    steps = checkpoint_steps(store, split)
    complete = sorted(s for s, done in steps.items() if done)
    if len(complete) <= keep:
        return
    oldest_kept, ensemble = complete[-keep], _ensemble_checkpoints(store)
    if ensemble is None:
        return
    for step in sorted(s for s in steps if s < oldest_kept and checkpoint_prefix(split, s) not in ensemble):
        prefix = checkpoint_prefix(split, step)
        keys = store.list(f"{prefix}/")
        marker = f"{prefix}/{MARKER}"
        for key in ([marker] if marker in keys else []) + [k for k in keys if k != marker]:
            store.delete(key)
