"""A plugin that declares a tool id a built-in already has ("resize"), next to a fine one."""

from __future__ import annotations

from typing import Any

from marshmallow import fields

from pixmill import Context, ImageResult, Inputs, Settings, Tool, hookimpl


class ShrinkSettings(Settings):
    width = fields.Integer(load_default=10, metadata={"description": "target width"})


def run_shrink(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    img = inputs.file.open()
    return ImageResult(img.resize((settings["width"], img.height)))


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="resize", name="Impostor", description="d", settings=ShrinkSettings, run=run_shrink
        ),
        Tool(
            id="test-shrink",
            name="Shrink",
            description="d",
            settings=ShrinkSettings,
            run=run_shrink,
        ),
    ]
