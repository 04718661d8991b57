"""One store interface, two backends: a local directory and a real S3-protocol server (moto) via the minio client."""

import os
import time

import pytest

from acgan.errors import UserError
from acgan.store import open_store, read_json, write_json


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(request.getfixturevalue("s3_env"))


def test_store_contract(store):
    store.ensure_ready(create=True)
    assert not store.exists("a/b.bin") and store.list("a/") == []
    with pytest.raises(KeyError):
        store.read_bytes("a/b.bin")
    store.write_bytes("a/b.bin", b"\x00\x01" * 1000)
    store.write_bytes("a/c/d.json", b"{}")
    store.write_bytes("ab.txt", b"not under a/")
    assert store.exists("a/b.bin") and store.read_bytes("a/b.bin") == b"\x00\x01" * 1000
    assert store.list("a/") == ["a/b.bin", "a/c/d.json"]
    store.write_bytes("a/b.bin", b"new")  # plain objects (not checkpoints) may be replaced
    assert store.read_bytes("a/b.bin") == b"new"
    store.delete("a/b.bin")
    store.delete("a/b.bin")  # deleting what is gone is fine
    assert store.list("a/") == ["a/c/d.json"]


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/../b", "", "a b"])
def test_keys_that_could_escape_are_refused(store, key):
    with pytest.raises(UserError, match="invalid store key"):
        store.write_bytes(key, b"x")


def test_wrong_credentials_are_named_without_the_secret(s3_env, monkeypatch, s3_server):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "definitely-wrong-secret")
    with pytest.raises(UserError, match="rejected the credentials") as info:
        open_store(s3_env).exists("plan.json")
    assert "definitely-wrong-secret" not in str(info.value)
    assert s3_server["secret_key"] not in str(info.value)


def test_unreachable_endpoint_fails_after_bounded_retries(monkeypatch, s3_server):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ACGAN_S3_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value")
    monkeypatch.setenv("ACGAN_S3_RETRY_SECONDS", "1")
    with pytest.raises(UserError, match=r"unreachable at http://127.0.0.1:\d+: read plan.json failed for 1s \(\d+ "
                                        r"attempt\(s\), last: NewConnectionError\)"):
        open_store("s3://acgan-test/x").read_bytes("plan.json")


