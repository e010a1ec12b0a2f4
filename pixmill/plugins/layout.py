"""Built-in layout & composition tools: border, circle-crop, image-pad and beautify (one
image), and collage, stitch, split and sprite-sheet (several images in, or several out).

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.

The single-image tools work on an RGBA copy of the picture and keep `img.info` (ICC profile,
EXIF) on the pixels they return. Output format: the input's format is kept, except when the
result has transparent pixels (rounded corners, a shadow, a circle, a transparent pad) and the
input's format cannot hold alpha (jpg, bmp): then the result is PNG, because flattening would
silently paint over exactly what the user asked for. A result that ends up fully opaque is
returned as RGB so a JPEG stays a JPEG. Animated inputs are processed frame by frame.

The multi-image tools (collage, stitch, sprite-sheet) take still images only (an animation is
refused, not flattened to its first frame) and decode one input at a time. Their result keeps
the first input's format under the same alpha rule (an icon's becomes PNG) and carries no
EXIF (it is no one photo): when the inputs' ICC profiles differ, each is converted to sRGB
first and the result has no profile; when they all share one, it is kept. Split returns a ZIP
of tiles in the input's format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

from pixmill import (
    Color,
    Context,
    FileInput,
    FileResult,
    ImageResult,
    InputFile,
    Inputs,
    OutputKind,
    Settings,
    Tool,
    hookimpl,
    parse_color,
)
from pixmill.core.archives import zip_archive
from pixmill.core.errors import BadRequestError
from pixmill.core.imageio import encode_image
from pixmill.plugins.essentials import (
    MAX_DIMENSION,
    RESAMPLE,
    check_output_size,
    convert_mode,
    map_frames,
    resamplable,
    to_srgb,
)

MAX_BORDER = 2000
MAX_RADIUS = 5000
MAX_SHADOW_BLUR = 200
MAX_SHADOW_OFFSET = 500
# Rounded corners are drawn this many times larger and shrunk, for smooth (anti-aliased)
# edges; a corner larger than SUPERSAMPLE_LIMIT pixels is drawn at a smaller factor, where
# a one-pixel stair is invisible anyway, so the scratch image stays small.
SUPERSAMPLE = 4
SUPERSAMPLE_LIMIT = 2048
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")

TRANSPARENT = (0, 0, 0, 0)
Rgba = tuple[int, int, int, int]
ImageInfo = dict[str | tuple[int, int], Any]  # the type of Pillow's `Image.info`


# --- shared helpers ---------------------------------------------------------------------------


def rgba_of(img: Image.Image) -> Image.Image:
    """`img` as RGBA with its ICC profile and EXIF kept (16-bit and CMYK handled by `convert_mode`).

    A grey image's profile is dropped: a grey ICC profile on RGB pixels would be a lie.
    """
    info = dict(img.info)
    if img.mode in GREY_MODES:
        info.pop("icc_profile", None)
    converted = convert_mode(resamplable(img), "RGBA")
    if "icc_profile" not in converted.info:
        info.pop("icc_profile", None)  # convert_mode dropped a CMYK profile for a reason
    info.pop("transparency", None)
    converted.info = info
    return converted


def with_info(canvas: Image.Image, info: ImageInfo) -> Image.Image:
    """The finished canvas carrying the input's metadata, as RGB when nothing is transparent
    (so a JPEG input can stay a JPEG)."""
    alpha_low, _ = canvas.getchannel("A").getextrema()
    result = canvas.convert("RGB") if alpha_low == 255 else canvas
    result.info = dict(info)
    return result


def keep_format_or_png(ctx: Context, inputs: Inputs, transform: Callable[..., Any]) -> ImageResult:
    """Run `transform` on every frame; switch to PNG only when the result needs alpha the
    input's format does not have (see the module docstring)."""
    source = inputs.file
    result = map_frames(ctx, source, transform)
    if result.image.mode == "RGBA" and not source.format.supports_alpha:
        result.format = "png"
    return result


def corner_mask(radius: int) -> Image.Image:
    """The top-left quarter of an anti-aliased disc of `radius`: 255 inside, 0 outside."""
    factor = (
        SUPERSAMPLE if radius <= SUPERSAMPLE_LIMIT else 2 if radius <= 2 * SUPERSAMPLE_LIMIT else 1
    )
    big = radius * factor
    quarter = Image.new("L", (big, big), 0)
    ImageDraw.Draw(quarter).ellipse((0, 0, 2 * big - 1, 2 * big - 1), fill=255)
    return quarter.resize((radius, radius), Image.Resampling.BOX) if factor > 1 else quarter


