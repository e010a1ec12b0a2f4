"""Built-in essentials: resize, crop, rotate, convert and compress.

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.

Every tool keeps `img.info` on the pixels it returns (Pillow's resize, crop, transpose and
convert do; a canvas built with `Image.new` gets it copied by hand), so the core's encoder
carries the ICC profile and EXIF into the output. Animated inputs are processed frame by frame.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema
from PIL import Image, ImageCms

from pixmill import (
    Color,
    Context,
    FileResult,
    ImageResult,
    InputFile,
    Inputs,
    PixmillError,
    Settings,
    Tool,
    hookimpl,
    parse_color,
)
from pixmill.core.errors import AnimatedImageError, BadRequestError
from pixmill.core.imageio import (
    OUTPUT_FORMAT_NAMES,
    ImageFormat,
    encode_image,
    format_by_name,
    has_alpha,
)

log = logging.getLogger(__name__)

MAX_DIMENSION = 16384
MAX_COORDINATE = 1_000_000
RESAMPLE = Image.Resampling.LANCZOS
# Shrink by whole factors with a box filter first, then LANCZOS over the last 3x: the same
# result to the eye at a fraction of the cost (Pillow's `reducing_gap`).
REDUCING_GAP = 3.0

TRANSPARENT = (0, 0, 0, 0)
WHITE = (255, 255, 255, 255)

HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")

FITS = ("cover", "contain", "fill", "inside", "outside")
CROP_UNITS = ("px", "percent")
CONVERT_FORMATS = (*OUTPUT_FORMAT_NAMES, "jpeg")
COMPRESS_MODES = ("quality", "targetSize")
ICON_MAX_SIDE = 256
ICON_SIZES = (16, 24, 32, 48, 64, 128)


# --- shared helpers (public: the other built-in families build on them) ----------------------


def convert_mode(img: Image.Image, mode: str) -> Image.Image:
    """`img.convert(mode)` that keeps 16-bit tones and drops a CMYK profile when leaving CMYK."""
    if img.mode == mode:
        return img
    if img.mode in HIGH_BIT_DEPTH_MODES and mode not in HIGH_BIT_DEPTH_MODES:
        # Pillow clips every 16-bit value above 255 to white; scale the range down instead.
        img = img.point(lambda value: value / 256).convert("L")
        if mode == "L":
            return img
    converted = img.convert(mode)
    if img.mode == "CMYK":
        # Pillow's conversion is not colour-managed: a CMYK profile on RGB pixels would be a lie.
        converted.info.pop("icc_profile", None)
    return converted


def resamplable(img: Image.Image) -> Image.Image:
    """A mode Pillow resamples with a real filter (it falls back to NEAREST for P and 1)."""
    if img.mode in ("P", "PA"):
        return convert_mode(img, "RGBA" if has_alpha(img) or img.mode == "PA" else "RGB")
    if img.mode == "1":
        return convert_mode(img, "L")
    return img


def cmyk_to_srgb(img: Image.Image) -> Image.Image:
    """Convert CMYK through its own profile when it has one (a naive convert shifts colours)."""
    icc = img.info.get("icc_profile")
    converted: Image.Image | None = None
    if icc:
        try:
            source_profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(img, source_profile, srgb, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            log.warning("CMYK profile unusable (%s); converting without it", exc)
    if converted is None:
        converted = img.convert("RGB")
    converted.info = {k: v for k, v in img.info.items() if k != "icc_profile"}
    return converted


def to_srgb(img: Image.Image) -> Image.Image:
    """Colour pixels converted to sRGB through their embedded ICC profile (Display P3, Adobe
    RGB, CMYK), for results that carry no profile of their own or mix several inputs;
    unchanged without a profile, or with one that cannot be read."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    if img.mode == "CMYK":
        return cmyk_to_srgb(img)
    try:
        source_profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(
            img, source_profile, ImageCms.createProfile("sRGB"), outputMode=img.mode
        )
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        log.warning("ICC profile unusable (%s); using the pixels as they are", exc)
        return img
    return converted if converted is not None else img


