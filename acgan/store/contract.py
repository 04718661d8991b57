"""What every store is held to, local or S3: the keys it takes, and what its conditional writes and its retries
raise."""

from __future__ import annotations

import hashlib
import re

from acgan.errors import UserError

_KEY = re.compile(r"^[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*$")


class PreconditionFailed(Exception):
    """A conditional write or delete found the object other than expected: another writer got there first."""


class StoreUnavailable(UserError):
    """The store kept failing transiently for the whole retry budget."""


def content_tag(data: bytes) -> str:
    """A local object's tag for conditional writes (S3's is its ETag)."""
    return hashlib.sha256(data).hexdigest()


def check_key(key: str) -> str:
    """Keys are relative paths of plain names: no '..', no absolute paths, no empty parts."""
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise UserError(f"invalid store key {key!r}: use relative '/'-separated names of letters, digits, '.', '_', '-'")
    return key


def check_source_key(key: str) -> str:
    """A data source's keys are names others chose (`cat/IMG 0001 (2).jpg`, unicode, '+'): any characters, but no
    '.', '..' or empty parts, which could name an object outside the source's prefix."""
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise UserError(f"invalid source key {key!r}: a '.', '..' or empty part could name an object outside the "
                        "source: rename the object, or leave its class out (--class-list)")
    return key
