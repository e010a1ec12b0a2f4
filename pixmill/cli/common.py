"""The `main` group and what the commands share: errors, config, plugins, `--set`, output."""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from marshmallow import Schema, fields

from pixmill import __version__
from pixmill.core import plugin_host
from pixmill.core.config import Config
from pixmill.core.contracts import Extractor, Source, Tool
from pixmill.core.errors import PixmillError, SettingsError
from pixmill.core.plugin_host import Registry, load_registry
from pixmill.core.settings import parse_settings_json

STDIO = "-"
# The filename given to bytes read from stdin: only its stem ever shows (in output names).
STDIN_NAME = "image"
# Where the command being run records the definition it works on, for error hints.
_DEFINITION_KEY = "pixmill.definition"

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


# --- output helpers --------------------------------------------------------------------------


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


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


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
