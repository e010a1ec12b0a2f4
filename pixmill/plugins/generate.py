"""Built-in `generate` source: solid colours, gradients and seeded noise, made on the spot.

Useful as a pipeline's first step, for placeholders and backgrounds, and for trying tools
without an image at hand. Written exactly as a third-party plugin would be.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from typing import Any

from marshmallow import fields, validate
from PIL import Image, ImageChops

from pixmill import Color, Context, Settings, Source, SourcedImage, hookimpl, parse_color
from pixmill.core.errors import ImageTooLargeError
from pixmill.core.imageio import encode_image

MAX_DIMENSION = 8192
MAX_COUNT = 100
MAX_SEED = 2**32 - 1
KINDS = ("solid", "gradient", "noise")
DIRECTIONS = ("horizontal", "vertical", "diagonal")
FORMATS = ("png", "jpg", "webp")


class GenerateSettings(Settings):
    kind = fields.String(
        load_default="solid",
        validate=validate.OneOf(KINDS),
        metadata={
            "description": "solid (one colour), gradient (color to colorTo) or noise (random "
            "RGB pixels from seed)"
        },
    )
    width = fields.Integer(
        load_default=512,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={"description": "width in pixels"},
    )
    height = fields.Integer(
        load_default=512,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={"description": "height in pixels"},
    )
    color = Color(
        load_default="#ffffff",
        metadata={"description": "fill colour, or the gradient's start (#rrggbb or #rrggbbaa)"},
    )
    color_to = Color(
        load_default="#000000",
        metadata={"description": "the gradient's end colour"},
    )
    direction = fields.String(
        load_default="horizontal",
        validate=validate.OneOf(DIRECTIONS),
        metadata={
            "description": "gradient direction: horizontal (left to right), vertical (top to "
            "bottom) or diagonal (top-left to bottom-right)"
        },
    )
    seed = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(0, MAX_SEED),
        metadata={
            "description": "noise seed: the same seed gives the same pixels; image i of a "
            "batch uses seed + i. Unset picks one at random (reported in the image's tags)"
        },
    )
    format = fields.String(
        load_default="png",
        validate=validate.OneOf(FORMATS),
        metadata={"description": "output format"},
    )
    count = fields.Integer(
        load_default=1,
        validate=validate.Range(1, MAX_COUNT),
        metadata={"description": "how many images to generate"},
    )


def _ramp(length: int) -> bytes:
    """0..255 spread evenly over `length` steps, both ends included."""
    if length == 1:
        return b"\x00"
    return bytes(round(255 * i / (length - 1)) for i in range(length))


def _gradient_mask(size: tuple[int, int], direction: str) -> Image.Image:
    width, height = size
    across = Image.frombytes("L", (width, 1), _ramp(width)).resize(size, Image.Resampling.NEAREST)
    down = Image.frombytes("L", (1, height), _ramp(height)).resize(size, Image.Resampling.NEAREST)
    if direction == "horizontal":
        return across
    if direction == "vertical":
        return down
    return ImageChops.add(across, down, scale=2.0)


def _noise(size: tuple[int, int], seed: int) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def make_image(settings: dict[str, Any], seed: int) -> Image.Image:
    size = (settings["width"], settings["height"])
    if settings["kind"] == "noise":
        return _noise(size, seed)
    start = parse_color(settings["color"])
    end = parse_color(settings["color_to"])
    translucent = start[3] < 255 or (settings["kind"] == "gradient" and end[3] < 255)
    mode = "RGBA" if translucent else "RGB"
    first = Image.new(mode, size, start if translucent else start[:3])
    if settings["kind"] == "solid":
        return first
    last = Image.new(mode, size, end if translucent else end[:3])
    return Image.composite(last, first, _gradient_mask(size, settings["direction"]))


def fetch_generated(ctx: Context, settings: dict[str, Any]) -> Iterator[SourcedImage]:
    width, height, count = settings["width"], settings["height"], settings["count"]
    if width * height > ctx.limits.max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} is {width * height:,} pixels; this server handles at most "
            f"{ctx.limits.max_pixels:,}",
            details={"width": width, "height": height, "maxPixels": ctx.limits.max_pixels},
        )
    kind = settings["kind"]
    base_seed = settings["seed"]
    if base_seed is None:
        base_seed = secrets.randbelow(MAX_SEED - MAX_COUNT)
    for index in range(count):
        ctx.check_cancelled()
        # Wrapping keeps seed + i a valid seed even at the top of the range.
        seed = (base_seed + index) % (MAX_SEED + 1)
        img = make_image(settings, seed)
        tags: tuple[str, ...] = ("generated", kind)
        if kind == "noise":
            tags += (f"seed:{seed}",)
        name = f"{kind}-{width}x{height}" + (f"-{index + 1}" if count > 1 else "")
        yield SourcedImage(
            data=encode_image(img, settings["format"]),
            filename=f"{name}.{settings['format']}",
            tags=tags,
        )
        if count > 1:
            ctx.progress((index + 1) / count, f"generated {index + 1} of {count}")


@hookimpl
def pixmill_sources() -> list[Source]:
    return [
        Source(
            id="generate",
            name="Generate",
            description="Make images from nothing: a solid colour, a horizontal, vertical or "
            "diagonal gradient between two colours, or reproducible random noise.",
            settings=GenerateSettings,
            fetch=fetch_generated,
            example={
                "kind": "gradient",
                "width": 640,
                "height": 360,
                "color": "#1e3a8a",
                "colorTo": "#f97316",
                "direction": "diagonal",
            },
        ),
    ]
