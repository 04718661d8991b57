"""One trainer per split at a time: a lease object, `splits/split-NNNNN/lease.json`, with an owner and an expiry.

KFP can start a second pod for a split while the first still runs (a node that stopped answering, a user's rerun),
and S3 has no lock, but it has conditional writes. The policy:
- A trainer takes the lease with a conditional write: a create if there is none (If-None-Match: *), or a replace of
  the expired lease it read (If-Match on that ETag). Of two trainers at once exactly one write succeeds; the other
  refuses with one line.
- A background thread starts a renewal every third of its time, again with If-Match on the ETag of its own last
  write, so set-up, a long first compiled step or a slow checkpoint upload cannot starve it. A renewal that fails its
  precondition means another trainer took over: the lease is lost, and training stops at its next check.
- Before each checkpoint's upload and again before its completion marker, the trainer renews in the foreground: the
  upload and the commit start only with a full lease period left and proof that the lease is still its own. The
  marker itself is a conditional create (acgan/checkpoint.py), so even a writer paused past its expiry between
  that renewal and the marker can never replace a complete checkpoint.
- Release is a conditional delete (If-Match), so it never removes another trainer's lease, and it never raises.
A killed trainer's lease expires, or is stale at once for a trainer on the same host (the owner names host and pid).
`acgan rerun` does not start a split whose lease is live.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acgan.checkpoint import split_prefix
from acgan.errors import UserError, first_problem
from acgan.store import PreconditionFailed, Store

log = logging.getLogger(__name__)


class Lease(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    owner: str = Field(max_length=300)
    expires: float
    acquired: float


class SplitBusy(UserError):
    pass


def lease_key(split: int) -> str:
    return f"{split_prefix(split)}/lease.json"


def new_owner() -> str:
    """Unique per process: the host (the pod's name on Kubernetes), the pid and a random part."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def read_lease_tagged(store: Store, split: int) -> tuple[Lease | None, str | None]:
    """The split's lease and its tag (ETag), (None, None) if there is none. A lease that is not a valid lease is an
    error naming the file and the key: it may be a live trainer's, damaged, so it is neither trusted nor replaced."""
    key = lease_key(split)
    try:
        data, tag = store.read_tagged(key)
    except KeyError:
        return None, None
    try:
        return Lease.model_validate(json.loads(data)), tag
    except (ValueError, RecursionError) as e:
        where, msg = first_problem(e) if isinstance(e, ValidationError) else ("", f"not JSON ({str(e)[:80]})")
        raise UserError(f"{store.uri}/{key}: {where + ': ' if where else ''}{msg}; delete this lease file if no "
                        f"trainer of split {split} is running") from None


def read_lease(store: Store, split: int) -> Lease | None:
    return read_lease_tagged(store, split)[0]


def _is_live(lease: Lease, now: float | None = None) -> bool:
    """Not expired, and its owner may still run: a lease taken on this host by a process that is gone (killed,
    crashed), or by this process in an earlier call whose release failed, is stale at once, so a local restart need
    not wait for the expiry."""
    if lease.expires <= (time.time() if now is None else now):
        return False
    host, _, pid = lease.owner.partition("/")
    pid = pid.partition("/")[0]
    return not (host == socket.gethostname() and pid.isdigit() and
                (int(pid) == os.getpid() or not _process_exists(int(pid))))


def live_lease(store: Store, split: int, now: float | None = None) -> Lease | None:
    lease = read_lease(store, split)
    return lease if lease is not None and _is_live(lease, now) else None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


class SplitLease:
    def __init__(self, store: Store, split: int, seconds: float, owner: str | None = None):
        self.store, self.split, self.seconds = store, split, seconds
        self.owner = owner or new_owner()
        self.acquired = 0.0
        self.expires = 0.0
        self._tag: str | None = None
        self._lost: SplitBusy | None = None
        self._lock = threading.Lock()  # one conditional write at a time: the renewal thread and the training loop
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _busy(self, lease: Lease) -> SplitBusy:
        left = max(0, round(lease.expires - time.time()))
        return SplitBusy(f"split {self.split} is being trained by {lease.owner} (lease {self.store.uri}/"
                         f"{lease_key(self.split)}, {left}s left): wait for it to finish, or delete the lease if "
                         "that task is gone")

    def _lease_bytes(self) -> tuple[bytes, float]:
        expires = time.time() + self.seconds
        return Lease(owner=self.owner, expires=expires, acquired=self.acquired).model_dump_json().encode(), expires

    def acquire(self) -> None:
        """Take the split, or raise SplitBusy. Then keep it, from a background thread, until `release`."""
        held, tag = read_lease_tagged(self.store, self.split)
        if held is not None and held.owner != self.owner and _is_live(held):
            raise self._busy(held)
        self.acquired = time.time()
        data, expires = self._lease_bytes()
        try:
            self._tag = self.store.write_if(lease_key(self.split), data, tag)
        except PreconditionFailed:  # another trainer wrote the lease since we read it: it won
            held = read_lease(self.store, self.split)
            raise self._busy(held) if held is not None else SplitBusy(
                f"split {self.split}: another trainer took and released the lease at the same moment; "
                "try again") from None
        self.expires = expires
        self._thread = threading.Thread(target=self._keep, name=f"lease-split-{self.split}", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        # A renewal starts a third of a period after the previous one started, not after it ended: on a store taking
        # seconds per request, waiting a third after each write would let the stored lease run out between them.
        started = time.monotonic()
        while not self._stop.wait(max(0.0, started + self.seconds / 3 - time.monotonic())):
            started = time.monotonic()
            try:
                self.renew()
            except SplitBusy:
                return  # recorded in _lost; the training loop stops at its next check
            except (UserError, OSError) as e:  # the store away, its volume full or read-only: the next one retries
                left = self.expires - time.time()
                if left <= 0:  # lapsed: another trainer may take the split, so this one must stop
                    self._lost = SplitBusy(f"split {self.split}: its lease {self.store.uri}/{lease_key(self.split)} "
                                           f"lapsed, not renewed for {self.seconds:.0f}s ({e}); stopping without "
                                           "writing, as another trainer may take the split")
                    return
                log.warning("split %d: could not renew its lease (%s); %.0fs left", self.split, e, left)

    def renew(self) -> None:
        """Extend the lease by a full period, if it is still ours (If-Match on our last write); else SplitBusy."""
        with self._lock:
            if self._lost is not None:
                raise self._lost
            data, expires = self._lease_bytes()
            try:
                self._tag = self.store.write_if(lease_key(self.split), data, self._tag)
            except PreconditionFailed:
                try:
                    held = read_lease(self.store, self.split)
                except UserError:
                    held = None
                self._lost = self._busy(held) if held is not None else SplitBusy(
                    f"split {self.split}: this trainer's lease {lease_key(self.split)} was replaced or deleted; "
                    "stopping without writing in case another trainer took over")
                raise self._lost from None
            self.expires = expires

    def check(self) -> None:
        """Raise SplitBusy if the renewal thread found the lease taken (no store call: cheap at every tick)."""
        if self._lost is not None:
            raise self._lost

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours. Never raises: a store that fails here must not
        hide why training stopped; the lease then just expires."""
        self._stop.set()
        # A renewal in flight on a slow store finishes first (within the lease's period, at most 30 s); one stuck
        # in the store's retries for longer holds the lock: then the lease is left to expire.
        patience = min(self.seconds, 30.0)
        deadline = time.monotonic() + patience
        if self._thread is not None:
            self._thread.join(timeout=patience)
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            log.warning("split %d: the store is not answering; its lease expires in at most %.0fs", self.split,
                        self.seconds)
            return
        try:
            if self._lost is None and self._tag is not None:
                self.store.delete_if(lease_key(self.split), self._tag)
        except PreconditionFailed:
            log.warning("split %d: its lease was taken over before release; left to the new owner", self.split)
        except Exception as e:  # noqa: BLE001 (release runs in a finally: it must not replace the real error)
            log.warning("split %d: could not release its lease (%s); it expires in at most %.0fs", self.split,
                        str(e)[:200], self.seconds)
        finally:
            self._lock.release()
