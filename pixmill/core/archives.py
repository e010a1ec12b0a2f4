"""Deterministic ZIP archives for tools that return several files (split, favicon, …).

Every member carries one fixed timestamp and mode, so the same input and settings give the
same bytes: results stay reusable by content and conformance's determinism check holds.
Already compressed data (images, PDFs) is stored; text-like members are deflated.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable

# The earliest time a ZIP can record: no member ever says when it was made.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
DEFLATED_SUFFIXES = (
    ".json", ".txt", ".html", ".css", ".svg", ".webmanifest", ".bmp", ".tif", ".tiff",
)  # fmt: skip


def zip_archive(members: Iterable[tuple[str, bytes | str]]) -> bytes:
    """A ZIP of (name, data) members in the given order (text is written as UTF-8)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            packed = name.lower().endswith(DEFLATED_SUFFIXES)
            info.compress_type = zipfile.ZIP_DEFLATED if packed else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `stem-2.ext`, `stem-3.ext` … if taken (case-insensitively); records it."""
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    candidate, counter = name, 1
    while candidate.lower() in taken:
        counter += 1
        candidate = f"{stem}-{counter}{dot}{extension}"
    taken.add(candidate.lower())
    return candidate
