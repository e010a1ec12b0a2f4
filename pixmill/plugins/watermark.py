"""Built-in watermark tools: watermark-text.

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from marshmallow import ValidationError, fields, validate
from PIL import Image, ImageDraw, ImageFont

from pixmill import Color, Context, ImageResult, Inputs, Settings, Tool, hookimpl, parse_color
from pixmill.core.errors import BadRequestError
from pixmill.core.imageio import has_alpha

FONTS_DIR = Path(__file__).parent / "fonts"
FONT_FILES = {
    "dejavu-sans": "DejaVuSans.ttf",
    "dejavu-sans-bold": "DejaVuSans-Bold.ttf",
}
POSITIONS = (
    "center",
    "top-left",
    "top",
    "top-right",
    "left",
    "right",
    "bottom-left",
    "bottom",
    "bottom-right",
    "tiled",
)
MAX_OFFSET = 10000


def _has_visible_text(value: str) -> None:
    if not value.strip():
        raise ValidationError("text must contain at least one visible character")


class WatermarkTextSettings(Settings):
    text = fields.String(
        load_default="© pixmill",
        validate=[validate.Length(1, 500), _has_visible_text],
        metadata={"description": "the watermark text (1-500 characters; \\n starts a new line)"},
    )
    font = fields.String(
        load_default="dejavu-sans",
        validate=validate.OneOf(tuple(FONT_FILES)),
        metadata={"description": "the typeface: dejavu-sans or dejavu-sans-bold"},
    )
    font_size = fields.Integer(
        load_default=48,
        validate=validate.Range(4, 1000),
        metadata={"description": "text size in pixels"},
    )
    color = Color(
        alpha=False,
        load_default="#ffffff",
        metadata={"description": "text colour as #rgb or #rrggbb"},
    )
    opacity = fields.Integer(
        load_default=50,
        validate=validate.Range(0, 100),
        metadata={"description": "opacity in percent (0 invisible, 100 solid)"},
    )
    position = fields.String(
        load_default="bottom-right",
        validate=validate.OneOf(POSITIONS),
        metadata={
            "description": "where the text goes: one of the nine anchors (center, top-left, "
            "top, ..., bottom-right) or tiled to repeat it across the whole image"
        },
    )
    margin = fields.Integer(
        load_default=24,
        validate=validate.Range(0, MAX_OFFSET),
        metadata={"description": "distance in pixels from the edges for anchored positions"},
    )
    rotation = fields.Float(
        load_default=0,
        validate=validate.Range(-360, 360),
        metadata={"description": "rotation in degrees, clockwise (negative: counter-clockwise)"},
    )
    tile_spacing = fields.Integer(
        load_default=80,
        validate=validate.Range(0, MAX_OFFSET),
        metadata={"description": "gap in pixels between repeats when position is tiled"},
    )


def load_font(ctx: Context, name: str, size: int) -> ImageFont.FreeTypeFont:
    path = FONTS_DIR / FONT_FILES[name]
    font: ImageFont.FreeTypeFont = ctx.load_model(
        f"font:{name}:{size}", lambda: ImageFont.truetype(str(path), size)
    )
    return font


def render_text_layer(
    ctx: Context, settings: dict[str, Any], max_pixels: int
) -> Image.Image | None:
    """The text, coloured, at the requested opacity and rotation, on a transparent layer.

    Returns `None` when there is nothing visible to draw.
    """
    font = load_font(ctx, settings["font"], settings["font_size"])
    text = settings["text"]
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    box = measure.multiline_textbbox((0, 0), text, font=font)
    left, top = math.floor(box[0]), math.floor(box[1])
    width, height = math.ceil(box[2]) - left, math.ceil(box[3]) - top
    if width <= 0 or height <= 0 or settings["opacity"] == 0:
        return None
    # Rotation can grow the box by up to sqrt(2) per side; check before allocating anything.
    if width * height * 2 > max_pixels:
        raise BadRequestError(
            f"the watermark text at {settings['font_size']} px would be {width}x{height} "
            "pixels, more than this server draws; use a smaller fontSize or shorter text",
            details={"width": width, "height": height},
        )
    alpha = round(255 * settings["opacity"] / 100)
    layer = Image.new("RGBA", (width, height), (*parse_color(settings["color"])[:3], 0))
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).multiline_text((-left, -top), text, font=font, fill=alpha)
    layer.putalpha(mask)
    rotation = settings["rotation"] % 360
    if rotation:
        # Pillow turns counter-clockwise; the setting is clockwise like CSS and SVG.
        layer = layer.rotate(-rotation, Image.Resampling.BICUBIC, expand=True)
    return layer


ANCHORS = {
    "center": ("center", "center"),
    "top-left": ("left", "top"),
    "top": ("center", "top"),
    "top-right": ("right", "top"),
    "left": ("left", "center"),
    "right": ("right", "center"),
    "bottom-left": ("left", "bottom"),
    "bottom": ("center", "bottom"),
    "bottom-right": ("right", "bottom"),
}


def anchor_offset(
    position: str, canvas: tuple[int, int], layer: tuple[int, int], margin: int
) -> tuple[int, int]:
    """Top-left corner of the layer for an anchored position."""
    horizontal, vertical = ANCHORS[position]
    (canvas_w, canvas_h), (layer_w, layer_h) = canvas, layer
    x = {
        "left": margin,
        "center": (canvas_w - layer_w) // 2,
        "right": canvas_w - layer_w - margin,
    }[horizontal]
    y = {
        "top": margin,
        "center": (canvas_h - layer_h) // 2,
        "bottom": canvas_h - layer_h - margin,
    }[vertical]
    return x, y


def tiled_overlay(layer: Image.Image, canvas: tuple[int, int], spacing: int) -> Image.Image:
    """`layer` repeated over the canvas in a brick pattern, one repeat centred on the canvas.

    The repeats are laid by doubling copies, so the cost grows with the canvas area and not
    with the number of repeats (tiny text on a huge image stays cheap).
    """
    step_x, step_y = layer.width + spacing, layer.height + spacing
    cell = Image.new("RGBA", (step_x, 2 * step_y), (0, 0, 0, 0))
    cell.paste(layer, (0, 0))
    half = step_x // 2
    composite_clipped(cell, layer, half, step_y)
    composite_clipped(cell, layer, half - step_x, step_y)
    canvas_w, canvas_h = canvas
    offset_x = (layer.width // 2 - canvas_w // 2) % step_x
    offset_y = (layer.height // 2 - canvas_h // 2) % (2 * step_y)
    sheet_w, sheet_h = canvas_w + offset_x, canvas_h + offset_y
    sheet = Image.new("RGBA", (max(sheet_w, cell.width), max(sheet_h, cell.height)))
    sheet.paste(cell, (0, 0))
    filled = cell.width
    while filled < sheet_w:
        sheet.paste(sheet.crop((0, 0, filled, cell.height)), (filled, 0))
        filled *= 2
    filled = cell.height
    while filled < sheet_h:
        sheet.paste(sheet.crop((0, 0, sheet.width, filled)), (0, filled))
        filled *= 2
    return sheet.crop((offset_x, offset_y, offset_x + canvas_w, offset_y + canvas_h))


def composite_clipped(base: Image.Image, layer: Image.Image, x: int, y: int) -> None:
    """Alpha-composite `layer` onto RGBA `base` at (x, y), clipping what falls outside."""
    box = (
        max(x, 0),
        max(y, 0),
        min(x + layer.width, base.width),
        min(y + layer.height, base.height),
    )
    if box[0] >= box[2] or box[1] >= box[3]:
        return
    source = (box[0] - x, box[1] - y, box[2] - x, box[3] - y)
    base.alpha_composite(layer, dest=box[:2], source=source)


def working_image(img: Image.Image) -> Image.Image:
    """`img` in a mode that can take coloured, blended text and hold the input's alpha."""
    if img.mode in ("RGB", "RGBA", "L", "LA"):
        return img
    info = dict(img.info)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        converted = img.convert("I").point(lambda v: v / 256).convert("L")
    elif img.mode == "1":
        converted = img.convert("L")
    elif img.mode == "CMYK":
        converted = img.convert("RGB")
        info.pop("icc_profile", None)  # a CMYK profile on RGB pixels would be a lie
    else:
        converted = img.convert("RGBA" if has_alpha(img) else "RGB")
    info.pop("transparency", None)
    converted.info = info
    return converted


