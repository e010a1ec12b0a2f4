"""Built-in small utilities: image-to-base64 (an extractor), lqip-placeholder, compare,
histogram and find-duplicates (tools).

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
from marshmallow import fields, validate
from PIL import Image, ImageDraw, ImageFilter, ImageStat

from pixmill import (
    Color,
    Context,
    Extractor,
    FileInput,
    ImageResult,
    InputFile,
    Inputs,
    OutputKind,
    Settings,
    Tool,
    hookimpl,
    parse_color,
)
from pixmill.core.errors import BadRequestError
from pixmill.core.imageio import has_alpha
from pixmill.plugins.essentials import check_output_size, on_white, rgb8

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


# ---------------------------------------------------------------------------------------------
# shared: 8-bit pixels as numpy arrays


# ---------------------------------------------------------------------------------------------
# compare

COMPARE_MODES = ("side-by-side", "overlay", "diff")
# The diff's background: the first image in grey, faded this far towards white, so that the
# highlighted pixels stand out while the picture stays recognisable.
DIFF_FADE = 0.75
# SSIM over non-overlapping 8x8 windows (the block form of Wang et al., 2004, the same as
# pixmill.testing.ssim), on a copy of at most this many pixels (integer box reduction).
SSIM_WINDOW = 8
SSIM_MAX_PIXELS = 4_000_000
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2


class CompareSettings(Settings):
    mode = fields.String(
        load_default="diff",
        validate=validate.OneOf(COMPARE_MODES),
        metadata={
            "description": "side-by-side (the two images next to each other, first on the "
            "left), overlay (a 50% blend of the two) or diff (the first image faded to grey "
            "with every differing pixel painted in highlightColor)"
        },
    )
    diff_threshold = fields.Integer(
        load_default=10,
        validate=validate.Range(0, 255),
        metadata={
            "description": "a pixel differs when one of its channels (R, G, B, or alpha when "
            "either image has it) differs by more than this (0-255); used for the diff image "
            "and for meta.diffPixels/diffPercent in every mode"
        },
    )
    highlight_color = Color(
        alpha=False,
        load_default="#ff0000",
        metadata={
            "description": "colour of the differing pixels in the diff image (#rgb or #rrggbb)"
        },
    )


def ssim_score(first: Image.Image, second: Image.Image) -> float:
    """Mean block SSIM of two same-size images over their bands, in [-1, 1]."""
    factor = math.ceil(math.sqrt(first.width * first.height / SSIM_MAX_PIXELS))
    if factor > 1:
        first, second = first.reduce(factor), second.reduce(factor)
    a = np.asarray(first)
    b = np.asarray(second)
    window = max(1, min(SSIM_WINDOW, *a.shape[:2]))

    def mean(values: np.ndarray) -> np.ndarray:
        # Pillow's box reduction in C; edge windows are averaged over the pixels they have.
        return np.asarray(Image.fromarray(values).reduce(window), dtype=np.float64)

    scores = []
    for band in range(a.shape[2]):
        x = a[..., band].astype(np.float32)
        y = b[..., band].astype(np.float32)
        mx, my = mean(x), mean(y)
        vx = mean(x * x) - mx * mx
        vy = mean(y * y) - my * my
        cov = mean(x * y) - mx * my
        score_map = ((2 * mx * my + SSIM_C1) * (2 * cov + SSIM_C2)) / (
            (mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2)
        )
        scores.append(float(score_map.mean()))
    return sum(scores) / len(scores)


def differing_pixels(first: Image.Image, second: Image.Image, threshold: int) -> np.ndarray:
    """A boolean mask: True where a channel differs by more than `threshold` (pixels fully
    transparent in both images never differ, whatever colour they hide)."""
    a = np.asarray(first)
    b = np.asarray(second)
    mask = np.zeros(a.shape[:2], dtype=bool)
    for band in range(a.shape[2]):
        mask |= np.abs(a[..., band].astype(np.int16) - b[..., band].astype(np.int16)) > threshold
    if a.shape[2] == 4:
        mask &= (a[..., 3] > 0) | (b[..., 3] > 0)
    return mask


def diff_image(first: Image.Image, mask: np.ndarray, color: tuple[int, int, int]) -> Image.Image:
    faded = (
        on_white(first)
        .convert("L")
        .point([round(level + (255 - level) * DIFF_FADE) for level in range(256)])
    )
    result = faded.convert("RGB")
    result.paste(color, (0, 0), Image.fromarray(mask.astype(np.uint8) * 255))
    return result


def run_compare(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source, target = inputs["file"].open(), inputs["compare"].open()
    alpha = has_alpha(source) or has_alpha(target)
    first, second = rgb8(source, alpha=alpha), rgb8(target, alpha=alpha)
    compare_size = second.size
    if second.size != first.size:
        # Ignoring the aspect ratio: every pixel of the first image has a counterpart.
        second = second.resize(first.size, Image.Resampling.LANCZOS)
    ctx.check_cancelled()
    mask = differing_pixels(first, second, settings["diff_threshold"])
    mode = settings["mode"]
    if mode == "diff":
        red, green, blue, _ = parse_color(settings["highlight_color"])
        result = diff_image(first, mask, (red, green, blue))
    elif mode == "overlay":
        result = Image.blend(first, second, 0.5)
    else:
        check_output_size(ctx, (first.width * 2, first.height))
        background = (0, 0, 0, 0) if alpha else (255, 255, 255)
        result = Image.new(first.mode, (first.width * 2, first.height), background)
        result.paste(first, (0, 0))
        result.paste(second, (first.width, 0))
    if "icc_profile" in first.info:
        result.info["icc_profile"] = first.info["icc_profile"]
    ctx.check_cancelled()
    differing = int(mask.sum())
    total = first.width * first.height
    meta = {
        "ssim": round(ssim_score(first, second), 6),
        "diffPixels": differing,
        "diffPercent": round(100.0 * differing / total, 4),
        "diffThreshold": settings["diff_threshold"],
        "width": first.width,
        "height": first.height,
        "compareWidth": compare_size[0],
        "compareHeight": compare_size[1],
        "resized": compare_size != first.size,
    }
    return ImageResult(result, format="png", meta=meta)


# ---------------------------------------------------------------------------------------------
# histogram

HISTOGRAM_SCALES = ("linear", "log")
# Rec. 709 / sRGB luminance weights; luminance is rounded to a whole 0-255 level.
LUMA_WEIGHTS = (0.2126, 0.7152, 0.0722)
HISTOGRAM_CHANNELS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 40, 40)),
    ("green", (40, 170, 60)),
    ("blue", (40, 90, 220)),
    ("luminance", (40, 40, 40)),
)
CHART_MARGIN = 10


class HistogramSettings(Settings):
    scale = fields.String(
        load_default="linear",
        validate=validate.OneOf(HISTOGRAM_SCALES),
        metadata={
            "description": "linear or log (log(1 + count): small counts stay visible next to "
            "a tall peak) for the chart's vertical axis; the stats are unaffected"
        },
    )
    width = fields.Integer(
        load_default=768,
        validate=validate.Range(256, 4096),
        metadata={"description": "chart width in pixels"},
    )
    height = fields.Integer(
        load_default=400,
        validate=validate.Range(128, 2048),
        metadata={"description": "chart height in pixels"},
    )


def channel_stats(counts: np.ndarray) -> dict[str, Any]:
    """mean, median, stdDev (population), min and max of the values a 256-bin count holds."""
    total = int(counts.sum())
    if total == 0:
        return {"mean": None, "median": None, "stdDev": None, "min": None, "max": None}
    levels = np.arange(256, dtype=np.float64)
    mean = float((levels * counts).sum() / total)
    variance = float((counts * (levels - mean) ** 2).sum() / total)
    cumulative = np.cumsum(counts)
    # The two middle values (the same one for an odd count), as numpy's median takes them.
    low = int(np.searchsorted(cumulative, (total - 1) // 2, side="right"))
    high = int(np.searchsorted(cumulative, total // 2, side="right"))
    present = np.flatnonzero(counts)
    return {
        "mean": round(mean, 4),
        "median": (low + high) / 2,
        "stdDev": round(math.sqrt(variance), 4),
        "min": int(present[0]),
        "max": int(present[-1]),
    }


def histogram_counts(img: Image.Image) -> tuple[dict[str, np.ndarray], int]:
    """256-bin counts per channel over the pixels that are not fully transparent, and how many
    fully transparent pixels were left out."""
    pixels = np.asarray(rgb8(img, alpha=True))
    visible = pixels[..., 3] > 0
    rgb = pixels[visible][:, :3]
    luminance = np.rint(rgb @ np.array(LUMA_WEIGHTS)).astype(np.int64)
    counts = {
        name: np.bincount(rgb[:, index], minlength=256)
        for index, name in enumerate(("red", "green", "blue"))
    }
    counts["luminance"] = np.bincount(luminance, minlength=256)
    return counts, int(visible.size - visible.sum())


def histogram_chart(counts: dict[str, np.ndarray], settings: dict[str, Any]) -> Image.Image:
    width, height = settings["width"], settings["height"]
    chart = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(chart, "RGBA")
    left, top = CHART_MARGIN, CHART_MARGIN
    right, bottom = width - CHART_MARGIN, height - CHART_MARGIN
    draw.rectangle((left, top, right, bottom), outline=(200, 200, 200))
    for level in (64, 128, 192):
        x = left + (right - left) * level / 255
        draw.line((x, top, x, bottom), fill=(230, 230, 230))

    def scaled(values: np.ndarray) -> np.ndarray:
        as_float = values.astype(np.float64)
        return np.log1p(as_float) if settings["scale"] == "log" else as_float

    peak = max(float(scaled(values).max()) for values in counts.values())
    xs = left + (right - left) * np.arange(256) / 255
    for name, (red, green, blue) in HISTOGRAM_CHANNELS:
        heights = scaled(counts[name]) / peak if peak > 0 else np.zeros(256)
        ys = bottom - (bottom - top) * heights
        points = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
        if name != "luminance":
            draw.polygon([(left, bottom), *points, (right, bottom)], fill=(red, green, blue, 50))
        draw.line(points, fill=(red, green, blue, 255), width=2 if name == "luminance" else 1)
    return chart


def run_histogram(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    img = source.open_first_frame()
    counts, transparent = histogram_counts(img)
    meta = {
        "imageWidth": img.width,
        "imageHeight": img.height,
        "pixels": int(counts["red"].sum()),
        "transparentPixels": transparent,
        "scale": settings["scale"],
        "channels": {name: channel_stats(counts[name]) for name, _ in HISTOGRAM_CHANNELS},
    }
    if source.is_animated:
        meta["frame"] = "first"
    return ImageResult(
        histogram_chart(counts, settings), format="png", keep_metadata=False, meta=meta
    )


# ---------------------------------------------------------------------------------------------
# find-duplicates

MIN_DUPLICATE_FILES = 2
MAX_DUPLICATE_FILES = 200


class DuplicatesSettings(Settings):
    threshold = fields.Integer(
        load_default=8,
        validate=validate.Range(0, 64),
        metadata={
            "description": "the largest Hamming distance between two perceptual hashes for the "
            "images to count as duplicates (0: identical hashes only); out of hashSize² bits"
        },
    )
    hash_size = fields.Integer(
        load_default=8,
        validate=validate.Range(4, 16),
        metadata={
            "description": "side of the difference hash: hashSize² bits (8 gives the usual "
            "64-bit dHash; larger tells similar images apart more strictly)"
        },
    )


def dhash(img: Image.Image, size: int) -> int:
    """The difference hash: a greyscale (size+1) x size thumbnail, one bit per horizontal
    neighbour pair, set when the right pixel is brighter."""
    small = on_white(img).convert("L").resize((size + 1, size), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    return int("".join("1" if bit else "0" for bit in bits), 2)


def open_for_hash(source: InputFile, size: int) -> Image.Image:
    if source.is_animated:
        return source.open_first_frame()
    # A JPEG may decode at 1/2-1/8 scale: the hash needs only a thumbnail.
    return source.open(draft_size=(size * 8, size * 8))


def run_find_duplicates(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> dict[str, Any]:
    files: list[InputFile] = inputs["file"]
    if len(files) < MIN_DUPLICATE_FILES or len(files) > MAX_DUPLICATE_FILES:
        raise BadRequestError(
            f"find-duplicates takes {MIN_DUPLICATE_FILES} to {MAX_DUPLICATE_FILES} files, "
            f"got {len(files)}",
            code="TOO_FEW_FILES" if len(files) < MIN_DUPLICATE_FILES else "TOO_MANY_FILES",
            details={"count": len(files), "min": MIN_DUPLICATE_FILES, "max": MAX_DUPLICATE_FILES},
        )
    size, threshold = settings["hash_size"], settings["threshold"]
    hashes: list[int] = []
    described: list[dict[str, Any]] = []
    for index, source in enumerate(files):
        ctx.check_cancelled()
        header = source.header
        hashes.append(dhash(open_for_hash(source, size), size))
        described.append(
            {
                "index": index,
                "filename": source.filename,
                "hash": f"{hashes[-1]:0{(size * size + 3) // 4}x}",
                "width": header.width,
                "height": header.height,
            }
        )
        ctx.progress((index + 1) / len(files), f"hashed {index + 1} of {len(files)}")
    parent = list(range(len(files)))

    def root(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    close_pairs: list[tuple[int, int, int]] = []
    for first in range(len(files)):
        for second in range(first + 1, len(files)):
            distance = (hashes[first] ^ hashes[second]).bit_count()
            if distance <= threshold:
                close_pairs.append((first, second, distance))
                parent[root(second)] = root(first)
    members: dict[int, list[int]] = {}
    for index in range(len(files)):
        members.setdefault(root(index), []).append(index)
    groups: list[dict[str, Any]] = []
    for indexes in sorted((group for group in members.values() if len(group) > 1), key=min):
        grouped = set(indexes)
        groups.append(
            {
                "files": [{"index": i, "filename": files[i].filename} for i in indexes],
                "pairs": [
                    {"first": a, "second": b, "distance": d}
                    for a, b, d in close_pairs
                    if a in grouped
                ],
            }
        )
    return {
        "count": len(files),
        "hashSize": size,
        "threshold": threshold,
        "duplicates": sum(len(group["files"]) - 1 for group in groups),
        "groups": groups,
        "files": described,
    }


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="compare",
            name="Image Compare",
            description="Compares the image in `file` with the one in `compare` (the second "
            "file part, the comparison target). A `compare` image of another size is first "
            "resized to the first image's size, ignoring its aspect ratio. mode side-by-side "
            "puts them next to each other, overlay blends them 50/50, diff shows the first "
            "image faded to grey with every pixel differing by more than diffThreshold painted "
            "in highlightColor. Always returns a PNG, and in `meta`: ssim (structural "
            "similarity over 8x8 blocks and all bands, 1.0 = identical; computed on a copy of "
            "at most 4 megapixels), diffPixels and diffPercent (pixels over the threshold), "
            "width/height (of the first image), compareWidth/compareHeight (the second as "
            "sent) and resized. Pixel values are compared as stored, without colour "
            "management; animated inputs are refused.",
            settings=CompareSettings,
            run=run_compare,
            inputs=(
                FileInput("file", "the reference image"),
                FileInput(
                    "compare",
                    "the image to compare with it (resized to the first one's size if needed)",
                ),
            ),
            example={"mode": "diff", "diffThreshold": 10, "highlightColor": "#ff0000"},
        ),
        Tool(
            id="histogram",
            name="Histogram",
            description="A PNG chart of the image's red, green and blue histograms (filled "
            "curves) and its luminance (Rec. 709 weights, dark line), with per-channel stats "
            "in `meta.channels` (red, green, blue, luminance: mean, median, stdDev, min, max "
            "of the 0-255 values), plus imageWidth, imageHeight, pixels (counted) and "
            "transparentPixels. Alpha is not a channel of the stats, but fully transparent "
            "pixels are left out of every count. An animation is measured on its first frame "
            "(meta.frame = first).",
            settings=HistogramSettings,
            run=run_histogram,
            example={"scale": "linear", "width": 768, "height": 400},
        ),
        Tool(
            id="find-duplicates",
            name="Find Duplicates",
            description="Groups near-duplicate images among 2 to 200 uploaded `file` parts "
            "with a perceptual difference hash (dHash): identical files, resized and "
            "recompressed copies hash alike, different pictures do not. Returns JSON: groups "
            "(each with its files by upload index and filename and the pairs within threshold "
            "with their Hamming distance), duplicates (files beyond the first of each group) "
            "and every file's hash, width and height. Transparency is flattened onto white; an "
            "animation is hashed by its first frame.",
            settings=DuplicatesSettings,
            run=run_find_duplicates,
            inputs=(FileInput("file", "the images to check (2-200)", multiple=True),),
            output=OutputKind.JSON,
            example={"threshold": 8, "hashSize": 8},
        ),
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
