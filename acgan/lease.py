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
- Expiry is judged by the store's clock, never by a time the writer wrote: a lease lapses once the store last saw it
  written longer ago than its period (a local file's mtime against a file made now beside it; S3's Last-Modified
  against the Date of the same answer). A writer whose clock runs a day ahead blocks its split one period after it
  dies, not a day; a reader whose clock runs ahead takes no live lease.
- The lease names the process that wrote it: boot id, PID namespace, pid and the process's start time. A lease of a
  process of this machine and PID namespace that has ended (killed, crashed; its pid gone or reused) is stale at once,
  so a local restart need not wait; one of another PID namespace (a container with the same hostname, itself PID 1)
  or machine lapses only with its period.
`acgan rerun` does not start a split whose lease is live; `acgan unlock` clears one whose owner is gone. A local run
(`acgan run`, `acgan rerun --local`) holds a lease of its own on the store (`RunLease`), so that a second one stops
at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acgan.errors import UserError, command, first_problem
from acgan.layout import RUN_LEASE_KEY, SPLITS_PREFIX, lease_key, split_of_lease
from acgan.store import PreconditionFailed, Store

log = logging.getLogger(__name__)


class Lease(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    owner: str = Field(max_length=300)
    expires: float  # by the writer's clock: for people
    acquired: float
    seconds: float = Field(gt=0, le=86_400)  # the period: lapsed once written longer ago than this
    process: str | None = Field(None, pattern=r"^[0-9a-f-]{1,64}:\d{1,20}:\d{1,10}:\d{1,20}$")  # `process_identity`


class SplitBusy(UserError):
    pass


class Held(NamedTuple):
    """A lease as read: what it says, its tag (ETag), and how many seconds ago the store last saw it written."""

    lease: Lease
    tag: str
    age: float



def new_owner() -> str:
    """Unique per process start: the host (the pod's name on Kubernetes), the pid and a random part."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def _machine() -> str | None:
    """This machine's boot and this process's PID namespace (`BOOT-ID:NAMESPACE`): where a pid means one process.
    None without Linux's /proc."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """When process `pid` of this PID namespace started (clock ticks since boot); None if there is none, or it has
    ended and is not yet reaped (a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def process_identity(pid: int | None = None) -> str | None:
    """`BOOT-ID:NAMESPACE:PID:START` of process `pid` (this one by default): unique per process start, even between
    containers that share a hostname and are each PID 1. None without /proc, or if the process is gone."""
    pid = os.getpid() if pid is None else pid
    machine, started = _machine(), _start_time(pid)
    return None if machine is None or started is None else f"{machine}:{pid}:{started}"


def _unlock_command(store: Store, split: int) -> str:
    return command("acgan", "unlock", "--store", store.uri, "--split", split, "--force")


def _read(store: Store, key: str, remedy: str) -> Held | None:
    """The lease at `key`, None if there is none. A lease that is not a valid lease is an error naming the file
    and the key, and `remedy`: it may be a live trainer's, damaged, so it is neither trusted nor replaced."""
    try:
        data, tag, age = store.read_aged(key)
    except KeyError:
        return None
    try:
        return Held(Lease.model_validate(json.loads(data)), tag, age)
    except (ValueError, RecursionError) as e:
        where, msg = first_problem(e) if isinstance(e, ValidationError) else ("", f"not JSON ({str(e)[:80]})")
        raise UserError(f"{store.uri}/{key}: {where + ': ' if where else ''}{msg}; if no process holds this lease, "
                        f"remove it: {remedy}") from None


def read_lease(store: Store, split: int) -> Lease | None:
    held = _read(store, lease_key(split), _unlock_command(store, split))
    return held.lease if held is not None else None


def _is_live(held: Held) -> bool:
    """Not lapsed by the store's clock, and its owner may still run (`_owner_gone`)."""
    return held.age <= held.lease.seconds and not _owner_gone(held.lease)


_HELD: set[str] = set()  # owners of the leases this process holds now (acquired, not yet released)


def _owner_gone(lease: Lease) -> bool:
    """The lease's writer has ended: a process of this machine and PID namespace whose pid is gone or now belongs to
    another process; or this process, which no longer holds it (an earlier call whose release failed). Of another
    PID namespace or machine nothing is known: it counts as running."""
    if lease.process is not None:
        if lease.process == process_identity():
            return lease.owner not in _HELD
        boot, namespace, pid, started = lease.process.split(":")
        return f"{boot}:{namespace}" == _machine() and _start_time(int(pid)) != started
    # Without /proc (`process_identity` None) the owner names only host and pid.
    host, _, pid = lease.owner.partition("/")
    pid = pid.partition("/")[0]
    return host == socket.gethostname() and pid.isdigit() and not _process_exists(int(pid))


def leases_left(store: Store) -> list[int]:
    """The splits that have a lease object in the store, live or not."""
    return sorted(split for key in store.list(SPLITS_PREFIX) if (split := split_of_lease(key)) is not None)


def live_lease(store: Store, split: int) -> Lease | None:
    held = _read(store, lease_key(split), _unlock_command(store, split))
    return held.lease if held is not None and _is_live(held) else None


def _left(held: Held) -> float:
    """Seconds until the lease lapses by the store's clock, if not renewed."""
    return max(0.0, held.lease.seconds - held.age)


def unlock(store: Store, split: int, force: bool = False) -> dict | None:
    """Remove split `split`'s lease if its owner is gone (lapsed by the store's clock, or a process of this machine
    that has ended); a live one, or one that is not a valid lease, only with `force`. Returns what was removed: the
    lease, or for a damaged one `{"damaged": why it is not a lease}`; None if there was none. A trainer still
    running whose lease was removed stops at its next renewal."""
    key = lease_key(split)
    try:
        held = _read(store, key, _unlock_command(store, split))
    except UserError as e:
        if not force:
            raise
        store.delete(key)  # not a lease at all: nothing to compare it with
        return {"damaged": str(e).partition("; if no process")[0]}
    if held is None:
        return None
    if _is_live(held) and not force:
        raise UserError(f"split {split}'s lease is live: {held.lease.owner} renewed it {held.age:.0f}s ago (it "
                        f"lapses {_left(held):.0f}s from now if not renewed); if that trainer is gone (its node "
                        f"lost), remove it with {_unlock_command(store, split)}")
    try:
        store.delete_if(key, held.tag)
    except PreconditionFailed:
        raise UserError(f"split {split}'s lease changed while it was read: a trainer holds it now; see "
                        f"{command('acgan', 'status', '--store', store.uri)}") from None
    return held.lease.model_dump()


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


class StoreLease:
    """A lease on one key of the store, taken, kept by a background thread and released as the module says. `name`
    says in messages what it is a lease of, `remedy` how to remove a damaged one; a subclass says who holds it
    (`_busy`)."""

    def __init__(self, store: Store, key: str, name: str, remedy: str, seconds: float, owner: str | None = None):
        self.store, self.key, self.name, self.remedy, self.seconds = store, key, name, remedy, seconds
        self.owner, self.process = owner or new_owner(), process_identity()
        self.acquired = 0.0
        self.expires = 0.0
        self._tag: str | None = None
        self._lost: SplitBusy | None = None
        self._deadline = 0.0  # time.monotonic() when the lease lapses unless renewed: a write's start + a period
        self._renewal_failed: Exception | None = None  # why the last renewal failed, if it did
        self._lock = threading.Lock()  # one conditional write at a time: the renewal thread and the training loop
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _lease_bytes(self) -> tuple[bytes, float]:
        expires = time.time() + self.seconds
        lease = Lease(owner=self.owner, expires=expires, acquired=self.acquired, seconds=self.seconds,
                      process=self.process)
        return lease.model_dump_json().encode(), expires

    def acquire(self) -> None:
        """Take the lease, or raise SplitBusy. Then keep it, from a background thread, until `release`."""
        held = _read(self.store, self.key, self.remedy)
        if held is not None and held.lease.owner != self.owner and _is_live(held):
            raise self._busy(held)
        self.acquired = time.time()
        data, expires = self._lease_bytes()
        # Held before the write makes it visible: a contender of this process reading it in between would judge it
        # this process's released lease (`_owner_gone`) and take it over.
        _HELD.add(self.owner)
        began = time.monotonic()
        try:
            self._tag = self.store.write_if(self.key, data, held.tag if held is not None else None)
        except PreconditionFailed:  # another one wrote the lease since we read it: it won
            _HELD.discard(self.owner)
            held = _read(self.store, self.key, self.remedy)
            raise self._busy(held) if held is not None else SplitBusy(
                f"{self.name}: another process took and released its lease at the same moment; try again") from None
        except BaseException:
            _HELD.discard(self.owner)
            raise
        self.expires, self._deadline = expires, began + self.seconds
        self._thread = threading.Thread(target=self._keep, name=f"lease-{self.key}", daemon=True)
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
                self._renewal_failed = e
                left = self.expires - time.time()
                if left <= 0:  # lapsed: another trainer may take the split, so this one must stop
                    self._lost = SplitBusy(f"{self.name}: its lease {self.store.uri}/{self.key} "
                                           f"lapsed, not renewed for {self.seconds:.0f}s ({e}); stopping without "
                                           "writing, as another trainer may take the split")
                    return
                log.warning("%s: could not renew its lease (%s); %.0fs left", self.name, e, left)

    def renew(self) -> None:
        """Extend the lease by a full period, if it is still ours (If-Match on our last write); else SplitBusy."""
        with self._lock:
            if self._lost is not None:
                raise self._lost
            data, expires = self._lease_bytes()
            began = time.monotonic()
            try:
                self._tag = self.store.write_if(self.key, data, self._tag)
            except PreconditionFailed:
                try:
                    held = _read(self.store, self.key, self.remedy)
                except UserError:
                    held = None
                self._lost = SplitBusy(
                    f"{self.name} was taken over by {held.lease.owner} (this process's lease lapsed or was removed "
                    "while it ran): it stops without writing more" if held is not None else
                    f"{self.name} was taken over while this process ran (its lease {self.key} was replaced or "
                    "removed): it stops without writing more")
                raise self._lost from None
            self.expires, self._deadline = expires, began + self.seconds

    def check(self) -> None:
        """Raise SplitBusy if the renewal thread found the lease taken, or if a period has passed since the start of
        its last successful write, so that another trainer may take it now (no store call: cheap at every step)."""
        if self._lost is None and time.monotonic() > self._deadline:
            why = f" ({self._renewal_failed})" if self._renewal_failed is not None else ""
            self._lost = SplitBusy(f"{self.name}: its lease {self.store.uri}/{self.key} lapsed, not renewed for "
                                   f"{self.seconds:.0f}s{why}; stopping without writing, as another trainer may take "
                                   "the split")
        if self._lost is not None:
            raise self._lost

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours. Never raises: a store that fails here must not
        hide why training stopped; the lease then just expires."""
        self._stop.set()
        _HELD.discard(self.owner)  # even if the store keeps it: this process no longer trains under it
        # A renewal in flight on a slow store finishes first (within the lease's period, at most 30 s); one stuck
        # in the store's retries for longer holds the lock: then the lease is left to expire.
        patience = min(self.seconds, 30.0)
        deadline = time.monotonic() + patience
        if self._thread is not None:
            self._thread.join(timeout=patience)
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            log.warning("%s: the store is not answering; its lease expires in at most %.0fs", self.name,
                        self.seconds)
            return
        try:
            if self._lost is None and self._tag is not None:
                self.store.delete_if(self.key, self._tag)
        except PreconditionFailed:
            log.warning("%s: its lease was taken over before release; left to the new owner", self.name)
        except Exception as e:  # noqa: BLE001 (release runs in a finally: it must not replace the real error)
            log.warning("%s: could not release its lease (%s); it expires in at most %.0fs", self.name,
                        str(e)[:200], self.seconds)
        finally:
            self._lock.release()


class SplitLease(StoreLease):
    """A split's lease, held by its trainer."""

    def __init__(self, store: Store, split: int, seconds: float, owner: str | None = None):
        super().__init__(store, lease_key(split), f"split {split}", _unlock_command(store, split), seconds, owner)
        self.split = split

    def _busy(self, held: Held) -> SplitBusy:
        return SplitBusy(f"split {self.split} is being trained by {held.lease.owner} (lease {self.store.uri}/"
                         f"{self.key}, {_left(held):.0f}s left): wait for it to finish, or if that task is gone: "
                         f"{command('acgan', 'unlock', '--store', self.store.uri, '--split', self.split)}")


class RunLease(StoreLease):
    """The store's lease of a local run (`acgan run`, `acgan rerun --local`), held by its process: a second local run
    on the store stops at once, before it trains anything, instead of racing the first for each split's lease."""

    def __init__(self, store: Store, seconds: float, owner: str | None = None):
        super().__init__(store, RUN_LEASE_KEY, f"the local run on {store.uri}", "delete it", seconds, owner)

    def _busy(self, held: Held) -> SplitBusy:
        return SplitBusy(f"store {self.store.uri} has a local run going: {held.lease.owner} (lease "
                         f"{self.store.uri}/{self.key}, {_left(held):.0f}s left): wait for it to finish "
                         f"({command('acgan', 'status', '--store', self.store.uri)}), or use another --store")
