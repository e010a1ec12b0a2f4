"""Blob storage for job uploads and results: one interface, a local-directory implementation.

Keys are structured, never user paths. A `BlobKey` names an area (`uploads` or `results`), a
job id (32 hex digits), for results the attempt that wrote it (1, 2, ...), and a safe file
name; each part is checked against a strict pattern before any filesystem call, so `..`,
separators, absolute paths, NUL bytes or overlong names cannot reach `open()`. On disk:

    uploads/<jobId>/<filename>
    results/<jobId>/<attempt>/<filename>
    results/<jobId>/.promoted          (the attempt whose results are the job's outputs)

Writes are atomic: the bytes go to a temporary dot-file in the target's directory, are
fsynced, then `os.replace`d over the target, and the directory is fsynced. A reader sees
the old file or the new one, never a mix; a write that fails (the source raises, the disk
fills) removes its temporary file and leaves any previous content untouched. A process
killed mid-write can leave a `.tmp-*` file behind; it is never listed and the purge
removes it with its folder.

Retries. Results are keyed by job id and attempt, so a retried job writes into a fresh
folder and never mixes with what an earlier attempt (perhaps still running on a worker
that was presumed dead) wrote. When the job layer commits the outcome it calls
`promote(job_id, attempt)`: that records the winning attempt, deletes every other
attempt's results, and makes any later result write of another attempt fail with
`StaleAttemptError`, so a zombie attempt finishing late can never add a duplicate output.
The SQL job row stays the truth about which blobs are outputs; promotion only enforces it.

Concurrency across processes uses `flock` on the job folder itself: writers hold it
shared, `promote`, `delete_job` and the purge hold it exclusively. The purge never waits:
a job being written is skipped until the next run. A folder is deleted by first renaming
it to a `.trash-*` name under the lock (so writers that arrive later build a fresh folder)
and then removing it. Symlinks are never followed: a symlink where a folder or file
should be is refused for reads and writes, and deleting or purging removes the link
itself, never what it points to.

This module must never import `pixmill.server`, `pixmill.cli` or `pixmill.plugins`.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from pixmill.core.errors import ConflictError, NotFoundError, PixmillError

Area = Literal["uploads", "results"]
AREAS: tuple[Area, ...] = ("uploads", "results")

_JOB_ID = re.compile(r"[0-9a-f]{32}")
# A leading letter or digit keeps names apart from our own dot-files (temporaries, marker).
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_ATTEMPT_DIR = re.compile(r"[1-9][0-9]{0,8}")
MAX_ATTEMPT = 999_999_999  # nine digits: matches `_ATTEMPT_DIR`
_PROMOTED = ".promoted"
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_CHUNK = 1024 * 1024
_LOCK_RETRIES = 100  # a writer that loses this many races in a row to purges gives up


class InvalidBlobKeyError(NotFoundError, ValueError):
    """A key component failed its pattern.

    A `NotFoundError` (404 `FILE_NOT_FOUND`) so a hostile name in a download URL looks
    exactly like a missing file; a `ValueError` so internal callers can treat it as the
    programming error it is there.
    """

    code = "FILE_NOT_FOUND"


class StaleAttemptError(ConflictError):
    """A result write or promotion for an attempt that is not (or no longer) the job's."""

    code = "STALE_ATTEMPT"


class BlobStoreError(PixmillError):
    """The store's layout was tampered with (a symlink where a folder should be) or the
    folder kept vanishing under a writer."""

    code = "BLOB_STORE_ERROR"


def _not_found() -> NotFoundError:
    return NotFoundError("no such file", code="FILE_NOT_FOUND")


def is_valid_job_id(value: object) -> bool:
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


def is_valid_filename(value: object) -> bool:
    return isinstance(value, str) and _FILENAME.fullmatch(value) is not None and ".." not in value


def _check_job_id(job_id: object) -> str:
    if not is_valid_job_id(job_id):
        raise InvalidBlobKeyError("no such file: bad job id", details={"part": "jobId"})
    assert isinstance(job_id, str)
    return job_id


