"""Built-in optimization tools: optimize-for-web, strip-metadata (and its /inspect),
edit-metadata (and its /inspect), bulk-rename, image-to-pdf and favicon.

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.

strip-metadata edits the container (JPEG segments, PNG chunks, WebP RIFF chunks, GIF blocks)
instead of decoding and re-encoding, so the pixels of those formats come out bit-for-bit;
edit-metadata replaces the EXIF block of JPEG, PNG and WebP the same way (TIFF, whose tags
live in the same directory as its pixel layout, is rewritten losslessly by Pillow).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from marshmallow import fields, validate
from PIL import ExifTags, Image, ImageChops, PngImagePlugin

from pixmill import (
    Color,
    Context,
    Extractor,
    FileInput,
    FileResult,
    ImageResult,
    InputFile,
    Inputs,
    OutputKind,
    PixmillError,
    Settings,
    SettingsError,
    Tool,
    hookimpl,
    parse_color,
)
from pixmill.core.archives import unique_name, zip_archive
from pixmill.core.errors import (
    AnimatedImageError,
    BadRequestError,
    InvalidImageError,
    UnsupportedFormatError,
)
from pixmill.core.imageio import (
    ImageFormat,
    encode_image,
    format_by_name,
    has_alpha,
    open_lazily,
)
from pixmill.plugins.essentials import (
    cmyk_to_srgb,
    convert_mode,
    on_white,
    resamplable,
    to_srgb,
)
from pixmill.plugins.layout import rounded_mask

log = logging.getLogger(__name__)

MAX_DIMENSION = 16384
RESAMPLE = Image.Resampling.LANCZOS
REDUCING_GAP = (
    3.0  # see essentials.resize: box-filter whole factors first, same look, far less work
)

WEB_FORMATS = ("webp", "jpeg", "jpg", "avif", "png")

EXIF_ORIENTATION = 0x0112
EXIF_IFD = 0x8769
GPS_IFD = 0x8825
INTEROP_IFD = 0xA005
XMP_TAG = 700
IPTC_TAG = 33723
PHOTOSHOP_TAG = 34377

# Decoding-then-encoding AVIF/HEIC cannot avoid a generation of loss; at this quality it is
# below what the eye sees, and it only happens for formats whose containers we do not edit.
REENCODE_QUALITY = 95


# --- optimize-for-web -------------------------------------------------------------------------


class OptimizeForWebSettings(Settings):
    format = fields.String(
        load_default="webp",
        validate=validate.OneOf(WEB_FORMATS),
        metadata={"description": "output format: webp, jpeg (or jpg), avif or png"},
    )
    quality = fields.Integer(
        load_default=80,
        validate=validate.Range(1, 100),
        metadata={"description": "encoder quality for webp, jpeg and avif (png is lossless)"},
    )
    max_width = fields.Integer(
        load_default=None,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={"description": "shrink (never enlarge) to at most this width, keeping aspect"},
    )
    max_height = fields.Integer(
        load_default=None,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={"description": "shrink (never enlarge) to at most this height, keeping aspect"},
    )
    progressive = fields.Boolean(
        load_default=False,
        metadata={
            "description": "progressive JPEG / interlaced (Adam7) PNG, which show a coarse "
            "preview while loading; webp and avif have no such mode and ignore it"
        },
    )
    strip_metadata = fields.Boolean(
        load_default=True,
        metadata={
            "description": "drop EXIF, XMP and comments; the ICC colour profile is always kept "
            "so colours do not shift"
        },
    )


def fit_within(
    size: tuple[int, int], max_width: int | None, max_height: int | None
) -> tuple[int, int]:
    """The largest size no bigger than `size` that fits the limits, with the same aspect."""
    width, height = size
    scale = 1.0
    if max_width is not None:
        scale = min(scale, max_width / width)
    if max_height is not None:
        scale = min(scale, max_height / height)
    if scale >= 1.0:
        return size
    return max(1, round(width * scale)), max(1, round(height * scale))


def _web_info(info: dict[Any, Any], mode: str, strip: bool) -> dict[Any, Any]:
    if not strip:
        return dict(info)
    kept: dict[Any, Any] = {}
    if info.get("icc_profile"):
        kept["icc_profile"] = info["icc_profile"]
    # A palette/RGB transparency key is pixel data, not metadata.
    if "transparency" in info and mode in ("P", "L", "RGB", "1"):
        kept["transparency"] = info["transparency"]
    return kept


def prepare_for_web(
    img: Image.Image, target: tuple[int, int], fmt: ImageFormat, strip: bool
) -> Image.Image:
    """Bring `img` to `target` size and a web-friendly mode, keeping only wanted metadata."""
    info = dict(img.info)
    if img.mode == "CMYK" and fmt.pil_name != "JPEG":
        img = cmyk_to_srgb(img)
        info = dict(img.info)
    if img.size != target:
        if img.mode in ("P", "1"):
            # Pillow resizes palette images with nearest-neighbour only: convert first.
            img = img.convert("RGBA" if has_alpha(img) else ("L" if img.mode == "1" else "RGB"))
            info.pop("transparency", None)
        img = img.resize(target, RESAMPLE, reducing_gap=REDUCING_GAP)
    img.info = _web_info(info, img.mode, strip)
    return img


def _xmp_bytes(info: dict[Any, Any]) -> bytes | None:
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        return xmp.encode("utf-8")
    return xmp if isinstance(xmp, bytes) and xmp else None


def web_encoder_options(
    fmt: ImageFormat, img: Image.Image, *, progressive: bool, strip: bool
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if fmt.pil_name == "JPEG":
        options.update(optimize=True, progressive=progressive)
    elif fmt.pil_name == "PNG":
        options["optimize"] = True
    elif fmt.pil_name == "WEBP":
        options["method"] = 6  # slowest, smallest: worth it for files served many times
    xmp = None if strip else _xmp_bytes(img.info)
    if xmp:
        if fmt.pil_name == "PNG":
            text = PngImagePlugin.PngInfo()
            text.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
            options["pnginfo"] = text
        else:
            options["xmp"] = xmp
    return options


# PNG chunk helpers, shared by interlaced PNG writing and metadata stripping.

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ADAM7_PASSES = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
IDAT_CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class PngChunk:
    type: bytes
    body: bytes
    raw: bytes


def png_chunk(chunk_type: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(chunk_type + body)
    return len(body).to_bytes(4, "big") + chunk_type + body + crc.to_bytes(4, "big")


def png_chunks(data: bytes) -> list[PngChunk]:
    """Every chunk up to and including IEND (anything after IEND is not part of the image)."""
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidImageError("the PNG signature is missing")
    chunks = []
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunk_type = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            break
        chunks.append(PngChunk(chunk_type, data[pos + 8 : pos + 8 + length], data[pos:end]))
        pos = end
        if chunk_type == b"IEND":
            return chunks
    raise InvalidImageError("the PNG file is truncated (no IEND chunk)", details={"format": "png"})


def _adam7_pass(img: Image.Image, x0: int, y0: int, dx: int, dy: int) -> Image.Image | None:
    width = (img.width - x0 + dx - 1) // dx
    height = (img.height - y0 + dy - 1) // dy
    if width <= 0 or height <= 0:
        return None
    # Nearest-neighbour sampling of output pixel centre (x + 0.5) lands on dx*x + x0 exactly.
    coefficients = (dx, 0, x0 - dx / 2 + 0.5, 0, dy, y0 - dy / 2 + 0.5)
    return img.transform(
        (width, height),
        Image.Transform.AFFINE,
        coefficients,
        resample=Image.Resampling.NEAREST,
    )


def _png_scanlines(img: Image.Image) -> tuple[bytes, bytes]:
    """Encode with Pillow and return (IHDR body, decompressed filtered scanlines)."""
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=0)
    chunks = png_chunks(out.getvalue())
    idat = b"".join(c.body for c in chunks if c.type == b"IDAT")
    return chunks[0].body, zlib.decompress(idat)


def encode_interlaced_png(img: Image.Image, *, keep_metadata: bool, **options: Any) -> bytes:
    """Write an Adam7-interlaced PNG (Pillow only writes non-interlaced ones).

    Pillow encodes each of the seven pass sub-images; their filtered scanlines, concatenated,
    are exactly the interlaced image data the PNG spec defines.
    """
    options.pop("optimize", None)
    plain = encode_image(img, "png", keep_metadata=keep_metadata, compress_level=1, **options)
    chunks = png_chunks(plain)
    ihdr = chunks[0].body
    # Take the pixels back from what Pillow wrote, so the passes share its mode and palette.
    written = Image.open(io.BytesIO(plain))
    written.load()
    scanlines = []
    for x0, y0, dx, dy in ADAM7_PASSES:
        sub = _adam7_pass(written, x0, y0, dx, dy)
        if sub is None:
            continue
        sub_ihdr, lines = _png_scanlines(sub)
        if sub_ihdr[8:] != ihdr[8:]:
            log.warning("pass encoding changed the PNG layout; writing it non-interlaced")
            return plain
        scanlines.append(lines)
    compressed = zlib.compress(b"".join(scanlines), 9)
    first_idat = next(i for i, c in enumerate(chunks) if c.type == b"IDAT")
    before = [c.raw for c in chunks[1:first_idat]]
    after = [c.raw for c in chunks[first_idat:] if c.type not in (b"IDAT", b"IEND")]
    idats = [
        png_chunk(b"IDAT", compressed[i : i + IDAT_CHUNK_SIZE])
        for i in range(0, len(compressed), IDAT_CHUNK_SIZE)
    ]
    interlaced_ihdr = png_chunk(b"IHDR", ihdr[:12] + b"\x01")
    return b"".join(
        [PNG_SIGNATURE, interlaced_ihdr, *before, *idats, *after, png_chunk(b"IEND", b"")]
    )


def run_optimize_for_web(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> Any:
    source = inputs.file
    fmt = format_by_name(settings["format"])
    header = source.header
    target = fit_within(
        (header.width, header.height), settings["max_width"], settings["max_height"]
    )
    strip = settings["strip_metadata"]
    progressive = settings["progressive"]
    quality = settings["quality"] if fmt.has_quality else None
    if source.is_animated:
        frames: list[Image.Image] = []
        durations: list[int] = []
        for frame, duration in source.frames():
            ctx.check_cancelled()
            frames.append(prepare_for_web(frame, target, fmt, strip))
            durations.append(duration)
        return ImageResult(
            frames[0],
            format=fmt.name,
            quality=quality,
            keep_metadata=not strip,
            frames=frames[1:],
            durations=durations,
            # Interlacing applies to stills: APNG frames share one IHDR we do not rewrite.
            options=web_encoder_options(fmt, frames[0], progressive=False, strip=strip),
        )
    draft = target if target != (header.width, header.height) else None
    img = prepare_for_web(source.open(draft_size=draft), target, fmt, strip)
    options = web_encoder_options(fmt, img, progressive=progressive, strip=strip)
    if fmt.pil_name == "PNG" and progressive:
        data = encode_interlaced_png(img, keep_metadata=not strip, **options)
        return FileResult(data, fmt.name)
    return ImageResult(
        img, format=fmt.name, quality=quality, keep_metadata=not strip, options=options
    )


class OptimizePreviewSettings(OptimizeForWebSettings):
    preview_width = fields.Integer(
        load_default=800,
        validate=validate.Range(64, 2000),
        metadata={
            "description": "the preview's largest side in pixels (64-2000): small enough to "
            "re-encode on every slider move"
        },
    )


def run_optimize_preview(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    """optimize-for-web on a small copy (first frame of an animation), encoded here so its
    size can be reported and scaled up to an estimate for the full image."""
    header = inputs.file.header
    full = fit_within((header.width, header.height), settings["max_width"], settings["max_height"])
    small = fit_within(full, settings["preview_width"], settings["preview_width"])
    # A JPEG decodes at 1/2 to 1/8 scale when that still covers the preview: fast, as a
    # preview should be, and the very pixels optimize-for-web would start from at that size.
    source = inputs.file
    first = source.open_first_frame() if source.is_animated else source.open(draft_size=small)
    fmt = format_by_name(settings["format"])
    strip = settings["strip_metadata"]
    img = prepare_for_web(first, small, fmt, strip)
    options = web_encoder_options(fmt, img, progressive=settings["progressive"], strip=strip)
    quality = settings["quality"] if fmt.has_quality else None
    data = encode_image(img, fmt, quality=quality, keep_metadata=not strip, **options)
    scale = (full[0] * full[1]) / (img.width * img.height)
    return FileResult(
        data,
        fmt.name,
        filename=f"{inputs.file.stem}-preview",
        meta={
            "previewWidth": img.width,
            "previewHeight": img.height,
            "previewBytes": len(data),
            "fullWidth": full[0],
            "fullHeight": full[1],
            # Bytes grow about with the pixel count at one quality: an estimate, not a promise.
            "estimatedBytes": round(len(data) * scale),
            "originalBytes": inputs.file.size,
        },
    )


# --- strip-metadata ---------------------------------------------------------------------------


class StripMetadataSettings(Settings):
    strip_exif = fields.Boolean(
        load_default=True,
        metadata={
            "description": "remove EXIF (camera, dates, GPS, thumbnail) and vendor blocks; an "
            "EXIF orientation other than normal is kept alone so the image still displays "
            "upright"
        },
    )
    strip_gps = fields.Boolean(
        load_default=True,
        metadata={
            "description": "remove the GPS location (the only EXIF part removed when "
            "stripExif is false)"
        },
    )
    strip_icc = fields.Boolean(
        load_default=False,
        metadata={"description": "remove the ICC colour profile (colours may then shift)"},
    )
    strip_xmp = fields.Boolean(
        load_default=True,
        metadata={"description": "remove XMP and IPTC/Photoshop blocks"},
    )
    strip_comments = fields.Boolean(
        load_default=True,
        metadata={
            "description": "remove comments and free text (JPEG COM, PNG text chunks and "
            "modification time, GIF comments)"
        },
    )


@dataclass(frozen=True)
class StripPlan:
    exif: bool
    gps: bool
    icc: bool
    xmp: bool
    comments: bool

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> StripPlan:
        return cls(
            exif=settings["strip_exif"],
            gps=settings["strip_gps"],
            icc=settings["strip_icc"],
            xmp=settings["strip_xmp"],
            comments=settings["strip_comments"],
        )


def _tiff_bytes(exif: Image.Exif) -> bytes:
    data = exif.tobytes()
    return data[6:] if data.startswith(b"Exif\x00\x00") else data


def rewrite_exif(raw: bytes, plan: StripPlan) -> bytes | None:
    """EXIF (TIFF structure, with or without the `Exif\\0\\0` prefix) as the plan wants it.

    Returns the bytes unchanged when nothing is to go, `None` when all of it goes, and new
    TIFF-structured bytes (no prefix) otherwise.
    """
    exif = Image.Exif()
    try:
        exif.load(raw)
        orientation = int(exif.get(EXIF_ORIENTATION, 1))
        has_gps = GPS_IFD in exif
    except Exception:  # a block we cannot read is one we cannot vouch for: drop it
        log.info("unreadable EXIF block dropped")
        return None
    if plan.exif:
        if orientation in range(2, 9):
            upright = Image.Exif()
            upright[EXIF_ORIENTATION] = orientation
            return _tiff_bytes(upright)
        return None
    if plan.gps and has_gps:
        del exif[GPS_IFD]
        return _tiff_bytes(exif)
    return raw


# JPEG

JPEG_SOS, JPEG_EOI, JPEG_COM = 0xDA, 0xD9, 0xFE
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length
EXIF_HEADER = b"Exif\x00\x00"
XMP_HEADERS = (b"http://ns.adobe.com/xap/1.0/\x00", b"http://ns.adobe.com/xmp/extension/\x00")


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + (len(payload) + 2).to_bytes(2, "big") + payload


def _filter_jpeg_segment(marker: int, payload: bytes, plan: StripPlan) -> bytes | None:
    """The segment to write instead of this one (`None`: drop it)."""
    original = _jpeg_segment(marker, payload)
    if marker == 0xE0:  # APP0: JFIF is structure; JFXX holds a thumbnail of the picture
        return None if plan.exif and payload.startswith(b"JFXX\x00") else original
    if marker == 0xE1:  # APP1: EXIF or XMP
        if payload.startswith(b"Exif\x00"):
            raw = payload[6:]
            rewritten = rewrite_exif(raw, plan)
            if rewritten is raw:
                return original
            return None if rewritten is None else _jpeg_segment(0xE1, EXIF_HEADER + rewritten)
        return None if plan.xmp else original
    if marker == 0xE2:  # APP2: ICC profile, MPF index, FlashPix
        if payload.startswith(b"ICC_PROFILE\x00"):
            return None if plan.icc else original
        if payload.startswith(b"MPF\x00"):
            return None  # the images it indexes (after EOI) are not written
        return None if plan.exif else original
    if marker == 0xED:  # APP13: Photoshop resources with IPTC
        return None if plan.xmp else original
    if marker == 0xEE:  # APP14 Adobe: tells the decoder the colour transform; never metadata
        return original
    if 0xE3 <= marker <= 0xEF:  # other vendor application blocks
        return None if plan.exif else original
    if marker == JPEG_COM:
        return None if plan.comments else original
    return original


def _entropy_end(data: bytes, pos: int) -> int:
    """Where the entropy-coded data starting at `pos` ends: the next real marker."""
    while True:
        found = data.find(b"\xff", pos)
        if found < 0 or found + 1 >= len(data):
            raise InvalidImageError("the JPEG file is truncated (no end-of-image marker)")
        following = data[found + 1]
        if following == 0x00 or following == 0xFF or 0xD0 <= following <= 0xD7:
            pos = found + 1  # stuffed byte, fill byte, or restart marker: still scan data
            continue
        return found


def strip_jpeg(data: bytes, plan: StripPlan) -> bytes:
    """Drop or rewrite metadata segments; the compressed image data is copied untouched.

    Anything after the end-of-image marker (MPF secondary images, vendor trailers) is left
    out: it is not the picture and is a known place for metadata to hide.
    """
    return rewrite_jpeg(data, lambda marker, payload: _filter_jpeg_segment(marker, payload, plan))


def rewrite_jpeg(
    data: bytes, segment_filter: Callable[[int, bytes], bytes | None], insert: bytes = b""
) -> bytes:
    """Pass every metadata segment through `segment_filter` (`None` drops it) and put the
    `insert` segment(s) after the leading JFIF APP0 (or right after start-of-image); the
    compressed image data is copied untouched."""
    if not data.startswith(b"\xff\xd8"):
        raise InvalidImageError("the JPEG start-of-image marker is missing")
    out = [b"\xff\xd8"]
    pos = 2
    while True:
        found = data.find(b"\xff", pos)
        # Fill bytes may pad before a marker.
        while 0 <= found < len(data) - 1 and data[found + 1] == 0xFF:
            found += 1
        if found < 0 or found + 1 >= len(data):
            raise InvalidImageError("the JPEG file is truncated (no end-of-image marker)")
        marker = data[found + 1]
        pos = found + 2
        if marker == JPEG_EOI:
            out.append(b"\xff\xd9")
            return b"".join(out)
        if marker in JPEG_STANDALONE or marker == 0x00:
            out.append(bytes((0xFF, marker)))
            continue
        if pos + 2 > len(data):
            raise InvalidImageError("the JPEG file is truncated inside a segment header")
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > len(data):
            raise InvalidImageError("the JPEG file is truncated inside a segment")
        payload = data[pos + 2 : pos + length]
        pos += length
        if marker == JPEG_SOS:
            end = _entropy_end(data, pos)
            out.append(_jpeg_segment(marker, payload))
            out.append(data[pos:end])
            pos = end
            continue
        if insert and marker != 0xE0:
            out.append(insert)
            insert = b""
        segment = segment_filter(marker, payload)
        if segment is not None:
            out.append(segment)


# PNG

PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _png_text_category(keyword: bytes) -> str:
    name = keyword.decode("latin-1").lower()
    if name == "xml:com.adobe.xmp" or name in ("raw profile type xmp", "raw profile type iptc"):
        return "xmp"
    if name in ("raw profile type 8bim",):
        return "xmp"
    if name in ("raw profile type exif", "raw profile type app1"):
        return "exif"
    if name in ("raw profile type icc", "raw profile type icm"):
        return "icc"
    return "comments"


def strip_png(data: bytes, plan: StripPlan) -> bytes:
    out = [PNG_SIGNATURE]
    for chunk in png_chunks(data):
        if chunk.type == b"eXIf":
            rewritten = rewrite_exif(chunk.body, plan)
            if rewritten is not None:
                out.append(chunk.raw if rewritten is chunk.body else png_chunk(b"eXIf", rewritten))
            continue
        if chunk.type == b"iCCP" and plan.icc:
            continue
        if chunk.type == b"tIME" and plan.comments:
            continue
        if chunk.type in PNG_TEXT_CHUNKS:
            category = _png_text_category(chunk.body.split(b"\x00", 1)[0])
            # EXIF hex-dumped into text cannot be edited in place; privacy wins, it goes whole.
            if category == "exif" and (plan.exif or plan.gps):
                continue
            if getattr(plan, category):
                continue
        out.append(chunk.raw)
    return b"".join(out)


# WebP

WEBP_ICC_FLAG, WEBP_EXIF_FLAG, WEBP_XMP_FLAG = 0x20, 0x08, 0x04


def _riff_chunk(fourcc: bytes, payload: bytes) -> bytes:
    pad = b"\x00" if len(payload) % 2 else b""
    return fourcc + len(payload).to_bytes(4, "little") + payload + pad


def _webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (fourcc, payload) chunks of a WebP file."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise InvalidImageError("the WebP RIFF header is missing")
    end = 8 + int.from_bytes(data[4:8], "little")
    if end > len(data):
        raise InvalidImageError("the WebP file is truncated", details={"format": "webp"})
    chunks: list[tuple[bytes, bytes]] = []
    pos = 12
    while pos < end:
        if pos + 8 > end:
            raise InvalidImageError("the WebP file is truncated inside a chunk header")
        fourcc = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if pos + 8 + size > end:
            raise InvalidImageError("the WebP file is truncated inside a chunk")
        chunks.append((fourcc, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


def _webp_file(kept: list[tuple[bytes, bytes]]) -> bytes:
    """A WebP file of these chunks, its VP8X flags matching the metadata chunks present."""
    present = {fourcc for fourcc, _ in kept}
    body = []
    for fourcc, payload in kept:
        if fourcc == b"VP8X" and payload:
            flags = payload[0] & ~(WEBP_ICC_FLAG | WEBP_EXIF_FLAG | WEBP_XMP_FLAG)
            flags |= WEBP_ICC_FLAG if b"ICCP" in present else 0
            flags |= WEBP_EXIF_FLAG if b"EXIF" in present else 0
            flags |= WEBP_XMP_FLAG if b"XMP " in present else 0
            payload = bytes((flags,)) + payload[1:]
        body.append(_riff_chunk(fourcc, payload))
    content = b"WEBP" + b"".join(body)
    return b"RIFF" + len(content).to_bytes(4, "little") + content


def strip_webp(data: bytes, plan: StripPlan) -> bytes:
    kept: list[tuple[bytes, bytes]] = []
    for fourcc, payload in _webp_chunks(data):
        if fourcc == b"ICCP" and plan.icc:
            continue
        if fourcc == b"XMP " and plan.xmp:
            continue
        if fourcc == b"EXIF":
            rewritten = rewrite_exif(payload, plan)
            if rewritten is None:
                continue
            payload = rewritten
        kept.append((fourcc, payload))
    return _webp_file(kept)


# GIF

GIF_APP_XMP = b"XMP DataXMP"
GIF_APP_ICC = b"ICCRGBG1012"
GIF_APP_IPTC = (b"MGK8BIM0000", b"MGKIPTC0000")


def _gif_sub_blocks_end(data: bytes, pos: int) -> int:
    while True:
        if pos >= len(data):
            raise InvalidImageError("the GIF file is truncated inside a data block")
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos


def strip_gif(data: bytes, plan: StripPlan) -> bytes:
    if len(data) < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        raise InvalidImageError("the GIF header is missing")
    packed = data[10]
    pos = 13 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
    out = [data[:pos]]
    while True:
        if pos >= len(data):
            raise InvalidImageError("the GIF file is truncated (no trailer)")
        introducer = data[pos]
        if introducer == 0x3B:
            out.append(b"\x3b")
            return b"".join(out)
        if introducer == 0x2C:
            if pos + 10 > len(data):
                raise InvalidImageError("the GIF file is truncated inside an image header")
            local = data[pos + 9]
            start = pos
            pos += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0)
            end = _gif_sub_blocks_end(data, pos + 1)  # after the LZW minimum code size
            out.append(data[start:end])
            pos = end
            continue
        if introducer != 0x21 or pos + 2 > len(data):
            raise InvalidImageError(f"the GIF file has an unknown block 0x{introducer:02x}")
        label = data[pos + 1]
        end = _gif_sub_blocks_end(data, pos + 2)
        block = data[pos:end]
        drop = False
        if label == 0xFE:
            drop = plan.comments
        elif label == 0xFF:
            app = data[pos + 3 : pos + 14]
            drop = (
                (app == GIF_APP_XMP and plan.xmp)
                or (app == GIF_APP_ICC and plan.icc)
                or (app in GIF_APP_IPTC and plan.xmp)
            )
        if not drop:
            out.append(block)
        pos = end


CONTAINER_STRIPPERS: dict[str, Callable[[bytes, StripPlan], bytes]] = {
    "jpg": strip_jpeg,
    "png": strip_png,
    "webp": strip_webp,
    "gif": strip_gif,
}

# Other formats are decoded and re-encoded: their EXIF is rebuilt from these IFD0 tags only,
# since TIFF's IFD0 also describes the pixel layout, which the encoder writes itself. (Pillow's
# TIFF writer drops the Exif and GPS sub-IFDs, so a kept TIFF EXIF is these IFD0 tags alone.)
EXIF_DESCRIPTIVE_TAGS = frozenset(
    {269, 270, 271, 272, 285, 305, 306, 315, 316, 33432, 18246, 18249}
    | set(range(40091, 40096))
    | {EXIF_IFD, GPS_IFD}
)
XMP_LIKE_TAGS = frozenset({XMP_TAG, IPTC_TAG, PHOTOSHOP_TAG})


def _verify_decodable(source: InputFile) -> None:
    """Refuse a corrupt file up front: the container editors do not decode pixels."""
    if source.format.name == "jpg" and source.header.frames == 1:
        source.open(draft_size=(1, 1))  # DCT scaling: the whole stream is read, little is built
    else:
        source.open_first_frame()


def _reencoded_exif(img: Image.Image, plan: StripPlan) -> bytes | None:
    original = img.getexif()
    kept = Image.Exif()
    for tag in original:
        if tag in XMP_LIKE_TAGS:
            if not plan.xmp:
                kept[tag] = original[tag]
            continue
        if plan.exif or tag not in EXIF_DESCRIPTIVE_TAGS:
            continue
        if tag == GPS_IFD and plan.gps:
            continue
        kept[tag] = original.get_ifd(tag) if tag in (EXIF_IFD, GPS_IFD) else original[tag]
    return kept.tobytes() if len(kept) else None


def strip_by_reencoding(source: InputFile, plan: StripPlan) -> ImageResult:
    img = source.open()
    fmt = source.format
    info: dict[str, Any] = {}
    if img.info.get("icc_profile") and not plan.icc:
        info["icc_profile"] = img.info["icc_profile"]
    if fmt.pil_name == "TIFF" and "compression" in img.info:
        info["compression"] = img.info["compression"]  # lossless stays lossless, same size
    exif = _reencoded_exif(img, plan)
    options: dict[str, Any] = {}
    # Full-resolution chroma: a second round of 4:2:0 subsampling is most of the visible loss.
    if fmt.pil_name == "AVIF":
        options["subsampling"] = "4:4:4"
    elif fmt.pil_name == "HEIF":
        options["chroma"] = 444
    if "dpi" in img.info:
        options["dpi"] = img.info["dpi"]
    xmp = img.info.get("xmp")
    if xmp and not plan.xmp and fmt.pil_name != "TIFF":  # TIFF keeps XMP as tag 700 above
        options["xmp"] = xmp
    clean = img.copy()  # drops decoder state (TIFF tags) that Pillow would otherwise re-emit
    clean.info = {}
    clean.info.update(info)
    if exif:
        clean.info["exif"] = exif
    return ImageResult(
        clean,
        quality=REENCODE_QUALITY if fmt.has_quality else None,
        keep_metadata=True,
        options=options,
    )


def run_strip_metadata(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> Any:
    source = inputs.file
    plan = StripPlan.from_settings(settings)
    fmt = source.format
    if fmt.name in CONTAINER_STRIPPERS:
        _verify_decodable(source)
        return FileResult(CONTAINER_STRIPPERS[fmt.name](source.data, plan), fmt.name)
    if fmt.pil_name in ("BMP", "ICO"):
        source.open_first_frame()
        return FileResult(source.data, fmt.name)  # these formats carry none of this metadata
    return strip_by_reencoding(source, plan)


# --- reading metadata (edit-metadata/inspect, strip-metadata/inspect, bulk-rename {date}) -----

XP_TITLE, XP_COMMENT, XP_AUTHOR, XP_KEYWORDS, XP_SUBJECT = 40091, 40092, 40093, 40094, 40095
IMAGE_DESCRIPTION, ARTIST, COPYRIGHT, DATE_TIME = 270, 315, 33432, 306
DATE_TIME_ORIGINAL, DATE_TIME_DIGITIZED = 36867, 36868
EXIF_DATE_FORMAT = "%Y:%m:%d %H:%M:%S"
XP_TAGS = frozenset({XP_TITLE, XP_COMMENT, XP_AUTHOR, XP_KEYWORDS, XP_SUBJECT})
MAX_RAW_VALUE = 256  # characters of one raw tag value reported by /inspect


def _tag_name(tag: int, names: dict[int, str]) -> str:
    return names.get(tag, f"0x{tag:04X}")


_IFD0_NAMES = {int(t): t.name for t in ExifTags.Base}
_GPS_NAMES = {int(t): t.name for t in ExifTags.GPS}


def _json_value(value: Any) -> Any:
    """An EXIF value as JSON: text decoded, rationals as floats, long blobs summarised."""
    if isinstance(value, bytes):
        text = value.decode("utf-16-le" if value[1:2] == b"\x00" else "latin-1", "replace")
        text = text.rstrip("\x00")
        if text.isprintable() and len(text) <= MAX_RAW_VALUE:
            return text
        return list(value) if len(value) <= 16 else f"<{len(value)} bytes>"
    if isinstance(value, tuple | list):
        return [_json_value(item) for item in value]
    if isinstance(value, str):
        return value.rstrip("\x00")[:MAX_RAW_VALUE]
    if isinstance(value, int | bool) or value is None:
        return value
    try:
        number = float(value)  # IFDRational
    except (TypeError, ValueError, ZeroDivisionError):
        return str(value)[:MAX_RAW_VALUE]
    return None if math.isnan(number) or math.isinf(number) else number


def _xp_text(value: Any) -> str | None:
    """Windows XP* tags: UTF-16LE bytes (Pillow gives bytes or a tuple of ints)."""
    if isinstance(value, tuple | list):
        value = bytes(value)
    if isinstance(value, bytes):
        return value.decode("utf-16-le", "replace").rstrip("\x00") or None
    return str(value) or None if value is not None else None


def _xp_bytes(text: str) -> bytes:
    return (text + "\x00").encode("utf-16-le")


def _dms_to_degrees(dms: Any, ref: Any) -> float | None:
    try:
        degrees, minutes, seconds = (float(part) for part in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = degrees + minutes / 60 + seconds / 3600
    return round(-value if str(ref).upper().startswith(("S", "W")) else value, 7)


def _degrees_to_dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round((value - degrees - minutes / 60) * 3600, 4)
    return float(degrees), float(minutes), seconds


def _exif_date(text: Any) -> str | None:
    """An EXIF date ("2024:05:06 07:08:09") as ISO 8601, or None when it is not one."""
    try:
        return datetime.strptime(str(text).strip("\x00 "), EXIF_DATE_FORMAT).isoformat()
    except ValueError:
        return None


def _gps_of(gps: Mapping[int, Any]) -> dict[str, float | None] | None:
    latitude = _dms_to_degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(1, "N"))
    longitude = _dms_to_degrees(gps.get(ExifTags.GPS.GPSLongitude), gps.get(3, "E"))
    if latitude is None or longitude is None:
        return None
    altitude: float | None = None
    if ExifTags.GPS.GPSAltitude in gps:
        altitude = _json_value(gps[ExifTags.GPS.GPSAltitude])
        ref = gps.get(ExifTags.GPS.GPSAltitudeRef, b"\x00")
        below = ref in (1, b"\x01") if not isinstance(ref, int) else ref == 1
        if isinstance(altitude, float) and below:
            altitude = -altitude
    return {"latitude": latitude, "longitude": longitude, "altitude": altitude}


@dataclass
class MetadataReport:
    """What an image carries, read from its container without decoding pixels."""

    format: str
    exif: Image.Exif
    icc: bytes | None
    xmp: bytes | None
    comments: list[str]
    other_blocks: list[str]

    def ifd(self, tag: int) -> Mapping[int, Any]:
        try:
            return self.exif.get_ifd(tag)
        except Exception:  # a broken sub-IFD reads as empty
            return {}

    def capture_date(self) -> str | None:
        """DateTimeOriginal, else DateTime, as ISO 8601."""
        original = _exif_date(self.ifd(EXIF_IFD).get(DATE_TIME_ORIGINAL))
        return original or _exif_date(self.exif.get(DATE_TIME))

    def fields(self) -> dict[str, Any]:
        """The edit-metadata fields as they are now (null when absent)."""
        exif = self.exif
        keywords = _xp_text(exif.get(XP_KEYWORDS))
        gps = self.ifd(GPS_IFD)
        return {
            "title": _xp_text(exif.get(XP_TITLE)),
            "description": _json_value(exif.get(IMAGE_DESCRIPTION)),
            "author": _json_value(exif.get(ARTIST)) or _xp_text(exif.get(XP_AUTHOR)),
            "copyright": _json_value(exif.get(COPYRIGHT)),
            "keywords": [k.strip() for k in keywords.split(";") if k.strip()] if keywords else [],
            "gps": _gps_of(gps) if gps else None,
            "dateTime": self.capture_date(),
        }

    def raw_exif(self) -> dict[str, Any]:
        """Every EXIF tag by name: IFD0, then the Exif and GPS sub-IFDs under their own keys."""
        raw: dict[str, Any] = {}
        for tag, value in self.exif.items():
            if tag in (EXIF_IFD, GPS_IFD, INTEROP_IFD):
                continue
            name = _tag_name(tag, _IFD0_NAMES)
            raw[name] = _xp_text(value) if tag in XP_TAGS else _json_value(value)
        exif_ifd = self.ifd(EXIF_IFD)
        if exif_ifd:
            raw["Exif"] = {_tag_name(t, _IFD0_NAMES): _json_value(v) for t, v in exif_ifd.items()}
        gps = self.ifd(GPS_IFD)
        if gps:
            raw["GPSInfo"] = {_tag_name(t, _GPS_NAMES): _json_value(v) for t, v in gps.items()}
        return raw

    def exif_tag_names(self) -> list[str]:
        names = [
            _tag_name(t, _IFD0_NAMES)
            for t in self.exif
            if t not in (EXIF_IFD, GPS_IFD, INTEROP_IFD)
        ]
        names += [_tag_name(t, _IFD0_NAMES) for t in self.ifd(EXIF_IFD)]
        names += [_tag_name(t, _GPS_NAMES) for t in self.ifd(GPS_IFD)]
        return names


def _png_text_blocks(data: bytes) -> tuple[list[str], bytes | None]:
    """PNG comments (text chunks, tIME) and XMP, from chunks anywhere in the file."""
    comments: list[str] = []
    xmp: bytes | None = None
    for chunk in png_chunks(data):
        if chunk.type == b"tIME":
            comments.append("tIME (modification time)")
        if chunk.type not in PNG_TEXT_CHUNKS:
            continue
        keyword, _, rest = chunk.body.partition(b"\x00")
        category = _png_text_category(keyword)
        if category == "xmp" and keyword.lower() == b"xml:com.adobe.xmp":
            xmp = rest
        elif category == "comments":
            text = rest if chunk.type == b"tEXt" else b""
            if chunk.type == b"zTXt":
                with contextlib.suppress(zlib.error):
                    text = zlib.decompress(rest[1:])
            label = keyword.decode("latin-1")
            value = text.decode("latin-1", "replace")[:MAX_RAW_VALUE]
            comments.append(f"{label}: {value}" if value else label)
    return comments, xmp


def read_metadata(source: InputFile) -> MetadataReport:
    """EXIF, ICC, XMP and comments of `source`, read from the container (no pixel decoded,
    so the EXIF orientation is reported as stored)."""
    img = open_lazily(source.data, source.limits)
    info = img.info
    try:
        exif = img.getexif()
        exif.get_ifd(EXIF_IFD)  # parse now: a broken block is reported as absent
    except Exception:
        exif = Image.Exif()
    comments: list[str] = []
    xmp = _xmp_bytes(info)
    if source.format.name == "png":
        comments, png_xmp = _png_text_blocks(source.data)
        xmp = xmp or png_xmp
    elif info.get("comment"):
        comment = info["comment"]
        text = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else str(comment)
        comments.append(text[:MAX_RAW_VALUE])
    other = []
    if any(tag in exif for tag in (IPTC_TAG, PHOTOSHOP_TAG)) or "photoshop" in info:
        other.append("IPTC/Photoshop")
    icc = info.get("icc_profile") or None
    return MetadataReport(source.format.name, exif, icc, xmp, comments, other)


class InspectSettings(Settings):
    pass


class MetadataFieldsSchema(Settings):
    title = fields.String(allow_none=True, metadata={"description": "XPTitle"})
    description = fields.String(allow_none=True, metadata={"description": "ImageDescription"})
    author = fields.String(allow_none=True, metadata={"description": "Artist"})
    copyright = fields.String(allow_none=True, metadata={"description": "Copyright"})
    keywords = fields.List(fields.String(), metadata={"description": "XPKeywords, split on ;"})
    gps = fields.Dict(
        allow_none=True, metadata={"description": "{latitude, longitude, altitude} in degrees/m"}
    )
    date_time = fields.String(
        allow_none=True,
        metadata={"description": "DateTimeOriginal (else DateTime) as ISO 8601"},
    )


class EditInspectOutput(MetadataFieldsSchema):
    exif = fields.Dict(
        metadata={"description": "every EXIF tag by name; sub-IFDs under Exif and GPSInfo"}
    )
    has_xmp = fields.Boolean(metadata={"description": "an XMP packet is present"})
    has_icc = fields.Boolean(metadata={"description": "an ICC colour profile is present"})


def extract_edit_inspect(ctx: Context, image: InputFile, settings: dict[str, Any]) -> Any:
    report = read_metadata(image)
    return {
        **report.fields(),
        "exif": report.raw_exif(),
        "hasXmp": report.xmp is not None,
        "hasIcc": report.icc is not None,
    }


class StripInspectOutput(Settings):
    format = fields.String(metadata={"description": "the sniffed image format"})
    exif_tags = fields.List(
        fields.String(), metadata={"description": "names of the EXIF tags present"}
    )
    gps = fields.Boolean(metadata={"description": "a GPS location is present"})
    location = fields.Dict(
        allow_none=True, metadata={"description": "{latitude, longitude, altitude} if present"}
    )
    icc_profile = fields.Dict(
        metadata={"description": "{present, size}: the ICC profile (kept by default)"}
    )
    xmp = fields.Dict(metadata={"description": "{present, size}: the XMP packet"})
    comments = fields.List(fields.String(), metadata={"description": "comments and text blocks"})
    other = fields.List(fields.String(), metadata={"description": "other blocks (IPTC)"})


def extract_strip_inspect(ctx: Context, image: InputFile, settings: dict[str, Any]) -> Any:
    report = read_metadata(image)
    gps = report.ifd(GPS_IFD)
    return {
        "format": report.format,
        "exifTags": report.exif_tag_names(),
        "gps": bool(gps),
        "location": _gps_of(gps) if gps else None,
        "iccProfile": {"present": report.icc is not None, "size": len(report.icc or b"")},
        "xmp": {"present": report.xmp is not None, "size": len(report.xmp or b"")},
        "comments": report.comments,
        "other": report.other_blocks,
    }


# --- edit-metadata ----------------------------------------------------------------------------

MAX_TEXT = 2000


class GpsSettings(Settings):
    latitude = fields.Float(
        required=True,
        allow_nan=False,
        validate=validate.Range(-90, 90),
        metadata={"description": "degrees, north positive (-90 to 90)"},
    )
    longitude = fields.Float(
        required=True,
        allow_nan=False,
        validate=validate.Range(-180, 180),
        metadata={"description": "degrees, east positive (-180 to 180)"},
    )
    altitude = fields.Float(
        load_default=None,
        allow_none=True,
        allow_nan=False,
        validate=validate.Range(-20000, 100000),
        metadata={"description": "metres above sea level (negative: below); optional"},
    )


def _text_field(tag: str) -> fields.String:
    return fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=MAX_TEXT),
        metadata={
            "description": f"written as EXIF {tag}; null or absent leaves it as it is, an "
            "empty string removes it"
        },
    )


class EditMetadataSettings(Settings):
    title = _text_field("XPTitle")
    description = _text_field("ImageDescription")
    author = _text_field("Artist")
    copyright = _text_field("Copyright")
    keywords = fields.List(
        fields.String(validate=validate.Length(1, 200)),
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=100),
        metadata={
            "description": "written as EXIF XPKeywords (joined with ;); [] removes them, null "
            "leaves them"
        },
    )
    gps = fields.Nested(
        GpsSettings,
        load_default=None,
        allow_none=True,
        metadata={
            "description": "{latitude, longitude, altitude?} in degrees and metres, written as "
            "the EXIF GPS block (not supported for TIFF: 400)"
        },
    )
    remove_gps = fields.Boolean(
        load_default=False, metadata={"description": "remove the GPS block (when gps is null)"}
    )
    date_time = fields.NaiveDateTime(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "capture date, ISO 8601 (2024-05-06T07:08:09), written as EXIF "
            "DateTime and (except TIFF) DateTimeOriginal/DateTimeDigitized"
        },
    )
    clear = fields.Boolean(
        load_default=False,
        metadata={
            "description": "drop every other EXIF tag, XMP/IPTC and comments first (the "
            "orientation and the ICC profile are kept)"
        },
    )


CLEAR_PLAN = StripPlan(exif=True, gps=True, icc=False, xmp=True, comments=True)
EDITABLE_FORMATS = ("jpg", "png", "webp", "tiff")


def _set_text(exif: Image.Exif, tag: int, value: str | None, *, xp: bool = False) -> None:
    if value is None:
        return
    if value == "":
        exif.pop(tag, None)
    else:
        exif[tag] = _xp_bytes(value) if xp else value


def build_exif(current: Image.Exif, settings: dict[str, Any], fmt: str) -> Image.Exif:
    """The EXIF to write: the current one (or, with `clear`, only its orientation) with the
    requested fields set."""
    exif = Image.Exif()
    gps = settings["gps"]
    replace_gps = gps is not None or settings["remove_gps"]
    if settings["clear"]:
        if current.get(EXIF_ORIENTATION, 1) != 1:
            exif[EXIF_ORIENTATION] = current[EXIF_ORIENTATION]
    else:
        for tag, value in current.items():
            if tag == GPS_IFD and replace_gps:
                continue
            if tag in (EXIF_IFD, GPS_IFD):
                block = {t: v for t, v in current.get_ifd(tag).items() if t != INTEROP_IFD}
                exif.get_ifd(tag).update(block)
            elif tag != INTEROP_IFD:  # a pointer Pillow cannot rewrite: it would go stale
                exif[tag] = value
    _set_text(exif, XP_TITLE, settings["title"], xp=True)
    _set_text(exif, IMAGE_DESCRIPTION, settings["description"])
    _set_text(exif, ARTIST, settings["author"])
    _set_text(exif, COPYRIGHT, settings["copyright"])
    if settings["keywords"] is not None:
        _set_text(exif, XP_KEYWORDS, ";".join(settings["keywords"]), xp=True)
    if settings["date_time"] is not None:
        stamp = settings["date_time"].strftime(EXIF_DATE_FORMAT)
        exif[DATE_TIME] = stamp
        if fmt != "tiff":
            exif_ifd = exif.get_ifd(EXIF_IFD)
            exif_ifd[DATE_TIME_ORIGINAL] = stamp
            exif_ifd[DATE_TIME_DIGITIZED] = stamp
    if gps is not None:
        block = exif.get_ifd(GPS_IFD)
        block[ExifTags.GPS.GPSVersionID] = b"\x02\x03\x00\x00"
        block[ExifTags.GPS.GPSLatitudeRef] = "N" if gps["latitude"] >= 0 else "S"
        block[ExifTags.GPS.GPSLatitude] = _degrees_to_dms(gps["latitude"])
        block[ExifTags.GPS.GPSLongitudeRef] = "E" if gps["longitude"] >= 0 else "W"
        block[ExifTags.GPS.GPSLongitude] = _degrees_to_dms(gps["longitude"])
        if gps["altitude"] is not None:
            block[ExifTags.GPS.GPSAltitudeRef] = b"\x00" if gps["altitude"] >= 0 else b"\x01"
            block[ExifTags.GPS.GPSAltitude] = abs(float(gps["altitude"]))
    return exif


def _exif_payload(exif: Image.Exif) -> bytes | None:
    return _tiff_bytes(exif) if len(exif) else None


def replace_exif_jpeg(data: bytes, exif: bytes | None) -> bytes:
    def drop_exif(marker: int, payload: bytes) -> bytes | None:
        if marker == 0xE1 and payload.startswith(b"Exif\x00"):
            return None
        return _jpeg_segment(marker, payload)

    if exif and len(EXIF_HEADER + exif) + 2 > 0xFFFF:
        raise BadRequestError(
            "the metadata is too large for a JPEG EXIF segment (64 KB)", code="METADATA_TOO_LARGE"
        )
    insert = _jpeg_segment(0xE1, EXIF_HEADER + exif) if exif else b""
    return rewrite_jpeg(data, drop_exif, insert)


def replace_exif_png(data: bytes, exif: bytes | None) -> bytes:
    out = [PNG_SIGNATURE]
    for chunk in png_chunks(data):
        if chunk.type == b"eXIf":
            continue
        if chunk.type == b"IDAT" and exif is not None:
            out.append(png_chunk(b"eXIf", exif))
            exif = None
        out.append(chunk.raw)
    return b"".join(out)


def replace_exif_webp(data: bytes, exif: bytes | None, size: tuple[int, int]) -> bytes:
    chunks = _webp_chunks(data)
    chunks = [(fourcc, payload) for fourcc, payload in chunks if fourcc != b"EXIF"]
    if exif is not None:
        if not any(fourcc == b"VP8X" for fourcc, _ in chunks):
            # A simple (VP8/VP8L) file: extended format is needed for metadata chunks.
            alpha = 0x10 if any(fourcc == b"VP8L" for fourcc, _ in chunks) else 0
            width, height = size
            header = bytes((alpha, 0, 0, 0)) + (width - 1).to_bytes(3, "little")
            chunks.insert(0, (b"VP8X", header + (height - 1).to_bytes(3, "little")))
        at = next((i for i, (fourcc, _) in enumerate(chunks) if fourcc == b"XMP "), len(chunks))
        chunks.insert(at, (b"EXIF", exif))
    return _webp_file(chunks)


def _reencode_tiff(source: InputFile, exif: Image.Exif, clear: bool) -> bytes:
    """TIFF is rewritten by Pillow (lossless, same compression); its writer keeps IFD0 tags."""
    img = open_lazily(source.data, source.limits)
    img.load()
    options: dict[str, Any] = {"exif": exif}
    for key in ("compression", "dpi", "icc_profile"):
        if img.info.get(key):
            options[key] = img.info[key]
    if not clear and img.info.get("xmp"):
        options["xmp"] = img.info["xmp"]
    clean = img.copy()
    clean.info = {}
    out = io.BytesIO()
    clean.save(out, format="TIFF", **options)
    return out.getvalue()


def run_edit_metadata(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> Any:
    source = inputs.file
    fmt = source.format.name
    if fmt not in EDITABLE_FORMATS:
        raise UnsupportedFormatError(
            f"edit-metadata writes JPEG, PNG, WebP and TIFF, not {fmt}; convert it first",
            details={"format": fmt, "supported": list(EDITABLE_FORMATS)},
        )
    if source.is_animated:
        raise AnimatedImageError("edit-metadata takes still images only")
    if fmt == "tiff" and settings["gps"] is not None:
        raise SettingsError(
            "GPS cannot be written to TIFF (Pillow's TIFF writer has no GPS block); use JPEG, "
            "PNG or WebP",
            details={"fields": {"gps": ["not supported for TIFF"]}},
        )
    _verify_decodable(source)
    report = read_metadata(source)
    exif = build_exif(report.exif, settings, fmt)
    data = source.data
    if fmt == "tiff":
        return FileResult(_reencode_tiff(source, exif, settings["clear"]), fmt)
    if settings["clear"]:
        data = CONTAINER_STRIPPERS[fmt](data, CLEAR_PLAN)
    payload = _exif_payload(exif)
    if fmt == "jpg":
        data = replace_exif_jpeg(data, payload)
    elif fmt == "png":
        data = replace_exif_png(data, payload)
    else:
        header = source.header
        data = replace_exif_webp(data, payload, (header.width, header.height))
    return FileResult(data, fmt)


# --- bulk-rename ------------------------------------------------------------------------------

PLACEHOLDERS = ("n", "date", "original")
_TOKEN = re.compile(r"\{([^{}]*)\}|[{}]")
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
MANIFEST = "manifest.json"
MAX_NAME = 200


class BulkRenameSettings(Settings):
    pattern = fields.String(
        load_default="image-{n}",
        validate=validate.Length(1, 200),
        metadata={
            "description": "the new name without extension; placeholders: {n} (the file's "
            "number), {date} (EXIF DateTimeOriginal, else DateTime, else today, as YYYY-MM-DD) "
            "and {original} (the original name without extension). The original extension is "
            'kept; characters unsafe in a filename (/ \\ : * ? " < > | and control characters) '
            "become -, and a name already taken gets -2, -3, ..."
        },
    )
    start_index = fields.Integer(
        load_default=1,
        validate=validate.Range(0, 1_000_000),
        metadata={"description": "the {n} of the first file"},
    )
    padding = fields.Integer(
        load_default=3,
        validate=validate.Range(0, 10),
        metadata={"description": "zero-pad {n} to this many digits (0 or 1: no padding)"},
    )


def parse_pattern(pattern: str) -> list[tuple[bool, str]]:
    """The pattern as (is_placeholder, text) parts; 400 for an unknown or broken placeholder."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    for match in _TOKEN.finditer(pattern):
        if match.start() > pos:
            parts.append((False, pattern[pos : match.start()]))
        name = match.group(1)
        if name not in PLACEHOLDERS:
            problem = (
                f"unknown placeholder {match.group(0)}"
                if name is not None
                else f"unbalanced brace at position {match.start() + 1}"
            )
            raise SettingsError(
                f"pattern: {problem}; use {{n}}, {{date}} and {{original}}",
                details={"fields": {"pattern": [problem]}},
            )
        parts.append((True, name))
        pos = match.end()
    if pos < len(pattern):
        parts.append((False, pattern[pos:]))
    return parts


