"""The `posterize` tool: fewer tones per channel, for a flat poster look.

Settings are a `pixmill.Settings` schema: every field has a default, bounds and a
description, because pixmill turns the schema into the catalogue's JSON Schema, the OpenAPI
document, the CLI's `--set` options and 400 VALIDATION_ERROR answers for bad values.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate
from PIL import Image

from pixmill import Context, ImageResult, Inputs, Settings, Tool

MIN_LEVELS = 2
MAX_LEVELS = 64


class PosterizeSettings(Settings):
    levels = fields.Integer(
        load_default=4,
        validate=validate.Range(MIN_LEVELS, MAX_LEVELS),
        metadata={"description": "tones kept per colour channel: 2 is stark, 64 is subtle"},
    )
    keep_alpha = fields.Boolean(
        load_default=True,
        metadata={
            "description": "keep the input's transparency; false flattens it onto white first"
        },
    )


def level_table(levels: int) -> list[int]:
    """A 256-entry lookup table snapping each value to the nearest of `levels` even steps.

    Steps include both 0 and 255, so black and white survive any level count.
    """
    step = 255 / (levels - 1)
    return [round(round(value / step) * step) for value in range(256)]


def posterize(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    # `open()` decodes through pixmill's safe path (format allow-list, pixel caps, EXIF
    # orientation applied); plugins never call Image.open on uploaded bytes themselves.
    img = inputs.file.open()
    translucent = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    rgba = img.convert("RGBA")
    if translucent and not settings["keep_alpha"]:
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgba = Image.alpha_composite(background, rgba)
        translucent = False
    ctx.progress(0.5, "snapping tones")
    table = level_table(settings["levels"])
    red, green, blue, alpha = rgba.split()
    channels = [band.point(table) for band in (red, green, blue)]
    if translucent:
        return ImageResult(Image.merge("RGBA", (*channels, alpha)))
    return ImageResult(Image.merge("RGB", channels))


POSTERIZE = Tool(
    id="posterize",
    name="Posterize",
    description="Reduce every colour channel to a few even tones for a flat, poster-like look.",
    settings=PosterizeSettings,
    run=posterize,
    example={"levels": 4, "keepAlpha": True},
)
