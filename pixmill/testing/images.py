"""Sample images of the kinds real users send, built in memory (no files shipped).

Every builder returns encoded bytes. They are deterministic: the same call gives the same bytes.
"""

from __future__ import annotations

import io
import random
from functools import cache
from typing import Any

from PIL import Image, ImageCms, ImageDraw

EXIF_ORIENTATION = 0x0112


def encode(img: Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    """`img` saved as `fmt` (Pillow's format name), as bytes."""
    out = io.BytesIO()
    img.save(out, format=fmt, **params)
    return out.getvalue()


def decode(result: Any) -> Image.Image:
    """Decode encoded bytes, or the `.data` of a run's outcome, into a loaded image."""
    data = getattr(result, "data", result)
    assert isinstance(data, bytes | bytearray), f"no image bytes in {result!r}"
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def photo(width: int = 640, height: int = 480, seed: int = 1) -> Image.Image:
    """A photo-like RGB picture: smooth gradients, shapes and a little noise."""
    base = Image.linear_gradient("L").resize((width, height))
    other = base.rotate(90, expand=False)
    img = Image.merge("RGB", (base, other, Image.new("L", (width, height), 110)))
    draw = ImageDraw.Draw(img)
    rng = random.Random(seed)
    for _ in range(12):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(1, width // 3 + 2), y0 + rng.randrange(1, height // 3 + 2)
        color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x0, y0, x1, y1), fill=color)
    # Seeded noise (Image.effect_noise is not): the same call must give the same bytes.
    noise = Image.frombytes("L", (width, height), rng.randbytes(width * height)).convert("RGB")
    return Image.blend(img, noise, 0.08)


def jpeg(width: int = 640, height: int = 480, quality: int = 90, **params: object) -> bytes:
    return encode(photo(width, height), "JPEG", quality=quality, **params)


def png(width: int = 320, height: int = 240, alpha: bool = True) -> bytes:
    img = photo(width, height).convert("RGBA" if alpha else "RGB")
    if alpha:
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).ellipse((0, 0, width - 1, height - 1), fill=255)
        img.putalpha(mask)
    return encode(img, "PNG")


def animated_gif(width: int = 64, height: int = 48, frames: int = 4) -> bytes:
    images = [
        Image.new("RGB", (width, height), (60 * i % 256, 255 - 40 * i % 256, 120))
        for i in range(frames)
    ]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=80, loop=0)


def exif_rotated_jpeg(width: int = 300, height: int = 200, orientation: int = 6) -> bytes:
    """A JPEG stored `width`x`height` whose EXIF says to display it rotated (6: 90 degrees CW)."""
    img = photo(width, height)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(img, "JPEG", quality=90, exif=exif.tobytes())


def cmyk_jpeg(width: int = 200, height: int = 150) -> bytes:
    return encode(photo(width, height).convert("CMYK"), "JPEG", quality=90)


@cache
def srgb_icc_profile() -> bytes:
    """An sRGB ICC profile. littleCMS stamps the creation time into bytes 24..35 of the header;
    they are zeroed so the profile (and every image carrying it) is the same on every call."""
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    data[24:36] = bytes(12)
    return bytes(data)


def jpeg_with_icc(width: int = 200, height: int = 150) -> bytes:
    return encode(photo(width, height), "JPEG", quality=90, icc_profile=srgb_icc_profile())


def tiny(fmt: str = "PNG") -> bytes:
    return encode(Image.new("RGB", (1, 1), (255, 0, 0)), fmt)


def large_jpeg(width: int = 2400, height: int = 1600) -> bytes:
    """A JPEG big enough to show a tool that scales badly (about 4 megapixels), yet well under
    the server's default pixel cap, so a tool must handle it rather than refuse it."""
    return jpeg(width, height, quality=85)


def pdf_document(pages: int = 2, width: int = 200, height: int = 150) -> bytes:
    """A small PDF of `pages` photo pages (Pillow's PDF writer), for tools that take PDFs."""
    sheets = [photo(width, height, seed=n + 1) for n in range(pages)]
    buffer = io.BytesIO()
    sheets[0].save(buffer, "PDF", save_all=True, append_images=sheets[1:], resolution=72)
    return buffer.getvalue()


def svg_document(width: int = 120, height: int = 80) -> bytes:
    """A small SVG drawing (a blue field with a yellow disc), for tools that take SVG."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f'<rect width="{width}" height="{height}" fill="#3366cc"/>'
        f'<circle cx="{width // 2}" cy="{height // 2}" r="{min(width, height) // 3}" '
        'fill="#ffcc33"/></svg>'
    ).encode()


DOCUMENT_SAMPLES = {"pdf": ("document-pdf", "document.pdf"), "svg": ("drawing-svg", "drawing.svg")}
"""For each document format a part may take: the sample kind and its upload name."""


@cache
def document_sample(fmt: str) -> bytes:
    """The sample document of a format, built once per process (conformance asks repeatedly)."""
    return pdf_document() if fmt == "pdf" else svg_document()


SAMPLES = {
    "photo-jpeg": lambda: jpeg(),
    "alpha-png": lambda: png(),
    "animated-gif": lambda: animated_gif(),
    "exif-rotated-jpeg": lambda: exif_rotated_jpeg(),
    "cmyk-jpeg": lambda: cmyk_jpeg(),
    "tiny-png": lambda: tiny(),
    "large-jpeg": lambda: large_jpeg(),
}
"""Every sample kind by name; `sample_images()` builds them."""

SAMPLE_FILENAMES = {
    "photo-jpeg": "photo.jpg",
    "alpha-png": "alpha.png",
    "animated-gif": "animated.gif",
    "exif-rotated-jpeg": "rotated.jpg",
    "cmyk-jpeg": "cmyk.jpg",
    "tiny-png": "tiny.png",
    "large-jpeg": "large.jpg",
}
"""A plausible upload name for each sample (tools derive output names from it)."""


@cache
def sample_images() -> dict[str, bytes]:
    """Every sample kind, encoded, by name. Built once per process: the large one takes a while.
    The dict is shared, so treat it as read-only."""
    return {name: build() for name, build in SAMPLES.items()}
