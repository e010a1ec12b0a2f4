"""The `brightness-stats` extractor: how light or dark an image is, as JSON.

An extractor reads an image and returns a JSON-able dict. Its `output_schema` describes that
dict; pixmill publishes it in the catalogue and the OpenAPI document. Output keys are the
schema's wire names (camelCase), like settings.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate
from PIL import Image, ImageStat

from pixmill import Context, Extractor, InputFile, Settings

SAMPLE_SIDE = 512


class BrightnessSettings(Settings):
    dark_below = fields.Integer(
        load_default=64,
        validate=validate.Range(1, 255),
        metadata={"description": "a pixel whose luma is below this counts as dark"},
    )
    bright_above = fields.Integer(
        load_default=191,
        validate=validate.Range(0, 254),
        metadata={"description": "a pixel whose luma is above this counts as bright"},
    )


class BrightnessOutput(Settings):
    mean = fields.Float(required=True, metadata={"description": "mean luma, 0-255"})
    median = fields.Integer(required=True, metadata={"description": "median luma, 0-255"})
    minimum = fields.Integer(required=True, metadata={"description": "darkest luma, 0-255"})
    maximum = fields.Integer(required=True, metadata={"description": "brightest luma, 0-255"})
    stddev = fields.Float(required=True, metadata={"description": "luma standard deviation"})
    dark_share = fields.Float(required=True, metadata={"description": "share of dark pixels, 0-1"})
    bright_share = fields.Float(
        required=True, metadata={"description": "share of bright pixels, 0-1"}
    )


def luma_sample(image: InputFile) -> Image.Image:
    """The image as luma (L), at most SAMPLE_SIDE a side: statistics do not need every pixel.

    `draft_size` lets JPEGs decode at a reduced scale; an animation is read from its first
    frame, the picture a person would see as its thumbnail.
    """
    box = (SAMPLE_SIDE, SAMPLE_SIDE)
    img = image.open(draft_size=box) if not image.is_animated else image.open_first_frame()
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        # Transparent areas count as the white a viewer usually shows behind them.
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    luma = img.convert("L")
    luma.thumbnail(box, Image.Resampling.BOX)
    return luma


def extract_brightness(ctx: Context, image: InputFile, settings: dict[str, Any]) -> dict[str, Any]:
    luma = luma_sample(image)
    histogram = luma.histogram()
    total = sum(histogram)
    stat = ImageStat.Stat(luma)
    minimum, maximum = stat.extrema[0]
    return {
        "mean": round(stat.mean[0], 2),
        "median": int(stat.median[0]),
        "minimum": int(minimum),
        "maximum": int(maximum),
        "stddev": round(stat.stddev[0], 2),
        "darkShare": round(sum(histogram[: settings["dark_below"]]) / total, 4),
        "brightShare": round(sum(histogram[settings["bright_above"] + 1 :]) / total, 4),
    }


BRIGHTNESS_STATS = Extractor(
    id="brightness-stats",
    name="Brightness statistics",
    description="Mean, median, extremes and spread of the image's luma, and the shares of dark "
    "and bright pixels.",
    settings=BrightnessSettings,
    extract=extract_brightness,
    output_schema=BrightnessOutput,
    example={"darkBelow": 64, "brightAbove": 191},
)
