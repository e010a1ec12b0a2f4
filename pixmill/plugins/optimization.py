"""Built-in optimization tools: optimize-for-web and strip-metadata.

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.

strip-metadata edits the container (JPEG segments, PNG chunks, WebP RIFF chunks, GIF blocks)
instead of decoding and re-encoding, so the pixels of those formats come out bit-for-bit.
"""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import fields, validate
from PIL import Image, ImageCms, PngImagePlugin

from pixmill import Context, FileResult, ImageResult, InputFile, Inputs, Settings, Tool, hookimpl
from pixmill.core.errors import InvalidImageError
from pixmill.core.imageio import ImageFormat, encode_image, format_by_name, has_alpha

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


def _cmyk_to_srgb(img: Image.Image) -> Image.Image:
    """Convert CMYK through its own profile when it has one (a naive convert shifts colours)."""
    icc = img.info.get("icc_profile")
    converted: Image.Image | None = None
    if icc:
        try:
            source_profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(img, source_profile, srgb, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            log.warning("CMYK profile unusable (%s); converting without it", exc)
    if converted is None:
        converted = img.convert("RGB")
    converted.info = {k: v for k, v in img.info.items() if k != "icc_profile"}
    return converted


def prepare_for_web(
    img: Image.Image, target: tuple[int, int], fmt: ImageFormat, strip: bool
) -> Image.Image:
    """Bring `img` to `target` size and a web-friendly mode, keeping only wanted metadata."""
    info = dict(img.info)
    if img.mode == "CMYK" and fmt.pil_name != "JPEG":
        img = _cmyk_to_srgb(img)
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
        segment = _filter_jpeg_segment(marker, payload, plan)
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


def strip_webp(data: bytes, plan: StripPlan) -> bytes:
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
    kept: list[tuple[bytes, bytes]] = []
    for fourcc, payload in chunks:
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
            id="strip-metadata",
            name="Strip Metadata",
            description="Remove EXIF, GPS, XMP/IPTC, comments and optionally the ICC profile. "
            "JPEG, PNG, WebP and GIF are edited without re-encoding: pixels stay identical.",
            settings=StripMetadataSettings,
            run=run_strip_metadata,
            example={"stripExif": False, "stripGps": True},
        ),
    ]
