"""Built-in layout & composition tools for a single image: border, circle-crop, image-pad,
beautify.

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.

Every tool works on an RGBA copy of the picture and keeps `img.info` (ICC profile, EXIF) on
the pixels it returns. Output format: the input's format is kept, except when the result has
transparent pixels (rounded corners, a shadow, a circle, a transparent pad) and the input's
format cannot hold alpha (jpg, bmp): then the result is PNG, because flattening would silently
paint over exactly what the user asked for. A result that ends up fully opaque is returned
as RGB so a JPEG stays a JPEG. Animated inputs are processed frame by frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from pixmill import Color, Context, ImageResult, Inputs, Settings, Tool, hookimpl, parse_color
from pixmill.core.errors import BadRequestError
from pixmill.plugins.essentials import (
    MAX_DIMENSION,
    RESAMPLE,
    check_output_size,
    convert_mode,
    map_frames,
    resamplable,
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
    ]