@pytest.mark.parametrize("uri, env, message", [
    ("s3://acgan-test/x", {}, "ACGAN_S3_ENDPOINT is not set"),
    ("s3:///x", {"ACGAN_S3_ENDPOINT": "http://127.0.0.1:1"}, "names no bucket"),
    ("s3://A_B/x", {"ACGAN_S3_ENDPOINT": "http://127.0.0.1:1"}, "not a valid bucket name"),
    ("s3://acgan-test/x", {"ACGAN_S3_ENDPOINT": "ftp://host"}, "is not http"),
    ("s3://acgan-test/x", {"ACGAN_S3_ENDPOINT": "http://127.0.0.1:1", "ACGAN_S3_RETRY_SECONDS": "many"}, "not a number of seconds"),
    ("gs://bucket/x", {}, "use a local directory or s3://"),
])
def test_bad_store_settings(monkeypatch, uri, env, message):
    monkeypatch.delenv("ACGAN_S3_ENDPOINT", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(UserError, match=message):
        open_store(uri)


def test_missing_bucket_is_created_only_by_prepare(s3_env):
    store = open_store(s3_env.replace("acgan-test", "acgan-new-bucket"))
    with pytest.raises(UserError, match="does not exist"):
        store.ensure_ready()
    store.ensure_ready(create=True)
    store.ensure_ready()


def test_checksummed_json_catches_a_changed_value(store):
    store.ensure_ready(create=True)
    write_json(store, "plan.json", {"resolution": 32, "splits": [[0, 1]]}, checksum=True)
    assert read_json(store, "plan.json", checksum=True) == {"resolution": 32, "splits": [[0, 1]]}
    damaged = store.read_bytes("plan.json").replace(b'"resolution": 32', b'"resolution": 33')
    store.write_bytes("plan.json", damaged)  # still valid JSON: only the checksum can tell
    with pytest.raises(UserError, match=r"plan.json: checksum: the contents do not match it") as e:
        read_json(store, "plan.json", checksum=True)
    assert "\n" not in str(e.value)
    # A checksum taken out with the change is no way around it (0.1.0 writes one into every such object).
    write_json(store, "plan.json", {"resolution": 33, "splits": [[0, 1]]})
    with pytest.raises(UserError, match=r"plan.json: checksum: missing; the object is damaged"):
        read_json(store, "plan.json", checksum=True)
    assert read_json(store, "plan.json") == {"resolution": 33, "splits": [[0, 1]]}  # read as it is when not asked


def test_unfinished_writes_are_cleaned_when_a_trainer_takes_the_split(digits_store, s3_env):
    """A write killed on a local store leaves its hidden temporary; one killed on S3 leaves a multipart upload that
    no listing shows. A trainer that takes the split removes those older than a lease period."""
    from acgan.training.loop import train_split
    from tests.conftest import tiny_config

    stale = digits_store.root / "splits/split-00000/checkpoints/step-00000005/.g.safetensors.tmp-99-dead"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a write")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    train_split(digits_store, tiny_config(steps=5, lease_seconds=30))
    assert not stale.exists()
    assert not list(digits_store.root.rglob("*.tmp-*"))

    s3 = open_store(s3_env)
    name = f"{s3.prefix}/splits/split-00000/checkpoints/step-00000005/x.safetensors"
    s3.client._create_multipart_upload(s3.bucket, name, {})
    uploads = lambda: s3.client._list_multipart_uploads(s3.bucket, prefix=s3.prefix + "/").uploads  # noqa: E731
    assert len(uploads()) == 1
    time.sleep(1.1)
    assert s3.clean_temporaries("splits/split-00000/", older_than=1.0) == 1
    assert uploads() == []


@pytest.mark.parametrize("command", ["status", "rerun"])
def test_an_endpoint_name_that_does_not_resolve_fails_at_once_naming_the_fix(monkeypatch, capsys, command):
    """`acgan status` / `rerun` from a workstation with the cluster's own store endpoint: one line saying how to
    reach the store from outside, at once, not after ACGAN_S3_RETRY_SECONDS of retries."""
    import time

    from acgan_cli.main import main

    monkeypatch.setenv("ACGAN_S3_ENDPOINT", "http://seaweedfs.kubeflow.svc.cluster.local:8333")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value")
    monkeypatch.setenv("ACGAN_S3_RETRY_SECONDS", "300")
    started = time.monotonic()
    args = [command, "--store", "s3://mlpipeline/acgan/exp1"] + (["--local"] if command == "rerun" else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 60 and err.count("\n") == 1 and "Traceback" not in err
    assert ("the host seaweedfs.kubeflow.svc.cluster.local does not resolve from this machine (a name of the "
            "cluster's own DNS): from outside the cluster, forward the store's port") in err
    assert "ACGAN_S3_ENDPOINT=http://127.0.0.1:9000" in err and "secret-value" not in err


def test_the_private_minio_surface_is_the_pinned_one():
    """acgan/store/s3.py uses four private names of minio (its docstring); an upgrade that changes them must fail here,
    not in a lease's conditional write on a cluster."""
    import importlib.metadata
    import inspect
    import tomllib
    from pathlib import Path

    from minio import Minio
    from minio.error import InvalidResponseError

    pinned = next(d for d in tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "dependencies"] if d.startswith("minio"))
    assert pinned == f"minio=={importlib.metadata.version('minio')}"
    params = {name: list(inspect.signature(getattr(Minio, name)).parameters) for name in
              ("_execute", "_list_multipart_uploads", "_abort_multipart_upload")}
    assert params["_execute"][:6] == ["self", "method", "bucket_name", "object_name", "body", "headers"]
    assert {"bucket_name", "prefix", "max_uploads"} <= set(params["_list_multipart_uploads"])
    assert params["_abort_multipart_upload"] == ["self", "bucket_name", "object_name", "upload_id"]
    assert InvalidResponseError(503, "text/html", "<html>")._code == 503


def test_conditional_writes_leave_no_lock_files(tmp_path):
    """Issue 36: every lease renewal left a `.lease.json.lock` beside the lease, and `.run-lease.json.lock` at the
    store's root, for good. The lock is taken on the folder itself now; two writers still exclude each other (one
    tag, one winner)."""
    from acgan.store import PreconditionFailed

    store = open_store(str(tmp_path / "store"))
    tag = store.write_if("run-lease.json", b"1", None)
    tag = store.write_if("run-lease.json", b"2", tag)
    lease = store.write_if("splits/split-00000/lease.json", b"1", None)
    store.delete_if("splits/split-00000/lease.json", store.write_if("splits/split-00000/lease.json", b"2", lease))
    with pytest.raises(PreconditionFailed):
        store.write_if("run-lease.json", b"3", lease)  # a stale tag loses
    assert store.read_bytes("run-lease.json") == b"2"
    assert sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file()) == ["run-lease.json"]