def rgb8(img: Image.Image, *, alpha: bool) -> Image.Image:
    """`img` as 8-bit RGB or RGBA (16-bit tones scaled down, palettes expanded)."""
    converted = convert_mode(img, "RGBA" if alpha else "RGB")
    if "icc_profile" in img.info and "icc_profile" not in converted.info and img.mode != "CMYK":
        converted.info["icc_profile"] = img.info["icc_profile"]
    return converted


def on_white(img: Image.Image) -> Image.Image:
    """`img` as RGB, any transparency composited onto white."""
    if not has_alpha(img):
        return rgb8(img, alpha=False)
    rgba = rgb8(img, alpha=True)
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def check_output_size(ctx: Context, size: tuple[int, int], frames: int = 1) -> None:
    """Refuse a result larger than the server would decode (an animation gets the decoder's
    budget too: four times the pixel limit over all its frames)."""
    width, height = size
    budget = ctx.limits.max_pixels * (4 if frames > 1 else 1)
    if width * height > ctx.limits.max_pixels or width * height * frames > budget:
        raise BadRequestError(
            f"the result would be {width}x{height} ({width * height:,} pixels"
            + (f" x {frames} frames" if frames > 1 else "")
            + f"); this server produces at most {ctx.limits.max_pixels:,} pixels"
            + (f" per frame and {budget:,} per animation" if frames > 1 else ""),
            code="OUTPUT_TOO_LARGE",
            details={
                "width": width,
                "height": height,
                "frames": frames,
                "maxPixels": ctx.limits.max_pixels,
            },
        )


def map_frames(
    ctx: Context,
    source: InputFile,
    transform: Callable[[Image.Image], Image.Image],
    *,
    draft_size: tuple[int, int] | None = None,
) -> ImageResult:
    """Apply `transform` to a still image, or to every frame of an animation (timing kept)."""
    if not source.is_animated:
        return ImageResult(transform(source.open(draft_size=draft_size)))
    frames: list[Image.Image] = []
    durations: list[int] = []
    loop: int | None = None
    for frame, duration in source.frames():
        ctx.check_cancelled()
        if not frames:
            stored = frame.info.get("loop")
            loop = stored if isinstance(stored, int) else None
        frames.append(transform(frame))
        durations.append(duration)
    # The result keeps the input's container, so its loop count goes back as stored: a GIF
    # that played once (no loop block: None) must not come back looping forever.
    return ImageResult(frames[0], frames=frames[1:], durations=durations, options={"loop": loop})


