"""The `pixmill` command line: list and describe plugins, run tools, extract, fetch, serve,
work the queue and look after its jobs.

Every command runs plugins through the same core path as the REST API (`execute`, `fetch`), so
a tool behaves identically here and over HTTP. Exit codes follow click's convention: 0 on
success, 1 when the work failed (a `PixmillError`, an unreadable file, any failed file of a
batch), 2 for a usage problem (unknown tool, bad `--set`, missing input file).

The server is imported only by `pixmill serve` and `pixmill jobs` (which reuses its job
helpers), so the other commands start without Flask.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import importlib.metadata
import json
import logging
import os
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from marshmallow import Schema, fields

from pixmill import __version__
from pixmill.core import defaults, installer, plugin_host
from pixmill.core.catalogue import (
    describe,
    inputs_of,
    install_command,
    missing_modules,
    output_kind,
)
from pixmill.core.config import Config
from pixmill.core.contracts import Extractor, OutputKind, Source, Tool
from pixmill.core.errors import PixmillError, SettingsError
from pixmill.core.execution import Outcome, UploadedFile, execute, fetch, safe_stem
from pixmill.core.plugin_host import Registry, load_registry
from pixmill.core.settings import parse_settings_json, to_json_schema, validate_settings

if TYPE_CHECKING:  # imported by the jobs commands when they run (see `# --- jobs`)
    from pixmill.core.blobs import BlobStore
    from pixmill.core.jobstore import JobPage
    from pixmill.core.models import Job
    from pixmill.server.jobs import ListingQuery
    from pixmill.server.state import AppState

STDIO = "-"
# The filename given to bytes read from stdin: only its stem ever shows (in output names).
STDIN_NAME = "image"
_GLOB_CHARS = re.compile(r"[*?[]")
# Where the command being run records the definition it works on, for error hints.
_DEFINITION_KEY = "pixmill.definition"
# Longer lists of allowed values go on their own line under the setting in `tools show`.
ALLOWED_COLUMN_WIDTH = 40

Definition = Tool | Extractor | Source


# --- errors --------------------------------------------------------------------------------


class PixmillGroup(click.Group):
    """The root group: turns a `PixmillError` from any command into a message and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PixmillError as exc:
            definition = ctx.meta.get(_DEFINITION_KEY)
            for line in error_lines(exc, definition):
                click.echo(line, err=True)
            raise click.exceptions.Exit(1) from None


def error_lines(exc: PixmillError, definition: Definition | None = None) -> list[str]:
    """`error: <message>`, then one line per bad setting with a hint where one helps."""
    bad_fields = exc.details.get("fields") if isinstance(exc, SettingsError) else None
    if not isinstance(bad_fields, Mapping) or not bad_fields:
        return [f"error: {exc.message}"]
    lines = ["error: invalid settings" + (f" for {definition.id}" if definition else "")]
    known = sorted(_wire_fields(definition.settings)) if definition else []
    for name, messages in bad_fields.items():
        text = "; ".join(_flatten_messages(messages))
        if text == "unknown field" and known:
            close = difflib.get_close_matches(name, known, n=3)
            text += f" (did you mean {' or '.join(close)}?)" if close else ""
        lines.append(f"  {name}: {text}")
    if definition is not None:
        lines.append(f"  `pixmill tools show {definition.id}` lists every setting")
    return lines


def _flatten_messages(messages: Any) -> list[str]:
    if isinstance(messages, Mapping):
        return [f"{key}: {m}" for key, value in messages.items() for m in _flatten_messages(value)]
    if isinstance(messages, list | tuple):
        return [m for item in messages for m in _flatten_messages(item)]
    return [str(messages)]


def warn(message: str) -> None:
    """A line on stderr that does not break a progress bar drawn on a terminal."""
    stream = sys.stderr
    prefix = "\r\x1b[K" if stream.isatty() else ""
    click.echo(prefix + message, err=True)


# --- configuration and registry --------------------------------------------------------------


def load_config(**overrides: Any) -> Config:
    """Defaults < `PIXMILL_*` environment < command-line flags; a bad variable is a usage error."""
    try:
        return Config.from_env(**overrides)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None


def load_quietly(config: Config) -> Registry:
    """Load the plugins `PIXMILL_LOAD_PLUGINS` allows, without the host's own log lines: the
    CLI reports plugin problems itself, once, in its own words."""
    host_log = logging.getLogger(plugin_host.__name__)
    silencer = logging.NullHandler()
    propagate = host_log.propagate
    host_log.addHandler(silencer)
    host_log.propagate = False
    try:
        return load_registry(config.load_plugins, plugins_dir=config.plugins_dir)
    finally:
        host_log.removeHandler(silencer)
        host_log.propagate = propagate


def load_checked_registry(config: Config) -> Registry:
    """The registry, with each plugin problem as one warning line: a broken plugin never stops
    the command unless the command needs exactly that plugin."""
    registry = load_quietly(config)
    for plugin_name, error in registry.errors:
        warn(f"warning: plugin {plugin_name}: {error}")
    missing = sorted(set(config.load_plugins or ()) - {info.name for info in registry.plugins})
    if missing:
        warn(
            f"warning: PIXMILL_LOAD_PLUGINS names {', '.join(missing)}, not installed; "
            "`pixmill plugins` lists the installed ones"
        )
    return registry


def _use_plugins_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """`--plugins-dir DIR` is `PIXMILL_PLUGINS_DIR=DIR`: set in the environment, so that every
    process the command starts (batch processes, `serve`'s web and queue workers) loads it."""
    if value is not None:
        os.environ["PIXMILL_PLUGINS_DIR"] = str(value.absolute())


plugins_dir_option = click.option(
    "--plugins-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    expose_value=False,
    is_eager=True,
    callback=_use_plugins_dir,
    help="Also load the plugin modules (*.py, packages) in this directory, unpackaged. "
    "[env PIXMILL_PLUGINS_DIR]",
)


