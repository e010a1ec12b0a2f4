"""Built-in classic computer vision: smart-crop, blur-faces, red-eye-removal, noise-removal,
image-enhancement (with its image-enhancement/analyze sub-route) and content-aware-resize.

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.

OpenCV (`cv2`, the `pixmill[cv]` extra) is optional. Tools that cannot work without it declare
`requires=("cv2",)` and import it inside their functions, so this module imports without it
and the catalogue lists those tools as unavailable with the install command. Face and eye
detection use the Haar cascades OpenCV ships (`cv2.data.haarcascades`), loaded once per
process through the context's model cache. smart-crop and content-aware-resize only need cv2
for their face options, and image-enhancement never does: they work on numpy/Pillow alone.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from marshmallow import ValidationError, fields, validate, validates_schema
from PIL import Image, ImageChops, ImageFilter

from pixmill import (
    Color,
    Context,
    Extractor,
    ImageResult,
    InputFile,
    Inputs,
    Settings,
    Tool,
    hookimpl,
    parse_color,
)
from pixmill.core.errors import BadRequestError, UnavailableError
from pixmill.plugins.adjustments import rgb_image
from pixmill.plugins.essentials import MAX_DIMENSION, check_output_size, map_frames

CV_REQUIRES = ("cv2",)
CV_INSTALL = "pixmill[cv]"
FACE_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADE = "haarcascade_eye.xml"
# Detection runs on a copy whose longer side is at most this (boxes are scaled back).
DETECT_MAX_SIDE = 1024
Box = tuple[int, int, int, int]  # left, top, width, height

# --- shared helpers ---------------------------------------------------------------------------


def import_cv2(tool_id: str) -> Any:
    """`cv2`, or 503 TOOL_UNAVAILABLE with the install command (for tools that need it only
    for some options, and so cannot declare `requires`)."""
    try:
        import cv2
    except ImportError:
        command = f"pip install '{CV_INSTALL}'"
        raise UnavailableError(
            f"{tool_id} needs cv2 (OpenCV) for this option, which is not installed; install "
            f"it with: {command}",
            details={"missing": ["cv2"], "install": command},
        ) from None
    return cv2


def load_cascade(ctx: Context, name: str) -> Any:
    """(classifier, lock) for a Haar cascade shipped with OpenCV, loaded once per process
    (kept in the context's model cache)."""
    cv2 = import_cv2(ctx.plugin_id)

    def load() -> tuple[Any, threading.Lock]:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
        if cascade.empty():
            raise RuntimeError(f"OpenCV could not load its cascade {name}")
        # One classifier serves every thread of the process: detect with it one at a time.
        return cascade, threading.Lock()

    return ctx.load_model(f"cv2-cascade:{name}", load)


def min_neighbors(sensitivity: float) -> int:
    """Haar `minNeighbors` from a 0-1 sensitivity: 0 -> 8 (strict), 0.5 -> 5, 1 -> 2 (eager)."""
    return max(1, round(8 - 6 * sensitivity))


def detect(
    ctx: Context, gray: np.ndarray, cascade_name: str, sensitivity: float, min_size: int = 20
) -> list[Box]:
    """Objects found by a Haar cascade on an 8-bit grey array, as (left, top, width, height)."""
    cv2 = import_cv2(ctx.plugin_id)
    cascade, lock = load_cascade(ctx, cascade_name)
    height, width = gray.shape
    scale = min(1.0, DETECT_MAX_SIDE / max(width, height))
    small = gray
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    with lock:
        found = cascade.detectMultiScale(
            small,
            scaleFactor=1.1,
            minNeighbors=min_neighbors(sensitivity),
            minSize=(min_size, min_size),
        )
    boxes = [
        (round(x / scale), round(y / scale), round(w / scale), round(h / scale))
        for x, y, w, h in (found if len(found) else [])
    ]
    return sorted(boxes)


def gray_array(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an RGB uint8 array, as uint8 (what the cascades were trained on)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("L"))


def split_rgb(img: Image.Image) -> tuple[Image.Image, np.ndarray, Image.Image | None]:
    """(working image, its RGB pixels as uint8 HxWx3, its alpha band or None)."""
    work = rgb_image(img)
    alpha = work.getchannel("A") if work.mode == "RGBA" else None
    return work, np.asarray(work.convert("RGB")), alpha


def join_rgb(pixels: np.ndarray, alpha: Image.Image | None, source: Image.Image) -> Image.Image:
    """RGB pixels back into an image, with the source's alpha band and info (ICC, EXIF)."""
    out = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB")
    if alpha is not None:
        out.putalpha(alpha)
    out.info = dict(source.info)
    return out


def gradient_energy(values: np.ndarray) -> np.ndarray:
    """|dx| + |dy| of a 2-D array (forward differences; 0 past the last row/column)."""
    dx = np.abs(np.diff(values, axis=1, append=values[:, -1:]))
    dy = np.abs(np.diff(values, axis=0, append=values[-1:, :]))
    energy: np.ndarray = dx + dy
    return energy


def box_json(box: Box) -> dict[str, int]:
    left, top, width, height = box
    return {"left": left, "top": top, "width": width, "height": height}


def padded(box: Box, padding: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of `box` grown by `padding` x its size, clamped to `size`."""
    left, top, width, height = box
    dx, dy = round(width * padding), round(height * padding)
    return (
        max(0, left - dx),
        max(0, top - dy),
        min(size[0], left + width + dx),
        min(size[1], top + height + dy),
    )


def encoding(settings: dict[str, Any]) -> tuple[str | None, int]:
    """ImageResult's format and quality from the `format`/`quality` settings."""
    fmt = settings["format"]
    return (None if fmt == "keep" else fmt), settings["quality"]


OUTPUT_FORMATS = ("keep", "png", "jpeg", "webp", "avif", "tiff")


def _format_field() -> fields.String:
    return fields.String(
        load_default="keep",
        validate=validate.OneOf(OUTPUT_FORMATS),
        metadata={"description": "output format: keep (the input's), png, jpeg, webp, avif, tiff"},
    )


def _quality_field() -> fields.Integer:
    return fields.Integer(
        load_default=90,
        validate=validate.Range(1, 100),
        metadata={"description": "encoder quality for lossy formats (jpeg, webp, avif)"},
    )


def _sensitivity_field(what: str) -> fields.Float:
    return fields.Float(
        load_default=0.5,
        validate=validate.Range(0, 1),
        metadata={
            "description": f"{what} detection sensitivity, 0-1: higher finds more (and more "
            "false positives); it sets the Haar cascade's minNeighbors from 8 (0) through 5 "
            "(0.5) to 2 (1)"
        },
    )


# --- smart-crop -------------------------------------------------------------------------------

SMART_CROP_MODES = ("subject", "face", "trim")
SMART_CROP_STRATEGIES = ("attention", "entropy", "center")
# Margin around the faces' union, as a multiple of the union's size: (sides, above, below).
FACE_PRESETS: dict[str, tuple[float, float, float]] = {
    "closeup": (0.25, 0.25, 0.25),
    "head-shoulders": (0.6, 0.5, 1.2),
    "upper-body": (1.0, 0.6, 2.5),
    "half-body": (1.5, 0.7, 4.0),
}
ENTROPY_STEPS = 32
# attention and entropy measure a copy at most this large (the crop is taken at full size).
ANALYSIS_MAX_SIDE = 512


class SmartCropSettings(Settings):
    mode = fields.String(
        load_default="subject",
        validate=validate.OneOf(SMART_CROP_MODES),
        metadata={
            "description": "subject (place the crop window by `strategy`), face (frame the "
            "detected faces with `facePreset`; needs OpenCV, pixmill[cv], and falls back to "
            "`strategy` when no face is found) or trim (only remove uniform borders)"
        },
    )
    strategy = fields.String(
        load_default="attention",
        validate=validate.OneOf(SMART_CROP_STRATEGIES),
        metadata={
            "description": "where a crop window goes: attention (the most salient region: "
            "edges + saturation + skin tones), entropy (the window of highest Shannon entropy "
            "of its grey levels) or center"
        },
    )
    width = fields.Integer(
        load_default=None,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={
            "description": "output width in pixels; with height it sets the crop's aspect "
            "ratio and the output size (the window is scaled to it)"
        },
    )
    height = fields.Integer(
        load_default=None,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={"description": "output height in pixels (see width)"},
    )
    aspect = fields.String(
        load_default=None,
        validate=validate.Regexp(r"^\d{1,4}(\.\d{1,4})?:\d{1,4}(\.\d{1,4})?$"),
        metadata={
            "description": "crop aspect ratio as W:H (e.g. 16:9) instead of width+height; "
            "with one of width/height it sets the other, alone the crop keeps full resolution"
        },
    )
    padding = fields.Integer(
        load_default=0,
        validate=validate.Range(0, 10_000),
        metadata={"description": "extra pixels kept around the chosen window (within the image)"},
    )
    face_preset = fields.String(
        load_default="head-shoulders",
        validate=validate.OneOf(tuple(FACE_PRESETS)),
        metadata={
            "description": "mode=face framing: closeup (the faces with a small margin), "
            "head-shoulders, upper-body or half-body (more room below the faces)"
        },
    )
    sensitivity = _sensitivity_field("face (mode=face)")
    trim = fields.Boolean(
        load_default=False,
        metadata={"description": "remove uniform borders before cropping (mode=trim always does)"},
    )
    threshold = fields.Integer(
        load_default=10,
        validate=validate.Range(0, 255),
        metadata={
            "description": "trim tolerance: how far (per channel, 0-255) a border pixel may "
            "differ from the top-left corner colour and still count as border"
        },
    )
    pad_to_square = fields.Boolean(
        load_default=False,
        metadata={"description": "pad the result to a square with padColor (centred)"},
    )
    pad_color = Color(
        load_default="#ffffff",
        metadata={"description": "colour of padToSquare's padding (#rgb, #rrggbb, #rrggbbaa)"},
    )
    quality = _quality_field()

    @validates_schema
    def _one_shape(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("aspect") and data.get("width") and data.get("height"):
            raise ValidationError("give aspect or width+height, not both", "aspect")
        if data.get("aspect") and parse_aspect(data["aspect"]) <= 0:
            raise ValidationError("the aspect ratio's terms must be positive", "aspect")


def parse_aspect(text: str) -> float:
    width, height = (float(part) for part in text.split(":"))
    return width / height if width > 0 and height > 0 else 0.0


def trim_box(img: Image.Image, tolerance: int) -> tuple[int, int, int, int]:
    """The box left after removing border rows/columns close to the top-left corner colour."""
    rgba = img.convert("RGBA")
    corner = rgba.getpixel((0, 0))
    diff = ImageChops.difference(rgba, Image.new("RGBA", rgba.size, corner))
    red, green, blue, alpha = diff.split()
    largest = ImageChops.lighter(ImageChops.lighter(red, green), ImageChops.lighter(blue, alpha))
    box = largest.point(lambda value: 255 if value > tolerance else 0).getbbox()
    return box if box is not None else (0, 0, img.width, img.height)  # flat: nothing to trim


def saliency(rgb: np.ndarray) -> np.ndarray:
    """A cheap attention map: luma edge strength + saturation + a skin-tone bonus, each 0-1."""
    values = rgb.astype(np.float32) / 255
    luma = values @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    edges = gradient_energy(luma)
    edges /= max(float(edges.max()), 1e-6)
    high, low = values.max(axis=2), values.min(axis=2)
    saturation = (high - low) / np.maximum(high, 1e-6)
    red, green, blue = values[..., 0], values[..., 1], values[..., 2]
    # A classic RGB skin rule (Kovac et al. 2003), on 0-1 values.
    skin = (
        (red > 95 / 255)
        & (green > 40 / 255)
        & (blue > 20 / 255)
        & (high - low > 15 / 255)
        & (np.abs(red - green) > 15 / 255)
        & (red > green)
        & (red > blue)
    )
    return edges * 2 + saturation * 0.5 + skin.astype(np.float32)


def best_offset(score: Callable[[int], float], span: int) -> int:
    """The offset in 0..span with the highest score (a ties go to the most central one)."""
    if span <= 0:
        return 0
    steps = min(span, 200)
    candidates = sorted({round(span * i / steps) for i in range(steps + 1)})
    return max(candidates, key=lambda offset: (score(offset), -abs(offset - span / 2)))


def window_sums(energy: np.ndarray, size: tuple[int, int]) -> Callable[[int, int], float]:
    """Sum of `energy` over a (width, height) window at (x, y), from a summed-area table."""
    table = np.zeros((energy.shape[0] + 1, energy.shape[1] + 1), dtype=np.float64)
    table[1:, 1:] = energy.cumsum(axis=0).cumsum(axis=1)
    width, height = size

    def total(x: int, y: int) -> float:
        return float(
            table[y + height, x + width] - table[y, x + width] - table[y + height, x] + table[y, x]
        )

    return total


def shannon_entropy(gray: np.ndarray) -> float:
    counts = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    p = counts[counts > 0] / gray.size
    return float(-(p * np.log2(p)).sum())


def place_window(img: Image.Image, size: tuple[int, int], strategy: str) -> tuple[int, int]:
    """Top-left of a `size` window in `img` chosen by strategy, measured on a copy at most
    ANALYSIS_MAX_SIDE pixels on its longer side."""
    scale = min(1.0, ANALYSIS_MAX_SIDE / max(img.size))
    if scale < 1.0:
        small = img.convert("RGB").resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
            Image.Resampling.BOX,
        )
        small_size = (
            min(small.width, round(size[0] * scale)),
            min(small.height, round(size[1] * scale)),
        )
        x, y = window_in(np.asarray(small), small_size, strategy)
        span_x, span_y = img.width - size[0], img.height - size[1]
        return min(span_x, max(0, round(x / scale))), min(span_y, max(0, round(y / scale)))
    return window_in(np.asarray(img.convert("RGB")), size, strategy)


def window_in(rgb: np.ndarray, size: tuple[int, int], strategy: str) -> tuple[int, int]:
    """Top-left of a `size` window in `rgb` chosen by strategy (the window spans one axis)."""
    height, width = rgb.shape[:2]
    span_x, span_y = width - size[0], height - size[1]
    if strategy == "center":
        return span_x // 2, span_y // 2
    if strategy == "entropy":
        gray = gray_array(rgb)
        step_x, step_y = max(1, span_x // ENTROPY_STEPS), max(1, span_y // ENTROPY_STEPS)

        def entropy_at(x: int, y: int) -> float:
            return shannon_entropy(gray[y : y + size[1], x : x + size[0]])

        x = best_offset(lambda x: entropy_at(x - x % step_x, span_y // 2), span_x)
        y = best_offset(lambda y: entropy_at(x, y - y % step_y), span_y)
        return x, y
    total = window_sums(saliency(rgb), size)
    x = best_offset(lambda x: total(x, span_y // 2), span_x)
    y = best_offset(lambda y: total(x, y), span_y)
    return x, y


def fit_aspect(box: tuple[int, int, int, int], ratio: float, size: tuple[int, int]) -> Box:
    """Grow `box` (l, t, r, b) around its centre to the aspect ratio, shifted inside `size`,
    shrunk only when the image itself is too small."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    if width / height < ratio:
        width = round(height * ratio)
    else:
        height = round(width / ratio)
    if width > size[0]:
        width, height = size[0], round(size[0] / ratio)
    if height > size[1]:
        width, height = round(size[1] * ratio), size[1]
    width, height = max(1, width), max(1, height)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x = min(max(0, round(cx - width / 2)), size[0] - width)
    y = min(max(0, round(cy - height / 2)), size[1] - height)
    return x, y, width, height


def target_shape(
    settings: dict[str, Any], size: tuple[int, int]
) -> tuple[float | None, tuple[int, int] | None]:
    """(aspect ratio, output size) the settings ask for; None when they leave it free."""
    width, height, aspect = settings["width"], settings["height"], settings["aspect"]
    if width and height:
        return width / height, (width, height)
    if aspect:
        ratio = parse_aspect(aspect)
        if width:
            return ratio, (width, max(1, round(width / ratio)))
        if height:
            return ratio, (max(1, round(height * ratio)), height)
        return ratio, None
    if width or height:
        raise BadRequestError(
            "give both width and height, or aspect with one of them",
            code="MISSING_DIMENSION",
        )
    return None, None


def face_window(
    ctx: Context, img: Image.Image, settings: dict[str, Any]
) -> tuple[tuple[int, int, int, int] | None, list[Box]]:
    """The box framing every detected face with the preset's margins, and the faces."""
    faces = detect(ctx, np.asarray(img.convert("L")), FACE_CASCADE, settings["sensitivity"])
    if not faces:
        return None, []
    left = min(f[0] for f in faces)
    top = min(f[1] for f in faces)
    right = max(f[0] + f[2] for f in faces)
    bottom = max(f[1] + f[3] for f in faces)
    sides, above, below = FACE_PRESETS[settings["face_preset"]]
    width, height = right - left, bottom - top
    size = img.size
    return (
        max(0, round(left - sides * width)),
        max(0, round(top - above * height)),
        min(size[0], round(right + sides * width)),
        min(size[1], round(bottom + below * height)),
    ), faces


def smart_crop(ctx: Context, img: Image.Image, settings: dict[str, Any]) -> ImageResult:
    work = rgb_image(img)
    mode = settings["mode"]
    if mode == "face":
        import_cv2(ctx.plugin_id)  # before any work: 503 with the install command
    trimmed = (0, 0, work.width, work.height)
    if mode == "trim" or settings["trim"]:
        trimmed = trim_box(work, settings["threshold"])
        work = work.crop(trimmed)
    ratio, out_size = target_shape(settings, work.size)
    meta: dict[str, Any] = {"trimmed": box_json(_ltwh(trimmed))}
    window: Box = (0, 0, work.width, work.height)
    if mode == "face":
        faces_box, faces = face_window(ctx, work, settings)
        meta["faces"] = len(faces)
        meta["faceBoxes"] = [box_json(_shift(f, trimmed)) for f in faces]
        if faces_box is not None:
            window = _ltwh(faces_box) if ratio is None else fit_aspect(faces_box, ratio, work.size)
        meta["strategy"] = "face" if faces_box is not None else settings["strategy"]
    if ratio is not None and not (mode == "face" and meta.get("faces")):
        window = fit_aspect((0, 0, work.width, work.height), ratio, work.size)
        x, y = place_window(work, window[2:], settings["strategy"])
        window = (x, y, window[2], window[3])
    if settings["padding"]:
        pad = settings["padding"]
        left, top = max(0, window[0] - pad), max(0, window[1] - pad)
        right = min(work.width, window[0] + window[2] + pad)
        bottom = min(work.height, window[1] + window[3] + pad)
        window = (left, top, right - left, bottom - top)
    left, top, width, height = window
    out = work.crop((left, top, left + width, top + height))
    meta["crop"] = box_json(_shift(window, trimmed))
    if out_size is not None and out.size != out_size:
        check_output_size(ctx, out_size)
        out = out.resize(out_size, Image.Resampling.LANCZOS)
    if settings["pad_to_square"] and out.width != out.height:
        side = max(out.size)
        check_output_size(ctx, (side, side))
        fill = parse_color(settings["pad_color"])
        mode_out = "RGBA" if out.mode == "RGBA" or fill[3] < 255 else out.mode
        square = Image.new(mode_out, (side, side), fill if mode_out == "RGBA" else fill[:3])
        square.paste(out.convert(mode_out), ((side - out.width) // 2, (side - out.height) // 2))
        out = square
    out.info = dict(work.info)
    return ImageResult(out, quality=settings["quality"], meta=meta)


def _ltwh(box: tuple[int, int, int, int]) -> Box:
    left, top, right, bottom = box
    return left, top, right - left, bottom - top


def _shift(box: Box, origin: tuple[int, int, int, int]) -> Box:
    return box[0] + origin[0], box[1] + origin[1], box[2], box[3]


def run_smart_crop(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    return smart_crop(ctx, inputs.file.open(), settings)


# --- blur-faces -------------------------------------------------------------------------------

BLUR_METHODS = ("gaussian", "pixelate")


class BlurFacesSettings(Settings):
    blur_radius = fields.Integer(
        load_default=30,
        validate=validate.Range(1, 200),
        metadata={
            "description": "method=gaussian: the blur radius as a percentage of the face "
            "width / 4 (30 -> radius 7.5% of the face width); method=pixelate: blocks are "
            "blurRadius% of the face width / 2 wide"
        },
    )
    sensitivity = _sensitivity_field("face")
    method = fields.String(
        load_default="gaussian",
        validate=validate.OneOf(BLUR_METHODS),
        metadata={"description": "gaussian (smooth blur) or pixelate (mosaic blocks)"},
    )
    padding = fields.Float(
        load_default=0.15,
        validate=validate.Range(0, 1),
        metadata={"description": "extra margin around each face, as a fraction of its size"},
    )


def blur_region(region: Image.Image, face_width: int, settings: dict[str, Any]) -> Image.Image:
    if settings["method"] == "pixelate":
        block = max(2, round(face_width * settings["blur_radius"] / 200))
        small = (max(1, region.width // block), max(1, region.height // block))
        return region.resize(small, Image.Resampling.BOX).resize(
            region.size, Image.Resampling.NEAREST
        )
    radius = max(1.0, face_width * settings["blur_radius"] / 400)
    return region.filter(ImageFilter.GaussianBlur(radius))


def blur_faces(
    ctx: Context, img: Image.Image, settings: dict[str, Any], found: list[list[Box]]
) -> Image.Image:
    work, rgb, _alpha = split_rgb(img)
    faces = detect(ctx, gray_array(rgb), FACE_CASCADE, settings["sensitivity"])
    found.append(faces)
    out = work.copy()
    for face in faces:
        box = padded(face, settings["padding"], work.size)
        out.paste(blur_region(work.crop(box), face[2], settings), box[:2])
    out.info = dict(work.info)
    return out


def run_blur_faces(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    found: list[list[Box]] = []
    result = map_frames(ctx, inputs.file, lambda img: blur_faces(ctx, img, settings, found))
    result.meta = {
        "faces": len(found[0]),
        "boxes": [box_json(box) for box in found[0]],
    }
    if len(found) > 1:
        result.meta["facesPerFrame"] = [len(boxes) for boxes in found]
    return result


# --- red-eye-removal --------------------------------------------------------------------------


class RedEyeSettings(Settings):
    sensitivity = _sensitivity_field("eye")
    strength = fields.Float(
        load_default=1.0,
        validate=validate.Range(0, 1),
        metadata={
            "description": "how far red pixels move to grey: 0 unchanged, 1 red replaced by "
            "the mean of green and blue (a dark natural pupil)"
        },
    )
    threshold = fields.Float(
        load_default=1.5,
        validate=validate.Range(1, 5),
        metadata={
            "description": "a pixel in an eye is red-eye when red > threshold x mean(green, "
            "blue) (and red > 60): lower catches more"
        },
    )


def red_eye_mask(rgb: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of red-eye pixels: red dominates green and blue by `threshold`."""
    values = rgb.astype(np.float32)
    others = (values[..., 1] + values[..., 2]) / 2
    return (values[..., 0] > threshold * others) & (values[..., 0] > 60)


def fix_red(rgb: np.ndarray, mask: np.ndarray, strength: float) -> np.ndarray:
    """Move masked pixels' red to the mean of green and blue (by `strength`)."""
    out = rgb.astype(np.float32)
    others = (out[..., 1] + out[..., 2]) / 2
    out[..., 0] = np.where(mask, out[..., 0] * (1 - strength) + others * strength, out[..., 0])
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def find_eyes(ctx: Context, gray: np.ndarray, sensitivity: float) -> list[Box]:
    """Eyes in the upper part of each detected face, or in the whole image when none."""
    faces = detect(ctx, gray, FACE_CASCADE, sensitivity)
    if not faces:
        return detect(ctx, gray, EYE_CASCADE, sensitivity, min_size=8)
    eyes: list[Box] = []
    for left, top, width, height in faces:
        upper = gray[top : top + round(height * 0.6), left : left + width]
        min_size = max(8, width // 12)
        for x, y, w, h in detect(ctx, upper, EYE_CASCADE, sensitivity, min_size=min_size):
            eyes.append((left + x, top + y, w, h))
    return eyes


def remove_red_eye(
    ctx: Context, img: Image.Image, settings: dict[str, Any], report: list[dict[str, Any]]
) -> Image.Image:
    work, rgb, alpha = split_rgb(img)
    eyes = find_eyes(ctx, gray_array(rgb), settings["sensitivity"])
    out = rgb.copy()
    fixed = pixels = 0
    for left, top, width, height in eyes:
        region = out[top : top + height, left : left + width]
        mask = red_eye_mask(region, settings["threshold"])
        if mask.any():
            fixed += 1
            pixels += int(mask.sum())
            out[top : top + height, left : left + width] = fix_red(
                region, mask, settings["strength"]
            )
    report.append(
        {"eyes": len(eyes), "fixed": fixed, "pixels": pixels, "boxes": list(map(box_json, eyes))}
    )
    return join_rgb(out, alpha, work)


def run_red_eye(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    report: list[dict[str, Any]] = []
    result = map_frames(ctx, inputs.file, lambda img: remove_red_eye(ctx, img, settings, report))
    result.meta = {
        "eyesFound": report[0]["eyes"],
        "eyesFixed": report[0]["fixed"],
        "pixelsFixed": report[0]["pixels"],
        "boxes": report[0]["boxes"],
    }
    return result


# --- noise-removal ----------------------------------------------------------------------------

NOISE_TIERS = ("quick", "balanced", "quality", "maximum")


class NoiseRemovalSettings(Settings):
    tier = fields.String(
        load_default="balanced",
        validate=validate.OneOf(NOISE_TIERS),
        metadata={
            "description": "the denoiser: quick (median filter, 3x3 below strength 50, 5x5 "
            "from it), balanced (bilateral filter, d=9, sigmaColor = sigmaSpace = 10 + "
            "strength x 0.9), quality (OpenCV fastNlMeansDenoisingColored, h = 3 + strength "
            "x 0.12: 9 at 50; 7x7 template, 21x21 search) or maximum (non-local means with "
            "h = 5 + strength x 0.15: 12.5 at 50; 7x7 template, 35x35 search)"
        },
    )
    strength = fields.Integer(
        load_default=50,
        validate=validate.Range(1, 100),
        metadata={"description": "denoising strength, 1-100 (see tier for what it sets)"},
    )
    detail_preservation = fields.Integer(
        load_default=0,
        validate=validate.Range(0, 100),
        metadata={
            "description": "fraction (percent) of the removed high-frequency residual blended "
            "back, up to half of it at 100: keeps texture at the cost of some noise"
        },
    )
    color_noise = fields.Integer(
        load_default=50,
        validate=validate.Range(0, 100),
        metadata={
            "description": "chroma denoising, 0-100: non-local means tiers use hColor = h x "
            "colorNoise / 50; quick and balanced also smooth the chroma (YCrCb) channels with "
            "a Gaussian of sigma colorNoise / 25"
        },
    )
    format = _format_field()
    quality = _quality_field()


def denoise_rgb(cv2: Any, rgb: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    tier, strength, chroma = settings["tier"], settings["strength"], settings["color_noise"]
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if tier in ("quality", "maximum"):
        h = 3 + strength * 0.12 if tier == "quality" else 5 + strength * 0.15
        search = 21 if tier == "quality" else 35
        out = cv2.fastNlMeansDenoisingColored(bgr, None, h, h * chroma / 50, 7, search)
    else:
        if tier == "quick":
            out = cv2.medianBlur(bgr, 3 if strength < 50 else 5)
        else:
            sigma = 10 + strength * 0.9
            out = cv2.bilateralFilter(bgr, 9, sigma, sigma)
        if chroma:
            ycc = cv2.cvtColor(out, cv2.COLOR_BGR2YCrCb)
            ycc[..., 1:] = cv2.GaussianBlur(ycc[..., 1:], (0, 0), chroma / 25)
            out = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)
    result: np.ndarray = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    keep = settings["detail_preservation"] / 200
    if keep:
        mixed = result.astype(np.float32) + keep * (rgb.astype(np.float32) - result)
        result = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    return result


def run_noise_removal(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    import cv2

    def denoise(img: Image.Image) -> Image.Image:
        work, rgb, alpha = split_rgb(img)
        return join_rgb(denoise_rgb(cv2, rgb, settings), alpha, work)

    result = map_frames(ctx, inputs.file, denoise)
    result.format, result.quality = encoding(settings)
    return result


# --- image-enhancement ------------------------------------------------------------------------

ENHANCE_MODES = ("auto", "exposure", "contrast", "color", "sharpness")
# What auto mode aims for (0-1 scales).
TARGET_BRIGHTNESS = (0.4, 0.6)
LOW_CONTRAST = 0.18
LOW_SATURATION = 0.25
LOW_SHARPNESS = 0.004
LEVELS_PERCENTILES = (0.5, 99.5)


class EnhanceSettings(Settings):
    mode = fields.String(
        load_default="auto",
        validate=validate.OneOf(ENHANCE_MODES),
        metadata={
            "description": "auto (measure the image, as image-enhancement/analyze does, and "
            "apply only the adjustments it recommends), or one adjustment always applied: "
            "exposure (gamma towards mid-grey brightness), contrast (per-channel auto levels: "
            "0.5/99.5 percentile stretch), color (saturation) or sharpness (unsharp mask)"
        },
    )
    strength = fields.Integer(
        load_default=50,
        validate=validate.Range(0, 100),
        metadata={"description": "how strongly to apply the adjustments, 0-100 (0: none)"},
    )


class AnalyzeSettings(Settings):
    pass


class Measurements(Settings):
    mean_brightness = fields.Float(
        required=True, metadata={"description": "mean Rec. 709 luma, 0 black - 1 white"}
    )
    contrast = fields.Float(
        required=True, metadata={"description": "standard deviation of the luma, 0-0.5"}
    )
    saturation = fields.Float(
        required=True, metadata={"description": "mean HSV saturation, 0 grey - 1 vivid"}
    )
    sharpness = fields.Float(
        required=True, metadata={"description": "variance of the luma's Laplacian (0-1 scale)"}
    )
    clipped_shadows = fields.Float(
        required=True, metadata={"description": "percent of pixels with luma <= 2/255"}
    )
    clipped_highlights = fields.Float(
        required=True, metadata={"description": "percent of pixels with luma >= 253/255"}
    )


class Recommendation(Settings):
    adjustment = fields.String(
        required=True, metadata={"description": "exposure, contrast, color or sharpness"}
    )
    amount = fields.Float(
        required=True,
        metadata={
            "description": "exposure: the gamma (below 1 brightens); contrast: 1 (auto "
            "levels); color: the saturation factor; sharpness: the unsharp mask percent"
        },
    )
    reason = fields.String(required=True, metadata={"description": "why, in words"})


class AnalyzeOutput(Settings):
    measurements = fields.Nested(Measurements, required=True, metadata={"description": "facts"})
    recommendations = fields.List(
        fields.Nested(Recommendation),
        required=True,
        metadata={"description": "the adjustments auto mode applies at strength 50"},
    )


def measure(rgb: np.ndarray) -> dict[str, float]:
    values = rgb.astype(np.float32) / 255
    luma = values @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    high, low = values.max(axis=2), values.min(axis=2)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0)
    laplacian = (
        -4 * luma[1:-1, 1:-1] + luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:]
    )
    return {
        "meanBrightness": round(float(luma.mean()), 4),
        "contrast": round(float(luma.std()), 4),
        "saturation": round(float(saturation.mean()), 4),
        "sharpness": round(float(laplacian.var()) if laplacian.size else 0.0, 6),
        "clippedShadows": round(float((luma <= 2 / 255).mean() * 100), 3),
        "clippedHighlights": round(float((luma >= 253 / 255).mean() * 100), 3),
    }


def recommend(facts: dict[str, float], strength: float = 0.5) -> list[dict[str, Any]]:
    """The adjustments an image needs, with amounts scaled by `strength` (0-1; 0.5 default)."""
    advice: list[dict[str, Any]] = []
    low, high = TARGET_BRIGHTNESS
    brightness = min(max(facts["meanBrightness"], 0.01), 0.99)
    if not low <= brightness <= high:
        # The gamma that maps the mean to mid-grey, moved towards 1 for lower strengths.
        full = math.log(0.5) / math.log(brightness)
        gamma = full ** min(1.0, strength * 2)
        direction = "dark" if brightness < low else "bright"
        advice.append(
            {"adjustment": "exposure", "amount": round(gamma, 3), "reason": f"too {direction}"}
        )
    if facts["contrast"] < LOW_CONTRAST:
        advice.append(
            {"adjustment": "contrast", "amount": 1.0, "reason": "flat tones: stretch the levels"}
        )
    if facts["saturation"] < LOW_SATURATION and facts["saturation"] > 0.01:
        factor = 1 + strength * (LOW_SATURATION - facts["saturation"]) / LOW_SATURATION * 1.2
        advice.append({"adjustment": "color", "amount": round(factor, 3), "reason": "dull colours"})
    if facts["sharpness"] < LOW_SHARPNESS:
        advice.append(
            {"adjustment": "sharpness", "amount": round(strength * 160), "reason": "soft detail"}
        )
    return advice


def auto_levels(rgb: np.ndarray, strength: float) -> np.ndarray:
    """Per-channel percentile stretch (0.5 %-99.5 % to 0-255), blended in by `strength`."""
    out = rgb.astype(np.float32)
    for channel in range(3):
        low, high = np.percentile(out[..., channel], LEVELS_PERCENTILES)
        if high - low < 1:
            continue
        stretched = (out[..., channel] - low) * 255 / (high - low)
        out[..., channel] += (stretched - out[..., channel]) * strength
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def apply_gamma(rgb: np.ndarray, gamma: float) -> np.ndarray:
    table = np.clip((np.arange(256) / 255) ** gamma * 255 + 0.5, 0, 255).astype(np.uint8)
    result: np.ndarray = table[rgb]
    return result


def apply_saturation(rgb: np.ndarray, factor: float) -> np.ndarray:
    values = rgb.astype(np.float32)
    luma = values @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    out = luma[..., None] + (values - luma[..., None]) * factor
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def apply_sharpness(rgb: np.ndarray, percent: float) -> np.ndarray:
    img = Image.fromarray(rgb, "RGB").filter(
        ImageFilter.UnsharpMask(radius=2, percent=round(percent), threshold=2)
    )
    return np.asarray(img)


def enhance_rgb(rgb: np.ndarray, settings: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    strength = settings["strength"] / 100
    mode = settings["mode"]
    if mode == "auto":
        steps = recommend(measure(rgb), strength)
    elif mode == "exposure":
        brightness = min(max(measure(rgb)["meanBrightness"], 0.01), 0.99)
        gamma = (math.log(0.5) / math.log(brightness)) ** strength
        steps = [{"adjustment": "exposure", "amount": gamma}]
    elif mode == "contrast":
        steps = [{"adjustment": "contrast", "amount": 1.0}]
    elif mode == "color":
        steps = [{"adjustment": "color", "amount": 1 + strength}]
    else:
        steps = [{"adjustment": "sharpness", "amount": strength * 300}]
    if strength == 0:
        return rgb, []
    for step in steps:
        kind, amount = step["adjustment"], float(step["amount"])
        if kind == "exposure":
            rgb = apply_gamma(rgb, amount)
        elif kind == "contrast":
            rgb = auto_levels(rgb, min(1.0, strength * 2) if mode == "auto" else strength)
        elif kind == "color":
            rgb = apply_saturation(rgb, amount)
        else:
            rgb = apply_sharpness(rgb, amount)
    return rgb, [step["adjustment"] for step in steps]


def run_enhancement(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    applied: list[list[str]] = []

    def enhance(img: Image.Image) -> Image.Image:
        work, rgb, alpha = split_rgb(img)
        out, steps = enhance_rgb(rgb, settings)
        applied.append(steps)
        return join_rgb(out, alpha, work)

    result = map_frames(ctx, inputs.file, enhance)
    result.meta = {"applied": applied[0]}
    return result


def extract_analysis(ctx: Context, image: InputFile, settings: dict[str, Any]) -> dict[str, Any]:
    _work, rgb, _alpha = split_rgb(image.open_first_frame())
    facts = measure(rgb)
    return {"measurements": facts, "recommendations": recommend(facts)}


# --- content-aware-resize ---------------------------------------------------------------------

SEAM_MAX_PIXELS = 2_000_000


class ContentAwareResizeSettings(Settings):
    width = fields.Integer(
        load_default=None,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={"description": "target width in pixels, at most the input's (default: kept)"},
    )
    height = fields.Integer(
        load_default=None,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={"description": "target height in pixels, at most the input's (default: kept)"},
    )
    square = fields.Boolean(
        load_default=False,
        metadata={
            "description": "carve to a square of the shorter side (width/height must then be "
            "left out)"
        },
    )
    protect_faces = fields.Boolean(
        load_default=False,
        metadata={
            "description": "detect faces (Haar cascade; needs OpenCV, pixmill[cv]) and keep "
            "seams out of them"
        },
    )
    blur_radius = fields.Float(
        load_default=1.0,
        validate=validate.Range(0, 20),
        metadata={
            "description": "Gaussian blur of the grey image the energy is measured on "
            "(blurred once, then carved with the pixels): higher ignores fine texture and noise"
        },
    )
    sobel_threshold = fields.Integer(
        load_default=0,
        validate=validate.Range(0, 255),
        metadata={
            "description": "gradient energies below this (0-255 scale) count as 0: seams "
            "prefer any flat region over weak texture"
        },
    )

    @validates_schema
    def _square_alone(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("square") and (data.get("width") or data.get("height")):
            raise ValidationError("square carves to the shorter side: omit width/height", "square")
        if not data.get("square") and not data.get("width") and not data.get("height"):
            raise ValidationError("give width, height or square", "_schema")


def blurred_gray(rgb: np.ndarray, blur_radius: float) -> np.ndarray:
    """The grey image the energy is measured on (float32), Gaussian-blurred once."""
    gray = Image.fromarray(gray_array(rgb), "L")
    if blur_radius:
        gray = gray.filter(ImageFilter.GaussianBlur(blur_radius))
    return np.asarray(gray, dtype=np.float32)


def energy_map(gray: np.ndarray, threshold: int, protect: np.ndarray | None) -> np.ndarray:
    """Gradient magnitude (|dx| + |dy| of the grey image, 0-255 scale), protected areas made
    too costly to cross."""
    energy = gradient_energy(gray)
    if threshold:
        energy[energy < threshold] = 0
    if protect is not None:
        energy += protect * 1e6
    return energy


def find_seam(energy: np.ndarray) -> np.ndarray:
    """The vertical seam (one column per row) of least total energy: dynamic programming with
    one vectorised step per row (cumulative cost), then a backtrack through the cost table."""
    height, width = energy.shape
    cost = np.empty((height, width), dtype=np.float64)
    cost[0] = energy[0]
    window = np.full(width + 2, np.inf)
    for row in range(1, height):
        window[1:-1] = cost[row - 1]
        np.minimum(window[:-2], window[2:], out=cost[row])
        np.minimum(cost[row], window[1:-1], out=cost[row])
        cost[row] += energy[row]
    seam = np.empty(height, dtype=np.intp)
    col = int(cost[-1].argmin())
    seam[-1] = col
    for row in range(height - 2, -1, -1):
        low = max(col - 1, 0)
        col = low + int(cost[row, low : col + 2].argmin())
        seam[row] = col
    return seam


def remove_seam(array: np.ndarray, seam: np.ndarray) -> np.ndarray:
    """A 2-D array without the seam's pixel in each row."""
    height, width = array.shape
    keep = np.ones((height, width), dtype=bool)
    keep[np.arange(height), seam] = False
    return array[keep].reshape((height, width - 1))


def carve(
    ctx: Context,
    layers: list[np.ndarray],
    seams: int,
    threshold: int,
    progress: tuple[int, int],
) -> list[np.ndarray]:
    """Remove `seams` vertical seams from every 2-D layer: packed pixels, the grey image the
    energy is measured on, and (optionally) the protection mask."""
    done, total = progress
    for index in range(seams):
        ctx.check_cancelled()
        seam = find_seam(energy_map(layers[1], threshold, layers[2] if len(layers) > 2 else None))
        layers = [remove_seam(layer, seam) for layer in layers]
        if index % 4 == 0 or index == seams - 1:
            count = done + index + 1
            ctx.progress(count / total, f"removed {count} of {total} seams")
    return layers


def face_mask(ctx: Context, rgb: np.ndarray) -> np.ndarray:
    mask = np.zeros(rgb.shape[:2], dtype=np.float32)
    for face in detect(ctx, gray_array(rgb), FACE_CASCADE, 0.5):
        left, top, right, bottom = padded(face, 0.1, (rgb.shape[1], rgb.shape[0]))
        mask[top:bottom, left:right] = 1
    return mask


def run_content_aware_resize(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    header = source.header
    if header.width * header.height > SEAM_MAX_PIXELS:
        raise BadRequestError(
            f"seam carving takes time in proportion to seams x pixels: this server carves "
            f"images of at most {SEAM_MAX_PIXELS:,} pixels, and this one has "
            f"{header.width * header.height:,}; resize it first",
            code="IMAGE_TOO_LARGE_FOR_TOOL",
            details={"width": header.width, "height": header.height, "maxPixels": SEAM_MAX_PIXELS},
        )
    if settings["protect_faces"]:
        import_cv2(ctx.plugin_id)
    img = rgb_image(source.open())
    if settings["square"]:
        width = height = min(img.size)
    else:
        width = settings["width"] or img.width
        height = settings["height"] or img.height
    if width > img.width or height > img.height:
        raise BadRequestError(
            f"content-aware-resize only shrinks (it removes low-energy seams): the target "
            f"{width}x{height} is larger than the image's {img.width}x{img.height}; use resize "
            "to enlarge",
            code="TARGET_LARGER_THAN_IMAGE",
            details={"width": width, "height": height, "imageWidth": img.width},
        )
    rgba = np.ascontiguousarray(np.asarray(img.convert("RGBA")))
    layers = [rgba.view(np.uint32)[..., 0], blurred_gray(rgba[..., :3], settings["blur_radius"])]
    if settings["protect_faces"]:
        layers.append(face_mask(ctx, rgba[..., :3]))
    vertical, horizontal = img.width - width, img.height - height
    total = max(1, vertical + horizontal)
    threshold = settings["sobel_threshold"]
    layers = carve(ctx, layers, vertical, threshold, (0, total))
    if horizontal:
        turned = carve(ctx, [layer.T for layer in layers], horizontal, threshold, (vertical, total))
        layers = [layer.T for layer in turned]
    ctx.progress(1.0, "done")
    packed = np.ascontiguousarray(layers[0])
    pixels = packed.view(np.uint8).reshape((*packed.shape, 4))
    out = Image.fromarray(pixels, "RGBA")
    if img.mode != "RGBA":
        out = out.convert(img.mode)
    out.info = dict(img.info)
    return ImageResult(out, meta={"seamsRemoved": {"vertical": vertical, "horizontal": horizontal}})


# --- registration -----------------------------------------------------------------------------


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="smart-crop",
            name="Smart Crop",
            description="Crop to a size or aspect ratio keeping what matters: the window goes "
            "where the image is most salient (attention: edges, saturation, skin tones), "
            "most detailed (entropy) or central; mode=face frames the faces a Haar cascade "
            "finds (OpenCV, pixmill[cv]; the only option that needs it), mode=trim removes "
            "uniform borders. Refuses animations. meta reports the crop box (and faces).",
            settings=SmartCropSettings,
            run=run_smart_crop,
            example={"width": 400, "height": 400, "strategy": "attention"},
        ),
        Tool(
            id="blur-faces",
            name="Face / PII Blur",
            description="Detect faces (OpenCV Haar frontal-face cascade) and blur or pixelate "
            "each, with a margin. meta reports the face count and boxes (left, top, width, "
            "height) of the first frame; animations are handled frame by frame.",
            settings=BlurFacesSettings,
            run=run_blur_faces,
            requires=CV_REQUIRES,
            install=CV_INSTALL,
            example={"blurRadius": 30, "sensitivity": 0.5, "method": "gaussian"},
        ),
        Tool(
            id="red-eye-removal",
            name="Red Eye Removal",
            description="Find eyes (OpenCV Haar eye cascade inside detected faces, or over the "
            "whole image when no face is found) and desaturate the pixels in them where red "
            "dominates (red > threshold x mean(green, blue)). meta reports eyes found and "
            "fixed, and the eye boxes, of the first frame; alpha is kept.",
            settings=RedEyeSettings,
            run=run_red_eye,
            requires=CV_REQUIRES,
            install=CV_INSTALL,
            example={"sensitivity": 0.5, "strength": 1.0},
        ),
        Tool(
            id="noise-removal",
            name="Noise Removal",
            description="Remove noise with OpenCV: a median filter (quick), a bilateral "
            "filter (balanced) or non-local means (quality, maximum: slower, best), with "
            "chroma smoothing and optional detail preservation. Alpha is kept; animations "
            "are denoised frame by frame.",
            settings=NoiseRemovalSettings,
            run=run_noise_removal,
            requires=CV_REQUIRES,
            install=CV_INSTALL,
            example={"tier": "balanced", "strength": 50},
        ),
        Tool(
            id="image-enhancement",
            name="Image Enhancement",
            description="Auto-correct a photo: auto mode measures brightness, contrast, "
            "saturation and sharpness and applies only what is needed (gamma exposure, "
            "per-channel levels stretch, saturation, unsharp mask); other modes apply one "
            "adjustment. POST image-enhancement/analyze for the measurements and "
            "recommendations. meta lists what was applied.",
            settings=EnhanceSettings,
            run=run_enhancement,
            example={"mode": "auto", "strength": 50},
        ),
        Tool(
            id="content-aware-resize",
            name="Content-Aware Resize",
            description="Shrink by seam carving: remove the connected paths of least "
            "gradient energy, so the salient content keeps its shape while the flat parts "
            "give way. Shrinks only (a larger target is a 400), inputs of at most 2 MP (a "
            "400 otherwise: resize first), still images only. Runs queued with progress; "
            "protectFaces needs OpenCV (pixmill[cv]).",
            settings=ContentAwareResizeSettings,
            run=run_content_aware_resize,
            heavy=True,
            timeout=900,
            example={"width": 600, "height": 400},
        ),
    ]


@hookimpl
def pixmill_extractors() -> list[Extractor]:
    return [
        Extractor(
            id="image-enhancement-analyze",
            name="Image Enhancement Analysis",
            description="Measure an image (mean brightness, contrast as luma standard "
            "deviation, saturation, sharpness, clipped shadows and highlights) and recommend "
            "the adjustments image-enhancement's auto mode would apply, with amounts.",
            settings=AnalyzeSettings,
            extract=extract_analysis,
            output_schema=AnalyzeOutput,
            route="image-enhancement/analyze",
        ),
    ]
