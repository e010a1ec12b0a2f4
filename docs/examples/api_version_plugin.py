"""A plugin that says which plugin API it is written for."""

from typing import Any

from PIL import ImageOps

from pixmill import Context, ImageResult, Inputs, Settings, Tool, hookimpl

PIXMILL_PLUGIN_API = 1  # the plugin API this plugin is written for


def mirror(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    return ImageResult(ImageOps.mirror(inputs.file.open()))


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="mirror",
            name="Mirror",
            description="Flip the image left to right.",
            settings=Settings,
            run=mirror,
        )
    ]
