"""A store in a local directory (the embedded default; a mounted volume on Kubernetes)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
import uuid
from pathlib import Path

from acgan.errors import UserError, command
from acgan.store.contract import PreconditionFailed, check_key, content_tag


class LocalStore:
    """A directory. Writes go to a temporary file and are renamed into place, so no reader sees half an object."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextlib.contextmanager
    def _file_system(self, doing: str, path: Path):
        """An OSError of the volume (full, read-only, another user's) as one line naming the path, the cause and the
        fix; an absent file or a name taken first stay the answers the callers handle."""
        try:
            yield
        except (FileNotFoundError, FileExistsError):
            raise
        except OSError as e:
            fix = {errno.ENOSPC: "free space on its volume, or give it a larger one",
                   errno.EDQUOT: "raise this user's quota on its volume, or free space",
                   errno.EROFS: "the volume is mounted read-only: remount it read-write, or use another --store",
                   errno.EACCES: f"this user (uid {os.getuid()}) has no access: make the store its own (on "
                                 "Kubernetes: the pod's fsGroup), or use another --store"}
            raise UserError(f"store {self.uri}: cannot {doing} {path} ({e.strerror or e}): "
                            f"{fix.get(e.errno, 'check the volume')}") from None

    def exists(self, key: str) -> bool:
        path = self._path(key)
        with self._file_system("read", path):
            return path.is_file()

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with self._file_system("read", path):
                return path.read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def _temporary(self, path: Path, data: bytes) -> Path:
        """A hidden file beside `path` holding `data`; unique per write, as a renewal thread writes beside training.
        A write that fails (a full volume) removes its temporary, which would hold space no listing shows."""
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        with self._file_system("write", path):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return tmp

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.replace(self._temporary(path, data), path)

    @contextlib.contextmanager
    def _locked(self, path: Path):
        """An exclusive flock on the folder holding `path`: compare-and-swap among processes of this host, leaving
        no lock file in the store."""
        with self._file_system("write", path):
            path.parent.mkdir(parents=True, exist_ok=True)
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            with self._file_system("write", path):
                yield
        finally:
            os.close(folder)

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """The object and a tag that changes whenever it does (its sha256, as an ETag is its MD5)."""
        data = self.read_bytes(key)
        return data, content_tag(data)

    def read_aged(self, key: str) -> tuple[bytes, str, float]:
        """The object, its tag, and how many seconds ago it was written by the store's own clock: its mtime against
        that of a file made now beside it, both stamped by the filesystem (this machine's kernel, or the file
        server), never this process's clock, which may be off (misset, or faked: libfaketime leaves stat alone)."""
        path = self._path(key)
        try:
            with self._file_system("read", path), open(path, "rb") as f:  # one file's contents and mtime, even if
                data, written = f.read(), os.fstat(f.fileno()).st_mtime  # it is replaced meanwhile
        except FileNotFoundError:
            raise KeyError(key) from None
        try:
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.now-") as probe:
                now = os.fstat(probe.fileno()).st_mtime
        except OSError:  # a read-only store: this machine's clock is the next best
            now = time.time()
        return data, content_tag(data), max(0.0, now - written)

    def write_if(self, key: str, data: bytes, tag: str | None) -> str:
        """Create `key` (tag None) or replace it if its tag is still `tag`; returns the new tag. A create is a hard
        link of a complete temporary file, which fails if the name exists: atomic without any lock."""
        path = self._path(key)
        tmp = self._temporary(path, data)
        try:
            if tag is None:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise PreconditionFailed(key) from None
            else:
                with self._locked(path):
                    if not path.is_file() or content_tag(path.read_bytes()) != tag:
                        raise PreconditionFailed(key)
                    os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return content_tag(data)

    def delete_if(self, key: str, tag: str) -> None:
        path = self._path(key)
        with self._locked(path):
            if not path.is_file() or content_tag(path.read_bytes()) != tag:
                raise PreconditionFailed(key)
            path.unlink()

    def clean_temporaries(self, prefix: str, older_than: float) -> int:
        """Delete the hidden temporaries that killed writes left under `prefix`; returns how many."""
        base, cutoff, removed = self.root / prefix, time.time() - older_than, 0
        for p in base.rglob(".*.tmp-*") if base.is_dir() else []:
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed += 1
        return removed

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix` (a folder-like prefix ending in '/'), sorted; temporary files are not listed."""
        base = self.root / prefix
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if not k.rsplit("/", 1)[-1].startswith("."))

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._file_system("delete", path):
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
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"--store {self.uri} is a file, not a directory: give a directory (new or an existing "
                            "store) or s3://BUCKET/PREFIX")
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # a parent that is a file, no permission
                raise UserError(f"--store {self.uri}: cannot create the directory ({e.strerror})") from None
        elif not self.root.is_dir():
            raise UserError(f"store {self.uri} does not exist: check --store, or make one with "
                            f"{command('acgan', 'run', '--store', self.uri)}")