def find_definition(registry: Registry, ident: str, command: str) -> Definition:
    """Look an id up among what `command` can run; an unknown id is a usage error (exit 2)."""
    runnable: dict[str, Definition]
    if command == "fetch":
        runnable = dict(registry.sources)
    elif command == "extract":
        runnable = dict(registry.extractors)
    elif command == "run":
        runnable = {**registry.tools, **registry.extractors}
    else:
        runnable = {**registry.tools, **registry.extractors, **registry.sources}
    if ident in runnable:
        return runnable[ident]
    everything: dict[str, Definition] = {
        **registry.sources,
        **registry.extractors,
        **registry.tools,
    }
    if ident in everything:
        other = everything[ident]
        verb = {Source: "fetch", Extractor: "extract", Tool: "run"}[type(other)]
        raise click.UsageError(
            f"{ident} is {_article(other.kind.value)} {other.kind.value}: use "
            f"`pixmill {verb} {ident} ...`"
        )
    noun = {"fetch": "source", "extract": "extractor", "run": "tool"}.get(command, "plugin id")
    close = difflib.get_close_matches(ident, sorted(runnable), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise click.UsageError(f"no {noun} {ident!r}{hint} (`pixmill tools` lists them)")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


# --- settings from the command line --------------------------------------------------------


def _wire_fields(schema_cls: type[Schema]) -> dict[str, fields.Field]:
    return {f.data_key or name: f for name, f in schema_cls().fields.items()}


_JSON_FIELDS = (fields.List, fields.Tuple, fields.Dict, fields.Nested, fields.Mapping)


_INTEGER_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")


def parse_settings(
    schema_cls: type[Schema], pairs: Sequence[str], settings_json: str | None = None
) -> dict[str, Any]:
    """Turn `--settings-json` and `--set key=value` pairs (later ones win) into raw settings.

    Values stay strings (the schema coerces floats and booleans) except integers, which the
    schema takes strictly;
    a value for a list or object field is JSON, and so is a `[`/`{` value for any other
    non-string field when it parses.
    `snake_case` keys are accepted for their camelCase wire names.
    """
    try:
        raw: dict[str, Any] = parse_settings_json(settings_json)
    except SettingsError as exc:
        raise click.BadParameter(exc.message, param_hint="--settings-json") from None
    by_wire = _wire_fields(schema_cls)
    by_attr = {name: f.data_key or name for name, f in schema_cls().fields.items()}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(
                f"expected key=value (e.g. --set width=800), got {pair!r}", param_hint="--set"
            )
        if key not in by_wire and key in by_attr:
            key = by_attr[key]
        field_obj = by_wire.get(key)
        looks_like_json = value.lstrip()[:1] in ("[", "{")
        if isinstance(field_obj, _JSON_FIELDS):
            try:
                raw[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise click.BadParameter(
                    f"{key}: {value!r} is not valid JSON ({exc.msg})", param_hint="--set"
                ) from None
        elif isinstance(field_obj, fields.Integer) and _INTEGER_TEXT.match(value):
            raw[key] = int(value)  # settings integers are strict: "800" is not 800 in JSON
        elif looks_like_json and not isinstance(field_obj, fields.String):
            try:
                raw[key] = json.loads(value)
            except json.JSONDecodeError:
                raw[key] = value  # the schema says what is wrong with it
        else:
            raw[key] = value
    return raw


# --- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputList:
    paths: list[str]
    from_pattern: bool  # a glob was given: the output is a directory even for one match


def expand_inputs(patterns: Sequence[str]) -> InputList:
    """Expand globs ourselves (a quoted `*.jpg`, or a shell that does not), check files exist.

    `-` is stdin and must come alone. Duplicates (a file named twice) are processed once.
    """
    if STDIO in patterns:
        if len(patterns) > 1:
            raise click.BadParameter(
                "'-' (stdin) cannot be mixed with other inputs", param_hint="INPUT"
            )
        return InputList([STDIO], False)
    paths: list[str] = []
    from_pattern = False
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if os.path.exists(expanded) or not _GLOB_CHARS.search(expanded):
            matches = [expanded]
        else:
            from_pattern = True
            matches = sorted(m for m in glob.glob(expanded, recursive=True) if os.path.isfile(m))
            if not matches:
                raise click.BadParameter(f"no file matches {pattern!r}", param_hint="INPUT")
        for path in matches:
            if os.path.isdir(path):
                raise click.BadParameter(
                    f"{path!r} is a directory; pass '{os.path.join(path, '*')}' to process its "
                    "files",
                    param_hint="INPUT",
                )
            if not os.path.exists(path):
                raise click.BadParameter(f"file {path!r} does not exist", param_hint="INPUT")
            paths.append(path)
    unique, seen = [], set()
    for path in paths:
        if os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            unique.append(path)
    return InputList(unique, from_pattern)


def read_input(path: str) -> bytes:
    if path == STDIO:
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise click.FileError(path, hint=exc.strerror or str(exc)) from None


def parse_extra_files(
    definition: Definition, pairs: Sequence[str]
) -> dict[str, list[UploadedFile]]:
    """`--file watermark=logo.png` pairs, read now: every file of a batch gets the same ones."""
    accepted = (
        {spec.name for spec in inputs_of(definition)} - {"file"}
        if not isinstance(definition, Source)
        else set()
    )
    extra: dict[str, list[UploadedFile]] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(
                f"expected name=path (e.g. --file watermark=logo.png), got {pair!r}",
                param_hint="--file",
            )
        if name not in accepted:
            takes = ", ".join(sorted(accepted)) or "no extra files"
            raise click.BadParameter(
                f"{definition.id} has no file input {name!r}; it takes {takes}",
                param_hint="--file",
            )
        if not os.path.isfile(path):
            raise click.BadParameter(f"file {path!r} does not exist", param_hint="--file")
        extra.setdefault(name, []).append((read_input(path), os.path.basename(path)))
    return extra


# --- running over files ----------------------------------------------------------------------


@dataclass
class FileOutcome:
    """The result of one input of a batch, as plain data (it crosses process boundaries)."""

    index: int
    path: str
    data: bytes | None = None
    extension: str | None = None
    json: Mapping[str, Any] | None = None
    input_size: int = 0
    error: str | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class FileRunner:
    """Runs one tool or extractor with fixed settings and extra files over input paths."""

    def __init__(
        self,
        registry: Registry,
        definition_id: str,
        raw_settings: Mapping[str, Any],
        extra_files: Mapping[str, list[UploadedFile]],
        config: Config,
    ) -> None:
        self.definition = registry.catalogue_entry(definition_id)
        self.raw_settings = dict(raw_settings)
        self.extra_files = dict(extra_files)
        self.config = config
        self.plugin_config = config.plugin_config()

    def execute(self, files: list[UploadedFile]) -> Outcome:
        """Run on these main files (one call); raises `PixmillError` on failure."""
        return execute(
            self.definition,
            {"file": files, **self.extra_files},
            self.raw_settings,
            limits=self.config.limits,
            config=self.plugin_config,
        )

    def execute_without_files(self) -> Outcome:
        """Run a tool that takes no main file (one call, extra files only)."""
        return execute(
            self.definition,
            dict(self.extra_files),
            self.raw_settings,
            limits=self.config.limits,
            config=self.plugin_config,
        )

    def run_one(self, index: int, path: str) -> FileOutcome:
        """Run on one file and report failure as data, so one bad file never stops a batch."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            return FileOutcome(index, path, error=f"cannot read: {exc.strerror or exc}")
        try:
            outcome = self.execute([(data, os.path.basename(path))])
        except PixmillError as exc:
            return FileOutcome(index, path, input_size=len(data), error=exc.message, code=exc.code)
        except Exception as exc:  # a bug outside any plugin: still only this file's failure
            return FileOutcome(
                index, path, input_size=len(data), error=f"{type(exc).__name__}: {exc}"
            )
        return FileOutcome(
            index,
            path,
            data=outcome.data,
            extension=outcome.format.extension if outcome.format else None,
            json=outcome.json,
            input_size=len(data),
        )


# One runner per worker process, built once by the pool's initializer: the registry (imports,
# fonts, model caches) is loaded once per process, not once per file.
_process_runner: FileRunner | None = None


def _init_worker(
    definition_id: str,
    raw_settings: Mapping[str, Any],
    extra_files: Mapping[str, list[UploadedFile]],
    config: Config,
) -> None:
    global _process_runner
    registry = load_quietly(config)  # the parent has already warned about broken plugins
    _process_runner = FileRunner(registry, definition_id, raw_settings, extra_files, config)


def _run_in_worker(index: int, path: str) -> FileOutcome:
    assert _process_runner is not None, "the pool initializer did not run"
    return _process_runner.run_one(index, path)


def run_batch(
    runner: FileRunner, paths: Sequence[str], jobs: int, *, quiet: bool
) -> Iterator[FileOutcome]:
    """Yield each file's outcome as it completes, over `jobs` processes, with a progress bar."""
    jobs = max(1, min(jobs, len(paths)))
    bar = click.progressbar(
        length=len(paths),
        label=runner.definition.id,
        file=sys.stderr,
        hidden=quiet,
    )
    with bar:
        if jobs == 1:
            for index, path in enumerate(paths):
                yield runner.run_one(index, path)
                bar.update(1)
            return
        executor = ProcessPoolExecutor(
            max_workers=jobs,
            initializer=_init_worker,
            initargs=(
                runner.definition.id,
                runner.raw_settings,
                runner.extra_files,
                runner.config,
            ),
        )
        try:
            futures = {
                executor.submit(_run_in_worker, index, path): (index, path)
                for index, path in enumerate(paths)
            }
            for future in as_completed(futures):
                try:
                    yield future.result()
                except Exception as exc:  # the worker process died (killed, out of memory)
                    index, path = futures[future]
                    yield FileOutcome(index, path, error=f"worker failed: {exc!r}")
                bar.update(1)
        finally:
            # On Ctrl-C or an early exit, do not wait for files nobody will collect.
            executor.shutdown(wait=True, cancel_futures=True)


def unique_stems(paths: Sequence[str]) -> list[str]:
    """One output stem per input, de-duplicated in input order (case-insensitively, for the
    filesystems that fold case): a/photo.jpg and b/photo.jpg become photo and photo-2."""
    seen: set[str] = set()
    stems = []
    for path in paths:
        base = safe_stem(os.path.basename(path))
        stem, n = base, 1
        while stem.lower() in seen:
            n += 1
            stem = f"{base}-{n}"
        seen.add(stem.lower())
        stems.append(stem)
    return stems


def write_atomically(path: Path, data: bytes) -> None:
    """Write so that an interrupted run never leaves a truncated image under the final name."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise click.FileError(str(path), hint=exc.strerror or str(exc)) from None


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024 or unit == "MB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def dump_json(value: Any, *, lines: bool = False) -> str:
    if lines:
        return json.dumps(value, ensure_ascii=False, default=str)
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# --- the command group -----------------------------------------------------------------------


@click.group(cls=PixmillGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pixmill")
def main() -> None:
    """pixmill: a self-hosted, plugin-based image tool server and command line.

    \b
    pixmill tools                      list tools and extractors
    pixmill tools show resize          one tool's settings, defaults and bounds
    pixmill run resize a.jpg --set width=800
    pixmill serve                      the REST API on http://127.0.0.1:8731
    pixmill jobs list --status failed  the server's failed jobs
    """


# --- tools -----------------------------------------------------------------------------------


def _kind_and_output(definition: Definition) -> tuple[str, str, str]:
    if isinstance(definition, Source):
        return "-", definition.kind.value, OutputKind.IMAGES.value
    return definition.section, definition.kind.value, output_kind(definition).value


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


@main.group(invoke_without_command=True, short_help="List tools, extractors and sources.")
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
@plugins_dir_option
@click.pass_context
def tools(ctx: click.Context, as_json: bool) -> None:
    """List tools, extractors and sources (`tools show ID` describes one)."""
    if ctx.invoked_subcommand is not None:
        return
    registry = load_checked_registry(load_config())
    items: list[Definition] = [*registry.catalogue(), *sorted(registry.sources.values(), key=_id)]
    if as_json:
        click.echo(dump_json([describe(item) for item in items]))
        return
    rows = [(item.id, *_kind_and_output(item), item.name) for item in items]
    for line in render_table(("ID", "SECTION", "KIND", "OUTPUT", "NAME"), rows):
        click.echo(line)
    unavailable = [item for item in items if not isinstance(item, Source) and missing_modules(item)]
    if unavailable:
        click.echo("\nunavailable until their optional dependencies are installed:")
        for item in unavailable:
            assert not isinstance(item, Source)
            click.echo(f"  {item.id}: {install_command(item)}")


def _id(definition: Definition) -> str:
    return definition.id


@tools.command("show")
@click.argument("ident", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the settings' JSON Schema.")
@click.pass_context
def tools_show(ctx: click.Context, ident: str, as_json: bool) -> None:
    """Describe one tool, extractor or source: inputs, output and every setting."""
    registry = load_checked_registry(load_config())
    definition = find_definition(registry, ident, "show")
    schema = to_json_schema(definition.settings)
    if as_json:
        click.echo(dump_json(schema))
        return
    for line in describe_lines(definition, schema, registry.owner(definition)):
        click.echo(line)


def describe_lines(definition: Definition, schema: Mapping[str, Any], plugin: str) -> list[str]:
    section, kind, output = _kind_and_output(definition)
    lines = [f"{definition.id}: {definition.name}", ""]
    lines += click.wrap_text(definition.description, 88).splitlines()
    where = f"section {section}, " if section != "-" else ""
    lines += [
        "",
        f"{kind}, {where}output {output}, version {definition.version}, plugin {plugin}",
    ]
    if not isinstance(definition, Source):
        lines += ["", "Inputs:"]
        for spec in inputs_of(definition):
            flags = [
                "required" if spec.required else "optional",
                *(["several files"] if spec.multiple else []),
            ]
            lines.append(f"  {spec.name}  {spec.description} ({', '.join(flags)})")
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    if not properties:
        lines += ["", "Settings: none"]
    else:
        lines += ["", "Settings (--set NAME=VALUE):"]
        allowed = {name: _schema_bounds(prop) for name, prop in properties.items()}
        rows = [
            (
                name,
                _schema_type(prop),
                allowed[name] if len(allowed[name]) <= ALLOWED_COLUMN_WIDTH else "(below)",
                _default(prop, name in required),
            )
            for name, prop in properties.items()
        ]
        header, *table = render_table(("NAME", "TYPE", "ALLOWED", "DEFAULT"), rows)
        lines.append("  " + header)
        indent = " " * 6
        for (name, prop), row_line in zip(properties.items(), table, strict=True):
            lines.append("  " + row_line)
            if prop.get("description"):
                lines += click.wrap_text(str(prop["description"]), 88, indent, indent).splitlines()
            if len(allowed[name]) > ALLOWED_COLUMN_WIDTH:
                text = f"one of: {allowed[name]}"
                lines += click.wrap_text(text, 88, indent, indent + "  ").splitlines()
            if prop.get("pattern"):
                lines.append(f"{indent}must match {prop['pattern']}")
    lines += ["", "Example:", f"  {_example_command(definition)}"]
    return lines


def _schema_type(prop: Mapping[str, Any]) -> str:
    kind = prop.get("type", "any")
    kinds = [kind] if isinstance(kind, str) else [k for k in kind if k != "null"]
    name = "|".join(kinds) or "any"
    if name == "array" and isinstance(prop.get("items"), Mapping):
        name = f"array of {_schema_type(prop['items'])}"
    return name


def _schema_bounds(prop: Mapping[str, Any]) -> str:
    if "enum" in prop:
        return ", ".join(str(v) for v in prop["enum"] if v is not None)
    low = prop.get("minimum", prop.get("exclusiveMinimum"))
    high = prop.get("maximum", prop.get("exclusiveMaximum"))
    if low is not None and high is not None:
        return f"{_number(low)} to {_number(high)}"
    if low is not None:
        return f">= {_number(low)}"
    if high is not None:
        return f"<= {_number(high)}"
    if "minLength" in prop or "maxLength" in prop:
        return f"{prop.get('minLength', 0)} to {prop.get('maxLength', '...')} characters"
    return "-"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _default(prop: Mapping[str, Any], required: bool) -> str:
    if "default" not in prop:
        return "(required)" if required else "-"
    default = prop["default"]
    if default is None:
        return "none"
    return json.dumps(default) if not isinstance(default, str) else default


def _example_command(definition: Definition) -> str:
    settings = " ".join(
        "--set "
        + shlex.quote(f"{key}={json.dumps(value) if not isinstance(value, str) else value}")
        for key, value in definition.example.items()
    )
    if isinstance(definition, Source):
        command = f"pixmill fetch {definition.id} {settings} -o images/"
    elif isinstance(definition, Extractor):
        command = f"pixmill extract {definition.id} photo.jpg {settings}"
    else:
        command = f"pixmill run {definition.id} photo.jpg {settings}"
        for spec in inputs_of(definition):
            if spec.name != "file" and spec.required:
                command += f" --file {spec.name}={spec.name}.png"
    return " ".join(command.split())


# --- plugins ---------------------------------------------------------------------------------


@main.command(short_help="List installed plugins and their errors.")
@click.option("--json", "as_json", is_flag=True, help="Print the plugin reports as JSON.")
@plugins_dir_option
def plugins(as_json: bool) -> None:
    """List installed plugins: package, version, the plugin API each targets (`-`: not
    declared), hooks, what each provides, and errors.

    A broken plugin is listed with ERROR and what to do about it; it never stops the others,
    and this command still exits 0.
    """
    registry = load_quietly(load_config())
    if as_json:
        click.echo(dump_json([info.to_dict() for info in registry.plugins]))
        return
    rows = [
        (
            info.name,
            info.package or "-",
            info.version or "-",
            "-" if info.api_version is None else str(info.api_version),
            "ERROR" if info.errors else "ok",
            ", ".join(h.removeprefix("pixmill_") for h in info.hooks) or "-",
            ", ".join([*info.tools, *info.extractors, *info.sources]) or "-",
        )
        for info in registry.plugins
    ]
    header, *table = render_table(
        ("NAME", "PACKAGE", "VERSION", "API", "STATUS", "HOOKS", "PROVIDES"), rows
    )
    click.echo(header)
    for info, line in zip(registry.plugins, table, strict=True):
        click.echo(line)
        for error in info.errors:
            click.echo(f"  ERROR {info.name}: {error}")
    broken = sum(1 for info in registry.plugins if info.errors)
    summary = f"{len(registry.plugins)} plugins"
    click.echo(f"\n{summary}, {broken} with errors" if broken else f"\n{summary}, all ok")


# --- install and uninstall -------------------------------------------------------------------
#
# pip and the before/after plugin listings live in `pixmill.core.installer`, shared with the
# feature-bundle jobs (`pixmill.features`).

_RESTART_NOTE = installer.RESTART_NOTE
installed_plugins = installer.installed_plugins
plugin_changes = installer.plugin_changes


def run_pip(args: Sequence[str]) -> None:
    """Run pip with `args`, its output on stderr; a failure is exit 1 with pip's message."""
    try:
        output = installer.run_pip(args).output
    except installer.PipFailedError as error:
        if error.output:
            click.echo(error.output, err=True)
        raise PixmillError(
            f"pip {error.subcommand} failed (exit {error.returncode}); its message is above. "
            f"Command: {error.command}"
        ) from error
    if output:
        click.echo(output, err=True)


def _report_changes(before: Mapping[str, Any], after: Mapping[str, Any], verb: str) -> None:
    changes = plugin_changes(before, after)
    for line in changes:
        click.echo(line)
    if not changes:
        warn(
            f"pip {verb} finished, but no pixmill plugin was {verb}ed or changed: a plugin "
            "package declares an entry point in the `pixmill` group (docs/plugins/installing.md)"
        )
    else:
        click.echo(_RESTART_NOTE)


def _pip_names(args: Sequence[str]) -> list[str]:
    """The package arguments among pass-through pip options (those start with `-`)."""
    return [arg for arg in args if not arg.startswith("-")]


@main.command(
    short_help="Install plugin packages with pip (names, paths, wheels).",
    context_settings={"ignore_unknown_options": True},
)
@click.argument("packages", metavar="NAME...", nargs=-1, type=click.UNPROCESSED)
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade packages already installed.")
@click.option(
    "-e",
    "--editable",
    "editables",
    multiple=True,
    metavar="PATH",
    help="Install a plugin's source directory in editable mode (repeatable).",
)
def install(packages: tuple[str, ...], upgrade: bool, editables: tuple[str, ...]) -> None:
    """Install plugins into the environment pixmill runs in, with pip, and print the plugins
    added or changed: their names, packages, versions and the ids they provide.

    NAME is anything pip installs: a name on the index (`pixmill-hello`, `pixmill-hello==1.2`),
    a wheel, a source directory. Other pip options pass through (e.g. `--no-deps`,
    `--index-url URL`). Restart a running server to load the new plugins.
    """
    if not _pip_names(packages) and not editables:
        raise click.UsageError("name at least one package, path or wheel to install")
    before = installed_plugins()
    pip_args = ["install", *(["--upgrade"] if upgrade else [])]
    for path in editables:
        pip_args += ["--editable", path]
    run_pip([*pip_args, *packages])
    _report_changes(before, installed_plugins(), "install")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def uninstall_target(name: str) -> str:
    """The distribution to uninstall for `name`: a package name, or a plugin's name (the
    package providing it). pixmill and its built-in plugins are refused (usage error)."""
    if _canonical(name) == plugin_host.BUILTIN_PACKAGE:
        raise click.UsageError(
            "pixmill will not uninstall itself; if you mean it, run pip uninstall pixmill"
        )
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        package = str(distribution.metadata["Name"])
        if not distribution.entry_points.select(group=plugin_host.ENTRY_POINT_GROUP):
            # Most likely a dependency some plugin needs: not ours to remove.
            raise click.UsageError(
                f"{package} provides no pixmill plugin; uninstall it with pip if you mean it"
            )
        return package
    for ep in importlib.metadata.entry_points(group=plugin_host.ENTRY_POINT_GROUP):
        if ep.name != name or ep.dist is None:
            continue
        package = ep.dist.metadata["Name"]
        if _canonical(package) == plugin_host.BUILTIN_PACKAGE:
            raise click.UsageError(
                f"{name} is a built-in plugin of pixmill and cannot be uninstalled; to leave "
                "it out, list the plugins to load in PIXMILL_LOAD_PLUGINS"
            )
        return str(package)
    raise click.UsageError(
        f"{name} is not installed: neither a package nor a plugin name "
        "(`pixmill plugins` lists the plugins and their packages)"
    )


@main.command(
    short_help="Uninstall plugin packages with pip.",
    context_settings={"ignore_unknown_options": True},
)
@click.argument("packages", metavar="NAME...", nargs=-1, type=click.UNPROCESSED)
def uninstall(packages: tuple[str, ...]) -> None:
    """Uninstall plugin packages (by package name, or by plugin name as `pixmill plugins`
    lists it) and print the plugins removed. pixmill and its built-ins are refused.
    """
    names = _pip_names(packages)
    if not names:
        raise click.UsageError("name at least one plugin package to uninstall")
    options = [arg for arg in packages if arg.startswith("-")]
    targets = list(dict.fromkeys(uninstall_target(name) for name in names))
    before = installed_plugins()
    run_pip(["uninstall", "--yes", *options, *targets])
    _report_changes(before, installed_plugins(), "uninstall")


# --- run and extract -------------------------------------------------------------------------

_settings_options = [
    click.option(
        "--set",
        "set_pairs",
        multiple=True,
        metavar="NAME=VALUE",
        help="A setting (repeatable); `pixmill tools show ID` lists them. JSON for lists/objects.",
    ),
    click.option(
        "--settings-json",
        metavar="JSON",
        help="All settings as one JSON object, e.g. '{\"width\": 800}'; --set overrides it.",
    ),
]
_batch_options = [
    click.option(
        "-j",
        "--jobs",
        type=click.IntRange(min=1),
        default=os.cpu_count() or 1,
        show_default="number of cores",
        help="Processes working on several inputs at once.",
    ),
    click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary on stderr."),
]


def _with(options: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


@main.command(short_help="Run a tool on files (parallel for many).")
@click.argument("tool_id", metavar="TOOL")
@click.argument("inputs", metavar="INPUT...", nargs=-1)
@click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="Output file (one input; '-' for stdout) or directory (several inputs or a glob). "
    "Default for one input: ./<stem>-<TOOL>.<ext>; for a tool that takes no file "
    "(qr-generate): ./<TOOL>.<ext>.",
)
@_with(_settings_options)
@click.option(
    "--file",
    "file_pairs",
    multiple=True,
    metavar="NAME=PATH",
    help="An extra file input the tool takes, e.g. --file watermark=logo.png.",
)
@_with(_batch_options)
@plugins_dir_option
@click.pass_context
def run(
    ctx: click.Context,
    tool_id: str,
    inputs: tuple[str, ...],
    output: str | None,
    set_pairs: tuple[str, ...],
    settings_json: str | None,
    file_pairs: tuple[str, ...],
    jobs: int,
    quiet: bool,
) -> None:
    """Run TOOL on INPUT files ('-' reads stdin; globs such as '*.jpg' are expanded).

    \b
    pixmill run resize photo.jpg --set width=800 -o small.jpg
    pixmill run convert '*.png' --set format=webp -o webp/
    cat photo.jpg | pixmill run resize - --set width=64 -o - > thumb.jpg

    Several inputs run in parallel; a file that fails is reported and the others go on (the
    exit code is then 1). Extractors print their JSON as `pixmill extract` does.
    """
    config = load_config()
    registry = load_checked_registry(config)
    definition = find_definition(registry, tool_id, "run")
    assert not isinstance(definition, Source)
    ctx.meta[_DEFINITION_KEY] = definition
    raw = parse_settings(definition.settings, set_pairs, settings_json)
    validate_settings(definition.settings, raw)  # once, before any file is read or forked for
    extra_files = parse_extra_files(definition, file_pairs)
    runner = FileRunner(registry, definition.id, raw, extra_files, config)
    if not any(spec.name == "file" for spec in inputs_of(definition)):
        if inputs:
            raise click.UsageError(
                f"{definition.id} takes no input files, only settings (and --file parts)"
            )
        _run_without_files(runner, output)
        return
    if not inputs:
        raise click.UsageError(f"{definition.id} needs INPUT files ('-' reads stdin)")
    found = expand_inputs(inputs)
    if output_kind(definition) is OutputKind.JSON:
        _emit_json(runner, found, output, jsonl=False, jobs=jobs, quiet=quiet)
        return
    main_input = inputs_of(definition)[0]
    if main_input.multiple or (len(found.paths) == 1 and not found.from_pattern):
        _run_single_call(runner, found.paths, output)
        return
    if output is None or output == STDIO:
        raise click.BadParameter(
            "several inputs need -o DIR, the directory their results are written to",
            param_hint="-o",
        )
    _run_many(runner, found.paths, Path(output), jobs=jobs, quiet=quiet)


def _run_without_files(runner: FileRunner, output: str | None) -> None:
    """A tool that makes its image from settings alone (qr-generate, barcode-generate)."""
    outcome = runner.execute_without_files()
    assert outcome.data is not None and outcome.format is not None
    if output == STDIO:
        sys.stdout.buffer.write(outcome.data)
        sys.stdout.buffer.flush()
        return
    name = f"{runner.definition.id}.{outcome.format.extension}"
    target = Path(output or name)
    if output is not None and _names_a_directory(output):
        target = target / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(outcome.data)
    click.echo(str(target), err=True)


def _run_single_call(runner: FileRunner, paths: list[str], output: str | None) -> None:
    """One call of the tool (one input, or all inputs for a tool that takes several)."""
    tool_id = runner.definition.id
    to_stdout = output == STDIO or (output is None and paths == [STDIO])
    if to_stdout and output is None and sys.stdout.buffer.isatty():
        raise click.BadParameter(
            "refusing to write an image to the terminal; give -o FILE, or -o - and a pipe",
            param_hint="-o",
        )
    inputs_resolved = {os.path.realpath(p) for p in paths if p != STDIO}
    target_is_dir = output is not None and not to_stdout and _names_a_directory(output)
    explicit_file = output is not None and not to_stdout and not target_is_dir
    if explicit_file and os.path.realpath(str(output)) in inputs_resolved:
        raise click.BadParameter(
            f"{output!r} is an input; refusing to overwrite it", param_hint="-o"
        )
    files = [
        (read_input(path), STDIN_NAME if path == STDIO else os.path.basename(path))
        for path in paths
    ]
    outcome = runner.execute(files)
    assert outcome.data is not None and outcome.format is not None
    if to_stdout:
        stream = sys.stdout.buffer
        stream.write(outcome.data)
        stream.flush()
        return
    stem = safe_stem(files[0][1]) if paths != [STDIO] else STDIN_NAME
    extension = outcome.format.extension
    if output is None:
        target = Path(f"{stem}-{tool_id}.{extension}")
    elif target_is_dir:
        target = Path(output) / f"{stem}.{extension}"
        if os.path.realpath(target) in inputs_resolved:
            target = Path(output) / f"{stem}-{tool_id}.{extension}"
    else:
        target = Path(output)
        suffix = target.suffix.lower().lstrip(".")
        if suffix and suffix not in _extensions_of(outcome):
            warn(
                f"warning: the result is {outcome.format.name} but {output} says .{suffix}; "
                "written as asked"
            )
    write_atomically(target, outcome.data)
    source = paths[0] if paths != [STDIO] else "stdin"
    click.echo(
        f"{source} -> {target}  ({human_size(outcome.input_size)} -> {human_size(outcome.size)})",
        err=True,
    )


def _names_a_directory(output: str) -> bool:
    return os.path.isdir(output) or output.endswith(("/", os.sep))


def _extensions_of(outcome: Outcome) -> set[str]:
    assert outcome.format is not None
    names = {outcome.format.name, outcome.format.extension}
    if "jpg" in names:
        names |= {"jpeg", "jpe"}
    if "tiff" in names:
        names.add("tif")
    return names


def _run_many(
    runner: FileRunner, paths: list[str], out_dir: Path, *, jobs: int, quiet: bool
) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise click.BadParameter(
            f"{str(out_dir)!r} is a file; several inputs need a directory", param_hint="-o"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    tool_id = runner.definition.id
    stems = unique_stems(paths)
    # Outputs never replace an input, even when -o is the inputs' own directory.
    taken = {os.path.realpath(p) for p in paths}
    started = time.monotonic()
    failed = 0
    for result in run_batch(runner, paths, jobs, quiet=quiet):
        if not result.ok or result.data is None:
            failed += 1
            warn(f"error: {result.path}: {result.error}")
            continue
        stem = stems[result.index]
        target = out_dir / f"{stem}.{result.extension}"
        n = 1
        while os.path.realpath(target) in taken:
            n += 1
            suffix = tool_id if n == 2 else f"{tool_id}-{n - 1}"
            target = out_dir / f"{stem}-{suffix}.{result.extension}"
        taken.add(os.path.realpath(target))
        write_atomically(target, result.data)
    if not quiet:
        elapsed = time.monotonic() - started
        done = len(paths) - failed
        status = f"{done} written to {out_dir}" + (f", {failed} failed" if failed else "")
        click.echo(f"{tool_id}: {status} ({len(paths)} files, {elapsed:.1f}s)", err=True)
    if failed:
        raise click.exceptions.Exit(1)


@main.command(short_help="Print what an extractor reads from images.")
@click.argument("extractor_id", metavar="EXTRACTOR")
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@_with(_settings_options)
@click.option(
    "--jsonl", is_flag=True, help='One line per input: {"input": ..., "result"|"error": ...}.'
)
@click.option("-o", "--output", metavar="FILE", help="Write the JSON here instead of stdout.")
@_with(_batch_options)
@plugins_dir_option
@click.pass_context
def extract(
    ctx: click.Context,
    extractor_id: str,
    inputs: tuple[str, ...],
    set_pairs: tuple[str, ...],
    settings_json: str | None,
    jsonl: bool,
    output: str | None,
    jobs: int,
    quiet: bool,
) -> None:
    """Read structured data out of images and print it as JSON.

    One input prints its object; several print one object keyed by input path (a failed file
    maps to {"error", "code"} and the exit code is 1), or JSON lines with --jsonl.
    """
    config = load_config()
    registry = load_checked_registry(config)
    definition = find_definition(registry, extractor_id, "extract")
    ctx.meta[_DEFINITION_KEY] = definition
    raw = parse_settings(definition.settings, set_pairs, settings_json)
    validate_settings(definition.settings, raw)
    found = expand_inputs(inputs)
    runner = FileRunner(registry, definition.id, raw, {}, config)
    _emit_json(runner, found, output, jsonl=jsonl, jobs=jobs, quiet=quiet)


def _emit_json(
    runner: FileRunner,
    found: InputList,
    output: str | None,
    *,
    jsonl: bool,
    jobs: int,
    quiet: bool,
) -> None:
    """Print (or write to `output`) the JSON of an extractor or JSON tool over the inputs."""
    sink = _JsonSink(output)
    if len(found.paths) == 1 and not found.from_pattern and not jsonl:
        path = found.paths[0]
        name = STDIN_NAME if path == STDIO else os.path.basename(path)
        outcome = runner.execute([(read_input(path), name)])
        sink.write(dump_json(outcome.json))
        sink.close()
        return
    if STDIO in found.paths:
        data = read_input(STDIO)
        try:
            outcome = runner.execute([(data, STDIN_NAME)])
            line: dict[str, Any] = {"input": STDIO, "result": outcome.json}
        except PixmillError as exc:
            line = {"input": STDIO, "error": {"message": exc.message, "code": exc.code}}
        sink.write(dump_json(line, lines=True))
        sink.close()
        if "error" in line:
            raise click.exceptions.Exit(1)
        return
    results: dict[int, FileOutcome] = {}
    for result in run_batch(runner, found.paths, jobs, quiet=quiet or jsonl):
        if not result.ok:
            warn(f"error: {result.path}: {result.error}")
        if jsonl:
            entry: dict[str, Any] = {"input": result.path}
            if result.ok:
                entry["result"] = result.json
            else:
                entry["error"] = {"message": result.error, "code": result.code}
            sink.write(dump_json(entry, lines=True))
        results[result.index] = result
    if not jsonl:
        keyed = {
            results[i].path: (
                results[i].json
                if results[i].ok
                else {"error": results[i].error, "code": results[i].code}
            )
            for i in sorted(results)
        }
        sink.write(dump_json(keyed))
    sink.close()
    if any(not r.ok for r in results.values()):
        raise click.exceptions.Exit(1)


class _JsonSink:
    """Stdout, or a file written in one piece when the run ends."""

    def __init__(self, output: str | None) -> None:
        self.path = None if output in (None, STDIO) else Path(str(output))
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        if self.path is None:
            click.echo(text)
        else:
            self.parts.append(text + "\n")

    def close(self) -> None:
        if self.path is not None:
            write_atomically(self.path, "".join(self.parts).encode())


# --- fetch -----------------------------------------------------------------------------------


@main.command(name="fetch", short_help="Bring images in from a source.")
@click.argument("source_id", metavar="SOURCE")
@_with(_settings_options)
@click.option(
    "-o",
    "--output",
    metavar="DIR",
    default=".",
    show_default=True,
    help="Directory the images are written to (created; existing files are kept).",
)
@click.option("--json", "as_json", is_flag=True, help="Print each image's provenance as JSON.")
@plugins_dir_option
@click.pass_context
def fetch_command(
    ctx: click.Context,
    source_id: str,
    set_pairs: tuple[str, ...],
    settings_json: str | None,
    output: str,
    as_json: bool,
) -> None:
    """Bring images in from SOURCE (e.g. generate, local-folder) and write them to DIR."""
    config = load_config()
    registry = load_checked_registry(config)
    source = find_definition(registry, source_id, "fetch")
    assert isinstance(source, Source)
    ctx.meta[_DEFINITION_KEY] = source
    raw = parse_settings(source.settings, set_pairs, settings_json)
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise click.BadParameter(f"{output!r} is a file, not a directory", param_hint="-o")
    images = fetch(source, raw, limits=config.limits, config=config.plugin_config())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for image in images:
        target = _free_name(out_dir, image.filename)
        write_atomically(target, image.data)
        written.append({"path": str(target), **image.provenance()})
        if not as_json:
            click.echo(_provenance_line(written[-1]))
    if as_json:
        click.echo(dump_json(written))
    elif not written:
        click.echo(f"{source.id} brought no images", err=True)


def _free_name(directory: Path, filename: str) -> Path:
    """`filename` in `directory`, or `<stem>-2.<ext>`... if a file by that name already exists."""
    target = directory / filename
    stem, dot, extension = filename.rpartition(".")
    if not dot:
        stem, extension = filename, ""
    n = 1
    while target.exists():
        n += 1
        target = directory / (f"{stem}-{n}.{extension}" if dot else f"{stem}-{n}")
    return target


def _provenance_line(entry: Mapping[str, Any]) -> str:
    parts = [str(entry["path"]), f"({entry['format']}, {human_size(int(entry['size']))})"]
    for key in ("url", "author", "license"):
        if entry.get(key):
            parts.append(f"{key}={entry[key]}")
    if entry.get("tags"):
        parts.append("tags=" + ",".join(entry["tags"]))
    return "  ".join(parts)


# --- serve -----------------------------------------------------------------------------------


@main.command(short_help="Serve the REST API (gunicorn).")
@click.option(
    "--host",
    help=f"Address to bind. [env PIXMILL_HOST; default {defaults.HOST}]",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help=f"Port to bind; 0 picks a free one. [env PIXMILL_PORT; default {defaults.PORT}]",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Web worker processes. [env PIXMILL_WORKERS; default: one per core]",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help=f"Threads per worker. [env PIXMILL_THREADS; default {defaults.THREADS}]",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Uploads and results. [env PIXMILL_DATA_DIR; default ~/.local/share/pixmill]",
)
@click.option(
    "--queue-workers",
    type=click.IntRange(min=0),
    help="Queue worker processes started beside the server; 0 when `pixmill worker` runs "
    "elsewhere. [env PIXMILL_QUEUE_WORKERS; default: one per core]",
)
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="Server log level (stderr).",
)
@plugins_dir_option
def serve(
    host: str | None,
    port: int | None,
    workers: int | None,
    threads: int | None,
    data_dir: Path | None,
    queue_workers: int | None,
    access_log: bool,
    log_level: str,
) -> None:
    """Serve the REST API with a production WSGI server (gunicorn, threaded workers), plus
    the queue workers and, without REDIS_URL, a private Redis (see docs/deployment.md).

    Ctrl-C or SIGTERM stops it gracefully: requests in flight are finished first.
    """
    config = load_config(
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        data_dir=data_dir,
        queue_workers=queue_workers,
    )
    # Imported here so that every other command starts without Flask and gunicorn.
    from pixmill.server.serve import run_server
    from pixmill.server.supervisor import check_config

    try:
        check_config(config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run_server(config, access_log=access_log, log_level=log_level)


# --- worker ----------------------------------------------------------------------------------


@main.command(short_help="Run jobs from the queue (RQ worker).")
@click.option(
    "--queue",
    "queues",
    multiple=True,
    default=("default",),
    show_default=True,
    help="Queue to serve (repeatable), e.g. --queue ai for model-backed tools.",
)
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where blobs (uploads, results) live; must be the server's. [env PIXMILL_DATA_DIR]",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="info logs every job started and finished.",
)
@plugins_dir_option
def worker(queues: tuple[str, ...], burst: bool, data_dir: Path | None, log_level: str) -> None:
    """Run queued jobs. Needs the server's Redis (REDIS_URL), database (DATABASE_URL) and
    data dir, so that it can run on another machine that shares them.

    A worker keeps plugins' expensive state (models, fonts) warm from one job to the next.
    """
    config = load_config(data_dir=data_dir)
    if not config.redis_url:
        raise click.UsageError(
            "pixmill worker needs REDIS_URL: the Redis of the pixmill server it works for "
            "(e.g. REDIS_URL=redis://host:6379/0)"
        )
    # The worker builds its state from the environment: pass the flags on to it.
    if data_dir is not None:
        os.environ["PIXMILL_DATA_DIR"] = str(data_dir)
    from pixmill.core.worker import make_worker

    click.echo(f"pixmill worker serving queue(s) {', '.join(queues)}", err=True)
    make_worker(config.redis_url, queues, burst=burst).work(logging_level=log_level.upper())


# --- jobs ------------------------------------------------------------------------------------
#
# The jobs commands read and change the server's job records directly: its database
# (DATABASE_URL, or pixmill.db in the data dir), its blob store (the data dir) and its Redis
# (REDIS_URL), through the same `JobStore`, `Dispatcher.cancel` and REST helpers as the
# `/api/v1/jobs` routes, so a job reads and behaves the same here as over HTTP. Those modules
# pull in SQLAlchemy, RQ and Flask: they are imported inside the commands, as `serve` does.

# The REST listing's query parameters and the options that give them here: the listing's own
# parsers check the options, and the messages name what the user typed.
_LISTING_OPTIONS = {
    "status": "--status",
    "kind": "--kind",
    "tool": "--tool",
    "from": "--since",
    "to": "--until",
    "limit": "--limit",
    "page": "--page",
}


def _job_id_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A malformed id is a typo in the command (exit 2), not a job that does not exist."""
    from pixmill.core.blobs import is_valid_job_id

    if not is_valid_job_id(value):
        raise click.BadParameter(
            f"{value!r} is not a job id: ids are 32 lowercase hex characters, as "
            "`pixmill jobs list` shows them",
            ctx=ctx,
            param=param,
        )
    return value


_job_id = click.argument("job_id", metavar="ID", callback=_job_id_argument)
_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The server's data dir: its results, and its SQLite database unless DATABASE_URL "
    "is set. [env PIXMILL_DATA_DIR]",
)


@contextlib.contextmanager
def job_records(data_dir: Path | None) -> Iterator[AppState]:
    """The server's job records as an `AppState`, the object the REST helpers take.

    Opening the database brings its schema to the newest revision, as the server and the
    worker do when they start (idempotent, and safe next to a running server). Without
    REDIS_URL the dispatcher has no queue and cancelling is the row's change alone, which is
    enough: a row cancelled while queued is never claimed. Database failures become one
    `error:` line and exit 1, never a traceback.
    """
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from pixmill.core.blobs import LocalBlobStore
    from pixmill.core.db import Database
    from pixmill.core.dispatch import Dispatcher, connect
    from pixmill.core.dispatch import log as dispatch_log
    from pixmill.core.jobstore import JobStore
    from pixmill.server.state import AppState

    config = load_config(data_dir=data_dir)
    where = _printable_database_url(config.sqlalchemy_url)
    try:
        database = Database.from_config(config)
    except (SQLAlchemyError, CommandError, OSError) as exc:
        raise _database_error(f"cannot open the job database {where}", exc) from None
    connection = connect(config.redis_url) if config.redis_url else None
    try:
        jobstore = JobStore(database.sessions)
        blobs = LocalBlobStore(config.blobs_dir)
        dispatcher = Dispatcher(
            jobstore, blobs, None, config=config, connection=connection, local_runner=_no_runs
        )
        # The dispatcher logs Redis trouble and goes on (the row is the truth): say so here.
        with _log_records_as_warnings(dispatch_log):
            yield AppState(
                config=config,
                registry=Registry(),  # no plugins: these commands touch records only
                blobs=blobs,
                db=database,
                jobs=jobstore,
                dispatcher=dispatcher,
                redis=connection,
            )
    except SQLAlchemyError as exc:
        raise _database_error(f"the job database {where} failed", exc) from None
    finally:
        if connection is not None:
            connection.close()
        database.dispose()


@contextlib.contextmanager
def _log_records_as_warnings(logger: logging.Logger) -> Iterator[None]:
    """`logger`'s warnings and errors as `warning:` lines on stderr, like the CLI's own."""
    handler = _WarningLines(logging.WARNING)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class _WarningLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        warn(f"warning: {record.getMessage()}")


def _no_runs(job_id: str) -> None:
    # A Dispatcher without Redis wants a local runner; the jobs commands never enqueue.
    raise RuntimeError(f"pixmill jobs does not run jobs (asked to run {job_id})")


def _printable_database_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # unparsable: opening it reports why; never echo a password
        return "named by DATABASE_URL"


def _database_error(what: str, exc: BaseException) -> PixmillError:
    # The driver's own first line says what is wrong (refused, unknown database, ...); the
    # rest of SQLAlchemy's text is the statement and a link, noise on a command line.
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return PixmillError(
        f"{what}: {lines[0] if lines else type(exc).__name__}",
        code="DATABASE_UNAVAILABLE",
        status=503,
    )


def parse_job_filters(
    status: Sequence[str],
    kind: Sequence[str],
    tool: str | None,
    since: str | None,
    until: str | None,
    limit: str | None,
    page: str | None,
) -> ListingQuery:
    """The options of `jobs list` checked by the REST listing's parsers (the same values,
    bounds and messages as GET /api/v1/jobs); every bad one is named in one usage error."""
    from pixmill.server.jobs import QueryErrors, parse_listing

    given = {
        "status": ",".join(status) if status else None,
        "kind": ",".join(kind) if kind else None,
        "tool": tool,
        "from": since,
        "to": until,
        "limit": limit,
        "page": page,
    }
    args = {name: value for name, value in given.items() if value is not None}
    errors = QueryErrors()
    query = parse_listing(args, errors)
    problems = [
        f"{option} {args[name]!r}: {errors.fields[name][0]}"
        for name, option in _LISTING_OPTIONS.items()
        if name in errors.fields
    ]
    # Checked here rather than by the REST `check_range`, whose message names `from`/`to`.
    if query.created_from and query.created_to and query.created_from > query.created_to:
        problems.append("--since must not be after --until")
    if problems:
        raise click.UsageError("; ".join(problems))
    return query


@main.group(short_help="Create and check plugins (for plugin authors).")
def plugin() -> None:
    """Tools for writing plugins: `new` creates a package, `check` runs the conformance check."""


@plugin.command("new", short_help="Create a plugin package with an example tool and tests.")
@click.argument("name")
@click.option(
    "--directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to create it (default: ./NAME). Must not exist or be empty.",
)
def plugin_new(name: str, directory: Path | None) -> None:
    """Create NAME (a distribution name such as pixmill-sepia): setup.cfg with the `pixmill`
    entry point, one example tool with a settings schema, a README, and tests on pixmill's
    harness. `pip install -e NAME` then `pytest NAME` pass with no edits."""
    from pixmill.scaffold import ScaffoldError, create_plugin

    try:
        names, written = create_plugin(name, directory)
    except ScaffoldError as exc:
        raise click.BadParameter(exc.message, param_hint="NAME") from None
    except PixmillError as exc:  # the directory is not empty: nothing was written
        raise click.UsageError(exc.message) from None
    root = (directory if directory is not None else Path(name)).resolve()
    click.echo(f"created {names.dist_name} in {root} (tool {names.tool_id!r}):")
    for path in written:
        click.echo(f"  {path.relative_to(root)}")
    click.echo("next:")
    click.echo(f"  pip install -e '{root}[test]'")
    click.echo(f"  pytest {root}")
    click.echo(f"  pixmill tools show {names.tool_id}")


@plugin.command("check", short_help="Run the conformance check on a plugin.")
@click.argument("target", metavar="PATH_OR_NAME")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="List only the failed checks.")
def plugin_check(target: str, as_json: bool, quiet: bool) -> None:
    """Check a plugin the way pixmill relies on it: ids, settings schemas, bad settings
    refused, every sample image kind handled, deterministic output, progress for heavy work.

    PATH_OR_NAME is an installed plugin (entry-point or distribution name) or the path of a
    module, package or project directory. Exit 0 when every check passes, 1 when one fails,
    2 when the plugin cannot be found."""
    from pixmill.testing.conformance import check_plugin
    from pixmill.testing.harness import PluginNotFoundError, entry_point_names

    path = Path(target)
    looks_like_path = path.exists() or os.sep in target or target.endswith(".py")
    try:
        if not looks_like_path:
            entry_point_names(target)  # a clear usage error for an unknown name
    except PluginNotFoundError as exc:
        raise click.BadParameter(exc.message, param_hint="PATH_OR_NAME") from None
    if looks_like_path and not path.exists():
        raise click.BadParameter(f"{path} does not exist", param_hint="PATH_OR_NAME")
    report = check_plugin(path if looks_like_path else target)
    if as_json:
        click.echo(dump_json(report.to_dict()))
    else:
        click.echo(report.text(verbose=not quiet))
    if not report.ok:
        raise click.exceptions.Exit(1)


@main.group(short_help="List, show, cancel and delete jobs.")
def jobs() -> None:
    """The server's jobs: queued work and the record of every tool call.

    Reads the database, data dir and Redis of `pixmill serve` (DATABASE_URL,
    PIXMILL_DATA_DIR or --data-dir, REDIS_URL). Times are UTC.
    """


@jobs.command("list", short_help="List jobs, newest first (filters, pages, --json).")
@click.option(
    "--status",
    multiple=True,
    metavar="STATUS[,...]",
    help="queued, processing, completed, failed, cancelled (repeatable or comma-separated).",
)
@click.option(
    "--kind",
    multiple=True,
    metavar="KIND[,...]",
    help="tool, extract, batch, pipeline, fetch (repeatable or comma-separated).",
)
@click.option("--tool", metavar="TOOL", help="Only the jobs of this tool or extractor id.")
@click.option(
    "--since",
    metavar="WHEN",
    help="Created at or after this ISO 8601 date or date-time (UTC unless it has an offset).",
)
@click.option(
    "--until", metavar="WHEN", help="Created at or before this; a bare date includes its day."
)
@click.option("--limit", metavar="N", help="Jobs per page: 1 to 100, default 20.")
@click.option("--page", metavar="N", help="Which page, from 1 (newest jobs first).")
@click.option("--json", "as_json", is_flag=True, help="Print the REST listing's JSON.")
@_data_dir_option
def jobs_list(
    status: tuple[str, ...],
    kind: tuple[str, ...],
    tool: str | None,
    since: str | None,
    until: str | None,
    limit: str | None,
    page: str | None,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    """List jobs, newest first, a page at a time: a table, or --json for scripts.

    The filters are those of GET /api/v1/jobs, and combine: --status failed --tool resize
    --since 2024-01-25.
    """
    from pixmill.core.jobstore import to_dict
    from pixmill.server.jobs import list_jobs_page, pagination

    query = parse_job_filters(status, kind, tool, since, until, limit, page)
    with job_records(data_dir) as state:
        listing = list_jobs_page(state.jobs, query)
    if as_json:
        jobs_json = [to_dict(job) for job in listing.items]
        click.echo(dump_json({"jobs": jobs_json, "pagination": pagination(listing)}))
        return
    if listing.items:
        header = ("ID", "STATUS", "KIND", "TOOL", "PROGRESS", "CREATED (UTC)", "DURATION")
        for line in render_table(header, [_job_row(job) for job in listing.items]):
            click.echo(line)
    filtered = any((status, kind, tool, since, until))
    click.echo(_listing_summary(listing, filtered=filtered), err=True)


def _job_row(job: Job) -> tuple[str, ...]:
    status = str(job.status)
    if job.cancel_requested and not job.is_final:
        status += " (cancelling)"
    return (
        job.id,
        status,
        str(job.kind),
        job.tool_id or "-",
        _progress_text(job),
        _utc_text(job.created_at),
        _duration_text(job),
    )


def _listing_summary(listing: JobPage, *, filtered: bool) -> str:
    """The line under the table (on stderr, so stdout stays the table)."""
    matching = " matching the filters" if filtered else ""
    if listing.total == 0:
        return f"no jobs{matching}"
    pages = -(-listing.total // listing.limit)
    noun = "job" if listing.total == 1 else "jobs"
    if not listing.items:
        return f"page {listing.page} is past the last page ({pages}) of {listing.total} {noun}"
    text = f"page {listing.page} of {pages}, {listing.total} {noun}{matching}"
    return text + (f"; --page {listing.page + 1} for more" if listing.has_more else "")


def _progress_text(job: Job) -> str:
    percent = f"{round(job.progress * 100)}%"
    if job.progress_total is not None and job.progress_current is not None:
        return f"{job.progress_current}/{job.progress_total} ({percent})"
    return percent


def _utc_text(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration_text(job: Job) -> str:
    if job.started_at is None or job.finished_at is None:
        return "-"
    seconds = (job.finished_at - job.started_at).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


@jobs.command("show", short_help="One job: progress, timings, files, result, error.")
@_job_id
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the job as GET /api/v1/jobs/ID does, its output files with their paths.",
)
@_data_dir_option
def jobs_show(job_id: str, as_json: bool, data_dir: Path | None) -> None:
    """Show one job: status, progress, timings, inputs, outputs (their files on disk and
    download paths) or the extracted JSON, and the error of a failed job."""
    from pixmill.core.jobstore import to_dict

    with job_records(data_dir) as state:
        job = state.jobs.get(job_id)
        files = output_files(state.blobs, job)
    if as_json:
        shown = to_dict(job)
        shown["results"]["files"] = files
        click.echo(dump_json(shown))
        return
    for line in job_lines(job, files):
        click.echo(line)


def output_files(blobs: BlobStore, job: Job) -> list[dict[str, Any]]:
    """The job's output files, each with where it lies on disk and the server's download
    path; `available` is false (and both null) once the file is gone (expired, deleted, or
    an inline result sent back in the response and never kept)."""
    from pixmill.core.blobs import BlobKey, LocalBlobStore
    from pixmill.core.dispatch import download_url
    from pixmill.core.errors import NotFoundError

    files = []
    for ref in job.outputs:
        path: Path | None = None
        try:
            key = BlobKey.parse(ref["key"])
            if isinstance(blobs, LocalBlobStore):
                path = blobs.path(key)
            available = path is not None or blobs.exists(key)
        except NotFoundError:  # no longer stored, or a key that is not a blob's
            available = False
        files.append(
            {
                "filename": ref["filename"],
                "size": ref["size"],
                "format": ref.get("format"),
                "available": available,
                "path": str(path) if path is not None else None,
                "downloadUrl": download_url(job.id, ref["filename"]) if available else None,
            }
        )
    return files


def job_lines(job: Job, files: Sequence[Mapping[str, Any]]) -> list[str]:
    """`jobs show` as text: one `label  value` line per fact, then the files and result."""
    from pixmill.core.models import JobStatus

    facts: list[tuple[str, str]] = [("job", job.id)]
    facts.append(("kind", str(job.kind) + (f" ({job.tool_id})" if job.tool_id else "")))
    status = str(job.status)
    if job.cancel_requested and not job.is_final:
        status += ", cancel requested"
    facts.append(("status", status))
    facts.append(("progress", _progress_text(job)))
    if job.message:
        facts.append(("message", job.message))
    for label, related in (("pipeline", job.pipeline_id), ("parent", job.parent_id)):
        if related:
            facts.append((label, related))
    facts.append(("attempt", f"{job.attempt} of {job.max_attempts}, queue {job.queue}"))
    facts.append(("created", _utc_text(job.created_at) + " UTC"))
    if job.started_at is not None:
        facts.append(("started", _utc_text(job.started_at) + " UTC"))
    if job.finished_at is not None:
        facts.append(("finished", _utc_text(job.finished_at) + " UTC"))
        facts.append(("duration", _duration_text(job)))
    if job.settings:
        facts.append(("settings", json.dumps(job.settings, ensure_ascii=False)))
    if job.error_code is not None:
        facts.append(("error", f"{job.error_code}: {job.error_message}"))
    width = max(len(label) for label, _ in facts)
    lines = [f"{label.ljust(width)}  {value}" for label, value in facts]

    lines += ["", f"inputs: {_count(len(job.inputs), 'file')}, {human_size(job.input_size)}"]
    input_rows = [
        (str(ref["filename"]), human_size(int(ref["size"])), str(ref.get("format") or "-"))
        for ref in job.inputs
    ]
    lines += _indented_rows(input_rows)

    if files:
        lines += ["", f"outputs: {_count(len(files), 'file')}, {human_size(job.output_size)}"]
        output_rows = [
            (
                str(file["filename"]),
                human_size(int(file["size"])),
                str(file["format"] or "-"),
                str(file["path"] or file["downloadUrl"] or "no longer stored"),
            )
            for file in files
        ]
        lines += _indented_rows(output_rows)
        if any(file["available"] for file in files):
            lines.append(f"  the server serves them at {_download_pattern(job.id)}")
    elif job.status is JobStatus.COMPLETED and job.result is None:
        lines += ["", "outputs: none"]
    if job.result is not None:
        lines += ["", "result:"]
        lines += ["  " + line for line in dump_json(job.result).splitlines()]
    return lines


def _indented_rows(rows: Sequence[Sequence[str]]) -> list[str]:
    """Aligned columns under a heading line, without a header row of their own."""
    if not rows:
        return []
    return ["  " + line for line in render_table([""] * len(rows[0]), rows)[1:]]


def _download_pattern(job_id: str) -> str:
    from pixmill.core.dispatch import download_url

    return download_url(job_id, "<filename>")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@jobs.command("cancel", short_help="Cancel a queued job, or ask a running one to stop.")
@_job_id
@_data_dir_option
def jobs_cancel(job_id: str, data_dir: Path | None) -> None:
    """Cancel a job. A queued job is cancelled at once and taken off its queue; a running one
    is asked to stop and does at its next cancellation check. A finished or unknown job is
    an error (exit 1)."""
    from pixmill.core.models import JobStatus

    with job_records(data_dir) as state:
        job = state.dispatcher.cancel(job_id)
    if job.status is JobStatus.CANCELLED:
        click.echo(f"job {job.id} cancelled")
    else:
        click.echo(
            f"job {job.id}: cancel requested; it stops at its next cancellation check "
            f"(`pixmill jobs show {job.id}` tells when)"
        )


@jobs.command("delete", short_help="Delete a finished job's record and files.")
@_job_id
@_data_dir_option
def jobs_delete(job_id: str, data_dir: Path | None) -> None:
    """Delete a job's record and its files (and those of its child jobs). A queued job is
    cancelled first; a running one is asked to stop and refused (exit 1): delete it again
    once it has stopped."""
    from pixmill.server.jobs import delete_job_and_blobs

    with job_records(data_dir) as state:
        delete_job_and_blobs(state, job_id)
    click.echo(f"job {job_id} deleted")
