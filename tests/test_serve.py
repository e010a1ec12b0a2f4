"""The production runner's own choices (the server itself is tested in test_server_live.py)."""

from __future__ import annotations

import sys

import pytest

from pixmill.server.serve import keep_freed_memory_for_reuse


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_malloc_tuning_applies_on_glibc() -> None:
    assert keep_freed_memory_for_reuse() is True
