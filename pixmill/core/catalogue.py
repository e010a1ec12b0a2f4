"""How definitions describe themselves to the outside: one dict per tool, extractor, source.

The REST catalogue, the OpenAPI document, `llms.txt` and the CLI all read these, so every
surface says the same thing about a plugin.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from typing import Any

from pixmill.core.contracts import Extractor, OutputKind, Source, Tool
from pixmill.core.contracts import FileInput as _FileInput
from pixmill.core.errors import UnavailableError
from pixmill.core.settings import to_json_schema

MAIN_INPUT = _FileInput()


def tool_path(definition: Tool | Extractor) -> str:
    return f"/api/v1/tools/{definition.section}/{definition.route or definition.id}"


@cache
def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_modules(definition: Tool | Extractor | Source) -> list[str]:
    """The optional modules a definition needs that this environment cannot import."""
    return [m for m in getattr(definition, "requires", ()) if not _importable(m)]


def check_available(definition: Tool | Extractor) -> None:
    """Refuse a call to a tool whose optional dependencies are missing, saying what to install."""
    missing = missing_modules(definition)
    if missing:
        raise UnavailableError(
            f"{definition.id} needs {', '.join(missing)}, which is not installed; "
            f"install it with: {install_command(definition)}",
            details={"missing": missing, "install": install_command(definition)},
        )


def install_command(definition: Tool | Extractor) -> str:
    return f"pip install '{definition.install}'"


def output_kind(definition: Tool | Extractor) -> OutputKind:
    return OutputKind.JSON if isinstance(definition, Extractor) else definition.output


def inputs_of(definition: Tool | Extractor) -> tuple[_FileInput, ...]:
    return definition.inputs if isinstance(definition, Tool) else (MAIN_INPUT,)


def describe(definition: Tool | Extractor | Source) -> dict[str, Any]:
    """The public description of a definition (camelCase, JSON-ready)."""
    entry: dict[str, Any] = {
        "id": definition.id,
        "kind": definition.kind.value,
        "name": definition.name,
        "description": definition.description,
        "version": definition.version,
        "settingsSchema": to_json_schema(definition.settings),
        "example": dict(definition.example),
    }
    if isinstance(definition, Source):
        return entry
    entry.update(
        section=definition.section,
        endpoint=tool_path(definition),
        output=output_kind(definition).value,
        inputs=[
            {
                "name": spec.name,
                "description": spec.description,
                "multiple": spec.multiple,
                "required": spec.required,
                "documents": list(spec.documents),
            }
            for spec in inputs_of(definition)
        ],
        heavy=definition.heavy,
        queue=definition.queue,
        available=not missing_modules(definition),
    )
    if not entry["available"]:
        entry["install"] = install_command(definition)
    if isinstance(definition, Extractor) and definition.output_schema is not None:
        entry["outputSchema"] = to_json_schema(definition.output_schema)
    return entry
