"""A plugin whose only hook has a typo in its name: it would silently provide nothing."""

from __future__ import annotations

from typing import Any

from pixmill import hookimpl


@hookimpl
def pixmill_toolz() -> list[Any]:
    return []