def safe_filename_stem(name: str) -> str:
    """`name` usable as a file name: no path separators, control characters or `..`."""
    name = re.sub(r"\.{2,}", "-", _UNSAFE_CHARS.sub("-", name))
    name = re.sub(r"-{2,}", "-", name).strip(" .-")
    return name[:MAX_NAME].rstrip(" .-")


def capture_day(source: InputFile) -> str:
    try:
        stamp = read_metadata(source).capture_date()
    except PixmillError:
        stamp = None
    return stamp[:10] if stamp else date.today().isoformat()


def run_bulk_rename(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> Any:
    files: list[InputFile] = inputs["file"]
    parts = parse_pattern(settings["pattern"])
    uses_date = any(is_field and text == "date" for is_field, text in parts)
    taken = {MANIFEST}
    renamed: list[dict[str, str]] = []
    members: list[tuple[str, bytes | str]] = []
    for index, source in enumerate(files):
        ctx.check_cancelled()
        values = {
            "n": str(settings["start_index"] + index).zfill(settings["padding"]),
            "original": Path(source.filename.replace("\\", "/")).stem,
            "date": capture_day(source) if uses_date else "",
        }
        stem = safe_filename_stem(
            "".join(values[text] if is_field else text for is_field, text in parts)
        )
        if not stem:
            raise SettingsError(
                f"the pattern gives an empty name for {source.filename!r}",
                details={"fields": {"pattern": ["gives an empty file name"]}},
            )
        suffix = Path(source.filename).suffix.lower()
        extension = suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ""
        name = unique_name(stem + (extension or f".{source.format.extension}"), taken)
        # The files go in as they are: the archive is a container, not a re-encoding.
        members.append((name, source.data))
        renamed.append({"from": source.filename, "to": name})
        ctx.progress((index + 1) / len(files))
    manifest = {"files": renamed}
    members.append((MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False)))
    return FileResult(zip_archive(members), "zip", filename="renamed", meta={"files": len(renamed)})


