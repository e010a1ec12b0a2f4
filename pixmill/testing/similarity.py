"""Golden-image checks: SSIM (structural similarity) computed with Pillow alone.

Byte-for-byte comparison of encoded images breaks on every encoder upgrade; a pixel-exact one
breaks on a rounding change. SSIM (Wang et al., 2004) scores what a person would notice:
local means, contrasts and structure. It is 1.0 for identical images and drops as they differ.

This implementation uses non-overlapping 8x8 windows (the block form of the index), so the
windowed means are one `Image.reduce` each, done in C: no numpy, which pixmill does not depend
on. It is computed per band (R, G, B, and alpha when either image has one) and averaged.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, ImageMath, ImageOps

WINDOW = 8
# The stabilising constants of the SSIM paper: (K * L)^2 with L = 255, K1 = 0.01, K2 = 0.03.
C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def as_image(value: Any) -> Image.Image:
    """An image from a PIL image, encoded bytes, or a run's outcome (anything with `.data`)."""
    if isinstance(value, Image.Image):
        return value
    data = getattr(value, "data", value)
    if not isinstance(data, bytes | bytearray):
        raise TypeError(
            f"cannot compare {type(value).__name__}: pass a PIL image, encoded image bytes "
            "or the outcome of run_tool"
        )
    img = Image.open(io.BytesIO(data))
    img.load()
    # What a viewer shows: EXIF orientation applied.
    return ImageOps.exif_transpose(img)


def _comparable(img: Image.Image, with_alpha: bool) -> Image.Image:
    return img.convert("RGBA" if with_alpha else "RGB")


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info


def ssim(first: Any, second: Any) -> float:
    """The mean SSIM of two images of the same size, in [-1, 1] (1 means identical)."""
    a, b = as_image(first), as_image(second)
    if a.size != b.size:
        raise ValueError(
            f"cannot compare images of different sizes: {a.size[0]}x{a.size[1]} and "
            f"{b.size[0]}x{b.size[1]}; resize one first or compare the right output"
        )
    with_alpha = _has_alpha(a) or _has_alpha(b)
    bands_a = _comparable(a, with_alpha).split()
    bands_b = _comparable(b, with_alpha).split()
    scores = [_band_ssim(x, y) for x, y in zip(bands_a, bands_b, strict=True)]
    return sum(scores) / len(scores)


def _band_ssim(x8: Image.Image, y8: Image.Image) -> float:
    x, y = x8.convert("F"), y8.convert("F")
    # A window never larger than the image (a 1x1 image is one window of one pixel).
    window = max(1, min(WINDOW, x.width, x.height))

    def mean(img: Image.Image) -> Image.Image:
        return img.reduce(window)

    products = {
        "xx": ImageMath.lambda_eval(lambda v: v["x"] * v["x"], x=x),
        "yy": ImageMath.lambda_eval(lambda v: v["y"] * v["y"], y=y),
        "xy": ImageMath.lambda_eval(lambda v: v["x"] * v["y"], x=x, y=y),
    }
    score_map = ImageMath.lambda_eval(
        lambda v: (
            ((2 * v["mx"] * v["my"] + C1) * (2 * (v["mxy"] - v["mx"] * v["my"]) + C2))
            / (
                (v["mx"] * v["mx"] + v["my"] * v["my"] + C1)
                * ((v["mxx"] - v["mx"] * v["mx"]) + (v["myy"] - v["my"] * v["my"]) + C2)
            )
        ),
        mx=mean(x),
        my=mean(y),
        mxx=mean(products["xx"]),
        myy=mean(products["yy"]),
        mxy=mean(products["xy"]),
    )
    # The mean of the map: one reduce to 1x1 (ImageStat is histogram-based, wrong for floats).
    mean_score = score_map.reduce(score_map.size).getpixel((0, 0))
    assert isinstance(mean_score, float)
    return mean_score


def assert_similar(actual: Any, expected: Any, min_ssim: float = 0.95) -> float:
    """Fail unless `actual` looks like `expected` (SSIM at least `min_ssim`); return the score.

    Both may be PIL images, encoded bytes, or the outcome of `run_tool`. Different sizes fail
    with both sizes in the message, since no similarity is meaningful then.
    """
    if not 0 < min_ssim <= 1:
        raise ValueError(f"min_ssim must be in (0, 1], got {min_ssim!r}")
    a, b = as_image(actual), as_image(expected)
    if a.size != b.size:
        raise AssertionError(
            f"images differ in size: actual {a.size[0]}x{a.size[1]}, expected "
            f"{b.size[0]}x{b.size[1]}"
        )
    score = ssim(a, b)
    if score < min_ssim:
        raise AssertionError(
            f"images are not similar enough: SSIM {score:.4f} < min_ssim {min_ssim} "
            "(1.0 means identical; save both images and look at them, then update the "
            "golden image if the change is intended)"
        )
    return score
