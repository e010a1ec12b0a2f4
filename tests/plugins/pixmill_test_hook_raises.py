"""A plugin whose tools hook raises; its sources hook still works."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pixmill import Context, Settings, Source, SourcedImage, hookimpl


def fetch(ctx: Context, settings: dict[str, Any]) -> Iterator[SourcedImage]:
    return iter(())


@hookimpl
def pixmill_tools() -> list[Any]:
    raise ValueError("the tools hook fails on purpose")


@hookimpl
def pixmill_sources() -> list[Source]:
    return [
        Source(
            id="test-empty-source", name="Empty", description="d", settings=Settings, fetch=fetch
        )
    ]
