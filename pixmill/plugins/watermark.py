"""Built-in watermark & overlay tools: watermark-text, watermark-image, text-overlay,
compose and meme-generator.

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from marshmallow import ValidationError, fields, validate, validates_schema
from PIL import Image, ImageChops, ImageDraw, ImageFont

from pixmill import (
    Color,
    Context,
    FileInput,
    ImageResult,
    InputFile,
    Inputs,
    Settings,
    Tool,
    hookimpl,
    parse_color,
)
from pixmill.core.errors import BadRequestError
from pixmill.core.imageio import has_alpha
from pixmill.plugins.essentials import (
    MAX_DIMENSION,
    RESAMPLE,
    convert_mode,
    map_frames,
    resamplable,
)

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


class FontSettings(Settings):
    """The typeface and size every text-drawing tool takes."""

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


class WatermarkTextSettings(FontSettings):
    text = fields.String(
        load_default="© pixmill",
        validate=[validate.Length(1, 500), _has_visible_text],
        metadata={"description": "the watermark text (1-500 characters; \\n starts a new line)"},
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


def text_layer(
    font: ImageFont.FreeTypeFont,
    text: str,
    color: tuple[int, int, int, int],
    max_pixels: int,
    *,
    align: str = "left",
    stroke_width: int = 0,
    stroke_color: tuple[int, int, int] = (0, 0, 0),
) -> Image.Image | None:
    """`text` in `color` (its alpha the ink's opacity), optionally outlined, on a transparent
    layer cropped to the text box. `None` when there is nothing visible to draw.

    Refuses (400) a layer larger than `max_pixels`.
    """
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    options: dict[str, Any] = {"font": font, "align": align, "stroke_width": stroke_width}
    box = measure.multiline_textbbox((0, 0), text, **options)
    left, top = math.floor(box[0]), math.floor(box[1])
    width, height = math.ceil(box[2]) - left, math.ceil(box[3]) - top
    if width <= 0 or height <= 0 or color[3] == 0:
        return None
    if width * height > max_pixels:
        raise BadRequestError(
            f"the text at {round(font.size)} px would be {width}x{height} pixels, more than "
            "this server draws; use a smaller fontSize or shorter text",
            details={"width": width, "height": height},
        )
    origin = (-left, -top)
    layer = Image.new("RGBA", (width, height), (*color[:3], 0))
    mask = Image.new("L", (width, height), 0)
    if not stroke_width:
        ImageDraw.Draw(mask).multiline_text(origin, text, fill=color[3], **options)
        layer.putalpha(mask)
        return layer
    # The outline is the stroked text's whole footprint in the stroke colour, the glyphs
    # composited on top of it in the text colour.
    ImageDraw.Draw(mask).multiline_text(origin, text, fill=255, **options)
    layer = Image.new("RGBA", (width, height), (*stroke_color, 0))
    layer.putalpha(mask)
    inner = Image.new("L", (width, height), 0)
    # Drawn stroked too (the outline in black), so the glyphs sit exactly where Pillow puts
    # them inside the outline: a stroke shifts lines of multi-line text.
    ImageDraw.Draw(inner).multiline_text(origin, text, fill=255, stroke_fill=0, **options)
    fill = Image.new("RGBA", (width, height), (*color[:3], 0))
    fill.putalpha(inner)
    layer.alpha_composite(fill)
    if color[3] < 255:
        layer.putalpha(layer.getchannel("A").point(lambda v: round(v * color[3] / 255)))
    return layer


def render_text_layer(
    ctx: Context, settings: dict[str, Any], max_pixels: int
) -> Image.Image | None:
    """The text, coloured, at the requested opacity and rotation, on a transparent layer.

    Returns `None` when there is nothing visible to draw.
    """
    font = load_font(ctx, settings["font"], settings["font_size"])
    alpha = round(255 * settings["opacity"] / 100)
    color = (*parse_color(settings["color"])[:3], alpha)
    # Rotation can grow the box by up to sqrt(2) per side; check before allocating anything.
    layer = text_layer(font, settings["text"], color, max_pixels // 2)
    if layer is None:
        return None
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


def apply_overlay(
    img: Image.Image, overlay: Image.Image, x: int, y: int, *, in_place: bool = False
) -> Image.Image:
    """Blend `overlay` onto `img` at (x, y); pixels outside the overlay's ink stay untouched.

    `in_place=True` draws on `img` itself when its mode allows: for a caller that owns a
    freshly decoded image, it saves a full copy (a third of watermark-text's time at 12 MP).
    """
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
    result = work if in_place else work.copy()
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
    """`img` with the placed overlay drawn on it; `img` itself may be drawn on, so pass a
    frame or image the caller owns (every caller passes a fresh decode or frame)."""
    if placed is None:
        return working_image(img)
    return apply_overlay(img, *placed, in_place=True)


def run_watermark_text(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    header = source.header
    placed = place_text(ctx, settings, (header.width, header.height))
    return stamp_all(ctx, source, placed)


# --- shared: the second image, placement and the frame loop ----------------------------------


def overlay_image(source: InputFile) -> Image.Image:
    """A second upload (watermark, overlay) as upright RGBA; an animation gives its first frame."""
    return convert_mode(resamplable(source.open_first_frame()), "RGBA")


def with_opacity(layer: Image.Image, opacity: int) -> Image.Image:
    """`layer` (RGBA) with its own alpha scaled by `opacity` percent."""
    if opacity >= 100:
        return layer
    faded = layer.copy()
    faded.putalpha(layer.getchannel("A").point(lambda v: round(v * opacity / 100)))
    return faded


def place_layer(
    layer: Image.Image,
    size: tuple[int, int],
    settings: dict[str, Any],
) -> tuple[int, int]:
    """Top-left corner of `layer` on a canvas of `size`: the anchored `position` with `margin`,
    each axis overridden by an explicit `x` / `y` when the settings give one."""
    x, y = anchor_offset(settings["position"], size, layer.size, settings["margin"])
    if settings.get("x") is not None:
        x = settings["x"]
    if settings.get("y") is not None:
        y = settings["y"]
    return x, y


def placed_meta(placed: tuple[Image.Image, int, int] | None) -> dict[str, Any]:
    if placed is None:
        return {}
    layer, x, y = placed
    return {"x": x, "y": y, "width": layer.width, "height": layer.height}


def stamp_all(
    ctx: Context, source: InputFile, placed: tuple[Image.Image, int, int] | None
) -> ImageResult:
    """`placed` blended onto the image, or onto every frame of an animation."""
    return map_frames(ctx, source, lambda frame: stamp(frame, placed))


# --- watermark-image ---------------------------------------------------------------------------


class WatermarkImageSettings(Settings):
    opacity = fields.Integer(
        load_default=50,
        validate=validate.Range(0, 100),
        metadata={
            "description": "opacity in percent (0 invisible, 100 as opaque as the watermark "
            "itself); multiplies the watermark's own transparency"
        },
    )
    position = fields.String(
        load_default="bottom-right",
        validate=validate.OneOf(POSITIONS),
        metadata={
            "description": "where the watermark goes: one of the nine anchors (center, "
            "top-left, top, ..., bottom-right) or tiled to repeat it across the whole image"
        },
    )
    scale = fields.Float(
        load_default=20,
        validate=validate.Range(1, 100),
        metadata={
            "description": "watermark width as a percentage of the main image's width (1-100); "
            "its height follows its aspect ratio"
        },
    )
    margin = fields.Integer(
        load_default=24,
        validate=validate.Range(0, MAX_OFFSET),
        metadata={"description": "distance in pixels from the edges for anchored positions"},
    )
    tile_spacing = fields.Integer(
        load_default=80,
        validate=validate.Range(0, MAX_OFFSET),
        metadata={"description": "gap in pixels between repeats when position is tiled"},
    )


def scaled_watermark(
    ctx: Context, mark: Image.Image, canvas: tuple[int, int], scale: float
) -> Image.Image:
    width = max(1, round(canvas[0] * scale / 100))
    height = max(1, round(mark.height * width / mark.width))
    if width * height > ctx.limits.max_pixels:
        raise BadRequestError(
            f"the watermark scaled to {width}x{height} pixels is larger than this server "
            "draws; use a smaller scale or a less elongated watermark",
            details={"width": width, "height": height},
        )
    if (width, height) == mark.size:
        return mark
    return mark.resize((width, height), RESAMPLE)


def run_watermark_image(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    header = source.header
    size = (header.width, header.height)
    mark = scaled_watermark(ctx, overlay_image(inputs["watermark"]), size, settings["scale"])
    mark = with_opacity(mark, settings["opacity"])
    placed: tuple[Image.Image, int, int] | None = None
    if settings["opacity"] > 0:
        if settings["position"] == "tiled":
            placed = tiled_overlay(mark, size, settings["tile_spacing"]), 0, 0
        else:
            placed = (mark, *place_layer(mark, size, settings))
    result = stamp_all(ctx, source, placed)
    result.meta = {"watermarkWidth": mark.width, "watermarkHeight": mark.height}
    if placed is not None and settings["position"] != "tiled":
        result.meta.update(x=placed[1], y=placed[2])
    return result


# --- text-overlay ------------------------------------------------------------------------------


class TextOverlaySettings(FontSettings):
    text = fields.String(
        load_default="Your text here",
        validate=[validate.Length(1, 1000), _has_visible_text],
        metadata={"description": "the text to draw (1-1000 characters; \\n starts a new line)"},
    )
    color = Color(
        alpha=True,
        load_default="#ffffff",
        metadata={"description": "text colour as #rgb, #rgba, #rrggbb or #rrggbbaa"},
    )
    align = fields.String(
        load_default="left",
        validate=validate.OneOf(("left", "center", "right")),
        metadata={"description": "alignment of the lines of multi-line text"},
    )
    position = fields.String(
        load_default="top-left",
        validate=validate.OneOf(tuple(ANCHORS)),
        metadata={
            "description": "where the box goes when x / y are not given: one of the nine "
            "anchors (center, top-left, top, ..., bottom-right)"
        },
    )
    x = fields.Integer(
        load_default=None,
        validate=validate.Range(-MAX_OFFSET, MAX_OFFSET),
        metadata={
            "description": "left edge of the box in pixels (may be negative: the box is "
            "clipped); overrides the horizontal part of position"
        },
    )
    y = fields.Integer(
        load_default=None,
        validate=validate.Range(-MAX_OFFSET, MAX_OFFSET),
        metadata={
            "description": "top edge of the box in pixels (may be negative: the box is "
            "clipped); overrides the vertical part of position"
        },
    )
    margin = fields.Integer(
        load_default=24,
        validate=validate.Range(0, MAX_OFFSET),
        metadata={"description": "distance in pixels from the edges for anchored positions"},
    )
    background = Color(
        alpha=False,
        load_default="#000000",
        metadata={"description": "colour of the box behind the text, #rgb or #rrggbb"},
    )
    background_opacity = fields.Integer(
        load_default=60,
        validate=validate.Range(0, 100),
        metadata={"description": "opacity of the box in percent (0: no box, text only)"},
    )
    padding = fields.Integer(
        load_default=16,
        validate=validate.Range(0, 1000),
        metadata={"description": "space in pixels between the text and the box's edges"},
    )
    border_radius = fields.Integer(
        load_default=8,
        validate=validate.Range(0, 1000),
        metadata={
            "description": "corner radius of the box in pixels (capped at half its shorter side)"
        },
    )


def text_box_layer(ctx: Context, settings: dict[str, Any]) -> Image.Image | None:
    font = load_font(ctx, settings["font"], settings["font_size"])
    max_pixels = ctx.limits.max_pixels
    text = text_layer(
        font, settings["text"], parse_color(settings["color"]), max_pixels, align=settings["align"]
    )
    box_alpha = round(255 * settings["background_opacity"] / 100)
    if text is None and box_alpha == 0:
        return None
    if text is None:  # invisible text on a visible box: the box keeps the text's size
        text = text_layer(font, settings["text"], (0, 0, 0, 1), max_pixels, align=settings["align"])
        assert text is not None
        text.putalpha(0)
    pad = settings["padding"]
    width, height = text.width + 2 * pad, text.height + 2 * pad
    if width * height > max_pixels:
        raise BadRequestError(
            f"the text box would be {width}x{height} pixels, more than this server draws; "
            "use a smaller fontSize, padding or shorter text",
            details={"width": width, "height": height},
        )
    box = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    if box_alpha:
        radius = min(settings["border_radius"], min(width, height) // 2)
        fill = (*parse_color(settings["background"])[:3], box_alpha)
        ImageDraw.Draw(box).rounded_rectangle((0, 0, width - 1, height - 1), radius, fill=fill)
    box.alpha_composite(text, (pad, pad))
    return box


def run_text_overlay(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    header = source.header
    layer = text_box_layer(ctx, settings)
    placed = None
    if layer is not None:
        placed = (layer, *place_layer(layer, (header.width, header.height), settings))
    result = stamp_all(ctx, source, placed)
    result.meta = placed_meta(placed)
    return result


# --- compose -----------------------------------------------------------------------------------


def _soft_light(base: Image.Image, top: Image.Image) -> Image.Image:
    """The W3C compositing spec's soft-light (Pillow's `soft_light` is a different curve)."""
    cb = np.asarray(base, dtype=np.float64) / 255
    cs = np.asarray(top, dtype=np.float64) / 255
    darkened = np.where(cb <= 0.25, ((16 * cb - 12) * cb + 4) * cb, np.sqrt(cb))
    out = np.where(
        cs <= 0.5,
        cb - (1 - 2 * cs) * cb * (1 - cb),
        cb + (2 * cs - 1) * (darkened - cb),
    )
    return Image.fromarray(np.clip(np.rint(out * 255), 0, 255).astype(np.uint8), "RGB")


BLENDS: dict[str, Callable[[Image.Image, Image.Image], Image.Image]] = {
    "normal": lambda base, top: top,
    "multiply": ImageChops.multiply,
    "screen": ImageChops.screen,
    "overlay": ImageChops.overlay,
    "darken": ImageChops.darker,
    "lighten": ImageChops.lighter,
    "difference": ImageChops.difference,
    "add": ImageChops.add,
    "subtract": ImageChops.subtract,
    "soft-light": _soft_light,
    "hard-light": ImageChops.hard_light,
}


class ComposeSettings(Settings):
    x = fields.Integer(
        load_default=0,
        validate=validate.Range(-MAX_DIMENSION, MAX_DIMENSION),
        metadata={
            "description": "left edge of the overlay on the main image in pixels (negative "
            "moves it off the left edge; what falls outside is clipped)"
        },
    )
    y = fields.Integer(
        load_default=0,
        validate=validate.Range(-MAX_DIMENSION, MAX_DIMENSION),
        metadata={
            "description": "top edge of the overlay on the main image in pixels (negative "
            "moves it off the top edge; what falls outside is clipped)"
        },
    )
    opacity = fields.Integer(
        load_default=100,
        validate=validate.Range(0, 100),
        metadata={
            "description": "opacity of the overlay in percent; multiplies its own transparency"
        },
    )
    blend = fields.String(
        load_default="normal",
        validate=validate.OneOf(tuple(BLENDS)),
        metadata={
            "description": "blend mode: normal, multiply, screen, overlay, darken, lighten, "
            "difference, add, subtract, soft-light or hard-light (the W3C compositing "
            "formulas; add and subtract clip at white and black)"
        },
    )


def blend_onto(
    img: Image.Image, overlay: Image.Image, x: int, y: int, blend: str, opacity: int
) -> Image.Image:
    """`overlay` (RGBA) blended onto `img` at (x, y) in `blend` mode, clipped to the image.

    As in the W3C compositing model: where the base is transparent the overlay shows as is,
    where it is opaque the blend of both; the result is laid over the base with the
    overlay's alpha times `opacity`.
    """
    work = working_image(img)
    box = (
        max(x, 0),
        max(y, 0),
        min(x + overlay.width, work.width),
        min(y + overlay.height, work.height),
    )
    if box[0] >= box[2] or box[1] >= box[3] or opacity == 0:
        return work
    patch = work.crop(box).convert("RGBA")
    top = overlay.crop((box[0] - x, box[1] - y, box[2] - x, box[3] - y))
    top_rgb = top.convert("RGB")
    mixed = BLENDS[blend](patch.convert("RGB"), top_rgb)
    if blend != "normal":
        mixed = Image.composite(mixed, top_rgb, patch.getchannel("A"))
    layer = mixed.convert("RGBA")
    layer.putalpha(with_opacity(top, opacity).getchannel("A"))
    patch.alpha_composite(layer)
    result = work.copy()
    result.paste(patch.convert(work.mode), box[:2])
    result.info = dict(work.info)
    return result


def run_compose(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    overlay = overlay_image(inputs["overlay"])
    x, y = settings["x"], settings["y"]

    def compose(frame: Image.Image) -> Image.Image:
        return blend_onto(frame, overlay, x, y, settings["blend"], settings["opacity"])

    result = map_frames(ctx, inputs.file, compose)
    width, height = result.image.size
    visible = (
        max(0, min(x + overlay.width, width) - max(x, 0)),
        max(0, min(y + overlay.height, height) - max(y, 0)),
    )
    result.meta = {"visibleWidth": visible[0], "visibleHeight": visible[1]}
    return result


# --- meme-generator ----------------------------------------------------------------------------

MEME_FONT = "dejavu-sans-bold"
MEME_MIN_FONT = 8


class MemeSettings(Settings):
    top_text = fields.String(
        load_default="",
        validate=validate.Length(0, 500),
        metadata={"description": "text along the top edge (0-500 characters; \\n breaks a line)"},
    )
    bottom_text = fields.String(
        load_default="",
        validate=validate.Length(0, 500),
        metadata={
            "description": "text along the bottom edge (0-500 characters; \\n breaks a line)"
        },
    )
    font_size = fields.Integer(
        load_default=None,
        validate=validate.Range(MEME_MIN_FONT, 1000),
        metadata={
            "description": "text size in pixels; by default (null) auto-fit: the largest size "
            "at which each text, wrapped at word breaks, fits the width and a third of the "
            "height"
        },
    )
    text_color = Color(
        alpha=False,
        load_default="#ffffff",
        metadata={"description": "fill colour of the letters, #rgb or #rrggbb"},
    )
    stroke_color = Color(
        alpha=False,
        load_default="#000000",
        metadata={"description": "outline colour of the letters, #rgb or #rrggbb"},
    )
    stroke_width = fields.Integer(
        load_default=None,
        validate=validate.Range(0, 100),
        metadata={
            "description": "outline width in pixels; by default (null) an eighth of the font "
            "size (at least 1); 0 for no outline"
        },
    )
    all_caps = fields.Boolean(
        load_default=True,
        metadata={"description": "upper-case the text, as classic memes do"},
    )

    @validates_schema
    def _needs_text(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("top_text", "").strip() and not data.get("bottom_text", "").strip():
            raise ValidationError("give topText, bottomText or both", "_schema")


def wrap_words(draw: ImageDraw.ImageDraw, text: str, font: Any, stroke: int, width: int) -> str:
    """`text` with line breaks added between words so that each line fits `width` if it can
    (a single word wider than `width` keeps a line of its own)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if line and draw.textlength(candidate, font=font) + 2 * stroke > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return "\n".join(lines)


def meme_stroke(settings: dict[str, Any], size: int) -> int:
    stroke: int | None = settings["stroke_width"]
    return max(1, round(size / 8)) if stroke is None else stroke


def fit_meme_text(
    ctx: Context, text: str, settings: dict[str, Any], box: tuple[int, int]
) -> tuple[str, int]:
    """The wrapped text and font size: the given size, or the largest that fits `box`."""
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))

    def layout(size: int) -> tuple[str, bool]:
        font = load_font(ctx, MEME_FONT, size)
        stroke = meme_stroke(settings, size)
        wrapped = wrap_words(draw, text, font, stroke, box[0])
        left, top, right, bottom = draw.multiline_textbbox(
            (0, 0), wrapped, font=font, align="center", stroke_width=stroke
        )
        return wrapped, right - left <= box[0] and bottom - top <= box[1]

    if settings["font_size"] is not None:
        return layout(settings["font_size"])[0], settings["font_size"]
    low, high = MEME_MIN_FONT, max(MEME_MIN_FONT, min(box[1], 1000))
    while low < high:  # the largest size that fits (a size that fits has all smaller fit)
        middle = (low + high + 1) // 2
        if layout(middle)[1]:
            low = middle
        else:
            high = middle - 1
    return layout(low)[0], low


