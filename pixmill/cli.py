"""The `pixmill` command line: list and describe plugins, run tools, extract, fetch, serve.

Every command runs plugins through the same core path as the REST API (`execute`, `fetch`), so
a tool behaves identically here and over HTTP. Exit codes follow click's convention: 0 on
success, 1 when the work failed (a `PixmillError`, an unreadable file, any failed file of a
batch), 2 for a usage problem (unknown tool, bad `--set`, missing input file).

The server is imported only by `pixmill serve`, so the other commands start without Flask.
"""

from __future__ import annotations

import difflib
import glob
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
from pathlib import Path
from typing import Any

import click
from marshmallow import Schema, fields

from pixmill import __version__
from pixmill.core import defaults, plugin_host
from pixmill.core.catalogue import describe, inputs_of, output_kind
from pixmill.core.config import Config
from pixmill.core.contracts import Extractor, OutputKind, Source, Tool
from pixmill.core.errors import PixmillError, SettingsError
from pixmill.core.execution import Outcome, UploadedFile, execute, fetch, safe_stem
from pixmill.core.plugin_host import Registry, load_registry
from pixmill.core.settings import parse_settings_json, to_json_schema, validate_settings

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
        return load_registry(load_plugins=config.load_plugins)
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


def parse_settings(
    schema_cls: type[Schema], pairs: Sequence[str], settings_json: str | None = None
) -> dict[str, Any]:
    """Turn `--settings-json` and `--set key=value` pairs (later ones win) into raw settings.

    Values stay strings (the schema coerces numbers and booleans, exactly as for form fields);
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
def plugins(as_json: bool) -> None:
    """List installed plugins: package, version, hooks, what each provides, and errors.

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
            "ERROR" if info.errors else "ok",
            ", ".join(h.removeprefix("pixmill_") for h in info.hooks) or "-",
            ", ".join([*info.tools, *info.extractors, *info.sources]) or "-",
        )
        for info in registry.plugins
    ]
    header, *table = render_table(
        ("NAME", "PACKAGE", "VERSION", "STATUS", "HOOKS", "PROVIDES"), rows
    )
    click.echo(header)
    for info, line in zip(registry.plugins, table, strict=True):
        click.echo(line)
        for error in info.errors:
            click.echo(f"  ERROR {info.name}: {error}")
    broken = sum(1 for info in registry.plugins if info.errors)
    summary = f"{len(registry.plugins)} plugins"
    click.echo(f"\n{summary}, {broken} with errors" if broken else f"\n{summary}, all ok")


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
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="Output file (one input; '-' for stdout) or directory (several inputs or a glob). "
    "Default for one input: ./<stem>-<TOOL>.<ext>.",
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
    found = expand_inputs(inputs)
    runner = FileRunner(registry, definition.id, raw, extra_files, config)
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
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="Server log level (stderr).",
)
def serve(
    host: str | None,
    port: int | None,
    workers: int | None,
    threads: int | None,
    data_dir: Path | None,
    access_log: bool,
    log_level: str,
) -> None:
    """Serve the REST API with a production WSGI server (gunicorn, threaded workers).

    Ctrl-C or SIGTERM stops it gracefully: requests in flight are finished first.
    """
    config = load_config(host=host, port=port, workers=workers, threads=threads, data_dir=data_dir)
    # Imported here so that every other command starts without Flask and gunicorn.
    from pixmill.server.serve import run_server

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
def worker(queues: tuple[str, ...], burst: bool, data_dir: Path | None) -> None:
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
    make_worker(config.redis_url, queues, burst=burst).work()
