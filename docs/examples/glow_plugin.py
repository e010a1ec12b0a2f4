"""A tool that uses the plugin context: progress, cancellation, a cached model, temp files, logs."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate
from PIL import ImageChops, ImageFilter

from pixmill import Context, ImageResult, Inputs, Settings, Tool, hookimpl


class GlowSettings(Settings):
    passes = fields.Integer(
        load_default=3,
        validate=validate.Range(1, 10),
        metadata={"description": "blur passes: more passes make a wider glow"},
    )


def load_glow_filter() -> ImageFilter.Filter:
    # Stands in for something slow to build (an ONNX session, a font, a lookup table):
    # ctx.load_model calls it once per process and hands the same object to every later call.
    return ImageFilter.GaussianBlur(radius=4)


def glow(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    blur = ctx.load_model("glow-filter", load_glow_filter)
    img = inputs.file.open().convert("RGB")
    halo = img
    passes = settings["passes"]
    for done in range(1, passes + 1):
        ctx.check_cancelled()  # a cancelled job stops here, between expensive steps
        halo = halo.filter(blur)
        ctx.progress(done / passes, f"blur pass {done} of {passes}")
    # Big intermediates may go to disk: ctx.tmp_dir is private and removed after the call.
    scratch = ctx.tmp_dir / "halo.png"
    halo.save(scratch)
    ctx.logger.debug("halo written to %s", scratch)
    return ImageResult(ImageChops.screen(img, halo))


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="glow",
            name="Glow",
            description="Add a soft glow: the image screened with a blurred copy of itself.",
            settings=GlowSettings,
            run=glow,
            timeout=60,  # run policy: a queued run taking longer is stopped and retried
            example={"passes": 3},
        )
    ]
