"""Built-in adjustments: adjust-colors, pixelate, vignette, duotone, replace-color,
color-blindness and sharpening.

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.

Per-pixel colour maps (adjust-colors, color-blindness) are sampled into a 3D lookup table
(`ImageFilter.Color3DLUT`, trilinear interpolation in C): the Python maths runs 33^3 times per
request (65^3 once per process for the fixed simulations) instead of once per pixel, and pixmill
needs no array library. color-blindness follows Machado, Oliveira & Fernandes, "A
Physiologically-based Model for Simulation of Color Vision Deficiency" (IEEE TVCG 15(6), 2009),
applied in linear RGB; achromatopsia keeps only the Rec. 709 luminance. Every tool works on
RGB/RGBA pixels, keeps the alpha channel untouched unless the tool is about transparency, keeps
`img.info` (ICC profile, EXIF) on what it returns, and treats an animation frame by frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from marshmallow import fields, validate
from PIL import Image, ImageChops, ImageEnhance, ImageFilter, ImageMath, ImageOps

from pixmill import Color, Context, ImageResult, Inputs, Settings, Tool, hookimpl, parse_color
from pixmill.core.errors import BadRequestError
from pixmill.plugins.essentials import map_frames
from pixmill.plugins.watermark import working_image

MAX_COORDINATE = 1_000_000
# 33 samples per axis: within an 8-bit level on smooth curves, a few levels right beside a
# clipping kink; sampling costs ~36k calls of the Python colour function per request.
LUT_SIZE = 33
EFFECTS = ("none", "grayscale", "sepia", "invert")
RGB = tuple[float, float, float]

# Rec. 709 / sRGB luminance weights (also the grey axis of the hue rotation below).
LUMA = (0.2126, 0.7152, 0.0722)


# --- shared helpers ---------------------------------------------------------------------------


def rgb_image(img: Image.Image) -> Image.Image:
    """`img` as RGB, or RGBA when it has alpha, with its `info` kept (16-bit, CMYK, palette and
    grey inputs all become 8-bit colour: every adjustment can then give them colour)."""
    work = working_image(img)
    if work.mode in ("L", "LA"):
        converted = work.convert("RGBA" if work.mode == "LA" else "RGB")
        converted.info = dict(work.info)
        return converted
    return work


def with_info(result: Image.Image, source: Image.Image) -> Image.Image:
    result.info = dict(source.info)
    return result


def srgb_to_linear(value: float) -> float:
    return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4


def linear_to_srgb(value: float) -> float:
    value = min(max(value, 0.0), 1.0)
    return value * 12.92 if value <= 0.0031308 else 1.055 * value ** (1 / 2.4) - 0.055


def clip(color: Iterable[float]) -> RGB:
    red, green, blue = (min(max(channel, 0.0), 1.0) for channel in color)
    return red, green, blue


def matrix_times(matrix: tuple[RGB, RGB, RGB], color: RGB) -> RGB:
    red, green, blue = (sum(m * c for m, c in zip(row, color, strict=True)) for row in matrix)
    return red, green, blue


# --- adjust-colors ----------------------------------------------------------------------------


def _percent(description: str) -> fields.Integer:
    return fields.Integer(
        load_default=0, validate=validate.Range(-100, 100), metadata={"description": description}
    )


class AdjustColorsSettings(Settings):
    brightness = _percent("brightness in percent: -100 black, 0 unchanged, 100 twice as bright")
    contrast = _percent(
        "contrast around middle grey in percent: -100 flat grey, 0 unchanged, 100 doubled"
    )
    exposure = fields.Float(
        load_default=0.0,
        validate=validate.Range(-5, 5),
        metadata={"description": "exposure in stops (EV), applied in linear light: +1 doubles it"},
    )
    saturation = _percent("saturation in percent: -100 grey, 0 unchanged, 100 doubled")
    temperature = _percent("white balance: negative cooler (bluer), positive warmer (redder)")
    tint = _percent("tint: negative greener, positive more magenta")
    hue = fields.Integer(
        load_default=0,
        validate=validate.Range(-180, 180),
        metadata={"description": "hue rotation in degrees (the CSS hue-rotate matrix)"},
    )
    sharpness = _percent("sharpness in percent: -100 softened, 0 unchanged, 100 sharpened")
    red = _percent("red channel gain in percent: -100 removes red, 100 doubles it")
    green = _percent("green channel gain in percent: -100 removes green, 100 doubles it")
    blue = _percent("blue channel gain in percent: -100 removes blue, 100 doubles it")
    effect = fields.String(
        load_default="none",
        validate=validate.OneOf(EFFECTS),
        metadata={
            "description": "a final effect: none, grayscale (Rec. 709 luma), sepia (the CSS "
            "sepia matrix) or invert"
        },
    )


SEPIA = (
    (0.393, 0.769, 0.189),
    (0.349, 0.686, 0.168),
    (0.272, 0.534, 0.131),
)


def hue_rotation_matrix(degrees: float) -> tuple[RGB, RGB, RGB]:
    """The hue-rotate matrix of the W3C Filter Effects spec: turns hue, keeps luma."""
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return (
        (0.213 + cos * 0.787 - sin * 0.213, 0.715 - cos * 0.715 - sin * 0.715,
         0.072 - cos * 0.072 + sin * 0.928),
        (0.213 - cos * 0.213 + sin * 0.143, 0.715 + cos * 0.285 + sin * 0.140,
         0.072 - cos * 0.072 - sin * 0.283),
        (0.213 - cos * 0.213 - sin * 0.787, 0.715 - cos * 0.715 + sin * 0.715,
         0.072 + cos * 0.928 + sin * 0.072),
    )  # fmt: skip


def color_adjuster(settings: dict[str, Any]) -> Callable[[float, float, float], RGB]:
    """The per-pixel part of adjust-colors, in this order: exposure (linear light), channel
    gains with temperature and tint, brightness, contrast, saturation, hue, then the effect.
    The result is clipped after each step that can leave 0..1, as a photo editor does."""
    exposure = 2.0 ** settings["exposure"]
    temperature, tint = settings["temperature"] / 100, settings["tint"] / 100
    gains = (
        (1 + settings["red"] / 100) * (1 + 0.2 * temperature),
        (1 + settings["green"] / 100) * (1 - 0.2 * tint),
        (1 + settings["blue"] / 100) * (1 - 0.2 * temperature),
    )
    brightness = 1 + settings["brightness"] / 100
    contrast = 1 + settings["contrast"] / 100
    saturation = 1 + settings["saturation"] / 100
    hue = hue_rotation_matrix(settings["hue"]) if settings["hue"] else None
    effect = settings["effect"]

    def adjust(red: float, green: float, blue: float) -> RGB:
        color: RGB = (red, green, blue)
        if exposure != 1.0:
            color = clip(tuple(linear_to_srgb(srgb_to_linear(c) * exposure) for c in color))
        color = clip(tuple(c * g * brightness for c, g in zip(color, gains, strict=True)))
        color = clip(tuple((c - 0.5) * contrast + 0.5 for c in color))
        luma = sum(w * c for w, c in zip(LUMA, color, strict=True))
        color = clip(tuple(luma + (c - luma) * saturation for c in color))
        if hue is not None:
            color = clip(matrix_times(hue, color))
        if effect == "grayscale":
            luma = sum(w * c for w, c in zip(LUMA, color, strict=True))
            color = (luma, luma, luma)
        elif effect == "sepia":
            color = clip(matrix_times(SEPIA, color))
        elif effect == "invert":
            color = (1 - color[0], 1 - color[1], 1 - color[2])
        return color

    return adjust


def color_lut(settings: dict[str, Any]) -> ImageFilter.Color3DLUT | None:
    """The per-pixel part of the settings as a 3D LUT, or None when it changes nothing."""
    tone_settings = ("sharpness", "effect")
    if settings["effect"] == "none" and not any(
        value for key, value in settings.items() if key not in tone_settings
    ):
        return None
    return ImageFilter.Color3DLUT.generate(LUT_SIZE, color_adjuster(settings))


def adjust_colors(
    img: Image.Image, lut: ImageFilter.Color3DLUT | None, sharpness: int
) -> Image.Image:
    work = rgb_image(img)
    if lut is not None:
        work = with_info(work.filter(lut), work)
    if sharpness:
        # Pillow blends with a smoothed copy: factor 0 is the smoothed image, 2 twice as sharp.
        work = with_info(ImageEnhance.Sharpness(work).enhance(1 + sharpness / 100), work)
    return work


def run_adjust_colors(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    lut = color_lut(settings)  # sampled once, shared by every frame of an animation
    return map_frames(ctx, inputs.file, lambda img: adjust_colors(img, lut, settings["sharpness"]))


# --- pixelate ---------------------------------------------------------------------------------


class RegionSettings(Settings):
    left = fields.Integer(
        load_default=0,
        validate=validate.Range(0, MAX_COORDINATE),
        metadata={"description": "distance of the region from the left edge in pixels"},
    )
    top = fields.Integer(
        load_default=0,
        validate=validate.Range(0, MAX_COORDINATE),
        metadata={"description": "distance of the region from the top edge in pixels"},
    )
    width = fields.Integer(
        required=True,
        validate=validate.Range(1, MAX_COORDINATE),
        metadata={"description": "region width in pixels"},
    )
    height = fields.Integer(
        required=True,
        validate=validate.Range(1, MAX_COORDINATE),
        metadata={"description": "region height in pixels"},
    )


class PixelateSettings(Settings):
    block_size = fields.Integer(
        load_default=10,
        validate=validate.Range(2, 128),
        metadata={"description": "side of each square block in pixels"},
    )
    region = fields.Nested(
        RegionSettings,
        load_default=None,
        allow_none=True,
        metadata={
            "description": "pixelate only this rectangle ({left, top, width, height} in pixels, "
            "inside the image); null pixelates the whole image"
        },
    )


def region_box(size: tuple[int, int], region: dict[str, int] | None) -> tuple[int, int, int, int]:
    width, height = size
    if region is None:
        return 0, 0, width, height
    left, top = region["left"], region["top"]
    right, bottom = left + region["width"], top + region["height"]
    if right > width or bottom > height:
        raise BadRequestError(
            f"the region (left {left}, top {top}, {region['width']}x{region['height']} px) "
            f"reaches outside the {width}x{height} image",
            code="REGION_OUTSIDE_IMAGE",
            details={"imageWidth": width, "imageHeight": height, "region": dict(region)},
        )
    return left, top, right, bottom


def pixelate(img: Image.Image, block: int, box: tuple[int, int, int, int]) -> Image.Image:
    """Replace each block (aligned to the region's top-left corner) by its mean colour."""
    work = rgb_image(img)
    area = work.crop(box)
    # reduce() averages whole blocks, and the partial blocks at the right and bottom edges
    # over the pixels they do have; NEAREST then paints each mean back over its block.
    means = area.reduce(block)
    blocks = means.resize((means.width * block, means.height * block), Image.Resampling.NEAREST)
    result = work.copy()
    result.paste(blocks.crop((0, 0, area.width, area.height)), box[:2])
    return with_info(result, work)


def run_pixelate(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    header = inputs.file.header
    box = region_box((header.width, header.height), settings["region"])
    return map_frames(ctx, inputs.file, lambda img: pixelate(img, settings["block_size"], box))


# --- vignette ---------------------------------------------------------------------------------

VIGNETTE_MASK_SIDE = 512  # the mask is smooth: build it small and let BICUBIC scale it up


class VignetteSettings(Settings):
    strength = fields.Float(
        load_default=0.5,
        validate=validate.Range(0.1, 1),
        metadata={"description": "how far the edges turn into `color` (1 = completely)"},
    )
    color = Color(
        alpha=False,
        load_default="#000000",
        metadata={"description": "the colour the edges fade to, #rgb or #rrggbb"},
    )
    radius = fields.Integer(
        load_default=50,
        validate=validate.Range(0, 150),
        metadata={
            "description": "where the fade begins, in percent of the distance from the centre "
            "to the image's edge (100 = the edge midpoints)"
        },
    )
    softness = fields.Integer(
        load_default=50,
        validate=validate.Range(0, 100),
        metadata={
            "description": "length of the fade in the same percent (0 = a hard edge); full "
            "strength is reached at radius + softness"
        },
    )
    roundness = fields.Integer(
        load_default=0,
        validate=validate.Range(0, 100),
        metadata={
            "description": "0 follows the image's aspect ratio (an ellipse), 100 a circle of "
            "the same area"
        },
    )
    center_x = fields.Integer(
        load_default=50,
        validate=validate.Range(0, 100),
        metadata={"description": "horizontal centre in percent of the width"},
    )
    center_y = fields.Integer(
        load_default=50,
        validate=validate.Range(0, 100),
        metadata={"description": "vertical centre in percent of the height"},
    )


def smoothstep(edge0: float, edge1: float, value: float) -> float:
    if edge1 <= edge0:
        return 0.0 if value < edge0 else 1.0
    t = min(max((value - edge0) / (edge1 - edge0), 0.0), 1.0)
    return t * t * (3 - 2 * t)


def vignette_amount(settings: dict[str, Any], size: tuple[int, int], x: float, y: float) -> float:
    """How much of the vignette colour covers the pixel at (x, y) of an image of `size`, 0..1."""
    width, height = size
    roundness = settings["roundness"] / 100
    circle = math.sqrt(width * height) / 2
    half_x = width / 2 + (circle - width / 2) * roundness
    half_y = height / 2 + (circle - height / 2) * roundness
    dx = (x - settings["center_x"] / 100 * width) / half_x
    dy = (y - settings["center_y"] / 100 * height) / half_y
    inner = settings["radius"] / 100
    fade = smoothstep(inner, inner + settings["softness"] / 100, math.hypot(dx, dy))
    return float(settings["strength"] * fade)


def vignette_mask(settings: dict[str, Any], size: tuple[int, int]) -> Image.Image:
    width, height = size
    scale = min(1.0, VIGNETTE_MASK_SIDE / max(width, height))
    small_w, small_h = max(1, round(width * scale)), max(1, round(height * scale))
    step_x, step_y = width / small_w, height / small_h
    values = bytes(
        round(255 * vignette_amount(settings, size, (i + 0.5) * step_x, (j + 0.5) * step_y))
        for j in range(small_h)
        for i in range(small_w)
    )
    mask = Image.frombytes("L", (small_w, small_h), values)
    return mask if mask.size == size else mask.resize(size, Image.Resampling.BICUBIC)


def vignette(img: Image.Image, mask: Image.Image, color: tuple[int, int, int]) -> Image.Image:
    work = rgb_image(img)
    solid = Image.new("RGB", work.size, color)
    shaded = Image.composite(solid, work.convert("RGB"), mask)
    if work.mode == "RGBA":
        shaded.putalpha(work.getchannel("A"))
    return with_info(shaded, work)


def run_vignette(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    header = inputs.file.header
    mask = vignette_mask(settings, (header.width, header.height))
    color = parse_color(settings["color"])[:3]
    return map_frames(ctx, inputs.file, lambda img: vignette(img, mask, color))


# --- duotone ----------------------------------------------------------------------------------


class DuotoneSettings(Settings):
    shadow = Color(
        alpha=False,
        load_default="#1e3264",
        metadata={"description": "colour of the darkest tones, #rgb or #rrggbb"},
    )
    highlight = Color(
        alpha=False,
        load_default="#f0c850",
        metadata={"description": "colour of the lightest tones, #rgb or #rrggbb"},
    )
    intensity = fields.Integer(
        load_default=100,
        validate=validate.Range(0, 100),
        metadata={"description": "blend with the original in percent (100 = pure duotone)"},
    )


def duotone(img: Image.Image, settings: dict[str, Any]) -> Image.Image:
    """Map each pixel's luma onto the gradient shadow -> highlight, then blend by intensity."""
    work = rgb_image(img)
    rgb = work.convert("RGB")
    toned = ImageOps.colorize(
        rgb.convert("L"),
        black=parse_color(settings["shadow"])[:3],
        white=parse_color(settings["highlight"])[:3],
    )
    toned = Image.blend(rgb, toned, settings["intensity"] / 100)
    if work.mode == "RGBA":
        toned.putalpha(work.getchannel("A"))
    return with_info(toned, work)


def run_duotone(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    return map_frames(ctx, inputs.file, lambda img: duotone(img, settings))


# --- replace-color ----------------------------------------------------------------------------

MAX_RGB_DISTANCE = math.sqrt(3) * 255  # black to white


class ReplaceColorSettings(Settings):
    source_color = Color(
        alpha=False,
        load_default="#ffffff",
        metadata={"description": "the colour to replace, #rgb or #rrggbb"},
    )
    target_color = Color(
        alpha=False,
        load_default="#000000",
        metadata={"description": "the replacement colour, #rgb or #rrggbb"},
    )
    tolerance = fields.Integer(
        load_default=10,
        validate=validate.Range(0, 100),
        metadata={
            "description": "how far a pixel may be from sourceColor and still be replaced, in "
            "percent of the largest RGB distance (black to white); 0 = exact matches only"
        },
    )
    make_transparent = fields.Boolean(
        load_default=False,
        metadata={"description": "make matching pixels fully transparent instead of recolouring"},
    )


def match_mask(img: Image.Image, color: tuple[int, int, int], tolerance: int) -> Image.Image:
    """An L mask, 255 where the pixel's Euclidean RGB distance to `color` is within tolerance."""
    limit = (tolerance / 100 * MAX_RGB_DISTANCE) ** 2
    red, green, blue = img.convert("RGB").split()
    target_r, target_g, target_b = color

    def within(channels: dict[str, Any]) -> Any:
        dr, dg, db = channels["r"] - target_r, channels["g"] - target_g, channels["b"] - target_b
        return channels["convert"]((dr * dr + dg * dg + db * db <= limit) * 255, "L")

    mask: Image.Image = ImageMath.lambda_eval(within, r=red, g=green, b=blue)
    return mask


def replace_color(img: Image.Image, settings: dict[str, Any]) -> Image.Image:
    work = rgb_image(img)
    mask = match_mask(work, parse_color(settings["source_color"])[:3], settings["tolerance"])
    if settings["make_transparent"]:
        result = work.convert("RGBA")
        alpha = result.getchannel("A")
        result.putalpha(Image.composite(Image.new("L", work.size, 0), alpha, mask))
    else:
        result = work.copy()
        replacement = parse_color(settings["target_color"])[:3]
        solid = Image.new(work.mode, work.size, replacement)
        result.paste(solid.convert("RGB"), (0, 0), mask)  # RGB paste keeps RGBA's alpha
    return with_info(result, work)


def run_replace_color(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    return map_frames(ctx, inputs.file, lambda img: replace_color(img, settings))


# --- color-blindness --------------------------------------------------------------------------

# Machado, Oliveira & Fernandes, "A Physiologically-based Model for Simulation of Color Vision
# Deficiency", IEEE TVCG 15(6), 2009: their published matrices for linear sRGB, severity 1.0
# for the dichromacies (-opia) and severity 0.6 for the anomalous trichromacies (-omaly).
MACHADO_2009: dict[str, tuple[RGB, RGB, RGB]] = {
    "protanopia": (
        (0.152286, 1.052583, -0.204868),
        (0.114503, 0.786281, 0.099216),
        (-0.003882, -0.048116, 1.051998),
    ),
    "deuteranopia": (
        (0.367322, 0.860646, -0.227968),
        (0.280085, 0.672501, 0.047413),
        (-0.011820, 0.042940, 0.968881),
    ),
    "tritanopia": (
        (1.255528, -0.076749, -0.178779),
        (-0.078411, 0.930809, 0.147602),
        (0.004733, 0.691367, 0.303900),
    ),
    "protanomaly": (
        (0.385450, 0.769005, -0.154455),
        (0.100526, 0.829802, 0.069673),
        (-0.007442, -0.022190, 1.029632),
    ),
    "deuteranomaly": (
        (0.547494, 0.607765, -0.155259),
        (0.181692, 0.781742, 0.036566),
        (-0.010410, 0.027275, 0.983136),
    ),
    "tritanomaly": (
        (1.104996, -0.046633, -0.058363),
        (-0.032137, 0.971635, 0.060503),
        (0.001336, 0.317922, 0.680742),
    ),
}
# Achromatopsia sees only luminance (Rec. 709 Y of linear RGB); achromatomaly is taken at the
# same 0.6 severity as the anomalies above: 60% of the way from the colour to its luminance.
ACHROMATOMALY_SEVERITY = 0.6
# Blue cone monochromacy: only the S cones (and rods) work, so one signal remains: the S-cone
# response, the S row of the linear-sRGB to LMS matrix of Viénot, Brettel & Mollon (1999),
# normalised to keep white white.
S_CONE = (0.01775, 0.10944, 0.87257)
SIMULATIONS = (*MACHADO_2009, "achromatopsia", "achromatomaly", "blueConeMonochromacy")


# The simulations clip negative light to 0 and then take the steep sRGB curve near black, so
# they get Pillow's finest grid; each table is built once per process and reused.
DEFICIENCY_LUT_SIZE = 65


def deficiency_matrix(kind: str) -> tuple[RGB, RGB, RGB]:
    """`kind` as one linear-RGB matrix (the achromatic types blend towards luminance)."""
    if kind in MACHADO_2009:
        return MACHADO_2009[kind]
    if kind == "blueConeMonochromacy":
        total = sum(S_CONE)
        row = (S_CONE[0] / total, S_CONE[1] / total, S_CONE[2] / total)
        return row, row, row
    share = 1.0 if kind == "achromatopsia" else ACHROMATOMALY_SEVERITY
    y_r, y_g, y_b = (share * weight for weight in LUMA)
    keep = 1 - share
    return (y_r + keep, y_g, y_b), (y_r, y_g + keep, y_b), (y_r, y_g, y_b + keep)


@lru_cache(maxsize=len(SIMULATIONS))
def deficiency_lut(kind: str) -> ImageFilter.Color3DLUT:
    """What a viewer with deficiency `kind` sees of each sRGB colour: to linear light, the
    model's matrix, clipped, back to sRGB; sampled with the maths unrolled (~275k samples)."""
    size = DEFICIENCY_LUT_SIZE
    linear = [srgb_to_linear(step / (size - 1)) for step in range(size)]
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = deficiency_matrix(kind)
    encode = linear_to_srgb
    table: list[float] = []
    for blue in linear:  # Color3DLUT's order: red varies fastest, then green, then blue
        for green in linear:
            for red in linear:
                table += (
                    encode(m00 * red + m01 * green + m02 * blue),
                    encode(m10 * red + m11 * green + m12 * blue),
                    encode(m20 * red + m21 * green + m22 * blue),
                )
    return ImageFilter.Color3DLUT(size, table)


class ColorBlindnessSettings(Settings):
    simulation_type = fields.String(
        load_default="deuteranomaly",
        validate=validate.OneOf(SIMULATIONS),
        metadata={
            "description": "the colour vision deficiency to simulate: protanopia, deuteranopia, "
            "tritanopia (Machado et al. 2009, severity 1.0), protanomaly, deuteranomaly, "
            "tritanomaly (severity 0.6), achromatopsia (luminance only), achromatomaly "
            "(60% towards luminance) or blueConeMonochromacy (only the S-cone response, "
            "Viénot et al. 1999: blues stay bright, reds go dark)"
        },
    )


def run_color_blindness(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    lut = deficiency_lut(settings["simulation_type"])

    def simulate(img: Image.Image) -> Image.Image:
        work = rgb_image(img)
        return with_info(work.filter(lut), work)

    return map_frames(ctx, inputs.file, simulate)


# --- sharpening -------------------------------------------------------------------------------

SHARPEN_METHODS = ("adaptive", "unsharp-mask", "high-pass")
DENOISE_FILTERS: dict[str, Callable[[], ImageFilter.Filter] | None] = {
    "off": None,
    "light": lambda: ImageFilter.GaussianBlur(0.6),
    "medium": lambda: ImageFilter.MedianFilter(3),
    "strong": lambda: ImageFilter.MedianFilter(5),
}
LSTAR_TO_LEVELS = 2.55  # the adaptive curve's x1, y2, y3 are in L* units (0..100), as libvips


def _sharpen_float(
    default: float, low: float, high: float, description: str, **range_options: Any
) -> fields.Float:
    return fields.Float(
        load_default=default,
        validate=validate.Range(low, high, **range_options),
        metadata={"description": description},
    )


class SharpeningSettings(Settings):
    method = fields.String(
        load_default="adaptive",
        validate=validate.OneOf(SHARPEN_METHODS),
        metadata={
            "description": "adaptive: the libvips/sharp luminance sharpener (sigma, m1, m2, x1, "
            "y2, y3); unsharp-mask: the classic mask (amount, radius, threshold); high-pass: "
            "add back the detail a box blur removes (strength, kernelSize)"
        },
    )
    sigma = _sharpen_float(1.0, 0.01, 10, "adaptive: Gaussian blur sigma of the mask in pixels")
    m1 = _sharpen_float(1.0, 0, 100, "adaptive: sharpening of flat areas (below x1)")
    m2 = _sharpen_float(2.0, 0, 100, "adaptive: sharpening of jagged areas (above x1)")
    x1 = _sharpen_float(2.0, 0, 100, "adaptive: flat/jagged threshold in L* units (0-100)")
    y2 = _sharpen_float(10.0, 0, 100, "adaptive: most brightening, in L* units (0-100)")
    y3 = _sharpen_float(20.0, 0, 100, "adaptive: most darkening, in L* units (0-100)")
    amount = fields.Integer(
        load_default=100,
        validate=validate.Range(0, 500),
        metadata={"description": "unsharp-mask: strength in percent"},
    )
    radius = _sharpen_float(2.0, 0.1, 50, "unsharp-mask: blur radius of the mask in pixels")
    threshold = fields.Integer(
        load_default=3,
        validate=validate.Range(0, 255),
        metadata={
            "description": "unsharp-mask: smallest difference from the blurred image (in 8-bit "
            "levels) that gets sharpened; keeps flat areas and noise calm"
        },
    )
    strength = fields.Integer(
        load_default=50,
        validate=validate.Range(0, 100),
        metadata={"description": "high-pass: how much of the detail is added back, in percent"},
    )
    kernel_size = fields.Integer(
        load_default=3,
        validate=validate.OneOf((3, 5)),
        metadata={"description": "high-pass: side of the box the detail is measured over, 3 or 5"},
    )
    denoise = fields.String(
        load_default="off",
        validate=validate.OneOf(tuple(DENOISE_FILTERS)),
        metadata={
            "description": "smooth noise first so it is not sharpened too: off, light "
            "(Gaussian 0.6 px), medium (3x3 median) or strong (5x5 median)"
        },
    )


def adaptive_curve(settings: dict[str, Any]) -> list[int]:
    """libvips' sharpen curve over a luma difference stored as 128 + d (an L point table):
    slope m1 up to x1, m2 beyond, then capped at y2 brightening and y3 darkening."""
    x1 = settings["x1"] * LSTAR_TO_LEVELS
    most_up, most_down = settings["y2"] * LSTAR_TO_LEVELS, settings["y3"] * LSTAR_TO_LEVELS
    table = []
    for stored in range(256):
        difference = stored - 128
        size = abs(difference)
        if size <= x1:
            change = size * settings["m1"]
        else:
            change = x1 * settings["m1"] + (size - x1) * settings["m2"]
        signed = min(change, most_up) if difference >= 0 else -min(change, most_down)
        table.append(round(min(max(128 + signed, 0), 255)))
    return table


def sharpen_adaptive(rgb: Image.Image, settings: dict[str, Any]) -> Image.Image:
    """Sharpen luma only (Y of YCbCr standing in for libvips' L*), so edges gain no colour
    fringes."""
    luma, blue_diff, red_diff = rgb.convert("YCbCr").split()
    blurred = luma.filter(ImageFilter.GaussianBlur(settings["sigma"]))
    detail = ImageChops.subtract(luma, blurred, 1.0, 128)  # 128 + (luma - blurred)
    change = detail.point(adaptive_curve(settings))
    sharpened = ImageChops.add(luma, change, 1.0, -128)
    return Image.merge("YCbCr", (sharpened, blue_diff, red_diff)).convert("RGB")


def high_pass_kernel(size: int, strength: float) -> ImageFilter.Kernel:
    """identity + strength x (identity - box blur): adds back the detail the blur removes."""
    cells = size * size
    weights = [-strength / cells] * cells
    weights[cells // 2] = 1 + strength - strength / cells
    return ImageFilter.Kernel((size, size), weights, scale=1)


def sharpen(img: Image.Image, settings: dict[str, Any]) -> Image.Image:
    work = rgb_image(img)
    rgb = work.convert("RGB")  # sharpening alpha would fringe the edges of cut-outs
    denoise = DENOISE_FILTERS[settings["denoise"]]
    if denoise is not None:
        rgb = rgb.filter(denoise())
    if settings["method"] == "adaptive":
        rgb = sharpen_adaptive(rgb, settings)
    elif settings["method"] == "unsharp-mask":
        mask = ImageFilter.UnsharpMask(
            settings["radius"], settings["amount"], settings["threshold"]
        )
        rgb = rgb.filter(mask)
    else:
        kernel = high_pass_kernel(settings["kernel_size"], settings["strength"] / 100)
        rgb = rgb.filter(kernel)
    if work.mode == "RGBA":
        rgb.putalpha(work.getchannel("A"))
    return with_info(rgb, work)


def run_sharpening(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    return map_frames(ctx, inputs.file, lambda img: sharpen(img, settings))


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="adjust-colors",
            name="Adjust Colors",
            description="Brightness, contrast, exposure, saturation, white balance, hue, "
            "sharpness and per-channel gains, with an optional grayscale, sepia or invert "
            "effect.",
            settings=AdjustColorsSettings,
            run=run_adjust_colors,
            example={"brightness": 10, "contrast": 20, "saturation": 30, "temperature": 15},
        ),
        Tool(
            id="pixelate",
            name="Pixelate",
            description="Turn the image, or one rectangle of it, into square blocks of their "
            "mean colour.",
            settings=PixelateSettings,
            run=run_pixelate,
            example={"blockSize": 16},
        ),
        Tool(
            id="vignette",
            name="Vignette",
            description="Fade the edges of the image towards a colour, round or following "
            "the image's shape, around any centre.",
            settings=VignetteSettings,
            run=run_vignette,
            example={"strength": 0.7, "radius": 40, "softness": 60, "roundness": 100},
        ),
        Tool(
            id="duotone",
            name="Duotone",
            description="Recolour the image as a gradient between a shadow and a highlight colour.",
            settings=DuotoneSettings,
            run=run_duotone,
            example={"shadow": "#2b1055", "highlight": "#7597de", "intensity": 90},
        ),
        Tool(
            id="replace-color",
            name="Replace Color",
            description="Replace every pixel close to one colour by another colour, or make "
            "it transparent.",
            settings=ReplaceColorSettings,
            run=run_replace_color,
            example={"sourceColor": "#ffffff", "tolerance": 15, "makeTransparent": True},
        ),
        Tool(
            id="color-blindness",
            name="Color Blindness Simulation",
            description="Show the image as a viewer with one of eight colour vision "
            "deficiencies sees it (Machado, Oliveira & Fernandes 2009, in linear RGB).",
            settings=ColorBlindnessSettings,
            run=run_color_blindness,
            example={"simulationType": "protanopia"},
        ),
        Tool(
            id="sharpening",
            name="Sharpening",
            description="Sharpen with the adaptive libvips curve, an unsharp mask or a "
            "high-pass filter, optionally denoising first.",
            settings=SharpeningSettings,
            run=run_sharpening,
            example={"method": "unsharp-mask", "amount": 150, "radius": 1.5, "denoise": "light"},
        ),
    ]