def meme_overlay(
    ctx: Context, settings: dict[str, Any], size: tuple[int, int]
) -> tuple[Image.Image, list[int]]:
    """Both captions on a transparent canvas of `size`, and the font sizes used."""
    width, height = size
    edge = max(2, round(min(width, height) * 0.03))
    box = (max(1, width - 2 * edge), max(1, height // 3 - edge))
    canvas = Image.new("RGBA", size, (0, 0, 0, 0))
    sizes: list[int] = []
    for key, at_top in (("top_text", True), ("bottom_text", False)):
        text = settings[key].strip()
        if not text:
            continue
        if settings["all_caps"]:
            text = text.upper()
        wrapped, font_size = fit_meme_text(ctx, text, settings, box)
        sizes.append(font_size)
        layer = text_layer(
            load_font(ctx, MEME_FONT, font_size),
            wrapped,
            parse_color(settings["text_color"]),
            ctx.limits.max_pixels,
            align="center",
            stroke_width=meme_stroke(settings, font_size),
            stroke_color=parse_color(settings["stroke_color"])[:3],
        )
        if layer is None:
            continue
        x = (width - layer.width) // 2
        y = edge if at_top else height - edge - layer.height
        composite_clipped(canvas, layer, x, y)
    return canvas, sizes


def run_meme(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    header = source.header
    canvas, sizes = meme_overlay(ctx, settings, (header.width, header.height))
    result = stamp_all(ctx, source, (canvas, 0, 0))
    result.meta = {"fontSizes": sizes}
    return result


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
        Tool(
            id="watermark-image",
            name="Image Watermark",
            description="Place a second image (a logo, the `watermark` file part) over the "
            "main image: in a corner, an edge, the centre or tiled, scaled relative to the "
            "main image's width, its own transparency kept and multiplied by opacity. "
            "Animated main images are marked frame by frame; an animated watermark gives its "
            "first frame. meta reports the watermark's size and, unless tiled, its x and y.",
            settings=WatermarkImageSettings,
            run=run_watermark_image,
            inputs=(
                FileInput("file", "the image to watermark"),
                FileInput("watermark", "the watermark image (PNG with transparency works best)"),
            ),
            example={"position": "bottom-right", "opacity": 60, "scale": 25},
        ),
        Tool(
            id="text-overlay",
            name="Text Overlay",
            description="Draw text in a rounded box (background colour and opacity, padding, "
            "corner radius) at an anchored position or at x / y, in the bundled DejaVu Sans "
            "(regular or bold). Animated images get the text on every frame. meta reports the "
            "box's x, y, width and height.",
            settings=TextOverlaySettings,
            run=run_text_overlay,
            example={"text": "Hello, world", "fontSize": 40, "position": "bottom"},
        ),
        Tool(
            id="compose",
            name="Image Composition",
            description="Layer a second image (the `overlay` file part) on top of the main "
            "image at x, y with an opacity and a blend mode (normal, multiply, screen, "
            "overlay, darken, lighten, difference, add, subtract, soft-light, hard-light). "
            "The result has the main image's size: the overlay is clipped at its edges. "
            "Animated main images are composed frame by frame; an animated overlay gives its "
            "first frame. meta reports the visible part of the overlay.",
            settings=ComposeSettings,
            run=run_compose,
            inputs=(
                FileInput("file", "the base image"),
                FileInput("overlay", "the image layered on top"),
            ),
            example={"x": 10, "y": 10, "opacity": 80, "blend": "multiply"},
        ),
        Tool(
            id="meme-generator",
            name="Meme Generator",
            description="Classic meme captions on the uploaded image (custom-image mode: the "
            "upload is the template): topText and bottomText in white bold DejaVu Sans with a "
            "black outline, upper-cased by default, auto-sized and wrapped to fit the width. "
            "Template mode (templateId) and other font families are not available. Animated "
            "images get the captions on every frame. meta.fontSizes lists the sizes used.",
            settings=MemeSettings,
            run=run_meme,
            example={"topText": "one does not simply", "bottomText": "write a meme generator"},
        ),
    ]
