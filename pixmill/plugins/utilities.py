"""Built-in small utilities: image-to-base64 (an extractor) and lqip-placeholder (a tool).

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.
"""

from __future__ import annotations

import base64
from typing import Any

from marshmallow import fields, validate
from PIL import Image, ImageFilter, ImageStat

from pixmill import Context, Extractor, ImageResult, InputFile, Inputs, Settings, Tool, hookimpl
from pixmill.core.imageio import has_alpha

# ---------------------------------------------------------------------------------------------
# image-to-base64


class Base64Settings(Settings):
    format = fields.String(
        load_default="data-uri",
        validate=validate.OneOf(("data-uri", "plain")),
        metadata={
            "description": "data-uri (data:<mime>;base64,... ready for src=) or plain (the "
            "base64 text alone)"
        },
    )


class Base64Output(Settings):
    data_uri = fields.String(metadata={"description": "the data URI (format=data-uri)"})
    base64 = fields.String(metadata={"description": "the base64 text (format=plain)"})
    mime_type = fields.String(required=True, metadata={"description": "e.g. image/png"})
    size = fields.Integer(required=True, metadata={"description": "the file's size in bytes"})


def extract_base64(ctx: Context, image: InputFile, settings: dict[str, Any]) -> dict[str, Any]:
    # The file's own bytes, not a re-encoding: the point is to embed exactly this file.
    mime_type = image.format.media_type
    encoded = base64.b64encode(image.data).decode("ascii")
    result: dict[str, Any] = {"mimeType": mime_type, "size": image.size}
    if settings["format"] == "data-uri":
        result["dataUri"] = f"data:{mime_type};base64,{encoded}"
    else:
        result["base64"] = encoded
    return result


# ---------------------------------------------------------------------------------------------
# lqip-placeholder

LQIP_STRATEGIES = ("blur", "pixelate", "solid")
LQIP_FORMATS = ("webp", "png", "jpeg")
PIXELATE_BLOCKS = 8


class LqipSettings(Settings):
    width = fields.Integer(
        load_default=16,
        validate=validate.Range(4, 64),
        metadata={"description": "placeholder width in pixels; height keeps the aspect ratio"},
    )
    blur = fields.Float(
        load_default=1.0,
        validate=validate.Range(0, 10),
        metadata={"description": "Gaussian blur radius in placeholder pixels (strategy blur)"},
    )
    strategy = fields.String(
        load_default="blur",
        validate=validate.OneOf(LQIP_STRATEGIES),
        metadata={
            "description": "blur (tiny blurred copy), pixelate (blocks of about 1/8 of the "
            "width) or solid (the average colour)"
        },
    )
    format = fields.String(
        load_default="webp",
        validate=validate.OneOf(LQIP_FORMATS),
        metadata={"description": "output format"},
    )
    quality = fields.Integer(
        load_default=50,
        validate=validate.Range(1, 100),
        metadata={"description": "encoder quality for webp and jpeg (ignored for png)"},
    )


def make_placeholder(img: Image.Image, settings: dict[str, Any]) -> Image.Image:
    if img.mode.startswith("I") or img.mode == "F":
        img = img.point(lambda value: value / 256).convert("L")
    img = img.convert("RGBA" if has_alpha(img) else "RGB")
    width = settings["width"]
    height = max(1, round(img.height * width / img.width))
    small = img.resize((width, height), Image.Resampling.BOX)
    strategy = settings["strategy"]
    if strategy == "solid":
        mean = tuple(round(value) for value in ImageStat.Stat(small).mean)
        result = Image.new(small.mode, small.size, mean)
    elif strategy == "pixelate":
        blocks = (max(1, width // PIXELATE_BLOCKS), max(1, height // PIXELATE_BLOCKS))
        result = small.resize(blocks, Image.Resampling.BOX).resize(
            small.size, Image.Resampling.NEAREST
        )
    else:
        result = small.filter(ImageFilter.GaussianBlur(settings["blur"]))
    result.info = dict(img.info)
    return result


def run_lqip(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    # A placeholder stands for the picture shown first: an animation's first frame.
    img = inputs.file.open_first_frame()
    return ImageResult(
        make_placeholder(img, settings), format=settings["format"], quality=settings["quality"]
    )


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="lqip-placeholder",
            name="LQIP Placeholder",
            description="A tiny low-quality placeholder (4-64 px wide) to show while the real "
            "image loads: blurred, pixelated or one solid average colour.",
            settings=LqipSettings,
            run=run_lqip,
            example={"width": 16, "strategy": "blur", "blur": 1.0, "format": "webp"},
        ),
    ]


@hookimpl
def pixmill_extractors() -> list[Extractor]:
    return [
        Extractor(
            id="image-to-base64",
            name="Image to Base64",
            description="The file's own bytes as base64, as a data URI or plain text, with "
            "its MIME type and size (for embedding in HTML, CSS or JSON).",
            settings=Base64Settings,
            extract=extract_base64,
            output_schema=Base64Output,
            example={"format": "data-uri"},
        ),
    ]
