"""Tools benchmark: pixmill's execution path versus plain Pillow doing the same work, 12 Mpx JPEG.

Usage: .venv/bin/python bench/bench_tools.py [--rounds 7] [--tools resize,convert,...] [--profile]

Measured in one run, on one machine, in one process, so the ratios hold even when the machine
is noisy. The input is a 4000x3000 photo-like JPEG (gradients, shapes, seeded noise; q90) made
here. For each of five tools, in interleaved rounds (the side that goes first alternates):

(a) pixmill: `pixmill.core.execution.execute` with the tool's definition from the plugin
    registry, the config's limits and plugin config and a warm `ModelCache`, exactly as the
    server's inline path calls it (no HTTP, no settings normalisation, no result recording);
(b) plain Pillow: the least code that does the same work with the same output settings:
    Image.open + load (with the same JPEG draft scale where pixmill uses one), EXIF
    transpose (a no-op here, as in pixmill), the operation, and the encoder flags
    `pixmill.core.imageio.encode_image` passes (format, quality, optimize).

The five calls, with default settings unless said:
    resize          width=1920 -> JPEG q85 (the input's format, the default quality)
    convert         webp (the tool's default format; quality 80, its default for webp)
    compress        mode=quality, quality 80 (default) -> JPEG q80, optimize=True
    crop            the central 2000x1500 -> JPEG q85
    watermark-text  text "(c) pixmill bench", bottom-right, 48 px, 50 % -> JPEG q85

Reported per tool: median wall and CPU time per call of each side, the median over rounds of
the per-round ratio pixmill / Pillow (CPU and wall), and both outputs' sizes (equal work gives
equal bytes). `--profile` adds a cProfile of pixmill's path for each tool over the target.
Target: pixmill's CPU per call <= 1.10x plain Pillow's for each tool.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from pixmill.core.config import Config
from pixmill.core.contracts import Extractor, ModelCache, Tool
from pixmill.core.execution import execute
from pixmill.core.plugin_host import load_registry
from pixmill.plugins.watermark import FONT_FILES, FONTS_DIR
from pixmill.testing.images import photo

WIDTH, HEIGHT = 4000, 3000
INPUT_QUALITY = 90
TARGET = 1.10

RESIZE_WIDTH = 1920
JPEG_QUALITY = 85  # imageio.DEFAULT_QUALITY["jpg"]: resize, crop and watermark keep the format
WEBP_QUALITY = 80  # imageio.DEFAULT_QUALITY["webp"]: convert's default format and quality
COMPRESS_QUALITY = 80  # compress's default quality
CROP = (1000, 750, 2000, 1500)  # left, top, width, height: the central 2000x1500
TEXT = "(c) pixmill bench"
FONT_SIZE = 48  # watermark-text defaults: dejavu-sans, 48 px, white, 50 %, bottom-right, 24 px
OPACITY = 50
MARGIN = 24


def make_input() -> bytes:
    out = io.BytesIO()
    photo(WIDTH, HEIGHT, seed=7).save(out, "JPEG", quality=INPUT_QUALITY)
    return out.getvalue()


# ----- plain Pillow: the same work, nothing else ------------------------------------------------


def decode(data: bytes, draft: tuple[int, int] | None = None) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    if draft is not None:
        img.draft("RGB", draft)
    img.load()
    # pixmill applies the EXIF orientation; in place, so a photo without one is not copied.
    ImageOps.exif_transpose(img, in_place=True)
    return img


def save(img: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def pillow_resize(data: bytes) -> bytes:
    height = round(HEIGHT * RESIZE_WIDTH / WIDTH)
    img = decode(data, draft=(RESIZE_WIDTH, height))
    img = img.resize((RESIZE_WIDTH, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return save(img, "JPEG", quality=JPEG_QUALITY, optimize=False)


def pillow_convert(data: bytes) -> bytes:
    return save(decode(data), "WEBP", quality=WEBP_QUALITY)


def pillow_compress(data: bytes) -> bytes:
    return save(decode(data), "JPEG", quality=COMPRESS_QUALITY, optimize=True)


def pillow_crop(data: bytes) -> bytes:
    left, top, width, height = CROP
    img = decode(data).crop((left, top, left + width, top + height))
    return save(img, "JPEG", quality=JPEG_QUALITY, optimize=False)


# Loaded once, as pixmill keeps it in its ModelCache across calls.
FONT = ImageFont.truetype(str(FONTS_DIR / FONT_FILES["dejavu-sans"]), FONT_SIZE)


def pillow_watermark(data: bytes) -> bytes:
    img = decode(data)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).multiline_textbbox(
        (0, 0), TEXT, font=FONT
    )
    left, top, right, bottom = (
        math.floor(left),
        math.floor(top),
        math.ceil(right),
        math.ceil(bottom),
    )
    mask = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(mask).multiline_text(
        (-left, -top), TEXT, font=FONT, fill=round(255 * OPACITY / 100)
    )
    layer = Image.new("RGBA", mask.size, (255, 255, 255, 0))
    layer.putalpha(mask)
    x, y = img.width - layer.width - MARGIN, img.height - layer.height - MARGIN
    patch = img.crop((x, y, x + layer.width, y + layer.height)).convert("RGBA")
    patch.alpha_composite(layer)
    img.paste(patch.convert("RGB"), (x, y))
    return save(img, "JPEG", quality=JPEG_QUALITY, optimize=False)


# ----- the cases ---------------------------------------------------------------------------------


@dataclass
class Case:
    tool: str
    settings: dict[str, Any]
    pillow: Callable[[bytes], bytes]
    output: str
    samples: dict[str, list[float]] = field(
        default_factory=lambda: {k: [] for k in ("pm_wall", "pm_cpu", "pil_wall", "pil_cpu")}
    )
    sizes: tuple[int, int] = (0, 0)
    identical: bool = False


CASES = (
    Case("resize", {"width": RESIZE_WIDTH}, pillow_resize, f"JPEG q{JPEG_QUALITY}"),
    Case("convert", {"format": "webp"}, pillow_convert, f"WebP q{WEBP_QUALITY}"),
    Case(
        "compress",
        {"mode": "quality"},
        pillow_compress,
        f"JPEG q{COMPRESS_QUALITY} optimize",
    ),
    Case(
        "crop",
        dict(zip(("left", "top", "width", "height"), CROP, strict=True)),
        pillow_crop,
        f"JPEG q{JPEG_QUALITY}",
    ),
    Case("watermark-text", {"text": TEXT}, pillow_watermark, f"JPEG q{JPEG_QUALITY}"),
)


class Pixmill:
    """pixmill's inline execution path, set up the way the server sets it up."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = load_registry(config.load_plugins, plugins_dir=config.plugins_dir)
        self.models = ModelCache()  # the server's process-wide cache (fonts, sessions)

    def definition(self, tool: str) -> Tool | Extractor:
        return self.registry.catalogue_entry(tool)

    def call(self, tool: Tool | Extractor, data: bytes, settings: Mapping[str, Any]) -> bytes:
        outcome = execute(
            tool,
            {"file": [(data, "in.jpg")]},
            settings,
            limits=self.config.limits,
            config=self.config.plugin_config(),
            models=self.models,
        )
        assert outcome.data is not None
        return outcome.data


