"""Where everything of an experiment lives: a local directory (the embedded default) or an S3 bucket prefix.

`open_store(uri)` is the one place that decides local versus remote. Keys are '/'-separated and relative to the
store's root. S3 settings come from the environment (read here and nowhere else):
  ACGAN_S3_ENDPOINT   http(s)://host:port of MinIO, SeaweedFS or any S3 endpoint (scheme sets TLS on/off)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION (optional)
  ACGAN_S3_RETRY_SECONDS  how long a call retries a transient failure (default 300: a store pod rescheduled)
  SSL_CERT_FILE       a PEM file of the CAs an https endpoint's certificate is verified with (OpenSSL's and Python's
                      standard variable, which minio's own client reads too); unset: the system's bundle
A data source's bucket (`open_store(uri, source=True)`) is read with the same, unless it is elsewhere:
  ACGAN_SOURCE_S3_ENDPOINT, ACGAN_SOURCE_AWS_ACCESS_KEY_ID, ACGAN_SOURCE_AWS_SECRET_ACCESS_KEY, ACGAN_SOURCE_AWS_REGION

Besides plain reads and writes, a store offers conditional ones (`write_if`, `delete_if`): create only if absent,
replace or delete only if unchanged since read (S3's If-None-Match / If-Match on the ETag). The split lease and the
checkpoint marker are written with them, so two writers can never both win. A local store is a directory
(acgan/store/local.py); an S3 one is a bucket prefix through the minio client, with retries (acgan/store/s3.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import TypeVar
from urllib.parse import urlparse

from pydantic import BaseModel, ValidationError

from acgan.errors import UserError, first_problem
from acgan.store.contract import PreconditionFailed, StoreUnavailable, check_key
from acgan.store.local import LocalStore
from acgan.store.s3 import S3Store
from acgan.uri import check_uri, redact

__all__ = ["CHECKSUM", "LocalStore", "PreconditionFailed", "S3Store", "Store", "StoreUnavailable", "check_key",
           "open_store", "read_json", "read_model", "write_json"]
M = TypeVar("M", bound=BaseModel)
Store = LocalStore | S3Store


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name, str(default))
    if not re.fullmatch(r"\d{1,7}(\.\d{1,3})?", value):
        raise UserError(f"{name}={value!r} is not a number of seconds (e.g. 300)")
    return float(value)


def open_store(uri: str, source: bool = False) -> Store:
    """The one function that decides local versus remote storage. A data source's (`source`) takes the names others
    gave its objects (`check_source_key`), and is read from its own endpoint where ACGAN_SOURCE_S3_ENDPOINT is set: a
    source needs only read access."""
    check_uri(uri, "store")
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise UserError(f"store {uri!r} names no bucket: use s3://BUCKET[/PREFIX]")
        elsewhere = source and os.environ.get("ACGAN_SOURCE_S3_ENDPOINT")
        endpoint, env = (elsewhere, "ACGAN_SOURCE_") if elsewhere else (os.environ.get("ACGAN_S3_ENDPOINT"), "")
        if not endpoint:
            raise UserError("ACGAN_S3_ENDPOINT is not set: export it as http(s)://host:port of the S3/MinIO server")
        return S3Store(parsed.netloc, parsed.path, endpoint, os.environ.get(f"{env}AWS_ACCESS_KEY_ID"),
                       os.environ.get(f"{env}AWS_SECRET_ACCESS_KEY"), os.environ.get(f"{env}AWS_REGION"),
                       _env_seconds("ACGAN_S3_RETRY_SECONDS", 300), source, os.environ.get("SSL_CERT_FILE") or None)
    if "://" in uri and not uri.startswith("file://"):
        raise UserError(f"store {redact(uri)!r}: use a local directory or s3://BUCKET/PREFIX")
    return LocalStore(uri.removeprefix("file://"))


CHECKSUM = "checksum"  # in a checksummed JSON object: "sha256:" + the hex digest of the rest, written canonically


def _canonical(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def read_json(store: Store, key: str, checksum: bool = False) -> dict:
    """A JSON object of the store. With `checksum`, for what `write_json(..., checksum=True)` wrote, its checksum is
    verified and the object returned without it; a missing one is refused as damage, like a wrong one."""
    try:
        obj = json.loads(store.read_bytes(key))
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, a number past Python's 4300 digits, too deep
        raise UserError(f"{store.uri}/{key} is not valid JSON ({str(e)[:120]}); the object is corrupt") from None
    if checksum:
        recorded = obj.pop(CHECKSUM, None) if isinstance(obj, dict) else None
        if recorded != "sha256:" + hashlib.sha256(_canonical(obj)).hexdigest():
            problem = "the contents do not match it" if recorded is not None else "missing"
            raise UserError(f"{store.uri}/{key}: {CHECKSUM}: {problem}; the object is damaged (restore it from a "
                            "copy, or start a new store)")
    return obj


def read_model(store: Store, key: str, model: type[M], fix: str, checksum: bool = False) -> M:
    """The JSON object `key` validated as `model`. A value that does not validate is one line naming the object, the
    field and `fix`: the value came from the store, not the command line, so no flag is to blame."""
    try:
        return model.model_validate(read_json(store, key, checksum))
    except ValidationError as e:
        where, message = first_problem(e)
        raise UserError(f"{store.uri}/{key}: {where or 'its contents'}: {message}; {fix}") from None


def write_json(store: Store, key: str, obj: dict, checksum: bool = False) -> None:
    """Write `obj` as JSON; with `checksum`, a sha256 of its canonical form goes in with it, in the same atomic
    write (for what training trusts: a flipped byte inside a number would still parse)."""
    if checksum:
        obj = {**obj, CHECKSUM: "sha256:" + hashlib.sha256(_canonical(obj)).hexdigest()}
    store.write_bytes(key, _canonical(obj))
