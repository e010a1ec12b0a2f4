"""A well-formed third-party plugin: one tool, one extractor, one source.

Used by tests/test_plugin_host.py, loaded both directly and through a real entry point.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from marshmallow import fields, validate
from PIL import Image, ImageStat

from pixmill import (
    Context,
    Extractor,
    ImageResult,
    InputFile,
    Inputs,
    Settings,
    Source,
    SourcedImage,
    Tool,
    hookimpl,
)


class MirrorSettings(Settings):
    vertical = fields.Boolean(
        load_default=False, metadata={"description": "flip top to bottom instead"}
    )


class MeanColorSettings(Settings):
    precision = fields.Integer(
        load_default=1,
        validate=validate.Range(0, 4),
        metadata={"description": "decimals in each channel mean"},
    )


class SolidSettings(Settings):
    size = fields.Integer(
        load_default=8, validate=validate.Range(1, 64), metadata={"description": "side in px"}
    )


def run_mirror(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    img = inputs.file.open()
    flip = (
        Image.Transpose.FLIP_TOP_BOTTOM if settings["vertical"] else Image.Transpose.FLIP_LEFT_RIGHT
    )
    return ImageResult(img.transpose(flip))


def extract_mean_color(ctx: Context, image: InputFile, settings: dict[str, Any]) -> dict[str, Any]:
    means = ImageStat.Stat(image.open().convert("RGB")).mean
    return {"mean": [round(value, settings["precision"]) for value in means]}


def fetch_solid(ctx: Context, settings: dict[str, Any]) -> Iterator[SourcedImage]:
    out = io.BytesIO()
    Image.new("RGB", (settings["size"], settings["size"]), (0, 128, 255)).save(out, "PNG")
    yield SourcedImage(data=out.getvalue(), filename="solid.png", license="CC0")


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="test-mirror",
            name="Mirror",
            description="Flip the image",
            settings=MirrorSettings,
            run=run_mirror,
            example={"vertical": True},
        )
    ]


@hookimpl
def pixmill_extractors() -> list[Extractor]:
    return [
        Extractor(
            id="test-mean-color",
            name="Mean colour",
            description="The mean of each RGB channel",
            settings=MeanColorSettings,
            extract=extract_mean_color,
            example={"precision": 2},
        )
    ]


@hookimpl
def pixmill_sources() -> list[Source]:
    return [
        Source(
            id="test-solid",
            name="Solid",
            description="A square of one colour",
            settings=SolidSettings,
            fetch=fetch_solid,
            example={"size": 4},
        )
    ]