# --- resize -----------------------------------------------------------------------------------


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
        metadata={
            "description": "never scale the image up: an axis already smaller than asked stays "
            "as it is (contain then adds no padding either)"
        },
    )
    background = Color(
        load_default="#00000000",
        metadata={
            "description": "letterbox colour for fit=contain (#rgb, #rgba, #rrggbb, #rrggbbaa); "
            "transparent is flattened onto white in formats without alpha"
        },
    )

    @validates_schema
    def _needs_a_size(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("width") is None and data.get("height") is None and not data.get("percentage"):
            raise ValidationError("give width, height or percentage", "_schema")
        if data.get("percentage") and (data.get("width") or data.get("height")):
            raise ValidationError("give either percentage or width/height, not both", "_schema")


def plan_resize(
    source: tuple[int, int], settings: dict[str, Any]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return (scaled size, final canvas size) for the settings; cover crops, contain pads."""
    src_w, src_h = source
    no_enlargement = settings["without_enlargement"]
    if settings.get("percentage"):
        factor = settings["percentage"] / 100
        if no_enlargement:
            factor = min(factor, 1.0)
        size = (max(1, round(src_w * factor)), max(1, round(src_h * factor)))
        return size, size
    width, height, fit = settings.get("width"), settings.get("height"), settings["fit"]
    if width is None or height is None:
        scale = width / src_w if width is not None else height / src_h  # type: ignore[operator]
        if no_enlargement:
            scale = min(scale, 1.0)
        size = (max(1, round(src_w * scale)), max(1, round(src_h * scale)))
        return size, size
    if fit == "fill":
        # Each axis is stretched on its own, so each is kept from growing on its own.
        size = (min(width, src_w), min(height, src_h)) if no_enlargement else (width, height)
        return size, size
    scale_w, scale_h = width / src_w, height / src_h
    scale = max(scale_w, scale_h) if fit in ("cover", "outside") else min(scale_w, scale_h)
    enlarging = scale > 1.0
    if no_enlargement:
        scale = min(scale, 1.0)
    scaled = (max(1, round(src_w * scale)), max(1, round(src_h * scale)))
    if fit in ("inside", "outside"):
        return scaled, scaled
    if fit == "cover":
        return scaled, (min(width, scaled[0]), min(height, scaled[1]))
    if no_enlargement and enlarging:
        # The image already fits the box: padding it out would make the output larger.
        return scaled, scaled
    return scaled, (width, height)


def resize_image(
    img: Image.Image, scaled: tuple[int, int], canvas: tuple[int, int], settings: dict[str, Any]
) -> Image.Image:
    """Scale `img` (possibly already draft-decoded near `scaled`) and crop or pad to `canvas`."""
    img = resamplable(img)
    if canvas != scaled and settings["fit"] == "cover":
        # Scale only the region that survives the crop: the full scaled image is never built
        # (it could be far larger than the output, e.g. a 1-pixel-high strip of a tall image).
        left = (scaled[0] - canvas[0]) // 2
        top = (scaled[1] - canvas[1]) // 2
        if scaled == img.size:
            return img.crop((left, top, left + canvas[0], top + canvas[1]))
        to_source_x, to_source_y = img.width / scaled[0], img.height / scaled[1]
        box = (
            left * to_source_x,
            top * to_source_y,
            (left + canvas[0]) * to_source_x,
            (top + canvas[1]) * to_source_y,
        )
        return img.resize(canvas, RESAMPLE, box=box, reducing_gap=REDUCING_GAP)
    if scaled != img.size:
        img = img.resize(scaled, RESAMPLE, reducing_gap=REDUCING_GAP)
    if canvas == scaled:
        return img
    color = parse_color(settings["background"])
    mode = "RGBA" if color[3] < 255 or has_alpha(img) else "RGB"
    board = Image.new(mode, canvas, color if mode == "RGBA" else color[:3])
    pasted = convert_mode(img, mode)
    board.info = dict(pasted.info)
    offset = ((canvas[0] - scaled[0]) // 2, (canvas[1] - scaled[1]) // 2)
    board.paste(pasted, offset)
    return board


def run_resize(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    header = source.header
    scaled, canvas = plan_resize((header.width, header.height), settings)
    # Cover never builds more than the canvas; every other fit builds the scaled image too.
    for size in (canvas,) if settings["fit"] == "cover" else (scaled, canvas):
        check_output_size(ctx, size, header.frames)
    return map_frames(
        ctx,
        source,
        lambda img: resize_image(img, scaled, canvas, settings),
        draft_size=scaled,
    )


# --- crop -------------------------------------------------------------------------------------


class CropSettings(Settings):
    left = fields.Float(
        load_default=0.0,
        validate=validate.Range(0, MAX_COORDINATE),
        metadata={"description": "distance of the kept area from the left edge, in `unit`"},
    )
    top = fields.Float(
        load_default=0.0,
        validate=validate.Range(0, MAX_COORDINATE),
        metadata={"description": "distance of the kept area from the top edge, in `unit`"},
    )
    width = fields.Float(
        load_default=None,
        validate=validate.Range(0, MAX_COORDINATE, min_inclusive=False),
        metadata={
            "description": "width of the kept area, in `unit`; null keeps everything up to "
            "the right edge"
        },
    )
    height = fields.Float(
        load_default=None,
        validate=validate.Range(0, MAX_COORDINATE, min_inclusive=False),
        metadata={
            "description": "height of the kept area, in `unit`; null keeps everything down to "
            "the bottom edge"
        },
    )
    unit = fields.String(
        load_default="px",
        validate=validate.OneOf(CROP_UNITS),
        metadata={
            "description": "px: whole pixels; percent: percentages of the image's width "
            "(left, width) and height (top, height), rounded to whole pixels"
        },
    )

    @validates_schema
    def _fits_its_unit(self, data: dict[str, Any], **_: Any) -> None:
        if data["unit"] == "px":
            fractional = {
                name: ["pixel values are whole numbers"]
                for name in ("left", "top", "width", "height")
                if data[name] is not None and not float(data[name]).is_integer()
            }
            if fractional:
                raise ValidationError(fractional)
            return
        problems: dict[str, list[str]] = {}
        for start, extent in (("left", "width"), ("top", "height")):
            if data[start] >= 100:
                problems[start] = ["must be below 100 percent"]
            if data[extent] is not None and data[start] + data[extent] > 100:
                problems[extent] = [f"{start} + {extent} must not exceed 100 percent"]
        if problems:
            raise ValidationError(problems)


def crop_box(size: tuple[int, int], settings: dict[str, Any]) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) pixel box the settings select in an image of `size`."""
    width, height = size
    if settings["unit"] == "percent":
        left, right = _percent_span(width, settings["left"], settings["width"])
        top, bottom = _percent_span(height, settings["top"], settings["height"])
        return left, top, right, bottom
    left, top = int(settings["left"]), int(settings["top"])
    right = left + int(settings["width"]) if settings["width"] is not None else width
    bottom = top + int(settings["height"]) if settings["height"] is not None else height
    if left >= width or top >= height or right > width or bottom > height:
        raise BadRequestError(
            f"the crop area (left {left}, top {top}, {right - left}x{bottom - top} px) reaches "
            f"outside the {width}x{height} image",
            code="CROP_OUTSIDE_IMAGE",
            details={
                "imageWidth": width,
                "imageHeight": height,
                "crop": {
                    "left": left,
                    "top": top,
                    "width": right - left,
                    "height": bottom - top,
                },
            },
        )
    return left, top, right, bottom


def _percent_span(length: int, start: float, extent: float | None) -> tuple[int, int]:
    first = min(math.floor(length * start / 100), length - 1)
    end = length if extent is None else min(length, round(length * (start + extent) / 100))
    return first, max(first + 1, end)  # a tiny percentage still keeps one pixel


def run_crop(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    header = source.header
    box = crop_box((header.width, header.height), settings)
    return map_frames(ctx, source, lambda img: img.crop(box))


# --- rotate -----------------------------------------------------------------------------------


class RotateSettings(Settings):
    angle = fields.Float(
        load_default=0.0,
        validate=validate.Range(-360, 360),
        metadata={
            "description": "clockwise rotation in degrees (negative turns anticlockwise); "
            "multiples of 90 move pixels without resampling, other angles enlarge the canvas "
            "so nothing is cut"
        },
    )
    horizontal = fields.Boolean(
        load_default=False,
        metadata={"description": "mirror left-right (applied after the rotation)"},
    )
    vertical = fields.Boolean(
        load_default=False,
        metadata={"description": "mirror top-bottom (applied after the rotation)"},
    )
    background = Color(
        load_default=None,
        metadata={
            "description": "colour of the corners a non-right angle exposes (#rgb, #rgba, "
            "#rrggbb, #rrggbbaa); default transparent when the image's format has alpha, "
            "white otherwise"
        },
    )


# Pillow's transposes turn anticlockwise; the keys are clockwise degrees.
_RIGHT_ANGLES = {
    90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


def rotate_image(
    img: Image.Image,
    clockwise: float,
    *,
    horizontal: bool,
    vertical: bool,
    background: tuple[int, int, int, int],
) -> Image.Image:
    turn = clockwise % 360
    right_angle = round(turn / 90) * 90 % 360
    if abs(turn - round(turn / 90) * 90) < 1e-6:
        if right_angle:
            img = img.transpose(_RIGHT_ANGLES[right_angle])
    else:
        img = _rotate_freely(img, turn, background)
    if horizontal:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if vertical:
        img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return img


def _rotate_freely(
    img: Image.Image, clockwise: float, background: tuple[int, int, int, int]
) -> Image.Image:
    # Rotate onto transparency first, then lay it over the background: the anti-aliased edges
    # blend with the background colour instead of with black.
    rgba = convert_mode(resamplable(img), "RGBA")
    rotated = rgba.rotate(
        -clockwise, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=TRANSPARENT
    )
    if background[3] > 0:
        rotated = Image.alpha_composite(Image.new("RGBA", rotated.size, background), rotated)
    if background[3] == 255 and not has_alpha(img):
        grey = img.mode in ("L", *HIGH_BIT_DEPTH_MODES) and (
            background[0] == background[1] == background[2]
        )
        rotated = rotated.convert("L" if grey else "RGB")
    rotated.info = dict(rgba.info)
    rotated.info.pop("transparency", None)
    return rotated


def run_rotate(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    if settings["background"] is not None:
        background = parse_color(settings["background"])
    else:
        background = TRANSPARENT if source.format.supports_alpha else WHITE
    return map_frames(
        ctx,
        source,
        lambda img: rotate_image(
            img,
            settings["angle"],
            horizontal=settings["horizontal"],
            vertical=settings["vertical"],
            background=background,
        ),
    )


# --- convert ----------------------------------------------------------------------------------


class ConvertSettings(Settings):
    format = fields.String(
        load_default="webp",
        validate=validate.OneOf(CONVERT_FORMATS),
        metadata={"description": "output format (jpeg is accepted for jpg)"},
    )
    quality = fields.Integer(
        load_default=None,
        validate=validate.Range(1, 100),
        metadata={
            "description": "1-100 for jpg, webp, avif, heic and heif (default: jpg 85, webp "
            "80, avif/heic/heif 60); the other formats are lossless and ignore it"
        },
    )
    lossless = fields.Boolean(
        load_default=False,
        metadata={
            "description": "webp only: encode losslessly (quality then trades time for size)"
        },
    )
    frame = fields.Integer(
        load_default=None,
        validate=validate.Range(0, 100_000),
        metadata={
            "description": "0-based frame of an animated input to output as a still image; "
            "null keeps the animation (gif, webp, png, avif) and refuses formats that hold "
            "one image"
        },
    )

    @validates_schema
    def _lossless_is_webp(self, data: dict[str, Any], **_: Any) -> None:
        if data["lossless"] and data["format"] != "webp":
            raise ValidationError({"lossless": ["lossless applies to webp output only"]})


def _as_icon(img: Image.Image) -> tuple[Image.Image, dict[str, Any]]:
    """Fit an image into the ICO limit (256 px a side) and list the sizes to store."""
    img = resamplable(img)
    if img.width > ICON_MAX_SIDE or img.height > ICON_MAX_SIDE:
        img = img.copy()  # thumbnail() works in place and keeps `info`
        img.thumbnail((ICON_MAX_SIDE, ICON_MAX_SIDE), RESAMPLE)
    smaller = [(side, side) for side in ICON_SIZES if side < min(img.size)]
    return img, {"sizes": [img.size, *smaller]}


def run_convert(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    fmt = format_by_name(settings["format"])
    options: dict[str, Any] = {"lossless": True} if settings["lossless"] else {}
    frame_count = source.header.frames
    picked = settings["frame"]
    if picked is not None and picked >= frame_count:
        raise BadRequestError(
            f"frame {picked} does not exist: the input has {frame_count} frame(s), numbered "
            f"from 0 to {frame_count - 1}",
            code="FRAME_OUT_OF_RANGE",
            details={"frame": picked, "frames": frame_count},
        )
    if frame_count > 1 and picked is None:
        if not fmt.supports_animation:
            raise AnimatedImageError(
                f"the input is animated ({frame_count} frames) and {fmt.name} holds a single "
                f"image; set frame (0 to {frame_count - 1}) to convert one frame, or choose "
                "gif, webp, png or avif to keep the animation",
                details={"frames": frame_count, "format": fmt.name},
            )
        result = map_frames(ctx, source, lambda img: img)
        result.format, result.quality, result.options = fmt.name, settings["quality"], options
        return result
    # A still input goes through open() for its EXIF orientation; frames() does not apply it.
    img = next(islice(source.frames(), picked, None))[0] if frame_count > 1 else source.open()
    if fmt.name == "ico":
        img, icon_options = _as_icon(img)
        options.update(icon_options)
    return ImageResult(img, format=fmt.name, quality=settings["quality"], options=options)


# --- compress ---------------------------------------------------------------------------------


class CompressSettings(Settings):
    mode = fields.String(
        load_default="quality",
        validate=validate.OneOf(COMPRESS_MODES),
        metadata={
            "description": "quality: re-encode at `quality`; targetSize: the best quality "
            "whose file fits in `targetSizeKb`. The format never changes. Lossy formats (jpg, "
            "webp, avif, heic, heif) use the encoder's quality; lossless ones (png, gif, tiff, "
            "bmp) keep every colour at 100 and below it are reduced to a palette of about "
            "2.56 x quality colours (dithered); ico can only be downscaled. The input is "
            "returned unchanged when re-encoding would not make it smaller, or when it "
            "already fits the target size"
        },
    )
    quality = fields.Integer(
        load_default=80,
        validate=validate.Range(1, 100),
        metadata={"description": "1-100, used when mode is quality"},
    )
    target_size_kb = fields.Float(
        load_default=None,
        validate=validate.Range(1, 1_000_000),
        metadata={
            "description": "largest file size in KB (1 KB = 1024 bytes), required when mode "
            "is targetSize. Quality is lowered first (binary search); if even the lowest "
            "quality is too big the image is downscaled step by step; if nothing fits, a 422 "
            "TARGET_SIZE_UNREACHABLE error gives the smallest size reached"
        },
    )

    @validates_schema
    def _target_for_target_mode(self, data: dict[str, Any], **_: Any) -> None:
        if data["mode"] == "targetSize" and data["target_size_kb"] is None:
            raise ValidationError({"targetSizeKb": ["required when mode is targetSize"]})


# Encoder options that only cost time, never quality.
_LOSSY_OPTIONS: dict[str, dict[str, Any]] = {"jpg": {"optimize": True}}
_LOSSLESS_OPTIONS: dict[str, dict[str, Any]] = {
    "png": {"optimize": True},
    "gif": {"optimize": True},
    "tiff": {"compression": "tiff_adobe_deflate"},
}
# Formats whose files a palette makes smaller (each pixel then takes one byte or less).
_PALETTE_FORMATS = ("png", "gif", "tiff", "bmp")
MAX_DOWNSCALE_ROUNDS = 12


@dataclass
class _Picture:
    """A still image or the frames of an animation, as compress encodes them."""

    frames: list[Image.Image]
    durations: list[int] | None

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].size

    def scaled(self, size: tuple[int, int]) -> _Picture:
        return _Picture(
            [resamplable(f).resize(size, RESAMPLE, reducing_gap=REDUCING_GAP) for f in self.frames],
            self.durations,
        )


def _palette_colours(quality: int) -> int:
    return max(2, min(256, round(quality * 2.56)))


def _reduce_colours(img: Image.Image, colours: int, fmt: ImageFormat) -> Image.Image:
    keep_alpha = fmt.name in ("png", "gif") and (has_alpha(img) or img.mode in ("LA", "PA"))
    img = convert_mode(img, "RGBA" if keep_alpha else "RGB")
    # MEDIANCUT gives the better palette but Pillow only offers FASTOCTREE for RGBA.
    method = Image.Quantize.FASTOCTREE if keep_alpha else Image.Quantize.MEDIANCUT
    return img.quantize(colours, method=method, dither=Image.Dither.FLOYDSTEINBERG)


def encode_at(picture: _Picture, fmt: ImageFormat, quality: int) -> bytes:
    """Encode at a quality level: the encoder's quality, or a palette size for lossless formats."""
    frames = picture.frames
    if fmt.has_quality:
        options = _LOSSY_OPTIONS.get(fmt.name, {})
    else:
        options = _LOSSLESS_OPTIONS.get(fmt.name, {})
        if quality < 100 and fmt.name in _PALETTE_FORMATS:
            frames = [_reduce_colours(f, _palette_colours(quality), fmt) for f in frames]
    return encode_image(
        frames[0],
        fmt,
        quality=quality if fmt.has_quality else None,
        frames=frames[1:] or None,
        durations=picture.durations,
        **options,
    )


def _best_fit(
    ctx: Context, picture: _Picture, fmt: ImageFormat, target: int
) -> tuple[bytes | None, bytes]:
    """(highest-quality encoding <= target or None, the lowest-quality encoding).

    Binary search on the quality level, which assumes size grows with quality (true enough
    for every encoder here; an encoding is only accepted after its size was measured).
    """
    if not fmt.has_quality and fmt.name not in _PALETTE_FORMATS:
        only = encode_at(picture, fmt, 100)  # e.g. ico: no quality knob, only size helps
        return (only if len(only) <= target else None), only
    lowest = encode_at(picture, fmt, 1)
    if len(lowest) > target:
        return None, lowest
    fits_at, too_big_at, best = 1, 101, lowest
    while too_big_at - fits_at > 1:
        ctx.check_cancelled()
        quality = (fits_at + too_big_at) // 2
        data = encode_at(picture, fmt, quality)
        if len(data) <= target:
            fits_at, best = quality, data
        else:
            too_big_at = quality
    return best, lowest


def _load_picture(source: InputFile) -> _Picture:
    if source.is_animated:
        frames, durations = zip(*source.frames(), strict=True)
        return _Picture(list(frames), list(durations))
    return _Picture([source.open()], None)


def compress_to_target(ctx: Context, original: _Picture, fmt: ImageFormat, target: int) -> bytes:
    """The best encoding whose size is <= target, lowering quality first and size second."""
    picture = original
    smallest: tuple[bytes, tuple[int, int]] | None = None
    for round_number in range(MAX_DOWNSCALE_ROUNDS + 1):
        ctx.progress(round_number / (MAX_DOWNSCALE_ROUNDS + 1), "searching for the quality")
        fitting, lowest = _best_fit(ctx, picture, fmt, target)
        if fitting is not None:
            return fitting
        if smallest is None or len(lowest) < len(smallest[0]):
            smallest = lowest, picture.size
        # Even the lowest quality is too big at this size, so downscale. Size grows about
        # with the pixel count: aim the side at sqrt(target / size), with a margin, and
        # never shrink by less than 10% a round (so the loop ends) or more than 4x (so one
        # round does not overshoot far below the target).
        factor = min(0.9, max(0.25, math.sqrt(target / len(lowest)) * 0.95))
        width, height = picture.size
        new_size = (max(1, round(width * factor)), max(1, round(height * factor)))
        if new_size == picture.size:
            break
        picture = original.scaled(new_size)
    assert smallest is not None
    data, (width, height) = smallest
    raise PixmillError(
        f"cannot compress this image to {target:,} bytes in {fmt.name}: the smallest result "
        f"reached was {len(data):,} bytes (lowest quality, downscaled to {width}x{height}); "
        "the format's fixed overhead and the kept metadata (EXIF, ICC profile) count too",
        code="TARGET_SIZE_UNREACHABLE",
        status=422,
        details={
            "targetBytes": target,
            "smallestBytes": len(data),
            "smallestKb": round(len(data) / 1024, 2),
            "smallestWidth": width,
            "smallestHeight": height,
            "format": fmt.name,
        },
    )


def run_compress(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    source = inputs.file
    fmt = source.format
    if settings["mode"] == "targetSize":
        target = max(1, round(settings["target_size_kb"] * 1024))
        if source.size <= target:
            return FileResult(source.data, fmt.name)  # already fits at its full quality
        return FileResult(compress_to_target(ctx, _load_picture(source), fmt, target), fmt.name)
    data = encode_at(_load_picture(source), fmt, settings["quality"])
    if len(data) >= source.size:
        return FileResult(source.data, fmt.name)  # compressing must never grow the file
    return FileResult(data, fmt.name)


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
        Tool(
            id="crop",
            name="Crop",
            description="Keep a rectangle of the image, given in pixels or percentages.",
            settings=CropSettings,
            run=run_crop,
            example={"left": 10, "top": 10, "width": 200, "height": 150},
        ),
        Tool(
            id="rotate",
            name="Rotate & Flip",
            description="Rotate by any angle (right angles are lossless) and mirror the image.",
            settings=RotateSettings,
            run=run_rotate,
            example={"angle": 90, "horizontal": True},
        ),
        Tool(
            id="convert",
            name="Convert",
            description="Convert to another format (animations stay animated where they can).",
            settings=ConvertSettings,
            run=run_convert,
            example={"format": "webp", "quality": 80},
        ),
        Tool(
            id="compress",
            name="Compress",
            description="Make the file smaller in its own format, by quality or to a target size.",
            settings=CompressSettings,
            run=run_compress,
            example={"mode": "targetSize", "targetSizeKb": 200},
        ),
    ]
