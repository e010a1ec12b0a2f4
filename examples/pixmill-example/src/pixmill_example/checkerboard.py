"""The `checkerboard` source: a chessboard pattern of two colours, made from nothing.

A source brings images in (`pixmill fetch checkerboard`, or the first step of a pipeline).
This one is deterministic, the same settings give the same bytes, which makes it handy as a
test pattern for other tools.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema
from PIL import Image, ImageDraw

from pixmill import Color, Context, PixmillError, Settings, Source, SourcedImage, parse_color

MAX_SIDE = 4096
MAX_SQUARE = 1024


class CheckerboardSettings(Settings):
    width = fields.Integer(
        load_default=256,
        validate=validate.Range(1, MAX_SIDE),
        metadata={"description": "width in pixels"},
    )
    height = fields.Integer(
        load_default=256,
        validate=validate.Range(1, MAX_SIDE),
        metadata={"description": "height in pixels"},
    )
    square = fields.Integer(
        load_default=32,
        validate=validate.Range(1, MAX_SQUARE),
        metadata={"description": "side of one square in pixels"},
    )
    color = Color(
        load_default="#000000",
        metadata={"description": "colour of the top-left square and every other one"},
    )
    other_color = Color(
        load_default="#ffffff",
        metadata={"description": "colour of the remaining squares"},
    )

    @validates_schema
    def _squares_fit(self, data: dict[str, Any], **_: Any) -> None:
        # A rule across fields: one square larger than the whole image is certainly a mistake
        # (the image would be a single colour), so say so instead of returning a blank image.
        if data["square"] > max(data["width"], data["height"]):
            raise ValidationError(
                "must not be larger than the image's longer side", field_name="square"
            )


def draw_checkerboard(settings: dict[str, Any]) -> Image.Image:
    width, height, square = settings["width"], settings["height"], settings["square"]
    first, second = parse_color(settings["color"]), parse_color(settings["other_color"])
    translucent = first[3] < 255 or second[3] < 255
    mode = "RGBA" if translucent else "RGB"
    img = Image.new(mode, (width, height), first if translucent else first[:3])
    draw = ImageDraw.Draw(img)
    fill = second if translucent else second[:3]
    for row, top in enumerate(range(0, height, square)):
        for column, left in enumerate(range(0, width, square)):
            if (row + column) % 2:
                draw.rectangle((left, top, left + square - 1, top + square - 1), fill=fill)
    return img


def fetch_checkerboard(ctx: Context, settings: dict[str, Any]) -> Iterator[SourcedImage]:
    width, height = settings["width"], settings["height"]
    if width * height > ctx.limits.max_pixels:
        # The server's pixel cap applies to generated images as to uploads.
        raise PixmillError(
            f"{width}x{height} is more pixels than this server handles ({ctx.limits.max_pixels:,})",
            code="IMAGE_TOO_LARGE",
            status=413,
            details={"width": width, "height": height, "maxPixels": ctx.limits.max_pixels},
        )
    out = io.BytesIO()
    draw_checkerboard(settings).save(out, format="PNG")
    yield SourcedImage(
        data=out.getvalue(),
        filename=f"checkerboard-{width}x{height}.png",
        tags=("generated", "checkerboard"),
    )


CHECKERBOARD = Source(
    id="checkerboard",
    name="Checkerboard",
    description="A checkerboard test pattern of two colours, the same bytes for the same settings.",
    settings=CheckerboardSettings,
    fetch=fetch_checkerboard,
    example={"width": 320, "height": 240, "square": 40, "color": "#1e3a8a"},
)
