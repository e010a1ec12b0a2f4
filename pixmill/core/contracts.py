"""The plugin contracts: what a tool, a source and an extractor declare, and what they receive.

Everything a plugin author touches is here (and re-exported from `pixmill`):

- `Tool(id=..., settings=..., run=...)`: `run(ctx, inputs, settings)` returns an `ImageResult`,
  a `FileResult` or (for `output=OutputKind.JSON`) a JSON-able dict.
- `Extractor(id=..., settings=..., extract=...)`: `extract(ctx, image, settings)` returns a dict.
- `Source(id=..., settings=..., fetch=...)`: `fetch(ctx, settings)` yields `SourcedImage`s.
- `Context`: progress, cancellation, logger, temp dir, model cache.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from marshmallow import Schema
from PIL import Image

from pixmill.core.errors import BadRequestError, CancelledError, UnsupportedFormatError
from pixmill.core.imageio import (
    ImageFormat,
    ImageHeader,
    ImageLimits,
    decode_opened,
    header_of,
    iter_frames,
    open_image,
    open_lazily,
    sniff_document,
    sniff_format,
)

ID_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# URL sections of the seed API: `/api/v1/tools/<section>/<id>` (pdf-to-image lives under pdf).
SECTIONS = ("image", "pdf")


class OutputKind(StrEnum):
    IMAGE = "image"
    IMAGES = "images"
    JSON = "json"
    # A file that is not an image (ZIP, PDF, SVG): a `FileResult` in a document format.
    FILE = "file"


class PluginKind(StrEnum):
    TOOL = "tool"
    SOURCE = "source"
    EXTRACTOR = "extractor"


@dataclass(frozen=True)
class FileInput:
    """A file part a tool takes: `file` (the main one), or named extras such as `watermark`."""

    name: str = "file"
    description: str = "the image to process"
    multiple: bool = False
    required: bool = True
    # Document formats this part takes besides images: ("pdf",) for pdf-to-image, ("svg",) for
    # svg-to-raster. Such a file's `format` is the document format; it is never decoded by
    # the core, the tool parses it.
    documents: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tool:
    id: str
    name: str
    description: str
    settings: type[Schema]
    run: Callable[[Context, Inputs, dict[str, Any]], Any]
    section: str = "image"
    inputs: tuple[FileInput, ...] = (FileInput(),)
    output: OutputKind = OutputKind.IMAGE
    # How the work runs (see "Run policy" in docs/plugins/reference.md): heavy work is
    # always queued, on `queue`; `timeout` (seconds) and `max_attempts` override the defaults;
    # `cacheable=False` for output that is not a function of inputs and settings alone.
    heavy: bool = False
    queue: str = "default"
    timeout: float | None = None
    max_attempts: int | None = None
    cacheable: bool = True
    version: str = "1"
    example: Mapping[str, Any] = field(default_factory=dict)
    # Where it answers under /api/v1/tools/<section>/: its id, or `<tool-id>/<action>` for a
    # sub-route of another tool (edit-metadata/inspect).
    route: str | None = None
    # Optional dependencies: importable module names, and the pip requirement that brings them.
    # A tool whose modules are missing is listed as unavailable with that install command.
    requires: tuple[str, ...] = ()
    install: str | None = None
    kind: PluginKind = field(default=PluginKind.TOOL, init=False)


@dataclass(frozen=True)
class Extractor:
    id: str
    name: str
    description: str
    settings: type[Schema]
    extract: Callable[[Context, InputFile, dict[str, Any]], Mapping[str, Any]]
    output_schema: type[Schema] | None = None
    section: str = "image"
    # The run policy, as for tools (model-backed extractors such as OCR are heavy, on "ai").
    heavy: bool = False
    queue: str = "default"
    timeout: float | None = None
    max_attempts: int | None = None
    cacheable: bool = True
    version: str = "1"
    example: Mapping[str, Any] = field(default_factory=dict)
    route: str | None = None  # as for tools
    requires: tuple[str, ...] = ()
    install: str | None = None
    kind: PluginKind = field(default=PluginKind.EXTRACTOR, init=False)


@dataclass(frozen=True)
class Source:
    id: str
    name: str
    description: str
    settings: type[Schema]
    fetch: Callable[[Context, dict[str, Any]], Iterable[SourcedImage]]
    version: str = "1"
    example: Mapping[str, Any] = field(default_factory=dict)
    kind: PluginKind = field(default=PluginKind.SOURCE, init=False)


Definition = Tool | Extractor | Source


@dataclass
class SourcedImage:
    """One image a source brought in, with where it came from."""

    data: bytes
    filename: str
    url: str | None = None
    author: str | None = None
    license: str | None = None
    tags: tuple[str, ...] = ()


@dataclass
class ImageResult:
    """A decoded result the core encodes: `format=None` keeps the input's format.

    `frames` (after `image`) and `durations` make it an animation.
    """

    image: Image.Image
    format: str | None = None
    quality: int | None = None
    keep_metadata: bool = True
    frames: list[Image.Image] | None = None
    durations: list[int] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # JSON-able facts about the result (compare's similarity score), returned as `meta`.
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileResult:
    """An already encoded result: an image (compress searches over encodings) or, for tools
    declared `output=OutputKind.FILE`, a document (`zip`, `pdf`, `svg`, `json`).

    `filename` (a stem, no extension) names the download; by default the input's stem.
    """

    data: bytes
    format: str
    filename: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class InputFile:
    """One uploaded file: its bytes, name and sniffed format, and safe ways to decode it."""

    def __init__(
        self,
        data: bytes,
        filename: str,
        limits: ImageLimits,
        documents: tuple[str, ...] = (),
    ) -> None:
        self.data = data
        self.filename = filename or "image"
        self.limits = limits
        self.documents = documents
        self._format: ImageFormat | None = None
        self._header: ImageHeader | None = None
        self._opened: Image.Image | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def format(self) -> ImageFormat:
        """The format its magic bytes say it is (415 `UNSUPPORTED_FORMAT` when none allowed)."""
        if self._format is None:
            try:
                self._format = sniff_format(self.data)
            except UnsupportedFormatError as error:
                document = sniff_document(self.data, self.documents)
                if document is None and self.documents:
                    raise UnsupportedFormatError(
                        f"{error.message}; this part also takes {', '.join(self.documents)}",
                        details={**error.details, "documents": list(self.documents)},
                    ) from None
                if document is None:
                    raise
                self._format = document
        return self._format

    @property
    def stem(self) -> str:
        stem = Path(self.filename).stem
        return stem or "image"

    def open(self, *, draft_size: tuple[int, int] | None = None) -> Image.Image:
        """Decode a still image, upright, optionally at reduced JPEG scale (>= `draft_size`)."""
        if self._opened is not None:
            # The header was read already: decode that parse instead of checking and parsing
            # the whole file a second time (an opened image can be decoded only once).
            opened, self._opened = self._opened, None
            return decode_opened(opened, draft_size=draft_size)
        return open_image(self.data, self.limits, draft_size=draft_size)

    def open_first_frame(self) -> Image.Image:
        """Decode the first frame even when the input is animated (for readers, not writers)."""
        return open_image(self.data, self.limits, allow_animation=True)

    @property
    def header(self) -> ImageHeader:
        """Upright width/height, frame count and mode, read without decoding pixels."""
        if self._header is None:
            self._opened = open_lazily(self.data, self.limits)
            self._header = header_of(self._opened)
        return self._header

    @property
    def is_animated(self) -> bool:
        return self.header.frames > 1

    def frames(self) -> Iterator[tuple[Image.Image, int]]:
        """Every frame with its duration in ms (a still image yields one frame)."""
        return iter_frames(self.data, self.limits)


class Inputs(Mapping[str, Any]):
    """The files of one call by input name: an `InputFile`, or a list for `multiple` inputs."""

    def __init__(self, files: Mapping[str, InputFile | list[InputFile]]) -> None:
        self._files = dict(files)

    def __getitem__(self, name: str) -> Any:
        return self._files[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    @property
    def file(self) -> InputFile:
        value = self._files.get("file")
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None:
            raise BadRequestError("a file is required", code="MISSING_FILE")
        return value


class ModelCache:
    """Expensive per-process state (ONNX sessions, fonts, lookup tables) kept warm across calls."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        if key not in self._items:
            self._items[key] = load()
        return self._items[key]

    def __contains__(self, key: str) -> bool:
        return key in self._items


