"""Result files on disk, addressed by job id and file name, written atomically.

A reader never sees a half-written file: each write goes to a temporary name in the same
directory and is renamed into place. Names coming from URLs are checked before touching the
filesystem, so `../` or absolute paths cannot escape the store.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import uuid
from pathlib import Path

from pixmill.core.errors import NotFoundError

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def new_job_id() -> str:
    return uuid.uuid4().hex


class ResultStore:
    """Results of finished calls under `<root>/<jobId>/<filename>`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def save(self, job_id: str, filename: str, data: bytes) -> Path:
        target = self._path(job_id, filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def path(self, job_id: str, filename: str) -> Path:
        """The stored file's path; 404 `FILE_NOT_FOUND` if absent or the name is not valid."""
        target = self._path(job_id, filename)
        if not target.is_file():
            raise NotFoundError("no such result file", code="FILE_NOT_FOUND")
        return target

    def purge_older_than(self, seconds: float) -> int:
        """Delete job folders whose files are all older than `seconds`; return how many."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - seconds
        removed = 0
        for job_dir in self.root.iterdir():
            if not job_dir.is_dir() or not _JOB_ID.match(job_dir.name):
                continue
            try:
                files = list(job_dir.iterdir())
                if all(f.stat().st_mtime < cutoff for f in files):
                    for f in files:
                        f.unlink(missing_ok=True)
                    job_dir.rmdir()
                    removed += 1
            except OSError:  # another process purged or wrote it meanwhile: leave it be
                continue
        return removed

    def _path(self, job_id: str, filename: str) -> Path:
        if not _JOB_ID.match(job_id) or not _FILENAME.match(filename) or ".." in filename:
            raise NotFoundError("no such result file", code="FILE_NOT_FOUND")
        return self.root / job_id / filename