# --- image-to-pdf -----------------------------------------------------------------------------

POINTS_PER_INCH = 72
PAGE_SIZES = {  # portrait, in points
    "A3": (842, 1191),
    "A4": (595, 842),
    "A5": (420, 595),
    "Letter": (612, 792),
    "Legal": (612, 1008),
}
PDF_MAX_PAGE = 14400  # points: the largest page PDF readers accept (200 inches)
PDF_QUALITIES = (90, 80, 70, 60, 50, 40, 30, 20, 10)
SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024 * 1024}
WHITE = (255, 255, 255)
PDF_DATE = time.struct_time((2000, 1, 1, 0, 0, 0, 5, 1, 0))


class TargetSizeSettings(Settings):
    value = fields.Float(
        required=True,
        allow_nan=False,
        validate=validate.Range(min=1, max=1024 * 1024 * 1024),
        metadata={"description": "the largest the PDF may be, in `unit`"},
    )
    unit = fields.String(
        load_default="KB",
        validate=validate.OneOf(tuple(SIZE_UNITS)),
        metadata={"description": "B, KB (1024 bytes) or MB"},
    )


class ImageToPdfSettings(Settings):
    page_size = fields.String(
        load_default="A4",
        validate=validate.OneOf((*PAGE_SIZES, "fit")),
        metadata={
            "description": "A4, Letter, Legal, A3, A5, or fit (each page the size of its "
            "image at 72 dpi, plus the margins)"
        },
    )
    orientation = fields.String(
        load_default="auto",
        validate=validate.OneOf(("portrait", "landscape", "auto")),
        metadata={
            "description": "portrait, landscape, or auto (landscape for images wider than "
            "tall); ignored for pageSize fit"
        },
    )
    margin = fields.Integer(
        load_default=0,
        validate=validate.Range(0, 2000),
        metadata={
            "description": "white space around each image, in points (1/72 inch); the image "
            "is scaled to fit what remains, centred, never resampled"
        },
    )
    target_size = fields.Nested(
        TargetSizeSettings,
        load_default=None,
        allow_none=True,
        metadata={
            "description": "{value, unit}: lower the JPEG quality (90 down to 10) until the "
            "PDF is at most this large; 400 TARGET_SIZE_UNREACHABLE when even quality 10 is "
            "larger. Without it, images are stored at JPEG quality 90"
        },
    )


