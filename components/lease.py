"""One trainer per split at a time: a lease object, `splits/split-NNNNN/lease.json`, with an owner and an expiry.

KFP can start a second pod for a split while the first still runs (a node that stopped answering, a user's rerun),
and S3 has no lock. The policy:
- A trainer takes the lease before it trains: it refuses if another owner's lease has not expired, otherwise writes
  its own, waits `settle` seconds and reads it back; if another trainer's lease is there instead, it lost the race
  and refuses.
- It renews the lease at every stats tick and checks, before every checkpoint, that the lease is still its own; a
  trainer that finds another owner there stops without writing.
- It deletes the lease when it finishes or fails. A killed trainer's lease expires, or is stale at once for a
  trainer on the same host (the owner names host and pid).
Should both trainers still reach the same checkpoint at once, the files of one and the marker of the other do not
verify against each other, so the mix is skipped as corrupt: never a silently wrong checkpoint.
`acgan rerun` does not start a split whose lease is live.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid

from pydantic import BaseModel, ConfigDict, ValidationError

from components.checkpoint import split_prefix
from components.errors import UserError
from components.store import Store

log = logging.getLogger(__name__)


class Lease(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str
    expires: float
    acquired: float


class SplitBusy(UserError):
    pass


def lease_key(split: int) -> str:
    return f"{split_prefix(split)}/lease.json"


def new_owner() -> str:
    """Unique per process: the host (the pod's name on Kubernetes), the pid and a random part."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def read_lease(store: Store, split: int) -> Lease | None:
    """The split's lease, or None if there is none or it cannot be read (an unreadable lease protects nothing)."""
    try:
        return Lease.model_validate(json.loads(store.read_bytes(lease_key(split))))
    except (KeyError, ValueError, ValidationError):
        return None


def live_lease(store: Store, split: int, now: float | None = None) -> Lease | None:
    """The lease if it has not expired and its owner may still run: a lease taken on this host by a process that
    is gone (killed, crashed), or by this process in an earlier call whose release failed, is stale at once, so a
    local restart need not wait for the expiry."""
    lease = read_lease(store, split)
    if lease is None or lease.expires <= (time.time() if now is None else now):
        return None
    host, _, pid = lease.owner.partition("/")
    pid = pid.partition("/")[0]
    if host == socket.gethostname() and pid.isdigit() and (int(pid) == os.getpid() or not _process_exists(int(pid))):
        return None  # left by a process that is gone, or by an earlier, finished call in this one
    return lease


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SplitLease:
    def __init__(self, store: Store, split: int, seconds: float, settle: float = 1.0, owner: str | None = None):
        self.store, self.split, self.seconds, self.settle = store, split, seconds, settle
        self.owner = owner or new_owner()
        self.acquired = 0.0

    def _busy(self, lease: Lease) -> SplitBusy:
        left = max(0, round(lease.expires - time.time()))
        return SplitBusy(f"split {self.split} is being trained by {lease.owner} (lease {self.store.uri}/"
                         f"{lease_key(self.split)}, {left}s left): wait for it to finish, or delete the lease if "
                         "that task is gone")

    def _write(self) -> None:
        now = time.time()
        lease = Lease(owner=self.owner, expires=now + self.seconds, acquired=self.acquired or now)
        self.store.write_bytes(lease_key(self.split), lease.model_dump_json().encode())

    def acquire(self) -> None:
        held = live_lease(self.store, self.split)
        if held is not None and held.owner != self.owner:
            raise self._busy(held)
        self.acquired = time.time()
        self._write()
        time.sleep(self.settle)
        self.check()

    def check(self) -> None:
        """Raise SplitBusy unless the lease is still ours."""
        held = read_lease(self.store, self.split)
        if held is None or held.owner != self.owner:
            if held is None:
                raise SplitBusy(f"split {self.split}: this trainer's lease {lease_key(self.split)} disappeared; "
                                "stopping without writing in case another trainer took over")
            raise self._busy(held)

    def renew(self) -> None:
        self.check()
        self._write()

    def release(self) -> None:
        """Delete the lease if it is ours. A store that fails here must not hide why training stopped: the lease
        then just expires."""
        try:
            held = read_lease(self.store, self.split)
            if held is not None and held.owner == self.owner:
                self.store.delete(lease_key(self.split))
        except UserError as e:
            log.warning("split %d: could not release its lease (%s); it expires in at most %.0fs", self.split, e,
                        self.seconds)