def apply_overlay(img: Image.Image, overlay: Image.Image, x: int, y: int) -> Image.Image:
    """Blend `overlay` onto `img` at (x, y); pixels outside the overlay's ink stay untouched."""
    work = working_image(img)
    ink = overlay.getchannel("A").getbbox()
    if ink is None:
        return work
    left, top = max(x + ink[0], 0), max(y + ink[1], 0)
    right, bottom = min(x + ink[2], work.width), min(y + ink[3], work.height)
    if left >= right or top >= bottom:
        return work
    patch = work.crop((left, top, right, bottom)).convert("RGBA")
    composite_clipped(patch, overlay, x - left, y - top)
    result = work.copy()
    result.paste(patch.convert(work.mode), (left, top))
    result.info = dict(work.info)
    return result


def place_text(
    ctx: Context, settings: dict[str, Any], size: tuple[int, int]
) -> tuple[Image.Image, int, int] | None:
    """The overlay to blend onto an image of `size` and where its top-left corner goes."""
    layer = render_text_layer(ctx, settings, ctx.limits.max_pixels)
    if layer is None:
        return None
    if settings["position"] == "tiled":
        return tiled_overlay(layer, size, settings["tile_spacing"]), 0, 0
    x, y = anchor_offset(settings["position"], size, layer.size, settings["margin"])
    return layer, x, y


def stamp(img: Image.Image, placed: tuple[Image.Image, int, int] | None) -> Image.Image:
    if placed is None:
        return working_image(img)
    return apply_overlay(img, *placed)


def run_watermark_text(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    header = source.header
    placed = place_text(ctx, settings, (header.width, header.height))
    if source.is_animated:
        frames: list[Image.Image] = []
        durations: list[int] = []
        for frame, duration in source.frames():
            ctx.check_cancelled()
            frames.append(stamp(frame, placed))
            durations.append(duration)
        return ImageResult(frames[0], frames=frames[1:], durations=durations)
    return ImageResult(stamp(source.open(), placed))


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="watermark-text",
            name="Text Watermark",
            description="Draw semi-transparent text in a corner, an edge, the centre or tiled "
            "across the image, optionally rotated.",
            settings=WatermarkTextSettings,
            run=run_watermark_text,
            example={"text": "© Example Photo", "position": "tiled", "opacity": 30, "rotation": 30},
        ),
    ]
