"""Built-in essentials: resize (more to come in this module: crop, rotate, convert, compress).

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema
from PIL import Image

from pixmill import Context, ImageResult, Inputs, Settings, Tool, hookimpl

MAX_DIMENSION = 16384
RESAMPLE = Image.Resampling.LANCZOS
# Shrink by whole factors with a box filter first, then LANCZOS over the last 3x: the same
# result to the eye at a fraction of the cost (Pillow's `reducing_gap`).
REDUCING_GAP = 3.0

FITS = ("cover", "contain", "fill", "inside", "outside")


class ResizeSettings(Settings):
    width = fields.Integer(
        load_default=None,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={"description": "target width in pixels"},
    )
    height = fields.Integer(
        load_default=None,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={"description": "target height in pixels"},
    )
    fit = fields.String(
        load_default="cover",
        validate=validate.OneOf(FITS),
        metadata={
            "description": "how to fit both width and height: cover (crop to fill), contain "
            "(letterbox), fill (stretch), inside (fit within), outside (cover without crop)"
        },
    )
    percentage = fields.Float(
        load_default=None,
        validate=validate.Range(0.1, 1000),
        metadata={"description": "scale by this percentage instead of width/height"},
    )
    without_enlargement = fields.Boolean(
        load_default=False,
        metadata={"description": "never make the image larger than it is"},
    )
    background = fields.String(
        load_default="#00000000",
        validate=validate.Regexp(r"^#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$"),
        metadata={"description": "letterbox colour for fit=contain (#rgb, #rrggbb, #rrggbbaa)"},
    )

    @validates_schema
    def _needs_a_size(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("width") is None and data.get("height") is None and not data.get("percentage"):
            raise ValidationError("give width, height or percentage", "_schema")
        if data.get("percentage") and (data.get("width") or data.get("height")):
            raise ValidationError("give either percentage or width/height, not both", "_schema")


def _parse_color(value: str) -> tuple[int, int, int, int]:
    hex_digits = value.lstrip("#")
    if len(hex_digits) in (3, 4):
        hex_digits = "".join(ch * 2 for ch in hex_digits)
    if len(hex_digits) == 6:
        hex_digits += "ff"
    r, g, b, a = (int(hex_digits[i : i + 2], 16) for i in range(0, 8, 2))
    return r, g, b, a


def plan_resize(
    source: tuple[int, int], settings: dict[str, Any]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return (scaled size, final canvas size) for the settings; cover crops, contain pads."""
    src_w, src_h = source
    if settings.get("percentage"):
        factor = settings["percentage"] / 100
        size = (max(1, round(src_w * factor)), max(1, round(src_h * factor)))
        return _limit(size, source, settings), _limit(size, source, settings)
    width, height, fit = settings.get("width"), settings.get("height"), settings["fit"]
    if width is None or height is None:
        scale = width / src_w if width is not None else height / src_h  # type: ignore[operator]
        size = (max(1, round(src_w * scale)), max(1, round(src_h * scale)))
        size = _limit(size, source, settings)
        return size, size
    if fit == "fill":
        size = _limit((width, height), source, settings)
        return size, size
    scale_w, scale_h = width / src_w, height / src_h
    scale = max(scale_w, scale_h) if fit in ("cover", "outside") else min(scale_w, scale_h)
    if settings["without_enlargement"]:
        scale = min(scale, 1.0)
    scaled = (max(1, round(src_w * scale)), max(1, round(src_h * scale)))
    if fit in ("inside", "outside"):
        return scaled, scaled
    canvas = (width, height)
    if settings["without_enlargement"]:
        canvas = (min(width, scaled[0]), min(height, scaled[1])) if fit == "cover" else canvas
    return scaled, canvas


def _limit(
    size: tuple[int, int], source: tuple[int, int], settings: dict[str, Any]
) -> tuple[int, int]:
    if settings["without_enlargement"] and (size[0] > source[0] or size[1] > source[1]):
        return source
    return size


def resize_image(
    img: Image.Image, scaled: tuple[int, int], canvas: tuple[int, int], settings: dict[str, Any]
) -> Image.Image:
    """Scale `img` (possibly already draft-decoded near `scaled`) and crop or pad to `canvas`."""
    if scaled != img.size:
        img = img.resize(scaled, RESAMPLE, reducing_gap=REDUCING_GAP)
    if canvas == scaled:
        return img
    if settings["fit"] == "cover":
        left = (scaled[0] - canvas[0]) // 2
        top = (scaled[1] - canvas[1]) // 2
        return img.crop((left, top, left + canvas[0], top + canvas[1]))
    color = _parse_color(settings["background"])
    mode = "RGBA" if color[3] < 255 or img.mode in ("RGBA", "LA") else "RGB"
    board = Image.new(mode, canvas, color if mode == "RGBA" else color[:3])
    board.info = dict(img.info)
    offset = ((canvas[0] - scaled[0]) // 2, (canvas[1] - scaled[1]) // 2)
    board.paste(img.convert(mode), offset)
    return board


def run_resize(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    header = source.header
    scaled, canvas = plan_resize((header.width, header.height), settings)
    if source.is_animated:
        frames = [(resize_image(f, scaled, canvas, settings), ms) for f, ms in source.frames()]
        return ImageResult(
            frames[0][0], frames=[f for f, _ in frames[1:]], durations=[ms for _, ms in frames]
        )
    img = source.open(draft_size=scaled)
    return ImageResult(resize_image(img, scaled, canvas, settings))


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="resize",
            name="Resize",
            description="Resize to a width and/or height with a fit mode, or by percentage.",
            settings=ResizeSettings,
            run=run_resize,
            example={"width": 800},
        ),
    ]
