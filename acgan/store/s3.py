"""A store on any S3-protocol server (MinIO, SeaweedFS, AWS), through the minio client, with retries.

minio is pinned to one release (pyproject.toml) because its public API has no conditional write, no listing of
unfinished multipart uploads and no status of a non-S3 error answer: `write_if`, `delete_if`, `clean_temporaries` and
the error classification use four private names of the client (`Minio._execute`, `_list_multipart_uploads`,
`_abort_multipart_upload`, `InvalidResponseError._code`). tests/test_store.py fails when the installed release or
those names' signatures differ from the pinned ones, and the store's contract tests run them against an S3 server.
Moving to a client with public conditional-write parameters (boto3's IfNoneMatch/IfMatch) would replace the whole
client, its retries and its error mapping for these few calls; pinning was the smaller risk.
"""

from __future__ import annotations

import io
import logging
import random
import socket
import ssl
import time
from typing import Callable, TypeVar
from urllib.parse import urlparse

from acgan.errors import UserError, command
from acgan.store.contract import PreconditionFailed, StoreUnavailable, check_key, check_source_key
from acgan.uri import holds_credentials, redact

log = logging.getLogger(__name__)
T = TypeVar("T")
E = TypeVar("E", bound=BaseException)
# S3 error codes that mean "the server is busy or starting: try again" (AWS's and MinIO's own).
_TRY_AGAIN = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "XMinioServerNotInitialized",
              "OperationAborted", "XMinioServerBusy"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
           "AllAccessDisabled"}


def _cause(e: BaseException, kind: type[E]) -> E | None:
    """The first exception of `kind` in the chain of causes of a client's error (urllib3 wraps them)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, kind):
            return e
        e = getattr(e, "reason", None) or e.__cause__ or e.__context__
    return None


def _no_such_host(e: BaseException) -> bool:
    """Whether a connection failed because the endpoint's name does not exist (EAI_NONAME), as opposed to a lookup
    that failed for now (EAI_AGAIN: a DNS server restarting), which is retried like any outage."""
    lookup = _cause(e, socket.gaierror)
    return lookup is not None and lookup.errno == socket.EAI_NONAME


def tls_context(bundle: str | None) -> ssl.SSLContext:
    """How the store's client verifies an https endpoint: with the CA bundle an operator gives in SSL_CERT_FILE (a
    PEM file: the store's own CA, or the system's bundle with it added), else with the system's bundle (Debian's
    ca-certificates, which the image installs). Not certifi's, minio's default: a CA added to the system's (a
    derived image's update-ca-certificates) would not count."""
    try:
        return ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError) as e:
        raise UserError(f"SSL_CERT_FILE={bundle}: not a readable CA bundle ({getattr(e, 'strerror', None) or e}): "
                        "give a PEM file of the CA certificates that sign the store's endpoint") from None


