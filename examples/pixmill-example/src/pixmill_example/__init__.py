"""pixmill-example: a third-party pixmill plugin with one tool, one source and one extractor.

pixmill loads this module through the `pixmill` entry point declared in pyproject.toml and
calls the three hooks below; each returns the definitions this package provides. Only the
public API (`from pixmill import ...`) is used, so the plugin keeps working across pixmill
releases that keep `pixmill.PLUGIN_API_VERSION`.
"""

from __future__ import annotations

from pixmill import Extractor, Source, Tool, hookimpl
from pixmill_example.brightness import BRIGHTNESS_STATS
from pixmill_example.checkerboard import CHECKERBOARD
from pixmill_example.posterize import POSTERIZE

__version__ = "1.0.0"

# The plugin API this package is written for (`pixmill.PLUGIN_API_VERSION`). A pixmill with a
# different API refuses the whole plugin with a message naming the version it needs, instead
# of loading half of it.
PIXMILL_PLUGIN_API = 1

__all__ = ["BRIGHTNESS_STATS", "CHECKERBOARD", "PIXMILL_PLUGIN_API", "POSTERIZE", "__version__"]


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [POSTERIZE]


@hookimpl
def pixmill_sources() -> list[Source]:
    return [CHECKERBOARD]


@hookimpl
def pixmill_extractors() -> list[Extractor]:
    return [BRIGHTNESS_STATS]
