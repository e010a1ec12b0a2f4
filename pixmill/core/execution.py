"""Running a tool or extractor once: settings first, then inputs, then the plugin, then encoding.

This is the one execution path: the REST API, the CLI, and (later) the workers all call
`execute`. Plugin failures come back as `PixmillError`s; an unexpected exception inside a
plugin becomes `ToolFailedError` with the plugin's message, never a crashed process.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pixmill.core.catalogue import check_available
from pixmill.core.contracts import (
    Context,
    Extractor,
    FileResult,
    ImageResult,
    InputFile,
    Inputs,
    ModelCache,
    OutputKind,
    ProgressCallback,
    Source,
    SourcedImage,
    Tool,
)
from pixmill.core.errors import (
    PLUGIN_CONTRACT_VIOLATION,
    BadRequestError,
    PixmillError,
    ToolFailedError,
)
from pixmill.core.imageio import (
    DOCUMENT_FORMATS,
    ImageFormat,
    ImageLimits,
    encode_image,
    format_by_name,
    result_format_by_name,
    sniff_format,
)
from pixmill.core.plugin_host import traced
from pixmill.core.settings import validate_settings

log = logging.getLogger(__name__)

UploadedFile = tuple[bytes, str]  # (content, client filename)

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Outcome:
    """What one run produced: encoded bytes with their format, or a JSON object."""

    kind: OutputKind
    data: bytes | None = None
    format: ImageFormat | None = None
    filename: str | None = None
    json: Mapping[str, Any] | None = None
    input_size: int = 0
    # Facts a tool reported about its result (ImageResult.meta / FileResult.meta).
    meta: Mapping[str, Any] | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else 0


def safe_stem(name: str, fallback: str = "image") -> str:
    """A filename stem that is safe in a URL and on any filesystem."""
    stem = name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem.strip(".") else stem
    stem = _UNSAFE_NAME.sub("-", stem).strip("-.")[:100]
    return stem or fallback


def build_inputs(
    definition: Tool | Extractor,
    files: Mapping[str, Sequence[UploadedFile]],
    limits: ImageLimits,
) -> Inputs:
    """Match uploaded parts to the definition's declared inputs; refuse missing or extra ones."""
    declared = definition.inputs if isinstance(definition, Tool) else Tool.inputs
    names = {spec.name for spec in declared}
    extra = sorted(str(name) for name in set(files) - names)
    if extra:
        raise BadRequestError(
            f"unexpected file part(s) {', '.join(extra)}; {definition.id} takes "
            f"{', '.join(sorted(names))}",
            code="UNEXPECTED_FILE",
            details={"unexpected": extra, "accepted": sorted(names)},
        )
    result: dict[str, InputFile | list[InputFile]] = {}
    for spec in declared:
        uploads = list(files.get(spec.name, ()))
        if not uploads:
            if spec.required:
                raise BadRequestError(
                    f"missing file part {spec.name!r} ({spec.description})",
                    code="MISSING_FILE",
                    details={"field": spec.name},
                )
            continue
        if len(uploads) > 1 and not spec.multiple:
            raise BadRequestError(
                f"file part {spec.name!r} takes one file, got {len(uploads)}",
                code="TOO_MANY_FILES",
                details={"field": spec.name},
            )
        wrapped = [InputFile(data, filename, limits, spec.documents) for data, filename in uploads]
        for item in wrapped:
            item.format  # noqa: B018 - sniff now: a non-image is refused before any work
        result[spec.name] = wrapped if spec.multiple else wrapped[0]
    return Inputs(result)


