"""`pixmill tools` (and `tools show`) and `pixmill plugins`: what can run, how to call it."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

import click

from pixmill.cli.common import (
    Definition,
    dump_json,
    find_definition,
    load_checked_registry,
    load_config,
    load_quietly,
    main,
    plugins_dir_option,
    render_table,
)
from pixmill.core.catalogue import (
    describe,
    inputs_of,
    install_command,
    missing_modules,
    output_kind,
)
from pixmill.core.contracts import Extractor, OutputKind, Source
from pixmill.core.settings import to_json_schema

# Longer lists of allowed values go on their own line under the setting in `tools show`.
ALLOWED_COLUMN_WIDTH = 40


# --- tools -----------------------------------------------------------------------------------


def _kind_and_output(definition: Definition) -> tuple[str, str, str]:
    if isinstance(definition, Source):
        return "-", definition.kind.value, OutputKind.IMAGES.value
    return definition.section, definition.kind.value, output_kind(definition).value


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
