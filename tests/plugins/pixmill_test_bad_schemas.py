"""Definitions whose schemas cannot be served, and one that can."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from pixmill import Context, Extractor, ImageResult, InputFile, Inputs, Settings, Tool, hookimpl


class QualitySettings(Settings):
    quality = fields.Integer(
        load_default=80, validate=validate.Range(1, 100), metadata={"description": "quality"}
    )


class UnexportableSettings(Settings):
    # A nested schema named but never defined: marshmallow and apispec cannot resolve it.
    inner = fields.Nested("NoSuchSchemaAnywhere", load_default=None)


class ExplodingSettings(Settings):
    level = fields.Integer(load_default=1, metadata={"description": "level"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("this schema cannot even be instantiated")


def run(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    return ImageResult(inputs.file.open())


def extract(ctx: Context, image: InputFile, settings: dict[str, Any]) -> dict[str, Any]:
    return {}


def tool(tool_id: str, settings: Any, example: Any = None) -> Tool:
    return Tool(
        id=tool_id,
        name=tool_id,
        description="d",
        settings=settings,
        run=run,
        example=example if example is not None else {},
    )


@hookimpl
def pixmill_tools() -> list[Any]:
    return [
        tool("test-settings-is-a-dict", {"quality": 80}),
        tool("test-settings-is-an-instance", QualitySettings()),
        tool("test-example-out-of-bounds", QualitySettings, {"quality": 500}),
        tool("test-example-unknown-field", QualitySettings, {"qualty": 50}),
        tool("test-example-not-an-object", QualitySettings, ["quality", 50]),
        tool("test-unexportable-schema", UnexportableSettings),
        tool("test-exploding-schema", ExplodingSettings),
        "not a definition at all",
        tool("test-schema-fine", QualitySettings, {"quality": 50}),
    ]


@hookimpl
def pixmill_extractors() -> list[Extractor]:
    return [
        Extractor(
            id="test-output-schema-not-a-schema",
            name="x",
            description="d",
            settings=QualitySettings,
            extract=extract,
            output_schema=dict,
        )
    ]
