"""pixmill: a self-hosted, plugin-based image tool server.

The plugin API, where plugin authors look first::

    from pixmill import hookimpl, Tool, Extractor, Source, Settings, ImageResult
"""

from pixmill.core.contracts import (
    Context,
    Extractor,
    FileInput,
    FileResult,
    ImageResult,
    InputFile,
    Inputs,
    OutputKind,
    Source,
    SourcedImage,
    Tool,
)
from pixmill.core.errors import PixmillError, SettingsError
from pixmill.core.hookspecs import hookimpl
from pixmill.core.settings import Color, Settings, parse_color

__version__ = "0.1.0"
PLUGIN_API_VERSION = 1

__all__ = [
    "PLUGIN_API_VERSION",
    "Color",
    "Context",
    "Extractor",
    "FileInput",
    "FileResult",
    "ImageResult",
    "InputFile",
    "Inputs",
    "OutputKind",
    "PixmillError",
    "Settings",
    "SettingsError",
    "Source",
    "SourcedImage",
    "Tool",
    "__version__",
    "hookimpl",
    "parse_color",
]