def safe_filename(name: str, fallback: str = "file") -> str:
    """A user-supplied file name turned into one `BlobKey` accepts (for uploads).

    Keeps the last path segment, replaces anything outside `[A-Za-z0-9._-]` with `_`,
    collapses dot runs, and trims to 200 characters keeping the extension. `fallback`
    (which must itself be safe) is used when nothing usable is left.
    """
    base = re.split(r"[\\/]", name)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", base)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).lstrip("._-")
    if len(cleaned) > 200:
        stem, dot, ext = cleaned.rpartition(".")
        ext = ext[:20] if dot and stem else ""
        cleaned = cleaned[: 200 - len(ext) - 1] + "." + ext if ext else cleaned[:200]
    if not is_valid_filename(cleaned):
        if not is_valid_filename(fallback):
            raise ValueError(f"fallback {fallback!r} is not a safe file name")
        return fallback
    return cleaned


@dataclass(frozen=True, order=True)
class BlobKey:
    """Where a blob lives: area, job, attempt (results only; 0 for uploads) and name.

    Construction validates every part and raises `InvalidBlobKeyError` on a bad one.
    """

    area: Area
    job_id: str
    attempt: int
    filename: str

    def __post_init__(self) -> None:
        if self.area not in AREAS:
            raise InvalidBlobKeyError("no such file: bad area", details={"part": "area"})
        _check_job_id(self.job_id)
        attempt_ok = type(self.attempt) is int and (
            self.attempt == 0 if self.area == "uploads" else 1 <= self.attempt <= MAX_ATTEMPT
        )
        if not attempt_ok:
            raise InvalidBlobKeyError("no such file: bad attempt", details={"part": "attempt"})
        if not is_valid_filename(self.filename):
            raise InvalidBlobKeyError("no such file: bad file name", details={"part": "filename"})

    @classmethod
    def upload(cls, job_id: str, filename: str) -> BlobKey:
        return cls("uploads", job_id, 0, filename)

    @classmethod
    def result(cls, job_id: str, attempt: int, filename: str) -> BlobKey:
        return cls("results", job_id, attempt, filename)

    @classmethod
    def parse(cls, value: str) -> BlobKey:
        """The key whose `relative_path` is `value` (as stored in a job row's refs)."""
        parts = value.split("/") if isinstance(value, str) else []
        if len(parts) == 3 and parts[0] == "uploads":
            return cls.upload(parts[1], parts[2])
        if len(parts) == 4 and parts[0] == "results" and parts[2].isdigit():
            return cls.result(parts[1], int(parts[2]), parts[3])
        raise InvalidBlobKeyError("no such file: bad key", details={"part": "key"})

    @property
    def dir_parts(self) -> tuple[str, ...]:
        """The folder holding the blob, relative to the store's root, as path parts."""
        if self.area == "uploads":
            return ("uploads", self.job_id)
        return ("results", self.job_id, str(self.attempt))

    @property
    def relative_path(self) -> str:
        """`uploads/<jobId>/<filename>` or `results/<jobId>/<attempt>/<filename>`."""
        return "/".join((*self.dir_parts, self.filename))


@dataclass(frozen=True)
class BlobRef:
    """What a write stored: the key, its size in bytes and its SHA-256 (hex)."""

    key: BlobKey
    size: int
    sha256: str


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class BlobStore(abc.ABC):
    """Uploads and results of jobs. Implementations: `LocalBlobStore` (S3 later)."""

    @abc.abstractmethod
    def put(self, key: BlobKey, data: bytes | Readable) -> BlobRef:
        """Store `data` under `key` atomically, replacing what was there."""

    @abc.abstractmethod
    def open(self, key: BlobKey) -> BinaryIO:
        """A binary stream of the blob; `NotFoundError` FILE_NOT_FOUND when absent."""

    @abc.abstractmethod
    def exists(self, key: BlobKey) -> bool: ...

    @abc.abstractmethod
    def size(self, key: BlobKey) -> int:
        """The blob's size in bytes; `NotFoundError` FILE_NOT_FOUND when absent."""

    @abc.abstractmethod
    def delete(self, key: BlobKey) -> bool:
        """Remove one blob; False when it was not there."""

    @abc.abstractmethod
    def delete_job(self, job_id: str) -> bool:
        """Remove every upload and every attempt's results of a job; False if none."""

    @abc.abstractmethod
    def list_job(self, job_id: str) -> list[BlobKey]:
        """Every blob of a job (all areas, all attempts), sorted."""

    @abc.abstractmethod
    def promote(self, job_id: str, attempt: int) -> int:
        """Make `attempt` the job's only results; return how many other attempts were removed."""

    @abc.abstractmethod
    def promoted_attempt(self, job_id: str) -> int | None: ...

    @abc.abstractmethod
    def purge_older_than(self, seconds: float) -> int:
        """Delete job folders untouched for `seconds`; return how many were removed."""


