"""A tool whose settings show what a schema declares: bounds, choices, a colour, a rule."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema
from PIL import Image, ImageChops

from pixmill import Color, Context, ImageResult, Inputs, Settings, Tool, hookimpl, parse_color


class LevelsSettings(Settings):
    black_point = fields.Integer(
        load_default=0,
        validate=validate.Range(0, 254),
        metadata={"description": "input value mapped to black"},
    )
    white_point = fields.Integer(
        load_default=255,
        validate=validate.Range(1, 255),
        metadata={"description": "input value mapped to white"},
    )
    channel = fields.String(
        load_default="all",
        validate=validate.OneOf(("all", "red", "green", "blue")),
        metadata={"description": "which channel to stretch"},
    )
    tint = Color(
        alpha=False,
        load_default=None,
        allow_none=True,
        metadata={"description": "optional colour multiplied in afterwards (#rgb or #rrggbb)"},
    )

    @validates_schema
    def _points_in_order(self, data: dict[str, Any], **_: Any) -> None:
        if data["black_point"] >= data["white_point"]:
            raise ValidationError("must be below whitePoint", field_name="blackPoint")


def levels(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    low, high = settings["black_point"], settings["white_point"]
    table = [min(255, max(0, round((v - low) * 255 / (high - low)))) for v in range(256)]
    identity = list(range(256))
    wanted = settings["channel"]
    lut = [table if wanted in ("all", name) else identity for name in ("red", "green", "blue")]
    img = inputs.file.open().convert("RGB").point(lut[0] + lut[1] + lut[2])
    if settings["tint"] is not None:
        tint = Image.new("RGB", img.size, parse_color(settings["tint"])[:3])
        img = ImageChops.multiply(img, tint)
    return ImageResult(img)


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="levels",
            name="Levels",
            description="Stretch the tones between a black point and a white point.",
            settings=LevelsSettings,
            run=levels,
            example={"blackPoint": 16, "whitePoint": 235, "channel": "all"},
        )
    ]
