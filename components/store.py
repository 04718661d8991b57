"""Where everything of an experiment lives: a local directory (the embedded default) or an S3 bucket prefix.

`open_store(uri)` is the one place that decides local versus remote. Keys are '/'-separated and relative to the
store's root. S3 settings come from the environment (read here and nowhere else):
  ACGAN_S3_ENDPOINT   http(s)://host:port of MinIO, SeaweedFS or any S3 endpoint (scheme sets TLS on/off)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION (optional)
  ACGAN_S3_RETRIES    attempts for a transient error (default 6, bounded exponential backoff)
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlparse

from components.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")

_KEY = re.compile(r"^[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*$")


def check_key(key: str) -> str:
    """Keys are relative paths of plain names: no '..', no absolute paths, no empty parts."""
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise UserError(f"invalid store key {key!r}: use relative '/'-separated names of letters, digits, '.', '_', '-'")
    return key


class LocalStore:
    """A directory. Writes go to a temporary file and are renamed into place, so no reader sees half an object."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix` (a folder-like prefix ending in '/'), sorted; temporary files are not listed."""
        base = self.root / prefix
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if not k.rsplit("/", 1)[-1].startswith("."))

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # Folders are only key prefixes: remove the ones this left empty, as S3 would show none.
        for parent in path.parents:
            try:
                if parent == self.root or any(parent.iterdir()):
                    break
                parent.rmdir()
            except OSError:  # another writer just added a key below it
                break

    def ensure_ready(self, create: bool = False) -> None:
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise UserError(f"store {self.uri} does not exist: run `acgan prepare --store {self.uri}` first")


class S3Store:
    """A bucket prefix on any S3-protocol server, through the minio client. Transient errors are retried."""

    def __init__(self, bucket: str, prefix: str, endpoint: str, access_key: str | None, secret_key: str | None,
                 region: str | None = None, retries: int = 6):
        import urllib3
        from minio import Minio
        from minio.helpers import check_bucket_name

        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UserError(f"ACGAN_S3_ENDPOINT={endpoint!r} is not http(s)://host[:port]")
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError:
            raise UserError(f"s3://{bucket}: not a valid bucket name (3-63 lowercase letters, digits, '.', '-')") from None
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint = f"{parsed.scheme}://{parsed.netloc}"
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.retries = max(1, retries)
        # Our own retry loop (below) handles transient failures; the pool itself must not retry for minutes.
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=120), retries=urllib3.Retry(total=0),
                                   maxsize=8)
        self.client = Minio(parsed.netloc, access_key=access_key, secret_key=secret_key, region=region,
                            secure=parsed.scheme == "https", http_client=http)

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError

        delay = 0.5
        for attempt in range(1, self.retries + 1):
            try:
                return fn()
            except S3Error as e:
                if e.code in ("NoSuchKey", "NoSuchBucket"):
                    raise
                if e.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"):
                    raise UserError(f"store {self.uri} at {self.endpoint} rejected the credentials ({e.code}): "
                                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY") from None
                transient = e.code in ("InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout")
                error = f"{e.code}"
            except HTTPError as e:  # connection refused, reset, timeout: the server may come back
                transient, error = True, type(e).__name__
            if not transient or attempt == self.retries:
                raise UserError(f"store {self.uri} unreachable at {self.endpoint}: {what} failed after {attempt} "
                                f"attempt(s) ({error}); check ACGAN_S3_ENDPOINT and that the server is up") from None
            log.warning("store %s: %s failed (%s), retry %d/%d in %.1fs", self.endpoint, what, error, attempt,
                        self.retries - 1, delay)
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        def stat() -> bool:
            try:
                self.client.stat_object(self.bucket, self._name(key))
                return True
            except S3Error as e:
                if e.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                    return False
                raise

        return self._call(f"stat {key}", stat)

    def read_bytes(self, key: str) -> bytes:
        from minio.error import S3Error

        def get() -> bytes:
            response = self.client.get_object(self.bucket, self._name(key))
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        try:
            return self._call(f"read {key}", get)
        except S3Error as e:
            if e.code == "NoSuchKey":
                raise KeyError(key) from None
            raise

    def write_bytes(self, key: str, data: bytes) -> None:
        # An S3 PUT is atomic: readers see the old object or the whole new one, never a part.
        self._call(f"write {key}", lambda: self.client.put_object(self.bucket, self._name(key), io.BytesIO(data),
                                                                 len(data)))

    def list(self, prefix: str) -> list[str]:
        start = len(self.prefix) + 1 if self.prefix else 0
        objects = self._call(f"list {prefix}", lambda: list(
            self.client.list_objects(self.bucket, prefix=self._name(prefix.rstrip("/")) + "/", recursive=True)))
        return sorted(o.object_name[start:] for o in objects)

    def folders(self) -> list[str]:
        """Names of the folders right under the prefix: one listing with a delimiter, not every key below."""
        base = f"{self.prefix}/" if self.prefix else ""
        objects = self._call("list folders", lambda: list(self.client.list_objects(self.bucket, prefix=base)))
        return sorted(o.object_name[len(base):].rstrip("/") for o in objects if o.is_dir)

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", lambda: self.client.remove_object(self.bucket, self._name(key)))

    def ensure_ready(self, create: bool = False) -> None:
        exists = self._call("check bucket", lambda: self.client.bucket_exists(self.bucket))
        if not exists:
            if not create:
                raise UserError(f"bucket {self.bucket!r} does not exist at {self.endpoint}: "
                                f"run `acgan prepare --store {self.uri}` first, or create the bucket")
            self._call("create bucket", lambda: self.client.make_bucket(self.bucket))


Store = LocalStore | S3Store


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    if not value.isdigit():
        raise UserError(f"{name}={value!r} is not a whole number")
    return int(value)


def open_store(uri: str) -> Store:
    """The one function that decides local versus remote storage."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise UserError(f"store {uri!r} names no bucket: use s3://BUCKET[/PREFIX]")
        endpoint = os.environ.get("ACGAN_S3_ENDPOINT")
        if not endpoint:
            raise UserError("ACGAN_S3_ENDPOINT is not set: export it as http(s)://host:port of the S3/MinIO server")
        return S3Store(parsed.netloc, parsed.path, endpoint, os.environ.get("AWS_ACCESS_KEY_ID"),
                       os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_REGION"),
                       _env_int("ACGAN_S3_RETRIES", 6))
    if "://" in uri and not uri.startswith("file://"):
        raise UserError(f"store {uri!r}: use a local directory or s3://BUCKET/PREFIX")
    return LocalStore(uri.removeprefix("file://"))


def read_json(store: Store, key: str) -> dict:
    import json

    try:
        return json.loads(store.read_bytes(key))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{store.uri}/{key} is not valid JSON ({e}); the object is corrupt") from None


def write_json(store: Store, key: str, obj: dict) -> None:
    import json

    store.write_bytes(key, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