def _page_size(settings: dict[str, Any], image_size: tuple[int, int]) -> tuple[int, int]:
    width, height = PAGE_SIZES[settings["page_size"]]
    orientation = settings["orientation"]
    if orientation == "auto":
        orientation = "landscape" if image_size[0] > image_size[1] else "portrait"
    return (height, width) if orientation == "landscape" else (width, height)


def pdf_page(img: Image.Image, settings: dict[str, Any]) -> tuple[Image.Image, float]:
    """The page as a white canvas holding the image at its own pixels, and its resolution
    (dpi) that makes the canvas the page size: the image is placed, never resampled."""
    margin = settings["margin"]
    if settings["page_size"] == "fit":
        longest = max(img.size) + 2 * margin
        dpi = float(POINTS_PER_INCH)
        if longest > PDF_MAX_PAGE:
            dpi = POINTS_PER_INCH * max(img.size) / (PDF_MAX_PAGE - 2 * margin)
        page_w = img.width * POINTS_PER_INCH / dpi + 2 * margin
        page_h = img.height * POINTS_PER_INCH / dpi + 2 * margin
    else:
        page_w, page_h = _page_size(settings, img.size)
        room_w, room_h = page_w - 2 * margin, page_h - 2 * margin
        if room_w < 1 or room_h < 1:
            raise SettingsError(
                f"a margin of {margin} pt leaves no room on a {page_w}x{page_h} pt page",
                details={"fields": {"margin": ["leaves no room for the image"]}},
            )
        dpi = POINTS_PER_INCH * max(img.width / room_w, img.height / room_h)
    scale = dpi / POINTS_PER_INCH
    canvas_size = (max(img.width, round(page_w * scale)), max(img.height, round(page_h * scale)))
    if canvas_size == img.size:
        return img, dpi
    canvas = Image.new(img.mode, canvas_size, WHITE if img.mode == "RGB" else 255)
    canvas.paste(img, ((canvas_size[0] - img.width) // 2, (canvas_size[1] - img.height) // 2))
    return canvas, dpi


def flatten_on_white(img: Image.Image) -> Image.Image:
    """RGB (or L for grey) pixels in sRGB, transparency composited onto white."""
    img = to_srgb(resamplable(img))
    if img.mode in ("L", "LA", "I;16", "I;16B", "I;16L", "I", "F"):
        grey = convert_mode(img, "LA")
        base = Image.new("L", img.size, 255)
        base.paste(grey.getchannel("L"), mask=grey.getchannel("A"))
        return base
    rgba = convert_mode(img, "RGBA")
    base = Image.new("RGB", img.size, WHITE)
    base.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return base


def write_pdf(pages: list[tuple[Image.Image, float]], quality: int) -> bytes:
    """One page per image; each its own resolution (Pillow's writer takes one per save, so
    pages after the first are appended as incremental updates)."""
    out = io.BytesIO()
    for index, (page, dpi) in enumerate(pages):
        page.save(
            out,
            format="PDF",
            resolution=dpi,
            quality=quality,
            append=index > 0,
            producer="pixmill",
            # Fixed dates: the same images and settings give the same file (results are cached).
            creationDate=PDF_DATE,
            modDate=PDF_DATE,
        )
    return out.getvalue()


def run_image_to_pdf(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> Any:
    files: list[InputFile] = inputs["file"]
    pages = []
    for index, source in enumerate(files):
        ctx.check_cancelled()
        img = flatten_on_white(source.open())
        pages.append(pdf_page(img, settings))
        ctx.progress(0.5 * (index + 1) / len(files), "laying out pages")
    target = settings["target_size"]
    limit = None if target is None else int(target["value"] * SIZE_UNITS[target["unit"]])
    data = b""
    qualities = PDF_QUALITIES if limit is not None else PDF_QUALITIES[:1]
    for quality in qualities:
        ctx.check_cancelled()
        data = write_pdf(pages, quality)
        if limit is None or len(data) <= limit:
            return FileResult(
                data,
                "pdf",
                filename=files[0].stem if len(files) == 1 else "images",
                meta={"pages": len(pages), "jpegQuality": quality},
            )
    assert limit is not None
    raise BadRequestError(
        f"the PDF is {len(data):,} bytes even at JPEG quality {PDF_QUALITIES[-1]}, more than "
        f"the target of {limit:,} bytes; raise targetSize or send smaller images",
        code="TARGET_SIZE_UNREACHABLE",
        details={"smallest": len(data), "target": limit},
    )


# --- favicon ----------------------------------------------------------------------------------

ICO_SIZES = (16, 32, 48)
FAVICON_PNGS = {
    "favicon-16x16.png": 16,
    "favicon-32x32.png": 32,
    "favicon-48x48.png": 48,
    "apple-touch-icon.png": 180,
    "android-chrome-192x192.png": 192,
    "android-chrome-512x512.png": 512,
}
FAVICON_HTML = """<link rel="icon" href="/favicon.ico" sizes="48x48">
<link rel="icon" type="image/png" sizes="32x32" href="/favicon-32x32.png">
<link rel="icon" type="image/png" sizes="16x16" href="/favicon-16x16.png">
<link rel="apple-touch-icon" sizes="180x180" href="/apple-touch-icon.png">
<link rel="manifest" href="/site.webmanifest">
"""


class FaviconSettings(Settings):
    fit = fields.String(
        load_default="pad",
        validate=validate.OneOf(("pad", "crop")),
        metadata={
            "description": "how a non-square image becomes square: pad (whole image, "
            "background around it) or crop (the centred square)"
        },
    )
    padding = fields.Integer(
        load_default=0,
        validate=validate.Range(0, 40),
        metadata={"description": "space around the image, in percent of the icon's side"},
    )
    background_color = Color(
        load_default="#00000000",
        metadata={
            "description": "background behind the image and padding (default transparent; "
            "apple-touch-icon.png, which iOS shows on black, is put on white when transparent)"
        },
    )
    border_radius = fields.Integer(
        load_default=0,
        validate=validate.Range(0, 50),
        metadata={"description": "corner radius in percent of the side (50: a circle)"},
    )
    name = fields.String(
        load_default="",
        validate=validate.Length(max=100),
        metadata={"description": "the site name written in site.webmanifest"},
    )


def favicon_master(img: Image.Image, settings: dict[str, Any]) -> Image.Image:
    """The square RGBA icon at full resolution: fitted, padded, on its background, rounded."""
    img = convert_mode(to_srgb(resamplable(img)), "RGBA")
    if settings["fit"] == "crop":
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side))
    side = max(img.size)
    total = max(1, round(side / (1 - 2 * settings["padding"] / 100)))
    canvas = Image.new("RGBA", (total, total), parse_color(settings["background_color"]))
    layer = Image.new("RGBA", (total, total), (0, 0, 0, 0))
    layer.paste(img, ((total - img.width) // 2, (total - img.height) // 2))
    canvas.alpha_composite(layer)
    radius = round(total * settings["border_radius"] / 100)
    if radius:
        canvas.putalpha(
            ImageChops.multiply(canvas.getchannel("A"), rounded_mask(canvas.size, radius))
        )
    return canvas


def _png_bytes(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def run_favicon(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> Any:
    source = inputs.file
    master = favicon_master(source.open(), settings)

    def sized(side: int) -> Image.Image:
        return master.resize((side, side), RESAMPLE, reducing_gap=REDUCING_GAP)

    icons = {side: sized(side) for side in sorted({*ICO_SIZES, *FAVICON_PNGS.values()})}
    ico = io.BytesIO()
    largest = icons[max(ICO_SIZES)]
    largest.save(
        ico,
        format="ICO",
        sizes=[(side, side) for side in ICO_SIZES],
        append_images=[icons[side] for side in ICO_SIZES if side != max(ICO_SIZES)],
    )
    manifest = {
        "name": settings["name"],
        "short_name": settings["name"],
        "icons": [
            {"src": f"/android-chrome-{s}x{s}.png", "sizes": f"{s}x{s}", "type": "image/png"}
            for s in (192, 512)
        ],
        "theme_color": "#ffffff",
        "background_color": "#ffffff",
        "display": "standalone",
    }
    members: list[tuple[str, bytes | str]] = [("favicon.ico", ico.getvalue())]
    for name, side in FAVICON_PNGS.items():
        icon = icons[side]
        low_alpha = icon.getchannel("A").getextrema()[0]
        if name == "apple-touch-icon.png" and isinstance(low_alpha, int) and low_alpha < 255:
            icon = on_white(icon)
        members.append((name, _png_bytes(icon)))
    members.append(("site.webmanifest", json.dumps(manifest, indent=2)))
    members.append(("favicon.html", FAVICON_HTML))
    return FileResult(zip_archive(members), "zip", filename=f"{source.stem}-favicon")


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="optimize-for-web",
            name="Optimize for Web",
            description="Re-encode for the web: webp/jpeg/avif/png, quality, optional downscale "
            "to a maximum size, progressive loading, metadata stripped with colours kept.",
            settings=OptimizeForWebSettings,
            run=run_optimize_for_web,
            example={"format": "webp", "quality": 75, "maxWidth": 1600},
        ),
        Tool(
            id="optimize-for-web-preview",
            name="Optimize for Web: preview",
            description="A quick look at optimize-for-web's settings (POST "
            "optimize-for-web/preview): the same encoding on a copy at most previewWidth "
            "pixels on its longest side (an animation's first frame), with meta giving the "
            "preview's bytes and an estimate of the full result's size (scaled by pixel "
            "count) for live tuning.",
            settings=OptimizePreviewSettings,
            run=run_optimize_preview,
            route="optimize-for-web/preview",
            example={"format": "jpeg", "quality": 70, "previewWidth": 400},
        ),
        Tool(
            id="strip-metadata",
            name="Strip Metadata",
            description="Remove EXIF, GPS, XMP/IPTC, comments and optionally the ICC profile. "
            "JPEG, PNG, WebP and GIF are edited without re-encoding: pixels stay identical.",
            settings=StripMetadataSettings,
            run=run_strip_metadata,
            example={"stripExif": False, "stripGps": True},
        ),
        Tool(
            id="edit-metadata",
            name="Edit Metadata",
            description="Write title (XPTitle), description (ImageDescription), author "
            "(Artist), copyright, keywords (XPKeywords), a GPS position and the capture date "
            "as EXIF into a JPEG, PNG, WebP or TIFF; `clear` drops the other tags first. JPEG, "
            "PNG and WebP are edited without re-encoding (pixels identical); TIFF is rewritten "
            "losslessly and takes no GPS. Animated images are refused. Read the current values "
            "with POST edit-metadata/inspect.",
            settings=EditMetadataSettings,
            run=run_edit_metadata,
            example={
                "title": "Harbour at dawn",
                "author": "A. Photographer",
                "keywords": ["harbour", "dawn"],
                "gps": {"latitude": 52.52, "longitude": 13.405},
            },
        ),
        Tool(
            id="bulk-rename",
            name="Bulk Rename",
            description="Rename many images by a pattern ({n}, {date}, {original}) and return "
            "them, byte for byte unchanged, in a ZIP with a manifest.json listing each "
            "original name and its new one. Not cached: {date} falls back to today.",
            settings=BulkRenameSettings,
            run=run_bulk_rename,
            inputs=(FileInput("file", "the images to rename (one or more)", multiple=True),),
            output=OutputKind.FILE,
            # {date} falls back to today's date: the same files may be named otherwise tomorrow.
            cacheable=False,
            example={"pattern": "holiday-{date}-{n}", "startIndex": 1, "padding": 3},
        ),
        Tool(
            id="image-to-pdf",
            name="Image to PDF",
            description="Put one or more images into one PDF, one image per page, in upload "
            "order: page size (A4, Letter, Legal, A3, A5, or fit to the image), orientation, "
            "margin, and an optional target file size. Images are stored as JPEG (transparency "
            "flattened on white) at their own pixel size, centred on the page. Animated images "
            "are refused.",
            settings=ImageToPdfSettings,
            run=run_image_to_pdf,
            inputs=(FileInput("file", "the images, one page each, in order", multiple=True),),
            output=OutputKind.FILE,
            example={"pageSize": "A4", "orientation": "auto", "margin": 36},
        ),
        Tool(
            id="favicon",
            name="Favicon Generator",
            description="Make every standard favicon from one image, in a ZIP: favicon.ico "
            "(16, 32 and 48 px), favicon-16x16/32x32/48x48.png, apple-touch-icon.png (180), "
            "android-chrome-192x192.png and -512x512.png, site.webmanifest and favicon.html "
            "(the <link> tags to paste into <head>). A non-square image is padded (default) "
            "or cropped to a square. Animated images are refused.",
            settings=FaviconSettings,
            run=run_favicon,
            output=OutputKind.FILE,
            example={"padding": 10, "backgroundColor": "#ffffff", "borderRadius": 20},
        ),
    ]


@hookimpl
def pixmill_extractors() -> list[Extractor]:
    return [
        Extractor(
            id="edit-metadata-inspect",
            name="Edit Metadata: inspect",
            description="Read the metadata edit-metadata writes (title, description, author, "
            "copyright, keywords, gps, dateTime; null when absent) plus every raw EXIF tag by "
            "name, from the file's container without decoding pixels.",
            settings=InspectSettings,
            extract=extract_edit_inspect,
            output_schema=EditInspectOutput,
            route="edit-metadata/inspect",
        ),
        Extractor(
            id="strip-metadata-inspect",
            name="Strip Metadata: inspect",
            description="List what strip-metadata would remove: EXIF tags by name, whether a "
            "GPS location is present (and where), the ICC profile and its size, XMP, comments "
            "and IPTC blocks.",
            settings=InspectSettings,
            extract=extract_strip_inspect,
            output_schema=StripInspectOutput,
            route="strip-metadata/inspect",
        ),
    ]
