"""Built-in `local-folder` source: images from a folder on the server, inside one root.

The operator chooses the root (`PIXMILL_LOCAL_FOLDER_ROOT`); callers name a folder relative to
it. Nothing outside the root is ever read: absolute paths and `..` are refused, and every file
is resolved (symlinks followed) and checked to still lie inside the root before it is opened.
Written exactly as a third-party plugin would be.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from marshmallow import fields, validate

from pixmill import Context, PixmillError, Settings, Source, SourcedImage, hookimpl
from pixmill.core.errors import BadRequestError, NotFoundError
from pixmill.core.imageio import sniff_format

ROOT_VARIABLE = "PIXMILL_LOCAL_FOLDER_ROOT"
MAX_LIMIT = 1000
DEFAULT_MAX_FILE_BYTES = 100 * 1024 * 1024
SNIFF_BYTES = 32
# Opening a FIFO for reading would block until a writer shows up; a symlink swapped in after
# the check must not be followed.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)


class LocalFolderSettings(Settings):
    path = fields.String(
        load_default=".",
        validate=validate.Length(min=1, max=1024),
        metadata={"description": "folder to read, relative to the configured root"},
    )
    pattern = fields.String(
        load_default="*",
        validate=[
            validate.Length(min=1, max=256),
            validate.Regexp(
                r"^[^/\\]+$", error="a pattern matches file names; put folders in path"
            ),
        ],
        metadata={
            "description": "glob matched against each file name, case-insensitively "
            "(e.g. *.jpg, IMG_*)"
        },
    )
    recursive = fields.Boolean(
        load_default=False,
        metadata={
            "description": "also read sub-folders (symlinked folders are not followed); "
            "order: a folder's files by name, then its sub-folders by name"
        },
    )
    limit = fields.Integer(
        load_default=100,
        validate=validate.Range(1, MAX_LIMIT),
        metadata={"description": "most images to return"},
    )


def _root(ctx: Context) -> Path:
    configured = ctx.config.get("local_folder_root")
    if not configured:
        raise BadRequestError(
            f"the local-folder source is not configured: set {ROOT_VARIABLE} to the folder "
            "it may read",
            code="SOURCE_NOT_CONFIGURED",
        )
    root = Path(configured).expanduser().resolve()
    if not root.is_dir():
        # The operator's path stays out of the message: callers need not learn the layout.
        raise BadRequestError(
            f"{ROOT_VARIABLE} does not point to an existing folder",
            code="SOURCE_NOT_CONFIGURED",
        )
    return root


def _outside(path: str, reason: str) -> BadRequestError:
    return BadRequestError(
        f"path {path!r} {reason}; give a folder relative to the local folder root",
        code="PATH_OUTSIDE_ROOT",
        details={"path": path},
    )


def _folder(root: Path, path: str) -> Path:
    """The folder `path` names under `root`, refused if it is, or leads, anywhere else."""
    if "\x00" in path:
        raise _outside(path, "contains a NUL character")
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).anchor:
        raise _outside(path, "is absolute")
    if ".." in PureWindowsPath(path).parts:  # splits on both / and \
        raise _outside(path, "goes up with '..'")
    folder = root / path
    if not folder.resolve().is_relative_to(root):
        raise _outside(path, "leads outside the root through a symbolic link")
    if not folder.exists():
        raise NotFoundError(
            f"no folder {path!r} under the local folder root",
            code="FOLDER_NOT_FOUND",
            details={"path": path},
        )
    if not folder.is_dir():
        raise BadRequestError(
            f"{path!r} is a file, not a folder", code="NOT_A_FOLDER", details={"path": path}
        )
    return folder


def _candidates(folder: Path, pattern: str, recursive: bool) -> Iterator[Path]:
    """Matching entries, a folder's files by name before its sub-folders by name."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError:
        return
    wanted = pattern.lower()
    subfolders = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            subfolders.append(entry)
        elif fnmatchcase(entry.name.lower(), wanted):
            yield Path(entry.path)
    if recursive:
        for entry in subfolders:
            yield from _candidates(Path(entry.path), pattern, recursive)


class _Skip(Exception):
    """A file that is not served, and why (counted, logged, never fatal)."""


def _read_image(path: Path, root: Path, max_bytes: int) -> bytes:
    real = path.resolve()
    if not real.is_relative_to(root):
        raise _Skip("outside root")
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError as exc:
        raise _Skip("unreadable") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _Skip("not a file")
        if info.st_size > max_bytes:
            raise _Skip("too large")
        head = handle.read(SNIFF_BYTES)
        try:
            sniff_format(head)
        except PixmillError as exc:
            raise _Skip("not an image") from exc
        # Read one byte past the cap so a file that grew since fstat is caught, not truncated.
        data = head + handle.read(max_bytes + 1 - len(head))
    if len(data) > max_bytes:
        raise _Skip("too large")
    return data


def fetch_local(ctx: Context, settings: dict[str, Any]) -> Iterator[SourcedImage]:
    root = _root(ctx)
    folder = _folder(root, settings["path"])
    limit = settings["limit"]
    max_bytes = int(ctx.config.get("max_upload_bytes") or DEFAULT_MAX_FILE_BYTES)
    skipped: dict[str, int] = {}
    found = 0
    for candidate in _candidates(folder, settings["pattern"], settings["recursive"]):
        ctx.check_cancelled()
        try:
            data = _read_image(candidate, root, max_bytes)
        except _Skip as skip:
            skipped[str(skip)] = skipped.get(str(skip), 0) + 1
            continue
        relative = candidate.relative_to(root).as_posix()
        found += 1
        yield SourcedImage(data=data, filename=candidate.name, tags=(f"path:{relative}",))
        ctx.progress(found / limit, f"read {found} image(s)")
        if found >= limit:
            break
    if skipped:
        ctx.logger.info(
            "local-folder skipped %s",
            ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())),
        )


@hookimpl
def pixmill_sources() -> list[Source]:
    return [
        Source(
            id="local-folder",
            name="Local Folder",
            description=f"Read images from a folder under the server's {ROOT_VARIABLE}; files "
            "that are not images (by content) are skipped. Each image is tagged with its "
            "path relative to the root.",
            settings=LocalFolderSettings,
            fetch=fetch_local,
            example={"path": "photos", "pattern": "*.jpg", "recursive": True, "limit": 50},
        ),
    ]
