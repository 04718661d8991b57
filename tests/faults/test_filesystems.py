"""A local store on a failing file system, for real: a tmpfs that fills up or is remounted read-only under a
trainer, a store owned by another user. Each ends in one line naming the path and the cause, with nothing complete
lost; the per-tick stats write is best effort; the lease renewal rides out a transient error and stops training
once the lease has lapsed. Needs root (mount, setpriv), as CI runs."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from acgan.checkpoint import complete_steps, latest_checkpoint
from acgan.lease import read_lease
from acgan.store import LocalStore
from acgan_cli.main import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--batch-size", "16", "--width", "0.0625", "--d-width", "0.25", "--tick-every", "5",
        "--stats-samples-per-class", "4", "--stats-pairs", "6"]


class Volume:
    """A tmpfs of its own, remounted at will (size, ro, rw) while processes use it."""

    def __init__(self, path: Path, size: str):
        self.path = path
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}): needs root / CAP_SYS_ADMIN")

    def remount(self, options: str) -> None:
        deadline = time.monotonic() + 10
        while True:  # `ro` is refused while a file is open for writing (a write of the trainer): try again
            result = subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], capture_output=True,
                                    text=True)
            if result.returncode == 0:
                return
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.02)

    def free(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize


@pytest.fixture
def volume(tmp_path):
    volumes = []

    def make(size: str) -> Volume:
        volumes.append(Volume(tmp_path / f"vol{len(volumes)}", size))
        return volumes[-1]

    yield make
    for v in volumes:
        subprocess.run(["umount", "-l", str(v.path)], capture_output=True)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def the_error_line(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_store_that_fills_up_stops_in_one_line_and_keeps_every_complete_file(volume, _digits_template, capsys,
                                                                              caplog, fault_report):
    # prepare: the plan and split 0's shard fit, split 1's does not.
    vol = volume("1600k")
    store = LocalStore(vol.path / "store")
    prepare = ["prepare", "--store", store.root, "--dataset", "digits", "--resolution", 32, "--classes-per-split", 5]
    line = the_error_line(*run_cli(capsys, *prepare)[::2])
    assert f"{store.root}/data/split-00001.safetensors" in line and "No space left on device" in line, line
    assert store.exists("data/split-00000.json") and not store.exists("data/split-00001.json")
    shard = store.read_bytes("data/split-00000.safetensors")
    assert not list(store.root.rglob("*.tmp-*"))  # the half-written shard's temporary is gone too
    vol.remount("size=4m")
    with caplog.at_level("INFO"):
        assert run_cli(capsys, *prepare)[0] == 0
    assert store.read_bytes("data/split-00000.safetensors") == shard and "shard data/split-00000.safetensors is " \
        "complete; not rebuilt" in caplog.text

    # train-split: the checkpoint of step 5 fits, that of step 10 does not.
    vol = volume("16m")
    shutil.copytree(_digits_template, vol.path / "store")
    store = LocalStore(vol.path / "store")
    train = ["train-split", "--store", store.root, "--split", 0, "--checkpoint-every", 5, *TINY]
    assert run_cli(capsys, *train, "--steps", 5)[0] == 0
    checkpoint = {k: v for k, v in contents(store.root).items() if "/checkpoints/" in k}
    filler = vol.path / "filler"
    filler.write_bytes(b"\0" * (vol.free() - 1024 * 1024))  # 1 MiB left: less than the 2 MB of a checkpoint
    line = the_error_line(*run_cli(capsys, *train, "--steps", 10)[::2])
    assert f"{store.root}/splits/split-00000/checkpoints/step-00000010/" in line and "No space left" in line, line
    assert complete_steps(store, 0) == [5] and latest_checkpoint(store, 0)[0] == 5
    assert {k: v for k, v in contents(store.root).items() if "/checkpoints/" in k} == checkpoint
    assert not list(store.root.rglob("*.tmp-*")) and read_lease(store, 0) is None
    filler.unlink()
    code, out, _ = run_cli(capsys, *train, "--steps", 10)
    assert code == 0 and json.loads(out)["resumed_from"] == 5 and complete_steps(store, 0) == [5, 10]
    fault_report("store volume full", "a tmpfs too small for split 1's shard (prepare) / with 1 MiB left for a 2 MB "
                 "checkpoint (train-split); then grown or freed", 2, 2, "the checkpoint being written (5 steps)",
                 "none; complete shards and checkpoints byte-identical, no temporaries left, resumed")


def test_a_read_only_store_is_refused_in_one_line_and_left_as_it_was(volume, _digits_template, capsys,
                                                                    fault_report):
    vol = volume("16m")
    shutil.copytree(_digits_template, vol.path / "store")
    root = vol.path / "store"
    before = contents(root)
    vol.remount("ro")
    for argv in (["train-split", "--store", root, "--split", 0, "--steps", 5, *TINY],
                 ["prepare", "--store", root, "--dataset", "digits", "--resolution", 32, "--classes-per-split", 5]):
        line = the_error_line(*run_cli(capsys, *argv)[::2])
        assert f"{root}/" in line and "Read-only file system" in line and "remount" in line, line
    assert contents(root) == before
    fault_report("store volume read-only", "the store's tmpfs remounted read-only; train-split and prepare", 2, 2,
                 "none: refused at once, one line", "none")


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
DRIVER = """
import contextlib, io, json, sys
from acgan_cli.main import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_a_store_owned_by_another_user_is_refused_in_one_line(_digits_template, fault_report):
    """A volume whose files belong to root, a trainer running as another user (a pod's runAsUser without an
    fsGroup): writing (0755) and reading (0700) are refused in one line naming the path, the cause and the uid."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to run a process as another user")
    if subprocess.run([*AS_NOBODY, sys.executable, "-c", "import acgan_cli.main, torch"], capture_output=True,
                      cwd="/", env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode != 0:
        pytest.skip(f"uid 65534 cannot read this checkout or its virtual environment ({ROOT}: a private clone, "
                    "as under `mktemp -d`): clone into a directory others can read to run this test")
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's tmp_path is private to root
    try:
        base.chmod(0o755)
        writable, readable = base / "store-0755", base / "store-0700"
        shutil.copytree(_digits_template, writable)
        shutil.copytree(_digits_template, readable)
        writable.chmod(0o755)  # copied from pytest's private tmp_path
        readable.chmod(0o700)
        before = contents(writable)
        commands = [["train-split", "--store", str(writable), "--split", "0", "--steps", "5", *TINY],
                    ["prepare", "--store", str(writable), "--dataset", "digits", "--resolution", "32",
                     "--classes-per-split", "5"],
                    ["status", "--store", str(readable)]]
        proc = subprocess.run([*AS_NOBODY, sys.executable, "-c", DRIVER, json.dumps(commands)], capture_output=True,
                              text=True, cwd=base, timeout=300,
                              env={**os.environ, "HOME": str(base), "PYTHONPATH": str(ROOT),
                                   "PYTHONDONTWRITEBYTECODE": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        results = json.loads(proc.stdout)
        for (code, err), store in zip(results, [writable, writable, readable]):
            line = the_error_line(code, err)
            assert f"{store}/" in line and "Permission denied" in line and "uid 65534" in line, line
        assert contents(writable) == before
    finally:
        shutil.rmtree(base)
    fault_report("store owned by another user", "a trainer running as uid 65534 on a root-owned store (0755: "
                 "train-split, prepare; 0700: status)", 3, 3, "none: refused at once, one line", "none")


def test_the_stats_write_is_best_effort(digits_store, capsys, caplog, fault_report):
    """The stats file cannot be written (a folder stands at its path: os.replace fails with IsADirectoryError):
    each tick logs it and training goes on to its checkpoints."""
    (digits_store.root / "splits/split-00000/stats.jsonl").mkdir(parents=True)
    code, out, err = run_cli(capsys, "train-split", "--store", digits_store.root, "--split", 0, "--steps", 10,
                             "--checkpoint-every", 5, *TINY)
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert complete_steps(digits_store, 0) == [5, 10]
    warnings = [m for m in caplog.messages if "not written" in m]
    assert len(warnings) == 2 and all(f"stats line of step {step} not written (" in m and "Is a directory" in m
                                      for m, step in zip(warnings, (5, 10))), warnings
    fault_report("stats write failing", "an OSError at every stats write (a folder at its path)", 1, 1, "none",
                 "the stats lines only; both checkpoints written")


def test_lease_renewal_rides_out_a_read_only_spell_and_stops_training_once_the_lease_lapsed(
        volume, _digits_template, capsys, caplog, fault_report):
    """The store's volume read-only for half a lease period while a trainer runs: its renewals fail, then resume.
    Read-only for good: the lease lapses, and the trainer stops in one line instead of training on unleased."""
    vol = volume("16m")
    shutil.copytree(_digits_template, vol.path / "store")
    store = LocalStore(vol.path / "store")
    lease_seconds = 4.0
    outcome = {}

    def train():
        outcome["code"] = main([str(a) for a in ["train-split", "--store", store.root, "--split", 0, "--steps",
                                                 10**6, "--checkpoint-every", 10**6, "--lease-seconds",
                                                 lease_seconds, *TINY]])

    trainer = threading.Thread(target=train, daemon=True)  # daemon: a trainer that never stops cannot hang pytest
    trainer.start()
    deadline = time.monotonic() + 120
    while not store.exists("splits/split-00000/stats.jsonl"):  # set up and training
        assert trainer.is_alive() and time.monotonic() < deadline, capsys.readouterr().err[-3000:]
        time.sleep(0.1)

    vol.remount("ro")
    time.sleep(lease_seconds / 2)  # a renewal (every third of a period) fails in this
    vol.remount("rw")
    back = time.time()
    while (lease := read_lease(store, 0)).expires < back + lease_seconds / 2:  # renewed since the spell
        assert time.monotonic() < deadline and trainer.is_alive(), (lease, capsys.readouterr().err[-3000:])
        time.sleep(0.1)
    failed_renewals = sum("could not renew its lease" in m for m in caplog.messages)
    assert failed_renewals >= 1, caplog.messages

    vol.remount("ro")
    lapsed_by = read_lease(store, 0).expires
    trainer.join(timeout=lease_seconds * 3 + 30)
    stopped = time.time()
    assert not trainer.is_alive(), "the trainer went on training with a lapsed lease"
    _, err = capsys.readouterr()
    line = the_error_line(outcome["code"], err)
    assert "lease" in line and "lapsed" in line and "Read-only file system" in line, line
    assert stopped - lapsed_by < lease_seconds + 30
    vol.remount("rw")
    fault_report("lease renewal failing", f"the store's volume read-only for {lease_seconds / 2:.0f} s, then for "
                 f"good, under a trainer with a {lease_seconds:.0f} s lease", 2, 2,
                 f"none, then the steps since the last checkpoint ({failed_renewals} renewal(s) failed and "
                 "recovered)", "none; it stopped once the lease lapsed, writing nothing")


def test_a_trainer_whose_lease_lapsed_stops_at_its_next_step(volume, _digits_template, capsys, fault_report):
    """Issue 36: with the renewals failing past the lease, the trainer went on until its next tick (91 s with
    --tick-every 100000) while another could take the split. The loop checks the lease before every step now: it
    stops within a step of the lapse, by this process's own monotonic clock (a period after its last renewal
    began)."""
    vol = volume("16m")
    shutil.copytree(_digits_template, vol.path / "store")
    store = LocalStore(vol.path / "store")
    lease_seconds, outcome = 3.0, {}

    def train():
        outcome["code"] = main([str(a) for a in ["train-split", "--store", store.root, "--split", 0, "--steps",
                                                 10**6, "--checkpoint-every", 10**6, "--lease-seconds",
                                                 lease_seconds, *TINY, "--tick-every", 10**5]])

    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    deadline = time.monotonic() + 120
    while not store.exists("splits/split-00000/config.json"):  # written right before the first step
        assert trainer.is_alive() and time.monotonic() < deadline, capsys.readouterr().err[-3000:]
        time.sleep(0.1)
    time.sleep(1)
    vol.remount("ro")
    spell_began = time.monotonic()
    try:
        trainer.join(timeout=lease_seconds + 10)
        stopped_after = time.monotonic() - spell_began
        assert not trainer.is_alive(), "the trainer trained on past its lease"
    finally:
        vol.remount("rw")
    line = the_error_line(outcome["code"], capsys.readouterr().err)
    assert "lapsed, not renewed for 3s" in line and "Read-only file system" in line, line
    assert stopped_after < lease_seconds + 3, stopped_after  # a period after its last renewal began, plus a step
    fault_report("lease lapsed between ticks", f"the store's volume read-only under a trainer with a {lease_seconds:.0f} "
                 "s lease and --tick-every 100000", 1, 1, f"none: it stopped {stopped_after:.1f} s into the spell, "
                 "at its next step", "none; it wrote nothing after the lapse")


def test_deleting_and_locking_on_a_read_only_volume_is_one_line(volume):
    """Pruning, a conditional delete (a lease's release): a volume that turned read-only after the last write."""
    from acgan.errors import UserError

    store = LocalStore(volume("1m").path / "store")
    tag = store.write_if("splits/split-00000/lease.json", b"{}", None)
    tag = store.write_if("splits/split-00000/lease.json", b"{ }", tag)  # makes the lock file, as a renewal does
    store.write_bytes("splits/split-00000/checkpoints/step-00000005/COMPLETE.json", b"{}")
    subprocess.run(["mount", "-o", "remount,ro", str(store.root.parent)], check=True)
    with pytest.raises(UserError, match=r"cannot delete .*/step-00000005/COMPLETE.json \(Read-only file system\)"):
        store.delete("splits/split-00000/checkpoints/step-00000005/COMPLETE.json")
    with pytest.raises(UserError, match=r"cannot write .*/lease.json \(Read-only file system\)"):
        store.delete_if("splits/split-00000/lease.json", tag)