def rounded_mask(size: tuple[int, int], radius: int) -> Image.Image:
    """An anti-aliased rounded-rectangle mask; `radius` is clamped to half the shorter side
    (so a square with the largest radius is a circle)."""
    width, height = size
    mask = Image.new("L", size, 255)
    radius = min(radius, width // 2, height // 2)
    if radius <= 0:
        return mask
    quarter = corner_mask(radius)
    # One quarter drawn, the other three mirrored: the corners are exactly symmetric.
    mask.paste(quarter, (0, 0))
    mask.paste(quarter.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (width - radius, 0))
    mask.paste(quarter.transpose(Image.Transpose.FLIP_TOP_BOTTOM), (0, height - radius))
    mask.paste(quarter.transpose(Image.Transpose.ROTATE_180), (width - radius, height - radius))
    return mask


def disc_mask(diameter: int) -> Image.Image:
    """An anti-aliased disc filling a `diameter` square (an odd diameter keeps its centre row)."""
    if diameter % 2 == 0:
        return rounded_mask((diameter, diameter), diameter // 2)
    bigger = rounded_mask((diameter + 1, diameter + 1), (diameter + 1) // 2)
    return bigger.resize((diameter, diameter), Image.Resampling.BOX)


def clip_alpha(layer: Image.Image, mask: Image.Image) -> Image.Image:
    """`layer` (RGBA) with everything outside `mask` made transparent, its own alpha kept."""
    clipped = layer.copy()
    clipped.putalpha(ImageChops.multiply(layer.getchannel("A"), mask))
    return clipped


def gradient_lookup(stops: list[Rgba]) -> list[int]:
    """A 4 x 256 lookup table (R, G, B, A in turn, for `Image.point`) that maps a 0-255 ramp
    onto evenly spaced colour stops, blended linearly between neighbours."""
    table: list[int] = []
    for channel in range(4):
        for level in range(256):
            position = level / 255 * (len(stops) - 1)
            index = min(int(position), len(stops) - 2)
            weight = position - index
            low, high = stops[index][channel], stops[index + 1][channel]
            table.append(round(low + (high - low) * weight))
    return table


def colorize(ramp: Image.Image, stops: list[Rgba]) -> Image.Image:
    """The RGBA image whose colour at each pixel is the gradient `stops` at the `ramp` level."""
    return Image.merge("RGBA", [ramp] * 4).point(gradient_lookup(stops))


def linear_ramp(size: tuple[int, int], css_angle: int) -> Image.Image:
    """An "L" ramp from 0 to 255 across `size`, pointing the way CSS's `linear-gradient`
    angle does (clockwise from "to top": 90 runs left to right, 180 top to bottom), so users
    can copy a gradient from a stylesheet.

    As in CSS, the ramp is exactly as long as the canvas measured along the angle, so the
    two corners it starts and ends at get the pure end colours.
    """
    width, height = size
    angle = css_angle - 90  # Pillow's ramp below starts out running left to right
    radians = math.radians(angle)
    cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
    along = max(1, round(width * cos + height * sin))
    # Across the ramp it only has to cover the canvas; 2 extra pixels hide rotation's edges.
    across = math.ceil(width * sin + height * cos) + 2
    # Pillow's ramp runs 0 (top) to 255 (bottom); turned counter-clockwise it runs left-right.
    ramp = Image.linear_gradient("L").rotate(90).resize((along, across), Image.Resampling.BILINEAR)
    if angle % 360:
        ramp = ramp.rotate(-angle, Image.Resampling.BILINEAR, expand=True, fillcolor=128)
    left, top = (ramp.width - width) // 2, (ramp.height - height) // 2
    if left < 0 or top < 0:  # the rounded ramp came out a pixel short: stretch it instead
        return ramp.resize(size, Image.Resampling.BILINEAR)
    return ramp.crop((left, top, left + width, top + height))


def radial_ramp(size: tuple[int, int]) -> Image.Image:
    """An "L" ramp from 0 at the centre to 255 at the corners (CSS's `farthest-corner`)."""
    return Image.radial_gradient("L").resize(size, Image.Resampling.BILINEAR)


def cast_shadow(
    canvas: Image.Image,
    mask: Image.Image,
    position: tuple[int, int],
    blur: int,
    offset: tuple[int, int],
    color: Rgba,
) -> None:
    """Composite onto RGBA `canvas` the soft shadow of `mask` placed at `position` + `offset`
    (the shadow's strength is `color`'s alpha); what falls outside the canvas is cut off."""
    shadow_alpha = Image.new("L", canvas.size, 0)
    opacity = mask.point(lambda value: value * color[3] // 255)
    shadow_alpha.paste(opacity, (position[0] + offset[0], position[1] + offset[1]))
    if blur:
        shadow_alpha = shadow_alpha.filter(ImageFilter.GaussianBlur(blur))
    shadow = Image.new("RGBA", canvas.size, (*color[:3], 0))
    shadow.putalpha(shadow_alpha)
    canvas.alpha_composite(shadow)


def with_shadow(layer: Image.Image, blur: int, offset: tuple[int, int], color: Rgba) -> Image.Image:
    """`layer` on a larger transparent canvas with a soft drop shadow cast by its alpha.

    The canvas grows by the blur's reach (about twice the radius) on every side plus the offset
    on its side, so the shadow is never cut off.
    """
    reach = 2 * blur
    dx, dy = offset
    left, top = reach + max(-dx, 0), reach + max(-dy, 0)
    size = (layer.width + 2 * reach + abs(dx), layer.height + 2 * reach + abs(dy))
    canvas = Image.new("RGBA", size, (*color[:3], 0))
    cast_shadow(canvas, layer.getchannel("A"), (left, top), blur, offset, color)
    canvas.alpha_composite(layer, (left, top))
    return canvas


def shadow_size(size: tuple[int, int], settings: dict[str, Any]) -> tuple[int, int]:
    if not settings["shadow"]:
        return size
    reach = 2 * settings["shadow_blur"]
    return (
        size[0] + 2 * reach + abs(settings["shadow_offset_x"]),
        size[1] + 2 * reach + abs(settings["shadow_offset_y"]),
    )


class ShadowSettings(Settings):
    """The drop-shadow settings border and future layout tools share."""

    shadow = fields.Boolean(
        load_default=False,
        metadata={"description": "cast a soft drop shadow (the canvas grows to hold it)"},
    )
    shadow_blur = fields.Integer(
        load_default=16,
        validate=validate.Range(0, MAX_SHADOW_BLUR),
        metadata={"description": "shadow softness: the Gaussian blur radius in pixels"},
    )
    shadow_offset_x = fields.Integer(
        load_default=0,
        validate=validate.Range(-MAX_SHADOW_OFFSET, MAX_SHADOW_OFFSET),
        metadata={"description": "shadow shift to the right in pixels (negative: left)"},
    )
    shadow_offset_y = fields.Integer(
        load_default=8,
        validate=validate.Range(-MAX_SHADOW_OFFSET, MAX_SHADOW_OFFSET),
        metadata={"description": "shadow shift downwards in pixels (negative: up)"},
    )
    shadow_color = Color(
        load_default="#00000080",
        metadata={"description": "shadow colour; its alpha is the shadow's strength"},
    )


# --- border -----------------------------------------------------------------------------------


class BorderSettings(ShadowSettings):
    width = fields.Integer(
        load_default=20,
        validate=validate.Range(0, MAX_BORDER),
        metadata={"description": "border thickness in pixels, added around the image"},
    )
    style = fields.String(
        load_default="solid",
        validate=validate.OneOf(("solid", "gradient")),
        metadata={
            "description": "solid fills the border with color; gradient blends from color "
            "to gradientColor along gradientAngle"
        },
    )
    color = Color(
        load_default="#000000",
        metadata={"description": "border colour (#rgb, #rgba, #rrggbb, #rrggbbaa)"},
    )
    gradient_color = Color(
        load_default="#ffffff",
        metadata={"description": "the gradient's end colour for style=gradient"},
    )
    gradient_angle = fields.Integer(
        load_default=180,
        validate=validate.Range(0, 360),
        metadata={
            "description": "gradient direction in degrees as in CSS linear-gradient: 0 bottom "
            "to top, 90 left to right, 180 top to bottom"
        },
    )
    border_radius = fields.Integer(
        load_default=0,
        validate=validate.Range(0, MAX_RADIUS),
        metadata={
            "description": "outer corner radius in pixels; the padding and the picture get "
            "concentric corners, and outside the corners is transparent"
        },
    )
    padding = fields.Integer(
        load_default=0,
        validate=validate.Range(0, MAX_BORDER),
        metadata={"description": "space in pixels between the image and the border"},
    )
    padding_color = Color(
        load_default="#ffffff",
        metadata={"description": "colour of the padding between the image and the border"},
    )


def border_size(size: tuple[int, int], settings: dict[str, Any]) -> tuple[int, int]:
    grow = 2 * (settings["width"] + settings["padding"])
    return size[0] + grow, size[1] + grow


def add_border(img: Image.Image, settings: dict[str, Any]) -> Image.Image:
    picture = rgba_of(img)
    info = picture.info
    border, padding, radius = settings["width"], settings["padding"], settings["border_radius"]
    outer = border_size(picture.size, settings)
    color = parse_color(settings["color"])
    if settings["style"] == "gradient":
        canvas = colorize(
            linear_ramp(outer, settings["gradient_angle"]),
            [color, parse_color(settings["gradient_color"])],
        )
    else:
        canvas = Image.new("RGBA", outer, color)
    if padding:
        inner = (picture.width + 2 * padding, picture.height + 2 * padding)
        fill = Image.new("RGBA", inner, parse_color(settings["padding_color"]))
        # The padding replaces the border colour under it (a translucent padding shows no
        # border through it), so it is pasted, not composited.
        canvas.paste(fill, (border, border), rounded_mask(inner, max(radius - border, 0)))
    picture_radius = max(radius - border - padding, 0)
    canvas.alpha_composite(
        clip_alpha(picture, rounded_mask(picture.size, picture_radius)),
        (border + padding, border + padding),
    )
    if radius:
        canvas = clip_alpha(canvas, rounded_mask(outer, radius))
    if settings["shadow"]:
        canvas = with_shadow(
            canvas,
            settings["shadow_blur"],
            (settings["shadow_offset_x"], settings["shadow_offset_y"]),
            parse_color(settings["shadow_color"]),
        )
    return with_info(canvas, info)


def run_border(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    header = inputs.file.header
    final = shadow_size(border_size((header.width, header.height), settings), settings)
    check_output_size(ctx, final, header.frames)
    return keep_format_or_png(ctx, inputs, lambda img: add_border(img, settings))


# --- circle-crop ------------------------------------------------------------------------------


class CircleCropSettings(Settings):
    zoom = fields.Float(
        load_default=1.0,
        validate=validate.Range(1, 5),
        metadata={
            "description": "1 takes the largest circle that fits; 2 a circle half as wide, "
            "and so on (the crop is scaled back up only when outputSize asks for it)"
        },
    )
    offset_x = fields.Integer(
        load_default=0,
        validate=validate.Range(-100, 100),
        metadata={
            "description": "horizontal position of the circle in percent of the room it has: "
            "-100 at the left edge, 0 centred, 100 at the right edge"
        },
    )
    offset_y = fields.Integer(
        load_default=0,
        validate=validate.Range(-100, 100),
        metadata={
            "description": "vertical position in percent of the room: -100 top, 0 centred, "
            "100 bottom"
        },
    )
    border_width = fields.Integer(
        load_default=0,
        validate=validate.Range(0, MAX_BORDER),
        metadata={"description": "width in pixels of a ring drawn around the circle"},
    )
    border_color = Color(
        load_default="#ffffff",
        metadata={"description": "colour of the ring"},
    )
    background = Color(
        load_default="#00000000",
        metadata={
            "description": "colour outside the circle; the default #00000000 is transparent "
            "(a jpg input then becomes png)"
        },
    )
    output_size = fields.Integer(
        load_default=None,
        validate=validate.Range(16, MAX_DIMENSION),
        metadata={
            "description": "side in pixels of the square result, ring included; by default "
            "the circle keeps the image's own scale"
        },
    )


def circle_box(size: tuple[int, int], settings: dict[str, Any]) -> tuple[int, int, int, int]:
    """The square of the source the circle is cut from, kept inside the image."""
    width, height = size
    diameter = max(1, round(min(width, height) / settings["zoom"]))
    left = round((width - diameter) / 2 * (1 + settings["offset_x"] / 100))
    top = round((height - diameter) / 2 * (1 + settings["offset_y"] / 100))
    return left, top, left + diameter, top + diameter


def circle_sizes(size: tuple[int, int], settings: dict[str, Any]) -> tuple[int, int]:
    """(picture diameter, result side) for the settings; refuses a ring that leaves no picture."""
    left, _, right, _ = circle_box(size, settings)
    ring = settings["border_width"]
    side = settings["output_size"]
    if side is None:
        return right - left, right - left + 2 * ring
    if side - 2 * ring < 1:
        raise BadRequestError(
            f"a {ring} px ring leaves no room for the picture in a {side} px result; "
            "use a smaller borderWidth or a larger outputSize",
            details={"borderWidth": ring, "outputSize": side},
        )
    return side - 2 * ring, side


def crop_circle(img: Image.Image, settings: dict[str, Any]) -> Image.Image:
    picture = rgba_of(img)
    info = picture.info
    diameter, side = circle_sizes(picture.size, settings)
    square = picture.crop(circle_box(picture.size, settings))
    if square.width != diameter:
        square = square.resize((diameter, diameter), RESAMPLE)
    canvas = Image.new("RGBA", (side, side), parse_color(settings["background"]))
    ring = settings["border_width"]
    if ring:
        canvas.alpha_composite(
            clip_alpha(
                Image.new("RGBA", (side, side), parse_color(settings["border_color"])),
                disc_mask(side),
            )
        )
    canvas.alpha_composite(clip_alpha(square, disc_mask(diameter)), (ring, ring))
    return with_info(canvas, info)


def run_circle_crop(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    header = inputs.file.header
    _, side = circle_sizes((header.width, header.height), settings)
    check_output_size(ctx, (side, side), header.frames)
    return keep_format_or_png(ctx, inputs, lambda img: crop_circle(img, settings))


# --- image-pad --------------------------------------------------------------------------------


ASPECT_TARGETS = {
    "1:1": (1, 1),
    "4:5": (4, 5),
    "5:4": (5, 4),
    "4:3": (4, 3),
    "3:4": (3, 4),
    "3:2": (3, 2),
    "2:3": (2, 3),
    "16:9": (16, 9),
    "9:16": (9, 16),
    "21:9": (21, 9),
}
PAD_BACKGROUNDS = ("color", "transparent", "blur")


class ImagePadSettings(Settings):
    target = fields.String(
        load_default="1:1",
        validate=validate.OneOf((*ASPECT_TARGETS, "custom")),
        metadata={
            "description": "aspect ratio to pad to (width:height), or custom with ratioW and "
            "ratioH; ignored when width and height give an exact canvas"
        },
    )
    ratio_w = fields.Integer(
        load_default=None,
        validate=validate.Range(1, 100),
        metadata={"description": "width part of the ratio for target=custom"},
    )
    ratio_h = fields.Integer(
        load_default=None,
        validate=validate.Range(1, 100),
        metadata={"description": "height part of the ratio for target=custom"},
    )
    width = fields.Integer(
        load_default=None,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={
            "description": "exact canvas width (with height); a larger image is shrunk to fit, "
            "a smaller one is never enlarged"
        },
    )
    height = fields.Integer(
        load_default=None,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={"description": "exact canvas height (with width)"},
    )
    background = fields.String(
        load_default="color",
        validate=validate.OneOf(PAD_BACKGROUNDS),
        metadata={
            "description": "what fills the padding: color, transparent (a jpg input becomes "
            "png), or blur (a blurred copy of the image filling the canvas)"
        },
    )
    color = Color(
        load_default="#ffffff",
        metadata={"description": "padding colour for background=color"},
    )
    blur_radius = fields.Integer(
        load_default=40,
        validate=validate.Range(1, 200),
        metadata={"description": "blur strength in pixels for background=blur"},
    )
    padding = fields.Integer(
        load_default=0,
        validate=validate.Range(0, 50),
        metadata={
            "description": "extra margin on every side in percent: of the image's own width "
            "and height for an aspect target, of the canvas for width/height"
        },
    )

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        has_ratio = data.get("ratio_w") is not None or data.get("ratio_h") is not None
        if data["target"] == "custom":
            if data.get("ratio_w") is None or data.get("ratio_h") is None:
                raise ValidationError("target=custom needs both ratioW and ratioH", "_schema")
        elif has_ratio:
            raise ValidationError("ratioW and ratioH apply only to target=custom", "_schema")
        if (data.get("width") is None) != (data.get("height") is None):
            raise ValidationError("give both width and height, or neither", "_schema")


def pad_plan(
    size: tuple[int, int], settings: dict[str, Any]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(picture size, canvas size): the picture is centred on the canvas."""
    width, height = size
    margin = settings["padding"] / 100
    if settings.get("width") is not None:
        canvas = (settings["width"], settings["height"])
        room_w = max(1, round(canvas[0] * (1 - 2 * margin)))
        room_h = max(1, round(canvas[1] * (1 - 2 * margin)))
        scale = min(1.0, room_w / width, room_h / height)
        return (max(1, round(width * scale)), max(1, round(height * scale))), canvas
    if settings["target"] == "custom":
        ratio_w, ratio_h = settings["ratio_w"], settings["ratio_h"]
    else:
        ratio_w, ratio_h = ASPECT_TARGETS[settings["target"]]
    box_w = width + 2 * round(width * margin)
    box_h = height + 2 * round(height * margin)
    if box_w * ratio_h < box_h * ratio_w:  # too narrow: widen
        canvas = (math.ceil(box_h * ratio_w / ratio_h), box_h)
    else:
        canvas = (box_w, math.ceil(box_w * ratio_h / ratio_w))
    return size, canvas


def blurred_backdrop(picture: Image.Image, size: tuple[int, int], radius: int) -> Image.Image:
    """The picture scaled to cover `size` and blurred: blurred at a quarter of the size (a
    blur hides the lost detail) so a large canvas costs little."""
    shrink = 4 if min(size) >= 64 else 1
    small = (max(1, size[0] // shrink), max(1, size[1] // shrink))
    scale = max(small[0] / picture.width, small[1] / picture.height)
    covered = picture.resize(
        (
            max(small[0], math.ceil(picture.width * scale)),
            max(small[1], math.ceil(picture.height * scale)),
        ),
        Image.Resampling.BILINEAR,
    )
    left, top = (covered.width - small[0]) // 2, (covered.height - small[1]) // 2
    backdrop = covered.crop((left, top, left + small[0], top + small[1]))
    backdrop = backdrop.filter(ImageFilter.GaussianBlur(max(1, radius / shrink)))
    backdrop = backdrop.resize(size, Image.Resampling.BILINEAR)
    backdrop.putalpha(255)  # a blurred backdrop is a backdrop, not a hole
    return backdrop


def pad_image(img: Image.Image, settings: dict[str, Any]) -> Image.Image:
    picture = rgba_of(img)
    info = picture.info
    picture_size, canvas_size = pad_plan(picture.size, settings)
    if picture_size != picture.size:
        picture = picture.resize(picture_size, RESAMPLE)
    if settings["background"] == "blur":
        canvas = blurred_backdrop(picture, canvas_size, settings["blur_radius"])
    else:
        fill = (
            TRANSPARENT
            if settings["background"] == "transparent"
            else parse_color(settings["color"])
        )
        canvas = Image.new("RGBA", canvas_size, fill)
    left = (canvas_size[0] - picture_size[0]) // 2
    top = (canvas_size[1] - picture_size[1]) // 2
    canvas.alpha_composite(picture, (left, top))
    return with_info(canvas, info)


def run_image_pad(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    header = inputs.file.header
    _, canvas = pad_plan((header.width, header.height), settings)
    check_output_size(ctx, canvas, header.frames)
    return keep_format_or_png(ctx, inputs, lambda img: pad_image(img, settings))


# --- beautify ---------------------------------------------------------------------------------


BACKGROUND_TYPES = ("solid", "linear-gradient", "radial-gradient", "transparent")
# (blur radius, downward offset, shadow alpha) per preset: soft and close to large and deep.
SHADOW_PRESETS: dict[str, tuple[int, int, int] | None] = {
    "none": None,
    "small": (8, 4, 0x40),
    "medium": (20, 10, 0x60),
    "large": (40, 20, 0x80),
}
# Each network's recommended share-image size, width x height.
SOCIAL_PRESETS: dict[str, tuple[int, int] | None] = {
    "none": None,
    "twitter": (1600, 900),
    "linkedin": (1200, 627),
    "instagram-square": (1080, 1080),
    "instagram-story": (1080, 1920),
    "facebook": (1200, 630),
    "producthunt": (1270, 760),
}
MAX_GRADIENT_STOPS = 8
DEFAULT_GRADIENT_STOPS = ("#667eea", "#764ba2")  # indigo to purple


class BeautifySettings(Settings):
    background_type = fields.String(
        load_default="linear-gradient",
        validate=validate.OneOf(BACKGROUND_TYPES),
        metadata={
            "description": "the backdrop: solid (backgroundColor), linear-gradient or "
            "radial-gradient (gradientStops), or transparent (a jpg input becomes png)"
        },
    )
    background_color = Color(
        load_default="#f1f5f9",
        metadata={"description": "backdrop colour for backgroundType=solid"},
    )
    gradient_stops = fields.List(
        Color(),
        load_default=lambda: list(DEFAULT_GRADIENT_STOPS),
        validate=validate.Length(2, MAX_GRADIENT_STOPS),
        metadata={
            # A callable default (a fresh list per call) is invisible to the JSON Schema
            # export, so it is spelled out for the docs and OpenAPI here.
            "default": list(DEFAULT_GRADIENT_STOPS),
            "description": f"2-{MAX_GRADIENT_STOPS} colours spread evenly along the gradient "
            "(from the start side, or from the centre for radial-gradient)",
        },
    )
    gradient_angle = fields.Integer(
        load_default=135,
        validate=validate.Range(0, 360),
        metadata={
            "description": "linear-gradient direction in degrees as in CSS: 90 left to right, "
            "180 top to bottom, 135 top-left to bottom-right"
        },
    )
    padding = fields.Integer(
        load_default=64,
        validate=validate.Range(0, MAX_BORDER),
        metadata={
            "description": "space in pixels around the picture (with a socialPreset: the "
            "least space kept at the canvas edges)"
        },
    )
    border_radius = fields.Integer(
        load_default=12,
        validate=validate.Range(0, MAX_RADIUS),
        metadata={"description": "corner radius of the picture in pixels"},
    )
    shadow_preset = fields.String(
        load_default="medium",
        validate=validate.OneOf(tuple(SHADOW_PRESETS)),
        metadata={"description": "drop shadow under the picture: none, small, medium or large"},
    )
    social_preset = fields.String(
        load_default="none",
        validate=validate.OneOf(tuple(SOCIAL_PRESETS)),
        metadata={
            "description": "a fixed canvas size for a network (twitter 1600x900, linkedin "
            "1200x627, instagram-square 1080x1080, instagram-story 1080x1920, facebook "
            "1200x630, producthunt 1270x760); the picture is scaled, up or down, to fit "
            "inside the padding. none: the canvas is the picture plus the padding"
        },
    )


def beautify_plan(
    size: tuple[int, int], settings: dict[str, Any]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(picture size, canvas size); the picture is centred on the canvas."""
    padding = settings["padding"]
    social = SOCIAL_PRESETS[settings["social_preset"]]
    if social is None:
        return size, (size[0] + 2 * padding, size[1] + 2 * padding)
    room_w, room_h = social[0] - 2 * padding, social[1] - 2 * padding
    if room_w < 1 or room_h < 1:
        raise BadRequestError(
            f"a padding of {padding} px leaves no room for the picture on the "
            f"{social[0]}x{social[1]} {settings['social_preset']} canvas; use a smaller padding",
            details={"padding": padding, "width": social[0], "height": social[1]},
        )
    scale = min(room_w / size[0], room_h / size[1])
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), social


def backdrop(size: tuple[int, int], settings: dict[str, Any]) -> Image.Image:
    kind = settings["background_type"]
    if kind == "transparent":
        return Image.new("RGBA", size, TRANSPARENT)
    if kind == "solid":
        return Image.new("RGBA", size, parse_color(settings["background_color"]))
    stops = [parse_color(stop) for stop in settings["gradient_stops"]]
    if kind == "radial-gradient":
        return colorize(radial_ramp(size), stops)
    return colorize(linear_ramp(size, settings["gradient_angle"]), stops)


def beautify_image(img: Image.Image, settings: dict[str, Any]) -> Image.Image:
    picture = rgba_of(img)
    info = picture.info
    picture_size, canvas_size = beautify_plan(picture.size, settings)
    if picture_size != picture.size:
        picture = picture.resize(picture_size, RESAMPLE)
    picture = clip_alpha(picture, rounded_mask(picture_size, settings["border_radius"]))
    canvas = backdrop(canvas_size, settings)
    position = ((canvas_size[0] - picture_size[0]) // 2, (canvas_size[1] - picture_size[1]) // 2)
    shadow = SHADOW_PRESETS[settings["shadow_preset"]]
    if shadow is not None:
        blur, drop, strength = shadow
        # The shadow is cast by the picture's rounded outline, not by its see-through pixels.
        outline = rounded_mask(picture_size, settings["border_radius"])
        cast_shadow(canvas, outline, position, blur, (0, drop), (0, 0, 0, strength))
    canvas.alpha_composite(picture, position)
    return with_info(canvas, info)


def run_beautify(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    header = inputs.file.header
    _, canvas = beautify_plan((header.width, header.height), settings)
    check_output_size(ctx, canvas, header.frames)
    return keep_format_or_png(ctx, inputs, lambda img: beautify_image(img, settings))


# --- shared by the multi-image tools ----------------------------------------------------------


MAX_FILES = 64
MAX_GAP = 1000
ALIGNMENTS = ("start", "center", "end")
# Fixed ZIP timestamps: the same inputs and settings give byte-identical archives.


def count_files(inputs: Inputs, tool: str, least: int, most: int | None = None) -> list[InputFile]:
    """The uploaded `file` parts, refused (400 `WRONG_FILE_COUNT`) outside [least, most]."""
    value = inputs.get("file") or []
    files = value if isinstance(value, list) else [value]
    if len(files) < least or (most is not None and len(files) > most):
        wanted = f"{least}-{most}" if most is not None else f"at least {least}"
        raise BadRequestError(
            f"{tool} takes {wanted} images as repeated 'file' parts; got {len(files)}",
            code="WRONG_FILE_COUNT",
            details={"files": len(files), "min": least, "max": most},
        )
    return files


def upright_size(source: InputFile) -> tuple[int, int]:
    header = source.header
    return header.width, header.height


def decode_picture(source: InputFile, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """A still input as RGBA, upright, with its ICC profile (an animation is refused, 422)."""
    return rgba_of(source.open(draft_size=draft_size))


def common_profile(pictures: list[Image.Image]) -> tuple[list[Image.Image], bytes | None]:
    """The pictures in one colour space, and its ICC profile for the result: the inputs'
    shared profile, or (when they differ) each converted to sRGB and no profile."""
    profiles = {picture.info.get("icc_profile") or None for picture in pictures}
    if len(profiles) == 1:
        return pictures, profiles.pop()
    return [to_srgb(picture) for picture in pictures], None


def composite_result(
    canvas: Image.Image, profile: bytes | None, first: InputFile, fmt: str | None = None
) -> ImageResult:
    """The finished RGBA canvas in the first input's format (PNG when it needs alpha the
    format lacks, or when the first input is an icon: ICO would shrink it to 256 px), with the
    shared ICC profile and no EXIF."""
    result = with_info(canvas, {"icc_profile": profile} if profile else {})
    needs_png = result.mode == "RGBA" and not first.format.supports_alpha
    if fmt is None and (needs_png or first.format.name == "ico"):
        fmt = "png"
    return ImageResult(result, format=fmt, keep_metadata=False)


def aligned(room: int, size: int, alignment: str) -> int:
    """Offset of something `size` long in `room`: at the start, centred or at the end."""
    if alignment == "start":
        return 0
    if alignment == "end":
        return room - size
    return (room - size) // 2


def grid_layout(
    sizes: Sequence[tuple[int, int]], columns: int, gap: int, margin: int, alignment: str
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """(canvas size, top-left of each item) for items laid out row by row in `columns`:
    each column as wide as its widest item, each row as tall as its tallest, `gap` between
    them and `margin` around; an item smaller than its cell is aligned in it on both axes."""
    columns = max(1, min(columns, len(sizes)))
    rows = math.ceil(len(sizes) / columns)
    widths = [0] * columns
    heights = [0] * rows
    for index, (width, height) in enumerate(sizes):
        widths[index % columns] = max(widths[index % columns], width)
        heights[index // columns] = max(heights[index // columns], height)
    lefts = [margin + sum(widths[:c]) + gap * c for c in range(columns)]
    tops = [margin + sum(heights[:r]) + gap * r for r in range(rows)]
    canvas = (
        sum(widths) + gap * (columns - 1) + 2 * margin,
        sum(heights) + gap * (rows - 1) + 2 * margin,
    )
    positions = []
    for index, (width, height) in enumerate(sizes):
        column, row = index % columns, index // columns
        positions.append(
            (
                lefts[column] + aligned(widths[column], width, alignment),
                tops[row] + aligned(heights[row], height, alignment),
            )
        )
    return canvas, positions


# --- collage ----------------------------------------------------------------------------------


# A cell: (x, y, width, height) in units of the template's (columns, rows) grid.
Cell = tuple[int, int, int, int]


def grid_template(columns: int, rows: int) -> tuple[int, int, list[Cell]]:
    return columns, rows, [(c, r, 1, 1) for r in range(rows) for c in range(columns)]


# Each template: (columns, rows, cells) on an abstract grid; cell k takes the k-th image.
COLLAGE_TEMPLATES: dict[str, tuple[int, int, list[Cell]]] = {
    "grid-2x2": grid_template(2, 2),
    "grid-3x3": grid_template(3, 3),
    "grid-2x3": grid_template(2, 3),
    "grid-3x2": grid_template(3, 2),
    "grid-4x2": grid_template(4, 2),
    "grid-4x4": grid_template(4, 4),
    "2-horizontal": grid_template(2, 1),
    "2-vertical": grid_template(1, 2),
    "3-horizontal": grid_template(3, 1),
    "3-vertical": grid_template(1, 3),
    "4-horizontal": grid_template(4, 1),
    "4-vertical": grid_template(1, 4),
    "1-big-2-small-left": (3, 2, [(0, 0, 2, 2), (2, 0, 1, 1), (2, 1, 1, 1)]),
    "1-big-2-small-right": (3, 2, [(1, 0, 2, 2), (0, 0, 1, 1), (0, 1, 1, 1)]),
    "1-big-2-small-top": (2, 3, [(0, 0, 2, 2), (0, 2, 1, 1), (1, 2, 1, 1)]),
    "1-big-2-small-bottom": (2, 3, [(0, 1, 2, 2), (0, 0, 1, 1), (1, 0, 1, 1)]),
    "1-big-3-small-left": (3, 3, [(0, 0, 2, 3), (2, 0, 1, 1), (2, 1, 1, 1), (2, 2, 1, 1)]),
    "1-big-3-small-right": (3, 3, [(1, 0, 2, 3), (0, 0, 1, 1), (0, 1, 1, 1), (0, 2, 1, 1)]),
    "1-big-3-small-top": (3, 3, [(0, 0, 3, 2), (0, 2, 1, 1), (1, 2, 1, 1), (2, 2, 1, 1)]),
    "1-big-3-small-bottom": (3, 3, [(0, 1, 3, 2), (0, 0, 1, 1), (1, 0, 1, 1), (2, 0, 1, 1)]),
    "1-big-4-small-left": (
        4,
        2,
        [(0, 0, 2, 2), (2, 0, 1, 1), (3, 0, 1, 1), (2, 1, 1, 1), (3, 1, 1, 1)],
    ),
    "1-big-4-small-right": (
        4,
        2,
        [(2, 0, 2, 2), (0, 0, 1, 1), (1, 0, 1, 1), (0, 1, 1, 1), (1, 1, 1, 1)],
    ),
    "1-big-4-small-center": (
        4,
        2,
        [(1, 0, 2, 2), (0, 0, 1, 1), (0, 1, 1, 1), (3, 0, 1, 1), (3, 1, 1, 1)],
    ),
    "1-big-5-small": (
        3,
        3,
        [(0, 0, 2, 2), (2, 0, 1, 1), (2, 1, 1, 1), (0, 2, 1, 1), (1, 2, 1, 1), (2, 2, 1, 1)],
    ),
    "2-top-1-bottom": (2, 2, [(0, 0, 1, 1), (1, 0, 1, 1), (0, 1, 2, 1)]),
    "1-top-2-bottom": (2, 2, [(0, 0, 2, 1), (0, 1, 1, 1), (1, 1, 1, 1)]),
    "2-left-1-right": (2, 2, [(0, 0, 1, 1), (0, 1, 1, 1), (1, 0, 1, 2)]),
    "1-left-2-right": (2, 2, [(0, 0, 1, 2), (1, 0, 1, 1), (1, 1, 1, 1)]),
    "2-top-3-bottom": (
        6,
        2,
        [(0, 0, 3, 1), (3, 0, 3, 1), (0, 1, 2, 1), (2, 1, 2, 1), (4, 1, 2, 1)],
    ),
    "3-top-2-bottom": (
        6,
        2,
        [(0, 0, 2, 1), (2, 0, 2, 1), (4, 0, 2, 1), (0, 1, 3, 1), (3, 1, 3, 1)],
    ),
    "3-top-4-bottom": (
        12,
        2,
        [(0, 0, 4, 1), (4, 0, 4, 1), (8, 0, 4, 1)] + [(3 * k, 1, 3, 1) for k in range(4)],
    ),
    "pinwheel-5": (
        3,
        3,
        [(0, 0, 2, 1), (2, 0, 1, 2), (1, 2, 2, 1), (0, 1, 1, 2), (1, 1, 1, 1)],
    ),
}
COLLAGE_FITS = ("cover", "contain")


def template_list() -> str:
    return ", ".join(f"{name} ({len(cells)})" for name, (_, _, cells) in COLLAGE_TEMPLATES.items())


class CollageSettings(Settings):
    template = fields.String(
        load_default="2-horizontal",
        validate=validate.OneOf(tuple(COLLAGE_TEMPLATES)),
        metadata={
            "description": "the layout; the number of images each needs is in brackets, the "
            "first image goes in the first cell (the big one in 1-big-* layouts), and images "
            "beyond that number are ignored. grid-CxR is C columns by R rows; 1-big-N-small-"
            "SIDE puts the big cell on that side; pinwheel-5 is four cells turning around a "
            f"centre one. Templates: {template_list()}"
        },
    )
    width = fields.Integer(
        load_default=1200,
        validate=validate.Range(16, MAX_DIMENSION),
        metadata={"description": "canvas width in pixels"},
    )
    height = fields.Integer(
        load_default=1200,
        validate=validate.Range(16, MAX_DIMENSION),
        metadata={"description": "canvas height in pixels"},
    )
    gap = fields.Integer(
        load_default=10,
        validate=validate.Range(0, MAX_GAP),
        metadata={
            "description": "spacing in pixels between cells and around the edge of the canvas"
        },
    )
    background_color = Color(
        load_default="#ffffff",
        metadata={
            "description": "canvas colour, seen in the gaps (and around contained images); "
            "a transparent one turns a jpg result into png"
        },
    )
    border_radius = fields.Integer(
        load_default=0,
        validate=validate.Range(0, MAX_RADIUS),
        metadata={"description": "corner radius in pixels of every cell's picture"},
    )
    fit = fields.String(
        load_default="cover",
        validate=validate.OneOf(COLLAGE_FITS),
        metadata={
            "description": "cover scales each image to fill its cell and crops the overflow "
            "(centred); contain fits the whole image inside its cell on the background"
        },
    )


def collage_boxes(settings: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    """Each cell of the template as a pixel box (left, top, right, bottom) on the canvas: cells
    meet `gap` apart and keep `gap` from the canvas edges."""
    columns, rows, cells = COLLAGE_TEMPLATES[settings["template"]]
    width, height, gap = settings["width"], settings["height"], settings["gap"]

    def edge(units: int, total: int, extent: int, start: bool) -> int:
        return round(Fraction(units, total) * (extent - gap)) + (gap if start else 0)

    boxes = []
    for x, y, w, h in cells:
        box = (
            edge(x, columns, width, True),
            edge(y, rows, height, True),
            edge(x + w, columns, width, False),
            edge(y + h, rows, height, False),
        )
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            raise BadRequestError(
                f"a gap of {gap} px leaves no room for the cells of {settings['template']} on "
                f"a {width}x{height} canvas; use a smaller gap or a larger canvas",
                details={"gap": gap, "width": width, "height": height},
            )
        boxes.append(box)
    return boxes


def fill_cell(source: InputFile, size: tuple[int, int], fit: str) -> Image.Image:
    """The picture sized for a cell of `size`: filling it (cover) or inside it (contain)."""
    width, height = upright_size(source)
    pick = max if fit == "cover" else min
    scale = pick(size[0] / width, size[1] / height)
    draft = (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))
    picture = decode_picture(source, draft_size=draft if scale < 1 else None)
    info = picture.info
    if fit == "cover":
        picture = ImageOps.fit(picture, size, method=RESAMPLE)
    else:
        picture = ImageOps.contain(picture, size, method=RESAMPLE)
    picture.info = info
    return picture


def run_collage(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    template = settings["template"]
    needed = len(COLLAGE_TEMPLATES[template][2])
    files = inputs.get("file") or []
    if len(files) < needed:
        raise BadRequestError(
            f"the {template} template needs {needed} images; got {len(files)}",
            code="NOT_ENOUGH_IMAGES",
            details={"template": template, "needed": needed, "files": len(files)},
        )
    canvas_size = (settings["width"], settings["height"])
    check_output_size(ctx, canvas_size)
    boxes = collage_boxes(settings)
    pictures: list[Image.Image] = []
    for index, (source, box) in enumerate(zip(files, boxes, strict=False)):
        ctx.check_cancelled()
        picture = fill_cell(source, (box[2] - box[0], box[3] - box[1]), settings["fit"])
        pictures.append(picture)
        ctx.progress((index + 1) / (needed + 1), "placing images")
    pictures, profile = common_profile(pictures)
    canvas = Image.new("RGBA", canvas_size, parse_color(settings["background_color"]))
    for picture, box in zip(pictures, boxes, strict=True):
        cell_w, cell_h = box[2] - box[0], box[3] - box[1]
        rounded = clip_alpha(picture, rounded_mask(picture.size, settings["border_radius"]))
        canvas.alpha_composite(
            rounded,
            (box[0] + (cell_w - picture.width) // 2, box[1] + (cell_h - picture.height) // 2),
        )
    result = composite_result(canvas, profile, files[0])
    result.meta = {"template": template, "used": needed, "ignored": len(files) - needed}
    return result


# --- stitch -----------------------------------------------------------------------------------


STITCH_DIRECTIONS = ("horizontal", "vertical", "grid")
STITCH_RESIZES = ("none", "match-height", "match-width")


class StitchSettings(Settings):
    direction = fields.String(
        load_default="horizontal",
        validate=validate.OneOf(STITCH_DIRECTIONS),
        metadata={
            "description": "horizontal (one row, in upload order), vertical (one column) or "
            "grid (rows of `columns` images, filled left to right)"
        },
    )
    columns = fields.Integer(
        load_default=2,
        validate=validate.Range(1, MAX_FILES),
        metadata={"description": "images per row for direction=grid"},
    )
    alignment = fields.String(
        load_default="center",
        validate=validate.OneOf(ALIGNMENTS),
        metadata={
            "description": "where an image smaller than its row or column sits: start (top "
            "or left), center, or end (bottom or right); in a grid, on both axes"
        },
    )
    resize = fields.String(
        load_default="none",
        validate=validate.OneOf(STITCH_RESIZES),
        metadata={
            "description": "none keeps every image's size; match-height scales each (aspect "
            "kept) to the height of the shortest, match-width to the width of the narrowest "
            "(images are only ever shrunk)"
        },
    )
    gap = fields.Integer(
        load_default=0,
        validate=validate.Range(0, MAX_GAP),
        metadata={"description": "spacing in pixels between images (none around the edge)"},
    )
    background_color = Color(
        load_default="#ffffff",
        metadata={
            "description": "colour of the gaps and of the room beside smaller images; a "
            "transparent one turns a jpg result into png"
        },
    )


def matched_sizes(sizes: list[tuple[int, int]], resize: str) -> list[tuple[int, int]]:
    """Every size after `resize`: the same height (the shortest) or width (the narrowest)."""
    if resize == "match-height":
        target = min(height for _, height in sizes)
        return [(max(1, round(width * target / height)), target) for width, height in sizes]
    if resize == "match-width":
        target = min(width for width, _ in sizes)
        return [(target, max(1, round(height * target / width))) for width, height in sizes]
    return sizes


def run_stitch(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    files = count_files(inputs, "stitch", 2, MAX_FILES)
    sizes = matched_sizes([upright_size(source) for source in files], settings["resize"])
    columns = {"horizontal": len(files), "vertical": 1}.get(
        settings["direction"], settings["columns"]
    )
    canvas_size, positions = grid_layout(sizes, columns, settings["gap"], 0, settings["alignment"])
    check_output_size(ctx, canvas_size)
    pictures: list[Image.Image] = []
    for index, (source, size) in enumerate(zip(files, sizes, strict=True)):
        ctx.check_cancelled()
        picture = decode_picture(source, draft_size=size)
        if picture.size != size:
            info = picture.info
            picture = picture.resize(size, RESAMPLE)
            picture.info = info
        pictures.append(picture)
        ctx.progress((index + 1) / (len(files) + 1), "placing images")
    pictures, profile = common_profile(pictures)
    canvas = Image.new("RGBA", canvas_size, parse_color(settings["background_color"]))
    for picture, position in zip(pictures, positions, strict=True):
        canvas.alpha_composite(picture, position)
    result = composite_result(canvas, profile, files[0])
    result.meta = {"images": len(files)}
    return result


# --- split ------------------------------------------------------------------------------------


SPLIT_MODES = ("grid", "rows", "cols", "size")
MAX_SPLIT = 50
MAX_TILES = 2500


class SplitSettings(Settings):
    mode = fields.String(
        load_default="grid",
        validate=validate.OneOf(SPLIT_MODES),
        metadata={
            "description": "grid cuts rows x cols tiles; rows cuts `rows` full-width strips; "
            "cols cuts `cols` full-height strips (equal parts, differing by at most a pixel); "
            "size cuts tiles of tileWidth x tileHeight from the top left, the last row and "
            "column keeping what is left"
        },
    )
    rows = fields.Integer(
        load_default=2,
        validate=validate.Range(1, MAX_SPLIT),
        metadata={"description": "number of rows for mode=grid or mode=rows"},
    )
    cols = fields.Integer(
        load_default=2,
        validate=validate.Range(1, MAX_SPLIT),
        metadata={"description": "number of columns for mode=grid or mode=cols"},
    )
    tile_width = fields.Integer(
        load_default=None,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={"description": "tile width in pixels for mode=size (omitted: the image's width)"},
    )
    tile_height = fields.Integer(
        load_default=None,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={
            "description": "tile height in pixels for mode=size (omitted: the image's height)"
        },
    )

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        has_size = data.get("tile_width") is not None or data.get("tile_height") is not None
        if data["mode"] == "size" and not has_size:
            raise ValidationError("mode=size needs tileWidth, tileHeight or both", "_schema")
        if data["mode"] != "size" and has_size:
            raise ValidationError("tileWidth and tileHeight apply only to mode=size", "_schema")


def even_cuts(extent: int, parts: int) -> list[int]:
    """Edges cutting `extent` pixels into `parts` near-equal runs (0 first, extent last)."""
    return [extent * k // parts for k in range(parts + 1)]


def split_cuts(size: tuple[int, int], settings: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(x edges, y edges) of the tiles; refuses more parts than pixels, or too many tiles."""
    width, height = size
    mode = settings["mode"]
    if mode == "size":
        step_x = settings["tile_width"] or width
        step_y = settings["tile_height"] or height
        xs = [*range(0, width, step_x), width]
        ys = [*range(0, height, step_y), height]
    else:
        cols = settings["cols"] if mode in ("grid", "cols") else 1
        rows = settings["rows"] if mode in ("grid", "rows") else 1
        if cols > width or rows > height:
            raise BadRequestError(
                f"a {width}x{height} image cannot be cut into {rows} rows and {cols} columns "
                "of at least one pixel",
                code="IMAGE_TOO_SMALL",
                details={"width": width, "height": height, "rows": rows, "cols": cols},
            )
        xs, ys = even_cuts(width, cols), even_cuts(height, rows)
    tiles = (len(xs) - 1) * (len(ys) - 1)
    if tiles > MAX_TILES:
        raise BadRequestError(
            f"those settings cut {tiles} tiles; at most {MAX_TILES} are made per call, so use "
            "larger tiles",
            code="TOO_MANY_TILES",
            details={"tiles": tiles, "maxTiles": MAX_TILES},
        )
    return xs, ys


def run_split(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    source = inputs.file
    xs, ys = split_cuts(upright_size(source), settings)
    img = source.open()
    fmt = source.format
    members = []
    total = (len(xs) - 1) * (len(ys) - 1)
    for row in range(len(ys) - 1):
        for col in range(len(xs) - 1):
            ctx.check_cancelled()
            tile = img.crop((xs[col], ys[row], xs[col + 1], ys[row + 1]))
            tile.info = dict(img.info)
            name = f"{source.stem}_r{row + 1}_c{col + 1}.{fmt.extension}"
            members.append((name, encode_image(tile, fmt)))
            ctx.progress(len(members) / total, "cutting tiles")
    return FileResult(
        zip_archive(members),
        "zip",
        filename=f"{source.stem}-tiles",
        meta={"rows": len(ys) - 1, "cols": len(xs) - 1, "tiles": total},
    )


# --- sprite-sheet -----------------------------------------------------------------------------


SPRITE_FORMATS = {"png": "png", "webp": "webp", "jpeg": "jpg"}
SPRITE_NAME = "spritesheet"


class SpriteSheetSettings(Settings):
    columns = fields.Integer(
        load_default=4,
        validate=validate.Range(1, 16),
        metadata={
            "description": "sprites per row (fewer images than columns: one row); each "
            "column is as wide as its widest sprite, each row as tall as its tallest"
        },
    )
    padding = fields.Integer(
        load_default=0,
        validate=validate.Range(0, 256),
        metadata={"description": "pixels between sprites and around the sheet's edge"},
    )
    background = Color(
        load_default="#00000000",
        metadata={
            "description": "sheet colour behind and between the sprites; the default is "
            "transparent (a jpeg sheet is flattened onto this colour made opaque)"
        },
    )
    format = fields.String(
        load_default="png",
        validate=validate.OneOf(tuple(SPRITE_FORMATS)),
        metadata={"description": "format of the sheet image: png, webp or jpeg"},
    )
    quality = fields.Integer(
        load_default=90,
        validate=validate.Range(1, 100),
        metadata={"description": "encoder quality for webp and jpeg (png is lossless)"},
    )


def frame_names(files: Sequence[InputFile]) -> list[str]:
    """The uploads' filenames as frame keys, made unique (`a.png`, `a-2.png`, ...)."""
    names: list[str] = []
    seen: set[str] = set()
    for source in files:
        name = source.filename.replace("\\", "/").rsplit("/", 1)[-1] or "image"
        stem, dot, suffix = name.rpartition(".")
        if not dot:
            stem, suffix = name, ""
        candidate, counter = name, 1
        while candidate in seen:
            counter += 1
            candidate = f"{stem}-{counter}{dot}{suffix}"
        seen.add(candidate)
        names.append(candidate)
    return names


def frame_map(
    names: list[str],
    sizes: Sequence[tuple[int, int]],
    positions: Sequence[tuple[int, int]],
    sheet: tuple[int, int],
    image_name: str,
) -> dict[str, Any]:
    """A TexturePacker "JSON (hash)" map: each sprite's rectangle on the sheet by filename."""
    frames = {}
    for name, (width, height), (x, y) in zip(names, sizes, positions, strict=True):
        frames[name] = {
            "frame": {"x": x, "y": y, "w": width, "h": height},
            "rotated": False,
            "trimmed": False,
            "spriteSourceSize": {"x": 0, "y": 0, "w": width, "h": height},
            "sourceSize": {"w": width, "h": height},
        }
    return {
        "frames": frames,
        "meta": {
            "app": "pixmill",
            "image": image_name,
            "format": "RGBA8888",
            "size": {"w": sheet[0], "h": sheet[1]},
            "scale": "1",
        },
    }


def run_sprite_sheet(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    files = count_files(inputs, "sprite-sheet", 2, MAX_FILES)
    sizes = [upright_size(source) for source in files]
    padding = settings["padding"]
    sheet_size, positions = grid_layout(sizes, settings["columns"], padding, padding, "start")
    check_output_size(ctx, sheet_size)
    pictures: list[Image.Image] = []
    for index, source in enumerate(files):
        ctx.check_cancelled()
        pictures.append(decode_picture(source))
        ctx.progress((index + 1) / (len(files) + 1), "packing sprites")
    pictures, profile = common_profile(pictures)
    background = parse_color(settings["background"])
    sheet = Image.new("RGBA", sheet_size, background)
    for picture, position in zip(pictures, positions, strict=True):
        sheet.alpha_composite(picture, position)
    if profile:
        sheet.info["icc_profile"] = profile
    fmt = SPRITE_FORMATS[settings["format"]]
    image_name = f"{SPRITE_NAME}.{fmt}"
    data = encode_image(
        sheet,
        fmt,
        quality=None if fmt == "png" else settings["quality"],
        keep_metadata=False,
        background=background[:3],
    )
    mapping = frame_map(frame_names(files), sizes, positions, sheet_size, image_name)
    text = json.dumps(mapping, indent=2).encode()
    return FileResult(
        zip_archive([(image_name, data), (f"{SPRITE_NAME}.json", text)]),
        "zip",
        filename=SPRITE_NAME,
        meta={"sprites": len(files), "width": sheet_size[0], "height": sheet_size[1]},
    )


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="border",
            name="Border & Frame",
            description="Frame the image with a solid or gradient border, optional padding, "
            "rounded corners and a drop shadow. A jpg input becomes png when the result has "
            "transparent corners or a shadow.",
            settings=BorderSettings,
            run=run_border,
            example={
                "width": 24,
                "style": "gradient",
                "color": "#ff6a00",
                "gradientColor": "#ee0979",
                "borderRadius": 32,
                "padding": 8,
                "shadow": True,
            },
        ),
        Tool(
            id="circle-crop",
            name="Circle Crop",
            description="Cut a circle out of the image (transparent outside by default), "
            "with zoom, position, an optional ring and output size. A jpg input becomes png "
            "when the outside is transparent.",
            settings=CircleCropSettings,
            run=run_circle_crop,
            example={"zoom": 1.2, "borderWidth": 8, "borderColor": "#ffffff", "outputSize": 256},
        ),
        Tool(
            id="image-pad",
            name="Image Pad",
            description="Pad the image to an aspect ratio (1:1, 4:5, 16:9, custom ...) or an "
            "exact width and height, on a colour, transparency, or a blurred copy of itself. "
            "A jpg input becomes png with a transparent pad.",
            settings=ImagePadSettings,
            run=run_image_pad,
            example={"target": "16:9", "background": "blur", "padding": 5},
        ),
        Tool(
            id="beautify",
            name="Beautify Screenshot",
            description="Set a screenshot on a solid, gradient or transparent backdrop with "
            "padding, rounded corners and a drop shadow, optionally sized for a social "
            "network. A jpg input becomes png on a transparent backdrop.",
            settings=BeautifySettings,
            run=run_beautify,
            example={
                "backgroundType": "radial-gradient",
                "padding": 48,
                "borderRadius": 16,
                "shadowPreset": "large",
                "socialPreset": "twitter",
            },
        ),
        Tool(
            id="collage",
            name="Collage / Grid",
            description="Arrange 2-16 images on a canvas of the given size by one of "
            f"{len(COLLAGE_TEMPLATES)} templates (grids, strips, one big with small ones, "
            "mosaics), with spacing, a background colour, rounded cells, and each image "
            "cropped to fill its cell (cover) or fitted inside it (contain). Upload the images "
            "as repeated 'file' parts; too few for the template is a 400 naming the template "
            "and the count, images beyond the template's cells are ignored. Still images only. "
            "The result is in the first image's format (png when a transparent background "
            "needs alpha or the first is an icon); meta reports the template and how many "
            "images were used and ignored.",
            settings=CollageSettings,
            run=run_collage,
            inputs=(FileInput("file", "the images, in cell order (2 or more)", multiple=True),),
            example={
                "template": "2-vertical",
                "width": 600,
                "height": 900,
                "gap": 12,
                "borderRadius": 16,
            },
        ),
        Tool(
            id="stitch",
            name="Stitch / Combine",
            description=f"Join 2-{MAX_FILES} images side by side, top to bottom, or in a grid "
            "of rows, in upload order, at their own size or scaled to a common height or "
            "width, aligned to the start, centre or end when sizes differ, with spacing and a "
            "background colour. Still images only. The result is in the first image's format "
            "(png when a transparent background needs alpha or the first is an icon).",
            settings=StitchSettings,
            run=run_stitch,
            inputs=(FileInput("file", f"the images, in order (2-{MAX_FILES})", multiple=True),),
            example={"direction": "horizontal", "resize": "match-height", "gap": 8},
        ),
        Tool(
            id="split",
            name="Image Splitting",
            description="Cut one image into tiles: a rows x cols grid, horizontal strips, "
            "vertical strips, or tiles of a given size. Returns a ZIP of the tiles in the "
            "input's format, named `<stem>_r<row>_c<col>.<ext>` (rows and columns counted from "
            f"1, top left first); at most {MAX_TILES} tiles. A still image only.",
            settings=SplitSettings,
            run=run_split,
            output=OutputKind.FILE,
            example={"mode": "grid", "rows": 3, "cols": 3},
        ),
        Tool(
            id="sprite-sheet",
            name="Sprite Sheet",
            description=f"Pack 2-{MAX_FILES} images into one sprite sheet, row by row in "
            "upload order, with padding and a background. Returns a ZIP holding "
            "spritesheet.<png|webp|jpg> and spritesheet.json, a TexturePacker-style "
            "(JSON hash) map whose frames object gives each input's filename with the x, y, "
            "w and h of its sprite on the sheet (duplicate filenames get -2, -3 ...). Still "
            "images only.",
            settings=SpriteSheetSettings,
            run=run_sprite_sheet,
            inputs=(FileInput("file", f"the sprites, in order (2-{MAX_FILES})", multiple=True),),
            output=OutputKind.FILE,
            example={"columns": 8, "padding": 2},
        ),
    ]
