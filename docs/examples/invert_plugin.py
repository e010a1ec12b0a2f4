"""A complete pixmill plugin: one tool that inverts colours, with a strength setting."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate
from PIL import Image, ImageChops

from pixmill import Context, ImageResult, Inputs, Settings, Tool, hookimpl


class InvertSettings(Settings):
    strength = fields.Integer(
        load_default=100,
        validate=validate.Range(0, 100),
        metadata={"description": "0 leaves the image as it is, 100 inverts fully"},
    )


def invert(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    img = inputs.file.open().convert("RGB")
    inverted = ImageChops.invert(img)
    ctx.progress(0.5, "blending")
    return ImageResult(Image.blend(img, inverted, settings["strength"] / 100))


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="invert",
            name="Invert colours",
            description="Invert the colours of an image, fully or partly.",
            settings=InvertSettings,
            run=invert,
            example={"strength": 100},
        )
    ]