def execute(
    definition: Tool | Extractor,
    files: Mapping[str, Sequence[UploadedFile]],
    raw_settings: Mapping[str, Any] | None,
    *,
    limits: ImageLimits,
    config: Mapping[str, Any] | None = None,
    models: ModelCache | None = None,
    on_progress: ProgressCallback | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> Outcome:
    """Validate, run and encode one call of a tool or extractor."""
    check_available(definition)
    settings = validate_settings(definition.settings, raw_settings)
    inputs = build_inputs(definition, files, limits)
    ctx = Context(
        plugin_id=definition.id,
        limits=limits,
        models=models,
        on_progress=on_progress,
        is_cancelled=is_cancelled,
        config=config,
    )
    main = inputs.get("file")
    main_file: InputFile | None = (main[0] if main else None) if isinstance(main, list) else main
    input_size = sum(
        item.size
        for value in inputs.values()
        for item in (value if isinstance(value, list) else [value])
    )
    try:
        if isinstance(definition, Extractor):
            assert main_file is not None
            data = _call(
                definition.id, definition.extract, ctx, main_file, settings, action="extract"
            )
            return Outcome(
                OutputKind.JSON, json=_as_json(definition.id, data), input_size=input_size
            )
        produced = _call(definition.id, definition.run, ctx, inputs, settings, action="run")
        return _to_outcome(definition, produced, main_file, input_size)
    finally:
        ctx.close()


def _call(plugin_id: str, fn: Callable[..., Any], *args: Any, action: str = "") -> Any:
    # `PIXMILL_TRACE_PLUGINS=1` logs each plugin call with its duration (see plugin_host).
    try:
        with traced(f"{action or getattr(fn, '__name__', 'call')} of {plugin_id}"):
            return fn(*args)
    except PixmillError:
        raise
    except MemoryError as exc:
        raise ToolFailedError(f"{plugin_id} ran out of memory", code="OUT_OF_MEMORY") from exc
    except Exception as exc:
        log.exception("plugin %s raised", plugin_id)
        raise ToolFailedError(
            f"{plugin_id} failed: {type(exc).__name__}: {exc}",
            details={"tool": plugin_id, "exception": type(exc).__name__},
        ) from exc


def _as_json(plugin_id: str, data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ToolFailedError(
            f"{plugin_id} returned {type(data).__name__}, not a JSON object",
            code=PLUGIN_CONTRACT_VIOLATION,
        )
    return data


def _to_outcome(tool: Tool, produced: Any, main_file: InputFile | None, input_size: int) -> Outcome:
    stem = safe_stem(main_file.filename) if main_file is not None else tool.id
    if tool.output is OutputKind.JSON:
        return Outcome(OutputKind.JSON, json=_as_json(tool.id, produced), input_size=input_size)
    if isinstance(produced, ImageResult):
        fmt = _result_format(produced.format, main_file)
        data = _call(
            tool.id,
            lambda: encode_image(
                produced.image,
                fmt,
                quality=produced.quality,
                keep_metadata=produced.keep_metadata,
                frames=produced.frames,
                durations=produced.durations,
                **produced.options,
            ),
            action="encode",
        )
    elif isinstance(produced, FileResult):
        try:
            fmt = result_format_by_name(produced.format)
        except PixmillError:
            raise ToolFailedError(
                f"{tool.id} returned a FileResult in unknown format {produced.format!r}",
                code=PLUGIN_CONTRACT_VIOLATION,
            ) from None
        if (fmt.name in DOCUMENT_FORMATS) != (tool.output is OutputKind.FILE):
            raise ToolFailedError(
                f"{tool.id} returned a {fmt.name} file but declares output={tool.output.value!r}"
                " (documents need output=OutputKind.FILE, images the default)",
                code=PLUGIN_CONTRACT_VIOLATION,
            )
        data = produced.data
        if produced.filename:
            stem = safe_stem(produced.filename, stem)
    else:
        raise ToolFailedError(
            f"{tool.id} returned {type(produced).__name__}; image tools return an ImageResult "
            "or a FileResult",
            code=PLUGIN_CONTRACT_VIOLATION,
        )
    return Outcome(
        OutputKind.FILE if fmt.name in DOCUMENT_FORMATS else OutputKind.IMAGE,
        data=data,
        format=fmt,
        filename=f"{stem}.{fmt.extension}",
        input_size=input_size,
        meta=_as_json(tool.id, produced.meta) if produced.meta else None,
    )


def _result_format(requested: str | None, main_file: InputFile | None) -> ImageFormat:
    if requested:
        return format_by_name(requested)
    if main_file is None:
        return format_by_name("png")
    return main_file.format


@dataclass
class FetchedImage:
    """One image a source produced, already checked to be a readable image of allowed format."""

    data: bytes
    filename: str
    format: ImageFormat
    url: str | None
    author: str | None
    license: str | None
    tags: tuple[str, ...]

    def provenance(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "format": self.format.name,
            "size": len(self.data),
            "url": self.url,
            "author": self.author,
            "license": self.license,
            "tags": list(self.tags),
        }


def fetch(
    source: Source,
    raw_settings: Mapping[str, Any] | None,
    *,
    limits: ImageLimits,
    config: Mapping[str, Any] | None = None,
    models: ModelCache | None = None,
    on_progress: ProgressCallback | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> list[FetchedImage]:
    """Validate settings, run a source, and check that each image it yields is a real image."""
    settings = validate_settings(source.settings, raw_settings)
    ctx = Context(
        plugin_id=source.id,
        limits=limits,
        models=models,
        on_progress=on_progress,
        is_cancelled=is_cancelled,
        config=config,
    )
    try:
        produced = _call(source.id, lambda: list(source.fetch(ctx, settings)), action="fetch")
    finally:
        ctx.close()
    fetched = []
    seen: set[str] = set()
    for item in produced:
        if not isinstance(item, SourcedImage):
            raise ToolFailedError(
                f"{source.id} yielded {type(item).__name__}, not SourcedImage",
                code=PLUGIN_CONTRACT_VIOLATION,
            )
        fmt = sniff_format(item.data)
        name = f"{safe_stem(item.filename, source.id)}.{fmt.extension}"
        stem, n = name, 1
        while name in seen:  # two outputs never share a name
            n += 1
            name = f"{stem.rsplit('.', 1)[0]}-{n}.{fmt.extension}"
        seen.add(name)
        fetched.append(
            FetchedImage(item.data, name, fmt, item.url, item.author, item.license, item.tags)
        )
    return fetched
