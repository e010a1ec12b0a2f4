"""Built-in extractors that read data out of an image: `info` (header facts and EXIF) and
`color-palette` (dominant colours).

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

from marshmallow import fields, validate
from PIL import ExifTags, Image, ImageCms
from PIL.TiffImagePlugin import IFDRational

from pixmill import Context, Extractor, InputFile, Settings, hookimpl
from pixmill.core.errors import AnimatedImageError
from pixmill.core.imageio import frame_count, has_alpha, open_lazily, read_exif

# ---------------------------------------------------------------------------------------------
# info


class InfoSettings(Settings):
    include_exif = fields.Boolean(
        load_default=True,
        metadata={"description": "include the EXIF tags (name -> value) in the answer"},
    )


class InfoOutput(Settings):
    width = fields.Integer(
        required=True, metadata={"description": "width as displayed (after EXIF orientation)"}
    )
    height = fields.Integer(
        required=True, metadata={"description": "height as displayed (after EXIF orientation)"}
    )
    format = fields.String(
        required=True, metadata={"description": "short format name: jpg, png, webp, gif …"}
    )
    mime_type = fields.String(required=True, metadata={"description": "e.g. image/jpeg"})
    file_size = fields.Integer(required=True, metadata={"description": "file size in bytes"})
    channels = fields.Integer(
        required=True,
        metadata={
            "description": "colour channels per pixel, alpha included; a palette image counts "
            "the channels its palette expands to (3, or 4 with transparency)"
        },
    )
    has_alpha = fields.Boolean(
        required=True,
        metadata={"description": "true when the image carries transparency of any kind"},
    )
    color_space = fields.String(
        required=True,
        metadata={
            "description": "how pixels are stored: srgb (RGB), cmyk, gray, palette (indexed "
            "colours), ycbcr, lab, hsv; an ICC profile, when present, says which exact space"
        },
    )
    bit_depth = fields.Integer(
        required=True, metadata={"description": "bits per channel as stored in the file"}
    )
    dpi = fields.List(
        fields.Float(),
        allow_none=True,
        required=True,
        metadata={"description": "[x, y] resolution in dots per inch, or null if not declared"},
    )
    has_exif = fields.Boolean(required=True, metadata={"description": "an EXIF block is present"})
    has_icc = fields.Boolean(
        required=True, metadata={"description": "an ICC colour profile is embedded"}
    )
    icc_description = fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "the embedded ICC profile's description, or null"},
    )
    orientation = fields.Integer(
        allow_none=True,
        required=True,
        metadata={"description": "EXIF orientation 1-8, or null when the image declares none"},
    )
    frames = fields.Integer(required=True, metadata={"description": "number of frames"})
    animated = fields.Boolean(required=True, metadata={"description": "more than one frame"})
    duration_ms = fields.Integer(
        allow_none=True,
        required=True,
        metadata={
            "description": "total declared frame delay of an animation in milliseconds; null for "
            "still images and animation containers whose timing is not read (AVIF)"
        },
    )
    exif = fields.Dict(
        keys=fields.String(),
        allow_none=True,
        metadata={
            "description": "EXIF tags by name (Exif and GPS sub-IFDs included); binary values "
            "are left out, rationals become numbers, long values are cut short. Omitted when "
            "includeExif is false"
        },
    )


_MODE_COLOR_SPACES = {
    "1": "gray",
    "L": "gray",
    "LA": "gray",
    "La": "gray",
    "I": "gray",
    "I;16": "gray",
    "I;16L": "gray",
    "I;16B": "gray",
    "I;16N": "gray",
    "F": "gray",
    "P": "palette",
    "PA": "palette",
    "RGB": "srgb",
    "RGBA": "srgb",
    "RGBa": "srgb",
    "RGBX": "srgb",
    "CMYK": "cmyk",
    "YCbCr": "ycbcr",
    "LAB": "lab",
    "HSV": "hsv",
}

_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}
_BITS_PER_SAMPLE_TAG = 258

# EXIF entries that are file structure (offsets into the file, sub-IFD pointers) or opaque
# blobs, not facts about the picture.
_STRUCTURAL_TAGS = {
    273,  # StripOffsets
    279,  # StripByteCounts
    324,  # TileOffsets
    325,  # TileByteCounts
    330,  # SubIFDs
    513,  # JPEGInterchangeFormat
    514,  # JPEGInterchangeFormatLength
    700,  # XMLPacket
    33723,  # IPTCNAA
    34377,  # ImageResources
    34665,  # ExifOffset
    34853,  # GPSInfo
    37500,  # MakerNote
    40965,  # InteropOffset
}
MAX_EXIF_TAGS = 200
MAX_EXIF_STRING = 1000
MAX_EXIF_ITEMS = 64


def _orientation(exif: Image.Exif | None) -> int | None:
    value = exif.get(_ORIENTATION_TAG) if exif is not None else None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _json_value(value: Any, depth: int = 0) -> Any:
    """A JSON-safe form of an EXIF value, or None to leave the tag out."""
    if isinstance(value, bytes | bytearray):
        return None
    if isinstance(value, IFDRational):
        if value.denominator == 0:
            return None
        return round(float(value), 6)
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.replace("\x00", "").strip()
        return text[:MAX_EXIF_STRING] if text else None
    if isinstance(value, tuple | list) and depth < 2:
        items = [_json_value(item, depth + 1) for item in value[:MAX_EXIF_ITEMS]]
        return [item for item in items if item is not None] or None
    return None


def _exif_tags(exif: Image.Exif) -> dict[str, Any]:
    tags: dict[str, Any] = {}
    groups: list[tuple[Mapping[int, Any], Mapping[int, str]]] = [(exif, ExifTags.TAGS)]
    for ifd, ifd_names in (
        (ExifTags.IFD.Exif, ExifTags.TAGS),
        (ExifTags.IFD.GPSInfo, ExifTags.GPSTAGS),
    ):
        try:
            groups.append((exif.get_ifd(ifd), ifd_names))
        except Exception:  # a broken sub-IFD loses its own tags only
            continue
    for entries, names in groups:
        for tag_id, raw in entries.items():
            if len(tags) >= MAX_EXIF_TAGS:
                return tags
            if tag_id in _STRUCTURAL_TAGS:
                continue
            value = _json_value(raw)
            if value is not None:
                tags[names.get(tag_id, f"Tag0x{tag_id:04X}")] = value
    return tags


def _icc_description(icc: bytes) -> str | None:
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(profile)
    except (ImageCms.PyCMSError, OSError, TypeError, ValueError):
        return None
    return description.strip() or None


_X_RESOLUTION_TAG = 0x011A
_Y_RESOLUTION_TAG = 0x011B
_RESOLUTION_UNIT_TAG = 0x0128
_CM_PER_INCH = 2.54


def _declared_dpi(img: Image.Image, exif: Image.Exif | None) -> Any:
    if img.format != "JPEG":
        return img.info.get("dpi")
    # Pillow reports 72x72 for a JPEG whose EXIF has no resolution; only what the file says
    # counts here: the JFIF header, else EXIF X/YResolution with an inch or cm unit.
    if img.info.get("jfif_unit") in (1, 2):
        return img.info.get("dpi")
    if exif is None:
        return None
    unit = exif.get(_RESOLUTION_UNIT_TAG, 2)
    x, y = exif.get(_X_RESOLUTION_TAG), exif.get(_Y_RESOLUTION_TAG, exif.get(_X_RESOLUTION_TAG))
    if x is None or unit not in (2, 3):
        return None
    scale = _CM_PER_INCH if unit == 3 else 1.0
    try:
        return float(x) * scale, float(y) * scale
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _dpi(img: Image.Image, exif: Image.Exif | None) -> list[float] | None:
    dpi = _declared_dpi(img, exif)
    if not isinstance(dpi, tuple | list) or len(dpi) != 2:
        return None
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not (x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)):
        return None
    # PNG stores pixels per metre, so 72 dpi comes back as 72.009: one decimal is honest.
    return [round(x, 1), round(y, 1)]


def _bit_depth(img: Image.Image, data: bytes) -> int:
    if img.format == "PNG" and len(data) > 24:
        # Pillow narrows 16-bit RGB(A) PNGs to 8-bit modes; the IHDR chunk keeps the truth.
        return data[24]
    if img.format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(_BITS_PER_SAMPLE_TAG)
        if isinstance(bits, tuple) and bits and isinstance(bits[0], int):
            return bits[0]
        if isinstance(bits, int):
            return bits
    if img.mode == "1":
        return 1
    if img.mode.startswith("I;16"):
        return 16
    if img.mode in ("I", "F"):
        return 32
    return 8


def _channels(img: Image.Image, alpha: bool) -> int:
    if img.mode in ("P", "PA"):
        return 4 if alpha else 3
    return len(img.getbands())


def _skip_gif_sub_blocks(data: bytes, pos: int) -> int:
    while True:
        size = data[pos]
        pos += 1
        if size == 0:
            return pos
        pos += size


def _gif_duration_ms(data: bytes) -> int | None:
    flags = data[10]
    pos = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    total = delay = 0
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: a graphic control extension carries the next delay
            label, size = data[pos + 1], data[pos + 2]
            if label == 0xF9 and size >= 4:
                delay = int.from_bytes(data[pos + 4 : pos + 6], "little") * 10
            pos = _skip_gif_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor, then the frame's LZW data
            packed = data[pos + 9]
            pos += 10 + (3 * (2 << (packed & 7)) if packed & 0x80 else 0)
            pos = _skip_gif_sub_blocks(data, pos + 1)
            total += delay
            delay = 0
        else:
            return None
    return total


def _apng_duration_ms(data: bytes) -> int | None:
    pos, total = 8, 0.0
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"fcTL" and len(body) >= 24:
            numerator = int.from_bytes(body[20:22], "big")
            denominator = int.from_bytes(body[22:24], "big") or 100  # 0 means 1/100 s
            total += numerator * 1000 / denominator
        elif kind == b"IEND":
            break
        pos += 12 + length
    return round(total)


def _webp_duration_ms(data: bytes) -> int | None:
    pos, total = 12, 0
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if kind == b"ANMF" and length >= 16:
            total += int.from_bytes(data[pos + 20 : pos + 23], "little")
        pos += 8 + length + (length & 1)
    return total


_DURATION_READERS = {"GIF": _gif_duration_ms, "PNG": _apng_duration_ms, "WEBP": _webp_duration_ms}


def _duration_ms(pil_format: str, data: bytes) -> int | None:
    """Sum the frame delays from the container itself: Pillow only knows them by decoding."""
    reader = _DURATION_READERS.get(pil_format)
    if reader is None:
        return None
    try:
        return reader(data)
    except IndexError:  # truncated container: the frame count still stands, the timing not
        return None


def extract_info(ctx: Context, image: InputFile, settings: dict[str, Any]) -> dict[str, Any]:
    fmt = image.format
    img = open_lazily(image.data, image.limits, enforce_limits=False)
    exif = read_exif(img)
    orientation = _orientation(exif)
    width, height = img.size
    if orientation in _SWAPS_AXES:
        width, height = height, width
    alpha = has_alpha(img) or "transparency" in img.info
    icc = img.info.get("icc_profile") or None
    frames = frame_count(img)
    info: dict[str, Any] = {
        "width": width,
        "height": height,
        "format": fmt.name,
        "mimeType": fmt.media_type,
        "fileSize": image.size,
        "channels": _channels(img, alpha),
        "hasAlpha": alpha,
        "colorSpace": _MODE_COLOR_SPACES.get(img.mode, img.mode.lower()),
        "bitDepth": _bit_depth(img, image.data),
        "dpi": _dpi(img, exif),
        "hasExif": exif is not None,
        "hasIcc": icc is not None,
        "iccDescription": _icc_description(icc) if isinstance(icc, bytes) else None,
        "orientation": orientation,
        "frames": frames,
        "animated": frames > 1,
        "durationMs": _duration_ms(fmt.pil_name, image.data) if frames > 1 else None,
    }
    if settings["include_exif"]:
        info["exif"] = _exif_tags(exif) if exif is not None else {}
    return info


# ---------------------------------------------------------------------------------------------
# color-palette

PALETTE_SAMPLE_SIZE = 256


class PaletteSettings(Settings):
    count = fields.Integer(
        load_default=5,
        validate=validate.Range(1, 32),
        metadata={"description": "how many dominant colours to return (at most)"},
    )
    format = fields.String(
        load_default="hex",
        validate=validate.OneOf(("hex", "rgb")),
        metadata={"description": 'colour notation: hex ("#rrggbb") or rgb ([r, g, b])'},
    )


class PaletteColor(Settings):
    color = fields.Raw(
        required=True,
        metadata={"description": '"#rrggbb" (format=hex) or [r, g, b] (format=rgb)'},
    )
    percentage = fields.Float(
        required=True,
        metadata={"description": "share of the visible pixels with this colour, 0-100"},
    )


class PaletteOutput(Settings):
    colors = fields.List(
        fields.Nested(PaletteColor),
        required=True,
        metadata={
            "description": "dominant colours, largest share first; empty when every pixel is "
            "fully transparent"
        },
    )


def _sample(image: InputFile) -> Image.Image:
    """A copy of at most 256 px a side, decoded at reduced scale where the format allows."""
    box = (PALETTE_SAMPLE_SIZE, PALETTE_SAMPLE_SIZE)
    try:
        img = image.open(draft_size=box)
    except AnimatedImageError:
        img = image.open_first_frame()  # a palette describes a picture: its first frame will do
    if img.mode.startswith("I") or img.mode == "F":
        img = img.point(lambda v: v / 256).convert("L")
    # Convert before shrinking so palette images are averaged, not sampled nearest-neighbour.
    img = img.convert("RGBA" if has_alpha(img) else "RGB")
    img.thumbnail(box, Image.Resampling.BOX)
    return img


def _visible_pixels(img: Image.Image) -> Image.Image | None:
    """The pixels that are not fully transparent, as a one-row RGB image (None if none)."""
    if img.mode == "RGB":
        return img
    raw = img.tobytes()
    alpha = raw[3::4]
    if alpha.count(0) == 0:
        return img.convert("RGB")
    kept = bytearray()
    for index, value in enumerate(alpha):
        if value:
            kept += raw[index * 4 : index * 4 + 3]
    if not kept:
        return None
    return Image.frombytes("RGB", (len(kept) // 3, 1), bytes(kept))


def extract_palette(ctx: Context, image: InputFile, settings: dict[str, Any]) -> dict[str, Any]:
    pixels = _visible_pixels(_sample(image))
    if pixels is None:
        return {"colors": []}
    quantized = pixels.quantize(
        colors=settings["count"], method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    palette = quantized.getpalette() or []
    shares: dict[tuple[int, int, int], int] = {}
    for pixel_count, index in quantized.getcolors(maxcolors=256) or []:
        if not isinstance(index, int):
            continue
        r, g, b = palette[index * 3 : index * 3 + 3]
        shares[(r, g, b)] = shares.get((r, g, b), 0) + pixel_count
    total = sum(shares.values())
    ranked = sorted(shares.items(), key=lambda item: (-item[1], item[0]))
    return {
        "colors": [
            {
                "color": "#{:02x}{:02x}{:02x}".format(*rgb)
                if settings["format"] == "hex"
                else list(rgb),
                "percentage": round(100 * pixel_count / total, 2),
            }
            for rgb, pixel_count in ranked
        ]
    }


@hookimpl
def pixmill_extractors() -> list[Extractor]:
    return [
        Extractor(
            id="info",
            name="Image Info",
            description="Dimensions, format, size, channels, alpha, colour space, bit depth, "
            "DPI, ICC profile, orientation, frames and EXIF, read from the header without "
            "decoding pixels.",
            settings=InfoSettings,
            extract=extract_info,
            output_schema=InfoOutput,
            example={"includeExif": True},
        ),
        Extractor(
            id="color-palette",
            name="Color Palette",
            description="The dominant colours and their shares (median cut over a downsized "
            "copy; fully transparent pixels are ignored; an animation is read from its first "
            "frame).",
            settings=PaletteSettings,
            extract=extract_palette,
            output_schema=PaletteOutput,
            example={"count": 5, "format": "hex"},
        ),
    ]
