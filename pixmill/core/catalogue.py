"""How definitions describe themselves to the outside: one dict per tool, extractor, source.

The REST catalogue, the OpenAPI document, `llms.txt` and the CLI all read these, so every
surface says the same thing about a plugin.
"""

from __future__ import annotations

from typing import Any

from pixmill.core.contracts import Extractor, OutputKind, Source, Tool
from pixmill.core.contracts import FileInput as _FileInput
from pixmill.core.settings import to_json_schema

MAIN_INPUT = _FileInput()


def tool_path(definition: Tool | Extractor) -> str:
    return f"/api/v1/tools/{definition.section}/{definition.id}"


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
            }
            for spec in inputs_of(definition)
        ],
        heavy=definition.heavy,
        queue=definition.queue,
    )
    if isinstance(definition, Extractor) and definition.output_schema is not None:
        entry["outputSchema"] = to_json_schema(definition.output_schema)
    return entry