class S3Store:
    """A bucket prefix on any S3-protocol server, through the minio client. Transient errors are retried for
    `retry_seconds` with backoff and jitter; permanent ones (access denied, no such bucket) fail at once. A data
    source's bucket (`source_keys`) takes the names others gave its objects (`check_source_key`), a store only ours
    (`check_key`)."""

    def __init__(self, bucket: str, prefix: str, endpoint: str, access_key: str | None, secret_key: str | None,
                 region: str | None = None, retry_seconds: float = 300, source_keys: bool = False,
                 ca_bundle: str | None = None):
        import urllib3
        from minio import Minio
        from minio.helpers import check_bucket_name

        endpoint = endpoint if "://" in endpoint else f"https://{endpoint}"
        if holds_credentials(endpoint):
            raise UserError(f"ACGAN_S3_ENDPOINT={redact(endpoint)!r} holds credentials: give them as "
                            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, not in the endpoint")
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UserError(f"ACGAN_S3_ENDPOINT={redact(endpoint)!r} is not http(s)://host[:port]")
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError:
            raise UserError(f"s3://{bucket}: not a valid bucket name (3-63 lowercase letters, digits, '.', '-')") from None
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint = f"{parsed.scheme}://{parsed.netloc}"
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.retry_seconds = retry_seconds
        self.check_key = check_source_key if source_keys else check_key
        # Our own retry loop (below) handles transient failures; the pool itself must not retry.
        tls = {"ssl_context": tls_context(ca_bundle)} if parsed.scheme == "https" else {}
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=120), retries=urllib3.Retry(total=0),
                                   maxsize=8, **tls)
        self.client = Minio(parsed.netloc, access_key=access_key, secret_key=secret_key, region=region,
                            secure=parsed.scheme == "https", http_client=http)

    def _name(self, key: str) -> str:
        self.check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _failure(self, e: Exception) -> tuple[bool, str]:
        """(transient?, what went wrong) for an error of the client; raises at once for a permanent one we can name."""
        from minio.error import InvalidResponseError, S3Error, ServerError
        from urllib3.exceptions import HTTPError

        if isinstance(e, S3Error):
            if e.code == "PreconditionFailed":
                raise PreconditionFailed(e.object_name) from None
            if e.code in _DENIED:
                raise UserError(f"store {self.uri} at {self.endpoint} rejected the credentials or denied access "
                                f"({e.code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy"
                                ) from None
            if e.code == "NoSuchBucket":
                raise UserError(f"bucket {self.bucket!r} does not exist at {self.endpoint} (NoSuchBucket): run "
                                f"{command('acgan', 'prepare', '--store', self.uri)} first, or create the bucket") from None
            status = e.response.status if e.response is not None else 0
            return e.code in _TRY_AGAIN or status >= 500 or status == 429, f"{e.code}, HTTP {status}"
        if isinstance(e, InvalidResponseError):  # a body that is not S3's XML: a proxy or load balancer answered
            status = e._code  # noqa: SLF001 (the client exposes the status of this error nowhere else)
            if status == 403:
                raise UserError(f"store {self.uri} at {self.endpoint} refused access (HTTP 403 from something in "
                                "front of the store): check the endpoint and the credentials") from None
            return status >= 500 or status == 429, f"HTTP {status} (not from S3)"
        if isinstance(e, ServerError):
            return True, f"HTTP {e.status_code}"
        if isinstance(e, HTTPError):  # connection refused or reset, a timeout: the server may come back
            untrusted = _cause(e, ssl.SSLCertVerificationError)
            if untrusted is not None:  # but a certificate that fails verification will fail it again
                raise UserError(f"store endpoint {self.endpoint}: its TLS certificate failed verification "
                                f"({untrusted.verify_message}): give the CA bundle that signs it in SSL_CERT_FILE "
                                "(a PEM file; docs/operators.md), or use the name the certificate is for") from None
            if _no_such_host(e):  # but a name that does not exist will not (a lookup that timed out may)
                host = urlparse(self.endpoint).hostname
                in_cluster = " (a name of the cluster's own DNS)" if host.endswith(".local") else ""
                raise UserError(f"store endpoint {self.endpoint}: the host {host} does not resolve from this machine"
                                f"{in_cluster}: from outside the cluster, forward the store's port (`kubectl -n "
                                "NAMESPACE port-forward svc/SERVICE 9000`) and set ACGAN_S3_ENDPOINT="
                                "http://127.0.0.1:9000, or set ACGAN_S3_ENDPOINT to the store's external address"
                                ) from None
            return True, type(getattr(e, "reason", None) or e).__name__  # MaxRetryError wraps the cause
        raise e

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """`fn()`, retried while its failures are transient, for up to `retry_seconds`. An outage is logged once
        when it starts and once when it ends, not at every attempt.

        Our own loop, not the client's retry or tenacity: the client's (urllib3.Retry) counts attempts, not seconds,
        judges an answer by its HTTP status alone (S3's RequestTimeout is a 400, whose code is in the body) and would
        repeat a conditional PUT out of `write_if`'s sight, which must know when a retried create met its own
        first attempt; tenacity is not installed, and its stop_after_delay checks the budget only after each
        attempt, so a wait would run past `retry_seconds` (here the last wait is cut to what is left), while the
        classification, the two log lines and the final error stay ours either way: a dependency for no less
        code."""
        from minio.error import MinioException
        from urllib3.exceptions import HTTPError

        started, attempt, error = time.monotonic(), 0, ""

        def outage_over(outcome: str) -> None:
            if attempt > 1:
                log.warning("store %s: %s %s after %.1fs (%d attempts; last failure: %s)", self.endpoint, what,
                            outcome, time.monotonic() - started, attempt, error)

        while True:
            attempt += 1
            try:
                try:
                    result = fn()
                except (MinioException, HTTPError) as e:
                    transient, error = self._failure(e)
                else:
                    outage_over("succeeded")
                    return result
            except PreconditionFailed:  # an answer too: a retried create whose first attempt landed meets itself
                outage_over("precondition failed")
                raise
            except KeyError:  # an answer too: the object is not there (a read, a stat)
                outage_over("answered: no such object")
                raise
            waited = time.monotonic() - started
            if not transient:
                raise UserError(f"store {self.uri} at {self.endpoint}: {what} failed ({error})") from None
            if waited >= self.retry_seconds:
                raise StoreUnavailable(f"store {self.uri} unreachable at {self.endpoint}: {what} failed for "
                                       f"{waited:.0f}s ({attempt} attempt(s), last: {error}); check that the "
                                       "server is up, or raise ACGAN_S3_RETRY_SECONDS") from None
            if attempt == 1:
                log.warning("store %s: %s failed (%s); retrying for up to %.0fs", self.endpoint, what, error,
                            self.retry_seconds)
            # Full jitter: trainers of many splits that lost the store together do not return in lockstep.
            backoff = random.uniform(0.5, 1.0) * min(0.25 * 2 ** (attempt - 1), 10.0)
            time.sleep(max(0.0, min(backoff, self.retry_seconds - waited)))

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

    def read_tagged(self, key: str, length: int | None = None) -> tuple[bytes, str]:
        """The object (its first `length` bytes, all of a shorter one) and its ETag, from one GET (so the two always
        belong together)."""
        from minio.error import S3Error

        def get() -> tuple[bytes, str]:
            try:
                response = self.client.get_object(self.bucket, self._name(key), length=length)
            except S3Error as e:
                if e.code == "NoSuchKey":
                    raise KeyError(key) from None
                if e.code == "InvalidRange":  # a range of an empty object
                    return b"", ""
                raise
            try:
                return response.read(), response.headers.get("ETag", "")
            finally:
                response.close()
                response.release_conn()

        return self._call(f"read {key}", get)

    def read_aged(self, key: str) -> tuple[bytes, str, float]:
        """The object, its ETag, and how many seconds ago it was written by the store's own clock: the answer's
        Date against the object's Last-Modified, from one GET. Both count whole seconds, so this is the age less
        one second (never more than the real one)."""
        from email.utils import parsedate_to_datetime

        from minio.error import S3Error

        def get() -> tuple[bytes, str, float]:
            try:
                response = self.client.get_object(self.bucket, self._name(key))
            except S3Error as e:
                if e.code == "NoSuchKey":
                    raise KeyError(key) from None
                raise
            try:
                data, headers = response.read(), response.headers
            finally:
                response.close()
                response.release_conn()
            if not headers.get("Last-Modified"):  # every S3 GET has one; without it no lease could ever expire
                raise UserError(f"store {self.uri} at {self.endpoint} answered a read of {key} without "
                                "Last-Modified: it is not an S3-compatible server")
            written = parsedate_to_datetime(headers["Last-Modified"]).timestamp()
            now = parsedate_to_datetime(headers["Date"]).timestamp() if headers.get("Date") else time.time()
            return data, headers.get("ETag", ""), max(0.0, now - written - 1)

        return self._call(f"read {key}", get)

    def read_bytes(self, key: str) -> bytes:
        return self.read_tagged(key)[0]

    def write_bytes(self, key: str, data: bytes) -> None:
        # An S3 PUT is atomic: readers see the old object or the whole new one, never a part.
        self._call(f"write {key}", lambda: self.client.put_object(self.bucket, self._name(key), io.BytesIO(data),
                                                                 len(data)))

    def write_if(self, key: str, data: bytes, tag: str | None) -> str:
        """Create `key` (tag None: If-None-Match: *) or replace it if its ETag is still `tag` (If-Match); returns the
        new ETag. minio 7.2 has no public parameter for these headers (`put_object`'s metadata turns them into
        x-amz-meta-*), so this goes through the client's own signed request, `_execute`, with explicit headers: one
        PUT of the whole body, signed and region-resolved exactly like the public calls."""
        headers = {"Content-Type": "application/octet-stream", **({"If-None-Match": "*"} if tag is None
                                                                  else {"If-Match": tag})}
        try:
            tag = self._call(f"write {key}", lambda: self._conditional("PUT", key, data, headers)).headers.get("ETag")
            if tag:
                return tag
        except PreconditionFailed:
            pass
        # A retried PUT whose first attempt landed (its answer lost) fails its own precondition: ours if the bytes
        # are ours (they hold the writer's token and time, so no other writer's are equal). The read also gives the
        # ETag of a server that answered a PUT without one.
        try:
            current, current_tag = self.read_tagged(key)
        except KeyError:
            raise PreconditionFailed(key) from None
        if current != data:
            raise PreconditionFailed(key)
        return current_tag

    def delete_if(self, key: str, tag: str) -> None:
        self._call(f"delete {key}", lambda: self._conditional("DELETE", key, None, {"If-Match": tag}))

    def _conditional(self, method: str, key: str, body: bytes | None, headers: dict):
        from minio.error import S3Error

        try:
            return self.client._execute(method, self.bucket, self._name(key), body=body,  # noqa: SLF001 (write_if)
                                        headers=headers)
        except S3Error as e:
            if e.code == "NoSuchKey":  # If-Match on an object that is gone: not the one we expected either
                raise PreconditionFailed(key) from None
            raise

    def clean_temporaries(self, prefix: str, older_than: float) -> int:
        """Abort the multipart uploads that killed writers left under `prefix` (their parts cost storage and no
        listing shows them); returns how many."""
        from datetime import datetime, timezone

        name = self._name(prefix.rstrip("/")) + "/"
        result = self._call(f"list uploads {prefix}", lambda: self.client._list_multipart_uploads(  # noqa: SLF001
            self.bucket, prefix=name, max_uploads=1000))
        cutoff, removed = time.time() - older_than, 0
        for upload in result.uploads:
            started = upload.initiated_time or datetime.now(timezone.utc)
            if started.timestamp() < cutoff:
                self._call(f"abort upload {upload.object_name}", lambda u=upload: self.client._abort_multipart_upload(
                    self.bucket, u.object_name, u.upload_id))  # noqa: SLF001
                removed += 1
        return removed

    def list(self, prefix: str) -> list[str]:
        start = len(self.prefix) + 1 if self.prefix else 0
        objects = self._call(f"list {prefix}", lambda: list(
            self.client.list_objects(self.bucket, prefix=self._name(prefix.rstrip("/")) + "/", recursive=True)))
        return sorted(o.object_name[start:] for o in objects)

    def top_level(self) -> tuple[list[str], list[str]]:
        """Names of the folders and of the objects right under the prefix: one listing with a delimiter, not every
        key below."""
        base = f"{self.prefix}/" if self.prefix else ""
        objects = self._call("list folders", lambda: list(self.client.list_objects(self.bucket, prefix=base)))
        names = [(o.object_name[len(base):].rstrip("/"), o.is_dir) for o in objects]
        return sorted(n for n, is_dir in names if is_dir), sorted(n for n, is_dir in names if not is_dir)

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", lambda: self.client.remove_object(self.bucket, self._name(key)))

    def ensure_ready(self, create: bool = False) -> None:
        exists = self._call("check bucket", lambda: self.client.bucket_exists(self.bucket))
        if not exists:
            if not create:
                raise UserError(f"bucket {self.bucket!r} does not exist at {self.endpoint}: "
                                f"run {command('acgan', 'prepare', '--store', self.uri)} first, or create the bucket")
            self._call("create bucket", lambda: self.client.make_bucket(self.bucket))