def timed(fn: Callable[[], bytes]) -> tuple[float, float, bytes]:
    """(wall seconds, CPU seconds of this process, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def run_case(pixmill: Pixmill, case: Case, data: bytes, rounds: int) -> None:
    tool = pixmill.definition(case.tool)
    ours = pixmill.call(tool, data, case.settings)  # warm: imports, font cache, codec tables
    theirs = case.pillow(data)
    case.sizes = (len(ours), len(theirs))
    case.identical = ours == theirs
    for number in range(rounds):
        sides = [
            ("pm", lambda: pixmill.call(tool, data, case.settings)),
            ("pil", lambda: case.pillow(data)),
        ]
        for side, fn in sides if number % 2 == 0 else reversed(sides):
            wall, cpu, _ = timed(fn)
            case.samples[f"{side}_wall"].append(wall)
            case.samples[f"{side}_cpu"].append(cpu)


def median_ratio(ours: list[float], theirs: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


def profile(pixmill: Pixmill, case: Case, data: bytes, calls: int) -> None:
    tool = pixmill.definition(case.tool)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        pixmill.call(tool, data, case.settings)
    profiler.disable()
    listings = (
        ("by own time (tottime)", "tottime", (12,)),
        ("pixmill's functions by cumulative time", "cumulative", ("pixmill/", 12)),
    )
    for title, key, restrictions in listings:
        print(f"    cProfile of {calls} pixmill calls of {case.tool}, {title}:")
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats(key).print_stats(*restrictions)
        for line in stream.getvalue().splitlines():
            if line.strip() and not line.lstrip().startswith(("Ordered", "List reduced")):
                print(f"      {line.rstrip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--tools",
        default=",".join(case.tool for case in CASES),
        help="comma-separated subset of " + ", ".join(case.tool for case in CASES),
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile pixmill's path of tools over target"
    )
    parser.add_argument("--profile-calls", type=int, default=3)
    args = parser.parse_args()
    wanted = set(args.tools.split(","))
    cases = [case for case in CASES if case.tool in wanted]
    if unknown := wanted - {case.tool for case in CASES}:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")

    data = make_input()
    print(
        f"input: {WIDTH}x{HEIGHT} JPEG q{INPUT_QUALITY}, {len(data) / 1e6:.2f} MB; "
        f"{args.rounds} interleaved rounds per tool; cores: {os.cpu_count()}; "
        "load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    )
    with tempfile.TemporaryDirectory(prefix="pixmill-bench-tools-") as tmp:
        pixmill = Pixmill(Config.from_env(data_dir=Path(tmp)))
        over = []
        for case in cases:
            run_case(pixmill, case, data, args.rounds)
            s = {k: statistics.median(v) for k, v in case.samples.items()}
            cpu_ratio = median_ratio(case.samples["pm_cpu"], case.samples["pil_cpu"])
            wall_ratio = median_ratio(case.samples["pm_wall"], case.samples["pil_wall"])
            same = "identical bytes" if case.identical else "bytes differ"
            print(f"{case.tool} -> {case.output}; settings {case.settings}")
            for label, side, size, note in (
                ("pixmill", "pm", case.sizes[0], ""),
                ("Pillow", "pil", case.sizes[1], f" ({same})"),
            ):
                print(
                    f"    {label + ':':8} {s[side + '_wall'] * 1000:7.1f} ms wall "
                    f"{s[side + '_cpu'] * 1000:7.1f} ms CPU   output {size:>9,} bytes{note}"
                )
            print(f"    pixmill / Pillow (median of rounds): wall {wall_ratio:.2f}x")
            verdict = "PASS" if cpu_ratio <= TARGET else "MISS"
            print(f"    {case.tool}: CPU ratio {cpu_ratio:.2f} (target <= {TARGET:.2f}) {verdict}")
            if cpu_ratio > TARGET:
                over.append(case)
        if args.profile:
            for case in over:
                profile(pixmill, case, data, args.profile_calls)


if __name__ == "__main__":
    main()