class LocalBlobStore(BlobStore):
    """Blobs in a directory tree under `root` (normally `<data_dir>/blobs`)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------------------

    def _job_dir(self, area: Area, job_id: str) -> Path:
        return self.root / area / job_id

    def _dir_of(self, key: BlobKey) -> Path:
        return self.root.joinpath(*key.dir_parts)

    def _open_dir(self, *parts: str) -> int | None:
        """A descriptor of `root/parts...` reached without following any symlink below the
        root, or None when a part is missing, not a folder, or a symlink."""
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        for part in parts:
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return None
                raise
            os.close(fd)
            fd = child
        return fd

    def _stat_file(self, key: BlobKey) -> os.stat_result:
        """The key's file status if it is a regular file reached without any symlink."""
        dir_fd = self._open_dir(*key.dir_parts)
        if dir_fd is None:
            raise _not_found()
        try:
            st = os.stat(key.filename, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise _not_found() from None
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_found()
        return st

    def _make_dirs(self, directory: Path) -> None:
        """Create `directory` below the root one level at a time, refusing symlinks."""
        self.root.mkdir(parents=True, exist_ok=True)
        current = self.root
        for part in directory.relative_to(self.root).parts:
            current = current / part
            with contextlib.suppress(FileExistsError):
                os.mkdir(current, 0o755)
            mode = os.lstat(current).st_mode
            if not stat.S_ISDIR(mode):
                raise BlobStoreError(f"not a real folder inside the blob store: {current}")

    # -- locking -------------------------------------------------------------------------

    def _lock_dir(self, directory: Path, operation: int) -> int | None:
        """Open and flock `directory`; None if it is absent, or busy under LOCK_NB.

        After locking, the folder must still be the one at `directory`: a purge or
        delete may have renamed it away while we waited, and locking a folder that is
        about to be removed would be useless.
        """
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise BlobStoreError(
                    f"not a real folder inside the blob store: {directory}"
                ) from None
            raise
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(directory))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)  # closing drops the lock
            return None
        return fd

    @contextlib.contextmanager
    def _locked(self, job_dir: Path, operation: int) -> Iterator[None]:
        """Hold `job_dir` locked, creating it (again) if a purge removed it meanwhile."""
        for _ in range(_LOCK_RETRIES):
            try:
                self._make_dirs(job_dir)
            except FileNotFoundError:  # renamed away between our mkdir and lstat
                continue
            fd = self._lock_dir(job_dir, operation)
            if fd is not None:
                try:
                    yield
                finally:
                    os.close(fd)
                return
        raise BlobStoreError(f"job folder keeps disappearing: {job_dir}")

    def _remove_tree(self, path: Path, parent: Path) -> None:
        """Rename `path` (locked by the caller) out of the way, then delete the copy."""
        trash = parent / f"{_TRASH_PREFIX}{path.name}-{uuid.uuid4().hex}"
        os.rename(path, trash)
        # rmtree works through file descriptors and unlinks symlinks without following.
        shutil.rmtree(trash, ignore_errors=True)

    # -- blobs ---------------------------------------------------------------------------

    def put(self, key: BlobKey, data: bytes | Readable) -> BlobRef:
        with self._locked(self._job_dir(key.area, key.job_id), fcntl.LOCK_SH):
            if key.area == "results":
                promoted = self._read_promoted(key.job_id)
                if promoted is not None and promoted != key.attempt:
                    raise StaleAttemptError(
                        f"attempt {promoted} of job {key.job_id} is final; "
                        f"attempt {key.attempt} may not add results",
                        details={"promoted": promoted, "attempt": key.attempt},
                    )
            directory = self._dir_of(key)
            self._make_dirs(directory)
            return self._write_atomically(key, directory, data)

    def _write_atomically(self, key: BlobKey, directory: Path, data: bytes | Readable) -> BlobRef:
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                if isinstance(data, bytes | bytearray | memoryview):
                    chunk = bytes(data)
                    digest.update(chunk)
                    handle.write(chunk)
                    size = len(chunk)
                else:
                    while chunk := data.read(_CHUNK):
                        digest.update(chunk)
                        handle.write(chunk)
                        size += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, 0o644)  # mkstemp's 0600 would hide results from a web user
            os.replace(tmp_name, directory / key.filename)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(directory)
        return BlobRef(key=key, size=size, sha256=digest.hexdigest())

    def open(self, key: BlobKey) -> BinaryIO:
        dir_fd = self._open_dir(*key.dir_parts)
        if dir_fd is None:
            raise _not_found()
        try:
            fd = os.open(key.filename, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP):
                raise _not_found() from None
            raise
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _not_found()
        return os.fdopen(fd, "rb")

    def path(self, key: BlobKey) -> Path:
        """The blob's local path (for `send_file`); `NotFoundError` FILE_NOT_FOUND if absent."""
        self._stat_file(key)
        return self._dir_of(key) / key.filename

    def exists(self, key: BlobKey) -> bool:
        try:
            self._stat_file(key)
        except NotFoundError:
            return False
        return True

    def size(self, key: BlobKey) -> int:
        return self._stat_file(key).st_size

    def delete(self, key: BlobKey) -> bool:
        dir_fd = self._open_dir(*key.dir_parts)
        if dir_fd is None:  # absent, or behind a symlink we will not follow
            return False
        try:
            os.unlink(key.filename, dir_fd=dir_fd)  # a symlink here is removed, not followed
        except FileNotFoundError:
            return False
        finally:
            os.close(dir_fd)
        return True

    # -- jobs ----------------------------------------------------------------------------

    def delete_job(self, job_id: str) -> bool:
        _check_job_id(job_id)
        removed = False
        for area in AREAS:
            area_fd = self._open_dir(area)
            if area_fd is None:
                continue
            try:
                st = os.stat(job_id, dir_fd=area_fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(job_id, dir_fd=area_fd)  # a planted link: drop it, not its target
                    removed = True
                    continue
            except FileNotFoundError:
                continue
            finally:
                os.close(area_fd)
            area_dir = self.root / area
            fd = self._lock_dir(area_dir / job_id, fcntl.LOCK_EX)
            if fd is None:  # another delete or purge got there first
                continue
            try:
                self._remove_tree(area_dir / job_id, area_dir)
                removed = True
            finally:
                os.close(fd)
        return removed

    def list_job(self, job_id: str) -> list[BlobKey]:
        _check_job_id(job_id)
        keys = [
            BlobKey.upload(job_id, name)
            for name in self._names("uploads", job_id, files=True)
            if is_valid_filename(name)
        ]
        for attempt_name in self._names("results", job_id, files=False):
            if not _ATTEMPT_DIR.fullmatch(attempt_name):
                continue
            for name in self._names("results", job_id, attempt_name, files=True):
                if is_valid_filename(name):
                    keys.append(BlobKey.result(job_id, int(attempt_name), name))
        return sorted(keys)

    def _names(self, *parts: str, files: bool) -> list[str]:
        """Names of the regular files (or real folders) in `root/parts...`, links skipped."""
        fd = self._open_dir(*parts)
        if fd is None:
            return []
        try:
            with os.scandir(fd) as entries:
                if files:
                    return [e.name for e in entries if e.is_file(follow_symlinks=False)]
                return [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        finally:
            os.close(fd)

    def promoted_attempt(self, job_id: str) -> int | None:
        return self._read_promoted(_check_job_id(job_id))

    def promote(self, job_id: str, attempt: int) -> int:
        """Record `attempt` as final, delete other attempts' results, refuse their writes.

        Idempotent for the same attempt; a different attempt after one was promoted is a
        `StaleAttemptError` (the job layer decides once which attempt won).
        """
        BlobKey.result(job_id, attempt, "x")  # validates job id and attempt
        job_dir = self._job_dir("results", job_id)
        with self._locked(job_dir, fcntl.LOCK_EX):
            current = self._read_promoted(job_id)
            if current is not None and current != attempt:
                raise StaleAttemptError(
                    f"attempt {current} of job {job_id} is already final",
                    details={"promoted": current, "attempt": attempt},
                )
            removed = 0
            for entry in list(os.scandir(job_dir)):
                if entry.name.startswith(_TMP_PREFIX) and entry.is_file(follow_symlinks=False):
                    # A marker write cut short by a kill: no writer runs under this lock.
                    os.unlink(entry.path)
                    continue
                if entry.name == str(attempt) or not _ATTEMPT_DIR.fullmatch(entry.name):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    self._remove_tree(Path(entry.path), job_dir)
                else:
                    os.unlink(entry.path)  # a link or stray file: never followed
                removed += 1
            # The marker last: a promotion cut short by a kill leaves no marker (and the
            # reconciler promotes again), never a marker next to a loser's files.
            if current is None:
                _write_small_file(job_dir / _PROMOTED, f"{attempt}\n".encode())
            return removed

    def _read_promoted(self, job_id: str) -> int | None:
        dir_fd = self._open_dir("results", job_id)
        if dir_fd is None:
            return None
        try:
            fd = os.open(_PROMOTED, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        finally:
            os.close(dir_fd)
        with os.fdopen(fd, "rb") as handle:
            text = handle.read(32).decode("ascii", "replace").strip()
        if not _ATTEMPT_DIR.fullmatch(text):
            raise BlobStoreError(f"unreadable promotion marker for job {job_id}")
        return int(text)

    # -- expiry --------------------------------------------------------------------------

    def purge_older_than(self, seconds: float) -> int:
        """Delete job folders (any area) whose newest entry is older than `seconds`.

        Never blocks: a folder a writer holds is skipped. Safe to run in several processes
        at once. Symlinks are judged by their own age and removed, never followed. Also
        clears `.trash-*` leftovers of a purge that was killed halfway.
        """
        cutoff = time.time() - seconds
        removed = 0
        for area in AREAS:
            area_dir = self.root / area
            try:
                if not stat.S_ISDIR(os.lstat(area_dir).st_mode):
                    continue
                entries = list(os.scandir(area_dir))
            except FileNotFoundError:
                continue
            for entry in entries:
                is_trash = entry.name.startswith(_TRASH_PREFIX)
                if not (is_trash or _JOB_ID.fullmatch(entry.name)):
                    continue
                try:
                    if entry.is_symlink():
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)  # the link itself, never its target
                            removed += not is_trash
                    elif not entry.is_dir(follow_symlinks=False):
                        continue
                    elif is_trash:  # left by a purge or delete that was killed halfway
                        if _newest_mtime(Path(entry.path)) < cutoff:
                            shutil.rmtree(entry.path, ignore_errors=True)
                    elif self._purge_job_dir(Path(entry.path), area_dir, cutoff):
                        removed += 1
                except FileNotFoundError:  # a concurrent purge or delete took it
                    continue
                except BlobStoreError:  # swapped for a symlink under our feet: leave it
                    continue
        return removed

    def _purge_job_dir(self, job_dir: Path, area_dir: Path, cutoff: float) -> bool:
        if _newest_mtime(job_dir) >= cutoff:
            return False
        fd = self._lock_dir(job_dir, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if fd is None:  # being written, or already purged by someone else
            return False
        try:
            # Checked again under the lock: a write may have landed since the first look.
            if _newest_mtime(job_dir) >= cutoff:
                return False
            self._remove_tree(job_dir, area_dir)
            return True
        finally:
            os.close(fd)


def _newest_mtime(path: Path) -> float:
    """The newest mtime of `path` and everything below it, never following symlinks."""
    top = os.lstat(path)
    newest = top.st_mtime
    if not stat.S_ISDIR(top.st_mode):
        return newest
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            newest = max(newest, st.st_mtime)
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))
    return newest


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; some filesystems cannot fsync a folder, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_small_file(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
