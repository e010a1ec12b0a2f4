"""Built-in animation tools: gif-webp (animated GIF <-> animated WebP) and gif-tools, with
its sub-routes gif-tools/extract-frames (a ZIP of PNG frames) and gif-tools/info.

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.

Frames come from `InputFile.frames()` (upright, RGBA when the input has transparency) and go
back through the core's encoder as `ImageResult(frames=..., durations=...)`. Each frame's
`info` is reduced to the colour profile and EXIF before encoding: Pillow's GIF writer copies
the first frame's `info` (loop, background, a palette index of transparency that no longer
means anything on RGBA pixels) into its settings, which would silently override ours.

A still input is a one-frame animation: the tools that make sense on it (conversion, resize,
optimize, rotate, caption) handle it; reverse and speed refuse it with 422 `NOT_ANIMATED`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema
from PIL import Image

from pixmill import (
    Color,
    Context,
    Extractor,
    FileResult,
    ImageResult,
    InputFile,
    Inputs,
    OutputKind,
    Settings,
    Tool,
    hookimpl,
)
from pixmill.core.archives import zip_archive
from pixmill.core.errors import BadRequestError, InvalidImageError
from pixmill.core.imageio import encode_image
from pixmill.plugins.essentials import RESAMPLE, check_output_size, resamplable
from pixmill.plugins.watermark import place_text, stamp

MAX_DIMENSION = 16384
# Browsers play frames shorter than 20 ms (some: 10 ms) at 100 ms, so a "faster" GIF would
# play slower; durations are never taken below this.
MIN_FRAME_MS = 20
MAX_FRAME_MS = 65_535 * 10  # a GIF stores delays in 1/100 s in 16 bits
# A GIF has one bit of alpha: pixels at least this opaque stay, the others become transparent.
GIF_ALPHA_THRESHOLD = 128

TARGET_FORMATS = ("auto", "gif", "webp")
ACTIONS = ("resize", "optimize", "reverse", "speed", "rotate", "add-text")
TRANSFORMS = ("90", "180", "270", "hflip", "vflip")
CAPTION_POSITIONS = ("top", "center", "bottom")

_TRANSPOSES = {
    # Pillow's rotations turn anticlockwise; the setting's degrees are clockwise.
    "90": Image.Transpose.ROTATE_270,
    "180": Image.Transpose.ROTATE_180,
    "270": Image.Transpose.ROTATE_90,
    "hflip": Image.Transpose.FLIP_LEFT_RIGHT,
    "vflip": Image.Transpose.FLIP_TOP_BOTTOM,
}


# --- shared helpers ---------------------------------------------------------------------------


class Animation:
    """The decoded frames of an input, their durations in ms and its loop count as stored."""

    def __init__(self, frames: list[Image.Image], durations: list[int], loop: int | None):
        self.frames = frames
        self.durations = durations
        self.loop = loop

    @classmethod
    def read(cls, ctx: Context, source: InputFile) -> Animation:
        frames: list[Image.Image] = []
        durations: list[int] = []
        loop: int | None = None
        for index, (frame, duration) in enumerate(source.frames()):
            ctx.check_cancelled()
            if index == 0:
                stored = frame.info.get("loop")
                loop = stored if isinstance(stored, int) else None
            frames.append(_clean_info(frame))
            durations.append(duration)
        return cls(frames, durations, loop)

    def map(self, ctx: Context, transform: Callable[[Image.Image], Image.Image]) -> None:
        mapped = []
        for frame in self.frames:
            ctx.check_cancelled()
            mapped.append(_clean_info(transform(frame)))
        self.frames = mapped


def _clean_info(img: Image.Image) -> Image.Image:
    """Keep only what should travel to the output (see the module docstring for why)."""
    img.info = {key: img.info[key] for key in ("icc_profile", "exif") if key in img.info}
    return img


def _gif_loop_from(source_format: str, loop: int | None) -> int | None:
    """The GIF loop field for an input's loop count (None: no loop block, play once).

    A GIF's count is the number of *repeats* (browsers play it count+1 times, none = once);
    WebP's is the number of *plays*. libwebp's gif2webp maps them the same way.
    """
    if source_format != "webp":
        return loop
    if loop is None or loop == 0:
        return 0
    return None if loop == 1 else loop - 1


def _webp_loop_from(source_format: str, loop: int | None) -> int:
    if source_format == "webp":
        return loop or 0
    if loop is None:
        return 1  # a GIF without a loop block plays once
    return 0 if loop == 0 else loop + 1


def _for_gif(frame: Image.Image) -> Image.Image:
    """A frame with one-bit alpha and one colour for "transparent", ready for the GIF encoder.

    Pillow quantizes RGBA and takes the first fully transparent palette entry as GIF's
    transparent index: soft edges and differently coloured clear pixels would otherwise turn
    into visible colours.
    """
    if "A" not in frame.getbands():
        return frame
    rgba = frame.convert("RGBA")
    opaque = rgba.getchannel("A").point(lambda a: 255 if a >= GIF_ALPHA_THRESHOLD else 0)
    result = Image.new("RGBA", rgba.size, (0, 0, 0, 0))
    result.paste(rgba.convert("RGB"), mask=opaque)
    result.info = dict(frame.info)
    return result


def _result(
    frames: list[Image.Image],
    durations: list[int],
    fmt: str,
    *,
    loop: int | None,
    quality: int | None = None,
    options: dict[str, Any] | None = None,
) -> ImageResult:
    extra: dict[str, Any] = dict(options or {})
    if fmt == "gif":
        any_alpha = any("A" in frame.getbands() for frame in frames)
        frames = [_for_gif(frame) for frame in frames]
        durations = [min(duration, MAX_FRAME_MS) for duration in durations]
        if any_alpha and len(frames) > 1:
            # Clear each frame before the next: otherwise the previous frame shows through
            # the next one's transparent pixels.
            extra.setdefault("disposal", 2)
    else:
        extra.setdefault("background", (0, 0, 0, 0))
    if len(frames) > 1:
        extra["loop"] = loop
    return ImageResult(
        frames[0],
        format=fmt,
        quality=quality,
        frames=frames[1:] or None,
        durations=durations if len(frames) > 1 else None,
        options=extra,
    )


def _fit_inside(
    size: tuple[int, int], width: int | None, height: int | None, percent: int
) -> tuple[int, int]:
    """The size keeping the aspect ratio: inside width x height when given, else percent."""
    src_w, src_h = size
    if width is None and height is None:
        scale = percent / 100
    else:
        scale = min(
            width / src_w if width is not None else float("inf"),
            height / src_h if height is not None else float("inf"),
        )
    return max(1, round(src_w * scale)), max(1, round(src_h * scale))


def _resize(ctx: Context, animation: Animation, size: tuple[int, int]) -> None:
    check_output_size(ctx, size, len(animation.frames))
    if size != animation.frames[0].size:
        animation.map(ctx, lambda frame: resamplable(frame).resize(size, RESAMPLE))


def _resize_fields() -> tuple[fields.Integer, fields.Integer]:
    return (
        fields.Integer(
            load_default=None,
            allow_none=True,
            validate=validate.Range(1, MAX_DIMENSION),
            metadata={
                "description": "target width in pixels; the aspect ratio is kept (with height "
                "too, the frames fit inside width x height)"
            },
        ),
        fields.Integer(
            load_default=None,
            allow_none=True,
            validate=validate.Range(1, MAX_DIMENSION),
            metadata={"description": "target height in pixels; the aspect ratio is kept"},
        ),
    )


# --- gif-webp ---------------------------------------------------------------------------------


class GifWebpSettings(Settings):
    format = fields.String(
        load_default="auto",
        validate=validate.OneOf(TARGET_FORMATS),
        metadata={
            "description": "output format: auto (a GIF becomes WebP, a WebP becomes GIF, "
            "anything else becomes WebP), gif or webp"
        },
    )
    quality = fields.Integer(
        load_default=80,
        validate=validate.Range(1, 100),
        metadata={"description": "WebP quality (1-100); for lossless WebP, the effort spent"},
    )
    lossless = fields.Boolean(
        load_default=False,
        metadata={"description": "encode WebP losslessly (ignored for GIF output)"},
    )
    resize_percent = fields.Integer(
        load_default=100,
        validate=validate.Range(10, 100),
        metadata={"description": "scale every frame to this percentage of its size (10-100)"},
    )
    width, height = _resize_fields()

    @validates_schema
    def _one_way_to_resize(self, data: dict[str, Any], **_: Any) -> None:
        sized = data.get("width") is not None or data.get("height") is not None
        if sized and data.get("resize_percent", 100) != 100:
            raise ValidationError(
                "give either resizePercent or width/height, not both", "resizePercent"
            )


def run_gif_webp(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    source_format = source.format.name
    target = settings["format"]
    if target == "auto":
        target = "gif" if source_format == "webp" else "webp"
    animation = Animation.read(ctx, source)
    size = _fit_inside(
        animation.frames[0].size, settings["width"], settings["height"], settings["resize_percent"]
    )
    _resize(ctx, animation, size)
    if target == "gif":
        return _result(
            animation.frames,
            animation.durations,
            "gif",
            loop=_gif_loop_from(source_format, animation.loop),
        )
    return _result(
        animation.frames,
        animation.durations,
        "webp",
        loop=_webp_loop_from(source_format, animation.loop),
        quality=settings["quality"],
        options={"lossless": settings["lossless"]},
    )


# --- gif-tools --------------------------------------------------------------------------------


# The seed's gif-tools actions whose result is not a GIF live at sub-routes of their own.
SUB_ROUTE_ACTIONS = ("extract-frames", "info")


def _not_a_sub_route(value: str) -> None:
    if value in SUB_ROUTE_ACTIONS:
        raise ValidationError(
            f"{value} is its own endpoint, not an action: POST "
            f"/api/v1/tools/image/gif-tools/{value} (pixmill run gif-tools-{value})"
        )


class GifToolsSettings(Settings):
    action = fields.String(
        load_default="optimize",
        validate=[_not_a_sub_route, validate.OneOf(ACTIONS)],
        metadata={
            "description": "what to do: resize, optimize (fewer colours, identical frames "
            "merged), reverse, speed, rotate or add-text; reverse and speed need an animation. "
            "extract-frames and info, which return a ZIP and JSON, are the sub-routes "
            "gif-tools/extract-frames and gif-tools/info"
        },
    )
    width, height = _resize_fields()
    colors = fields.Integer(
        load_default=256,
        validate=validate.Range(2, 256),
        metadata={"description": "optimize: colours kept in each frame's palette (2-256)"},
    )
    factor = fields.Float(
        load_default=2.0,
        validate=validate.Range(0.25, 4.0),
        metadata={
            "description": "speed: playback speed factor (0.25-4; 2 plays twice as fast); "
            f"frames never get shorter than {MIN_FRAME_MS} ms, which browsers would slow down"
        },
    )
    transform = fields.String(
        load_default="90",
        validate=validate.OneOf(TRANSFORMS),
        metadata={
            "description": "rotate: 90, 180 or 270 degrees clockwise, hflip (mirror "
            "left-right) or vflip (mirror top-bottom)"
        },
    )
    text = fields.String(
        load_default="",
        validate=validate.Length(0, 500),
        metadata={"description": "add-text: the caption drawn on every frame (required there)"},
    )
    font_size = fields.Integer(
        load_default=24,
        validate=validate.Range(4, 1000),
        metadata={"description": "add-text: text size in pixels"},
    )
    color = Color(
        alpha=False,
        load_default="#ffffff",
        metadata={"description": "add-text: text colour as #rgb or #rrggbb"},
    )
    position = fields.String(
        load_default="bottom",
        validate=validate.OneOf(CAPTION_POSITIONS),
        metadata={"description": "add-text: top, center or bottom (centred horizontally)"},
    )

    @validates_schema
    def _action_needs(self, data: dict[str, Any], **_: Any) -> None:
        action = data.get("action")
        if action == "resize" and data.get("width") is None and data.get("height") is None:
            raise ValidationError("resize needs width, height or both", "width")
        if action == "add-text" and not data.get("text", "").strip():
            raise ValidationError("add-text needs a text with a visible character", "text")


def _require_animation(source: InputFile, action: str) -> None:
    if not source.is_animated:
        raise InvalidImageError(
            f"{action} needs an animated image (GIF, WebP, PNG or AVIF with several frames); "
            "the input is a still image",
            code="NOT_ANIMATED",
            details={"action": action, "frames": 1},
        )


def _optimize(ctx: Context, animation: Animation, colors: int) -> None:
    """Quantize every frame to `colors` and merge runs of identical frames (durations add)."""
    method = Image.Quantize.MEDIANCUT

    def quantize(frame: Image.Image) -> Image.Image:
        if "A" in frame.getbands():
            frame = _for_gif(frame)
            method_for = Image.Quantize.FASTOCTREE  # the one Pillow method that keeps alpha
            return frame.quantize(colors, method=method_for).convert("RGBA")
        return frame.convert("RGB").quantize(colors, method=method).convert("RGB")

    animation.map(ctx, quantize)
    frames: list[Image.Image] = []
    durations: list[int] = []
    for frame, duration in zip(animation.frames, animation.durations, strict=True):
        if frames and frame.tobytes() == frames[-1].tobytes():
            durations[-1] = min(durations[-1] + duration, MAX_FRAME_MS)
            continue
        frames.append(frame)
        durations.append(duration)
    animation.frames, animation.durations = frames, durations


def run_gif_tools(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    action = settings["action"]
    if action in ("reverse", "speed"):
        _require_animation(source, action)
    animation = Animation.read(ctx, source)
    options: dict[str, Any] = {}
    if action == "resize":
        size = _fit_inside(animation.frames[0].size, settings["width"], settings["height"], 100)
        _resize(ctx, animation, size)
    elif action == "optimize":
        _optimize(ctx, animation, settings["colors"])
        options["optimize"] = True
    elif action == "reverse":
        animation.frames.reverse()
        animation.durations.reverse()
    elif action == "speed":
        animation.durations = [
            max(MIN_FRAME_MS, round(duration / settings["factor"]))
            for duration in animation.durations
        ]
    elif action == "rotate":
        transpose = _TRANSPOSES[settings["transform"]]
        animation.map(ctx, lambda frame: frame.transpose(transpose))
    else:
        caption = {
            "text": settings["text"],
            "font": "dejavu-sans-bold",
            "font_size": settings["font_size"],
            "color": settings["color"],
            "opacity": 100,
            "rotation": 0,
            "position": settings["position"],
            "margin": max(2, settings["font_size"] // 3),
            "tile_spacing": 0,
        }
        placed = place_text(ctx, caption, animation.frames[0].size)
        animation.map(ctx, lambda frame: stamp(frame, placed))
    return _result(
        animation.frames,
        animation.durations,
        "gif",
        loop=_gif_loop_from(source.format.name, animation.loop),
        options=options,
    )


# --- gif-tools/extract-frames and gif-tools/info ----------------------------------------------

MAX_FRAME_NUMBER = 100_000


class ExtractFramesSettings(Settings):
    every = fields.Integer(
        load_default=1,
        validate=validate.Range(1, 1000),
        metadata={"description": "keep every Nth frame (1: all) from start on"},
    )
    start = fields.Integer(
        load_default=1,
        validate=validate.Range(1, MAX_FRAME_NUMBER),
        metadata={"description": "first frame to extract, counting from 1"},
    )
    end = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(1, MAX_FRAME_NUMBER),
        metadata={"description": "last frame to extract (inclusive); default: the last one"},
    )

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_: Any) -> None:
        end = data.get("end")
        if end is not None and end < data.get("start", 1):
            raise ValidationError("end must not be before start", "end")


def run_extract_frames(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    source = inputs.file
    animation = Animation.read(ctx, source)
    count = len(animation.frames)
    start, end = settings["start"], settings["end"] or count
    if start > count:
        raise BadRequestError(
            f"start is frame {start} but the image has {count} frame(s)",
            code="FRAME_OUT_OF_RANGE",
            details={"start": start, "frames": count},
        )
    end = min(end, count)
    entries: list[tuple[str, bytes]] = []
    listing: list[dict[str, Any]] = []
    chosen = range(start, end + 1, settings["every"])
    for position, number in enumerate(chosen):
        ctx.check_cancelled()
        ctx.progress(position / len(chosen), f"frame {number}")
        name = f"{source.stem}-frame-{number:03}.png"
        entries.append((name, encode_image(animation.frames[number - 1], "png")))
        listing.append({"file": name, "frame": number, "duration": animation.durations[number - 1]})
    manifest = {
        "source": source.filename,
        "frameCount": count,
        "width": animation.frames[0].width,
        "height": animation.frames[0].height,
        "loop": animation.loop,
        "frames": listing,
    }
    entries.append(("frames.json", json.dumps(manifest, indent=2).encode("utf-8")))
    return FileResult(
        data=zip_archive(entries),
        format="zip",
        meta={"frames": len(listing), "frameCount": count},
    )


class GifInfoSettings(Settings):
    pass


class GifInfoOutput(Settings):
    format = fields.String(required=True, metadata={"description": "gif, webp, png or avif"})
    frame_count = fields.Integer(required=True, metadata={"description": "number of frames"})
    width = fields.Integer(required=True, metadata={"description": "width in pixels"})
    height = fields.Integer(required=True, metadata={"description": "height in pixels"})
    durations = fields.List(
        fields.Integer(), required=True, metadata={"description": "each frame's duration, ms"}
    )
    total_duration = fields.Integer(
        required=True, metadata={"description": "one play of all frames, in ms"}
    )
    loop = fields.Integer(
        allow_none=True,
        metadata={
            "description": "the loop count as stored: for GIF the number of repeats (0 = "
            "forever), for WebP the number of plays (0 = forever); null when none is stored "
            "(a GIF then plays once)"
        },
    )
    loops_forever = fields.Boolean(required=True, metadata={"description": "plays endlessly"})
    transparency = fields.Boolean(
        required=True, metadata={"description": "whether any frame has transparent pixels"}
    )


def extract_gif_info(ctx: Context, image: InputFile, settings: dict[str, Any]) -> dict[str, Any]:
    animation = Animation.read(ctx, image)
    transparent = False
    for frame in animation.frames:
        lowest = frame.getchannel("A").getextrema()[0] if "A" in frame.getbands() else 255
        if isinstance(lowest, int | float) and lowest < 255:
            transparent = True
            break
    loop = animation.loop
    animated = len(animation.frames) > 1
    return {
        "format": image.format.name,
        "frameCount": len(animation.frames),
        "width": animation.frames[0].width,
        "height": animation.frames[0].height,
        "durations": animation.durations if animated else [],
        "totalDuration": sum(animation.durations) if animated else 0,
        "loop": loop,
        "loopsForever": animated and loop == 0,
        "transparency": transparent,
    }


@hookimpl
def pixmill_extractors() -> list[Extractor]:
    return [
        Extractor(
            id="gif-tools-info",
            name="GIF Info",
            description="Describe an animated GIF (or WebP, PNG, AVIF) at gif-tools/info: frame "
            "count, size, each frame's duration, total duration, loop count and whether any "
            "frame has transparency.",
            settings=GifInfoSettings,
            extract=extract_gif_info,
            output_schema=GifInfoOutput,
            route="gif-tools/info",
        ),
    ]


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="gif-webp",
            name="GIF/WebP Converter",
            description="Convert an animated GIF to animated WebP or back, keeping every "
            "frame's duration, the loop count and transparency; optionally resized.",
            settings=GifWebpSettings,
            run=run_gif_webp,
            example={"format": "webp", "quality": 75, "resizePercent": 50},
        ),
        Tool(
            id="gif-tools",
            name="GIF Tools",
            description="Resize, optimize, reverse, speed up or slow down, rotate or caption "
            "an animated GIF, frame by frame; the result is a GIF.",
            settings=GifToolsSettings,
            run=run_gif_tools,
            example={"action": "resize", "width": 160},
        ),
        Tool(
            id="gif-tools-extract-frames",
            name="GIF Frame Extractor",
            description="Extract the frames of an animated GIF (or WebP, PNG, AVIF) at "
            "gif-tools/extract-frames as a ZIP of full-size PNGs named "
            "<stem>-frame-001.png, ... (numbered from 1 as in the animation), optionally every "
            "Nth frame between start and end, plus frames.json listing each file with its "
            "frame number and duration in ms, the loop count and the size.",
            settings=ExtractFramesSettings,
            run=run_extract_frames,
            output=OutputKind.FILE,
            route="gif-tools/extract-frames",
            example={"every": 1},
        ),
    ]
