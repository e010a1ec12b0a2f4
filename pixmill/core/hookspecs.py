"""The whole plugin API: every hook pixmill calls, each with what it must return.

A plugin is any module registered under the `pixmill` entry-point group that implements some
of these hooks with `@pixmill.hookimpl`. Built-in plugins use exactly the same path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pixmill.core.contracts import Extractor, Source, Tool

PROJECT_NAME = "pixmill"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def pixmill_tools() -> Sequence[Tool]:
    """Return the `Tool` definitions (file -> file transforms) this plugin provides."""
    raise NotImplementedError


@hookspec
def pixmill_sources() -> Sequence[Source]:
    """Return the `Source` definitions (things that bring images in) this plugin provides."""
    raise NotImplementedError


@hookspec
def pixmill_extractors() -> Sequence[Extractor]:
    """Return the `Extractor` definitions (image -> JSON readers) this plugin provides."""
    raise NotImplementedError
