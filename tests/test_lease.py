"""The split lease on a local directory and on a real S3-protocol server: conditional takeover (exactly one of many
contenders wins), renewal from a background thread while the trainer is busy elsewhere, a release that never
raises, even with the store answering 502, and a lease of an ended process of this machine stale at once."""

import socket
import subprocess
import threading
import time

import pytest

from acgan.layout import lease_key
from acgan.lease import Lease, SplitBusy, SplitLease, live_lease, process_identity, read_lease
from acgan.store import LocalStore, open_store
from tests.faults.proxy import FlakyProxy


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return open_store(request.getfixturevalue("s3_env"))


def test_exactly_one_of_many_simultaneous_contenders_wins(store):
    for trial in range(3):
        # Owners on other hosts, as pods are: a lease of this host's own pid would count as stale (lease.py).
        leases = [SplitLease(store, 0, seconds=30, owner=f"node-{i}/1/trial{trial}") for i in range(4)]
        barrier, won, refused = threading.Barrier(len(leases)), [], []

        def contend(lease):
            barrier.wait()
            try:
                lease.acquire()
                won.append(lease)
            except SplitBusy:
                refused.append(lease)

        threads = [threading.Thread(target=contend, args=(lease,)) for lease in leases]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(refused) == len(leases) - 1
        assert read_lease(store, 0).owner == won[0].owner
        won[0].release()
        assert read_lease(store, 0) is None


def test_a_contender_reading_the_lease_just_written_is_refused(store, monkeypatch):
    """The winner's write is visible before its write_if returns: a contender of the same process reading it then
    sees a live lease, not this process's released one (which it may take over)."""
    first, second = (SplitLease(store, 0, seconds=30, owner=f"node-{i}/1/x") for i in range(2))
    written, refused = threading.Event(), []
    write_if = store.write_if

    def write_then_pause(key, data, tag):
        new_tag = write_if(key, data, tag)
        if threading.current_thread().name == "first":
            written.set()
            time.sleep(1.0)  # the second contender reads the lease now
        return new_tag

    def contend():
        written.wait(10)
        try:
            second.acquire()
        except SplitBusy as e:
            refused.append(str(e))

    monkeypatch.setattr(store, "write_if", write_then_pause)
    threads = [threading.Thread(target=first.acquire, name="first"), threading.Thread(target=contend)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(refused) == 1 and read_lease(store, 0).owner == first.owner
    first.release()


def test_lease_is_renewed_while_the_trainer_is_busy_elsewhere(store):
    lease = SplitLease(store, 0, seconds=1.5, owner="node-a/1/x")
    lease.acquire()
    time.sleep(4.0)  # set-up, a first compiled step or a long upload: more than two lease periods, no renew() call
    with pytest.raises(SplitBusy, match="being trained by node-a/1/x"):
        SplitLease(store, 0, seconds=1.5, owner="node-b/1/y").acquire()
    lease.check()
    lease.release()
    other = SplitLease(store, 0, seconds=1.5, owner="node-b/1/y")
    other.acquire()
    other.release()


def test_a_renewal_after_a_takeover_fails_and_the_loser_cannot_renew_again(store):
    a = SplitLease(store, 0, seconds=1.0, owner="node-a/1/x")
    a.acquire()
    a._stop.set()  # A is frozen: its renewals stop, its lease runs out (by the store's clock: S3's counts seconds)
    deadline = time.time() + 5
    while live_lease(store, 0) is not None:
        assert time.time() < deadline
        time.sleep(0.1)
    b = SplitLease(store, 0, seconds=30, owner="node-b/1/y")
    b.acquire()
    with pytest.raises(SplitBusy, match="split 0 was taken over by node-b/1/y"):
        a.renew()
    with pytest.raises(SplitBusy):
        a.check()
    a.release()  # leaves B's lease alone
    assert read_lease(store, 0).owner == "node-b/1/y"
    b.release()


def test_release_never_raises_with_the_store_answering_502(s3_env, s3_server, monkeypatch, caplog):
    proxy = FlakyProxy(s3_server["port"])
    monkeypatch.setenv("ACGAN_S3_ENDPOINT", proxy.endpoint)
    monkeypatch.setenv("ACGAN_S3_RETRY_SECONDS", "1")
    store = open_store(s3_env)
    lease = SplitLease(store, 0, seconds=30, owner="node-a/1/x")
    lease.acquire()
    proxy.answer_with(502, "Bad Gateway", 600, b"<html>502</html>")
    lease.release()  # logs, does not raise
    assert "could not release its lease" in caplog.text
    proxy.down()
    monkeypatch.setenv("ACGAN_S3_ENDPOINT", s3_server["endpoint"])
    assert open_store(s3_env).exists(lease_key(0))  # left to expire


def test_a_lease_of_an_ended_process_of_this_machine_is_stale_at_once(tmp_path):
    """A restarted trainer on the same machine and PID namespace need not wait a period: the writer's pid is gone, or
    now belongs to another process (its start time differs). A process of this machine that runs keeps its lease."""
    store = LocalStore(tmp_path / "store")
    holder = subprocess.Popen(["sleep", "60"])
    identity = process_identity(holder.pid)
    boot, namespace, pid, started = identity.split(":")
    held = Lease(owner=f"{socket.gethostname()}/{pid}/x", expires=time.time() + 600, acquired=time.time(),
                 seconds=600, process=identity)
    reused = held.model_copy(update={"process": f"{boot}:{namespace}:{pid}:{int(started) + 1}"})
    for lease, live in [(held, True), (reused, False)]:
        store.write_bytes(lease_key(0), lease.model_dump_json().encode())
        assert (live_lease(store, 0) is not None) == live
    store.write_bytes(lease_key(0), held.model_dump_json().encode())
    with pytest.raises(SplitBusy, match=f"being trained by {held.owner}"):
        SplitLease(store, 0, seconds=30).acquire()
    holder.kill()
    holder.wait()
    restarted = SplitLease(store, 0, seconds=30)
    restarted.acquire()  # at once, ten minutes before the lease would lapse
    assert read_lease(store, 0).owner == restarted.owner
    restarted.release()


def test_a_lease_this_process_could_not_release_is_stale_for_its_next_call(tmp_path, monkeypatch):
    """An earlier call of this process (a trainer that stopped on a store outage) could not delete its lease: this
    process no longer holds it, so its next call takes the split at once; one it holds stays live."""
    store = LocalStore(tmp_path / "store")
    first = SplitLease(store, 0, seconds=600)
    first.acquire()
    with pytest.raises(SplitBusy, match=f"being trained by {first.owner}"):
        SplitLease(store, 0, seconds=600).acquire()  # held by this process now
    monkeypatch.setattr(LocalStore, "delete_if", lambda self, key, tag: (_ for _ in ()).throw(OSError("read-only")))
    first.release()  # logs, keeps the file
    monkeypatch.undo()
    assert read_lease(store, 0).owner == first.owner
    second = SplitLease(store, 0, seconds=600)
    second.acquire()
    second.release()
    assert read_lease(store, 0) is None