ProgressCallback = Callable[[float, str | None], None]


class Context:
    """What a running plugin gets from the host besides its inputs and settings."""

    def __init__(
        self,
        *,
        plugin_id: str,
        limits: ImageLimits,
        models: ModelCache | None = None,
        on_progress: ProgressCallback | None = None,
        is_cancelled: Callable[[], bool] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self.limits = limits
        self.logger = logging.getLogger(f"pixmill.plugin.{plugin_id}")
        self.config: Mapping[str, Any] = config or {}
        self._models = models if models is not None else ModelCache()
        self._on_progress = on_progress
        self._is_cancelled = is_cancelled
        self._tmp_dir: Path | None = None

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress in [0, 1]; heavy work should call this as it goes."""
        if self._on_progress is not None:
            self._on_progress(min(1.0, max(0.0, fraction)), message)

    def check_cancelled(self) -> None:
        """Raise `CancelledError` if the caller gave up; call it between expensive steps."""
        if self._is_cancelled is not None and self._is_cancelled():
            raise CancelledError("the job was cancelled")

    @property
    def tmp_dir(self) -> Path:
        """A private temporary directory, removed when the call ends."""
        if self._tmp_dir is None:
            self._tmp_dir = Path(tempfile.mkdtemp(prefix=f"pixmill-{self.plugin_id}-"))
        return self._tmp_dir

    def load_model(self, key: str, load: Callable[[], Any]) -> Any:
        """Return the cached object for `key`, calling `load()` only the first time."""
        return self._models.get(key, load)

    def input_file(self, data: bytes, filename: str = "image") -> InputFile:
        """Wrap bytes (e.g. a fetched or generated image) as an input with this call's limits."""
        return InputFile(data, filename, self.limits)

    def close(self) -> None:
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None
