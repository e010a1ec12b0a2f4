"""Safe image decoding and encoding: the only place pixmill hands bytes to a decoder.

Decoding is refused unless the bytes' magic matches a format on the allow-list, and Pillow is
told to try only that one decoder, so a PostScript, PDF, FITS or PSD file renamed to `.png`
never reaches a decoder (and Ghostscript is never run). Sizes are checked from the header
before any pixel is decoded. JPEG inputs can be decoded at reduced size (DCT scaling) when the
caller says how small it needs them.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from struct import error as struct_error  # escapes some Pillow decoders on broken headers
from typing import Any

from PIL import Image, ImageFile, ImageOps, ImageSequence, UnidentifiedImageError

from pixmill.core.errors import (
    AnimatedImageError,
    BadRequestError,
    ImageTooLargeError,
    InvalidImageError,
    UnsupportedFormatError,
)

# A truncated file is an error, never a half-grey picture.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class ImageFormat:
    """A format pixmill reads and writes: its short name, Pillow's name, extension, MIME type."""

    name: str
    pil_name: str
    extension: str
    media_type: str
    supports_alpha: bool
    supports_icc: bool
    supports_exif: bool
    supports_animation: bool
    has_quality: bool


_FORMATS = (
    ImageFormat("jpg", "JPEG", "jpg", "image/jpeg", False, True, True, False, True),
    ImageFormat("png", "PNG", "png", "image/png", True, True, True, True, False),
    ImageFormat("webp", "WEBP", "webp", "image/webp", True, True, True, True, True),
    ImageFormat("avif", "AVIF", "avif", "image/avif", True, True, True, True, True),
    ImageFormat("heic", "HEIF", "heic", "image/heic", True, True, True, False, True),
    ImageFormat("heif", "HEIF", "heif", "image/heif", True, True, True, False, True),
    ImageFormat("tiff", "TIFF", "tiff", "image/tiff", True, True, True, False, False),
    ImageFormat("gif", "GIF", "gif", "image/gif", True, False, False, True, False),
    ImageFormat("bmp", "BMP", "bmp", "image/bmp", False, False, False, False, False),
    ImageFormat("ico", "ICO", "ico", "image/x-icon", True, False, False, False, False),
)
FORMATS: dict[str, ImageFormat] = {f.name: f for f in _FORMATS}
FORMAT_ALIASES = {"jpeg": "jpg", "tif": "tiff", "jpe": "jpg"}
OUTPUT_FORMAT_NAMES = tuple(FORMATS)

DEFAULT_QUALITY = {"jpg": 85, "webp": 80, "avif": 60, "heic": 60, "heif": 60}

# ISO-BMFF brands (bytes 8..12 of an `ftyp` box) that we accept, by format.
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


def format_by_name(name: str) -> ImageFormat:
    """Look up an output format by its short name or a common alias (`jpeg`, `tif`)."""
    key = name.lower().lstrip(".")
    key = FORMAT_ALIASES.get(key, key)
    try:
        return FORMATS[key]
    except KeyError:
        raise UnsupportedFormatError(
            f"unknown image format {name!r}; supported: {', '.join(OUTPUT_FORMAT_NAMES)}"
        ) from None


def sniff_format(data: bytes) -> ImageFormat:
    """Identify an allowed format from the file's magic bytes; refuse anything else (415)."""
    head = data[:32]
    if not head:
        raise BadRequestError("the file is empty", code="EMPTY_FILE")
    if head.startswith(b"\xff\xd8\xff"):
        return FORMATS["jpg"]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return FORMATS["png"]
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return FORMATS["gif"]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return FORMATS["webp"]
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return FORMATS["tiff"]
    if head[:2] == b"BM":
        return FORMATS["bmp"]
    if head[:4] == b"\x00\x00\x01\x00":
        return FORMATS["ico"]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            return FORMATS["avif"]
        if brand in _HEIF_BRANDS:
            return FORMATS["heic"]
    raise UnsupportedFormatError(
        "the file is not an image in a supported format "
        f"({', '.join(sorted({f.pil_name for f in _FORMATS}))}); its content was identified "
        "by its first bytes, not its name",
        details={"supported": sorted({f.name for f in _FORMATS})},
    )


_heif_registered = False


def _ensure_heif() -> None:
    """Register the HEIF decoder/encoder on first use (import is slow; most calls never need it)."""
    global _heif_registered
    if not _heif_registered:
        import pillow_heif

        pillow_heif.register_heif_opener()
        _heif_registered = True


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    max_frames: int


_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}


def open_image(
    data: bytes,
    limits: ImageLimits,
    *,
    draft_size: tuple[int, int] | None = None,
    allow_animation: bool = False,
) -> Image.Image:
    """Decode `data` safely and return a loaded, upright image.

    - the format comes from the magic bytes and only that decoder is tried;
    - width x height (and frame count) are checked against `limits` before decoding pixels;
    - `draft_size` lets a JPEG decode at 1/2, 1/4 or 1/8 scale while staying >= that size;
    - EXIF orientation is applied (the orientation tag is then reset);
    - an animated image raises `AnimatedImageError` unless `allow_animation` (then the first
      frame is returned and the caller is expected to iterate with `iter_frames`).
    """
    img = open_lazily(data, limits)
    frames = frame_count(img)
    if not allow_animation and frames > 1:
        raise AnimatedImageError(
            f"this tool works on still images and the input is animated ({frames} frames); "
            "it was refused rather than flattened to its first frame",
            details={"frames": frames},
        )
    if draft_size is not None and img.format == "JPEG":
        width, height = draft_size
        if _orientation(img) in _SWAPS_AXES:
            width, height = height, width
        # draft() only chooses a DCT scale that keeps the image at least this large.
        img.draft(img.mode if img.mode in ("RGB", "L", "CMYK") else "RGB", (width, height))
    _load(img)
    return _upright(img)


def iter_frames(data: bytes, limits: ImageLimits) -> Iterator[tuple[Image.Image, int]]:
    """Yield each frame of a (possibly animated) image as an RGBA/RGB copy with its duration."""
    img = open_lazily(data, limits)
    frames = getattr(img, "n_frames", 1)
    if frames * img.width * img.height > limits.max_pixels * 4:
        raise ImageTooLargeError(
            f"the animation holds {frames} frames of {img.width}x{img.height} pixels, more than "
            "this server decodes",
            details={"frames": frames, "width": img.width, "height": img.height},
        )
    try:
        for frame in ImageSequence.Iterator(img):
            duration = int(frame.info.get("duration", img.info.get("duration", 100)) or 100)
            converted = frame.convert("RGBA" if _has_alpha(frame) else "RGB")
            converted.info = dict(img.info)
            yield converted, duration
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImageError(f"the animation could not be decoded: {exc}") from exc


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, before any pixel is decoded; sizes are as displayed (upright)."""

    width: int
    height: int
    frames: int
    mode: str


def read_header(data: bytes, limits: ImageLimits) -> ImageHeader:
    img = open_lazily(data, limits)
    width, height = img.size
    if _orientation(img) in _SWAPS_AXES:
        width, height = height, width
    return ImageHeader(width, height, frame_count(img), img.mode)


def open_lazily(data: bytes, limits: ImageLimits, *, enforce_limits: bool = True) -> Image.Image:
    """Open the header only, with the sniffed format's decoder alone; no pixel is decoded.

    `enforce_limits=False` is for readers that never decode (e.g. the info extractor): they
    may report the size of an image this server would refuse to process.
    """
    fmt = sniff_format(data)
    if fmt.pil_name == "HEIF":
        _ensure_heif()
    with warnings.catch_warnings():
        # Pillow warns (and only warns) between MAX_IMAGE_PIXELS and twice that: for us a
        # warning is already a refusal.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=[fmt.pil_name])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLargeError(str(exc)) from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InvalidImageError(
                f"the file looks like {fmt.pil_name} but cannot be read: {exc}",
                details={"format": fmt.name},
            ) from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidImageError("the image declares an empty size")
    if not enforce_limits:
        return img
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}x{height} ({width * height:,} pixels); this server decodes at "
            f"most {limits.max_pixels:,} pixels",
            details={"width": width, "height": height, "maxPixels": limits.max_pixels},
        )
    if fmt.supports_animation or fmt.pil_name in ("TIFF", "ICO"):
        frames = frame_count(img)
        if frames > limits.max_frames:
            raise ImageTooLargeError(
                f"the image has {frames} frames; this server accepts at most {limits.max_frames}",
                details={"frames": frames, "maxFrames": limits.max_frames},
            )
    return img


def frame_count(img: Image.Image) -> int:
    """Frames in a lazily opened image (1 for stills); a broken frame table is 422."""
    try:
        return int(getattr(img, "n_frames", 1))
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImageError(f"the image's frames cannot be read: {exc}") from exc


def _load(img: Image.Image) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLargeError(str(exc)) from exc
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct_error) as exc:
            raise InvalidImageError(f"the image data is corrupt or truncated: {exc}") from exc


def read_exif(img: Image.Image) -> Image.Exif | None:
    """The image's EXIF without decoding pixels, or None when absent or unreadable."""
    if img.format == "PNG" and "exif" not in img.info:
        # Pillow's PNG getexif() decodes every pixel to reach an eXIf chunk stored after the
        # image data. Such files are rare, and once loaded Pillow puts it in info["exif"].
        return None
    try:
        exif = img.getexif()
    except Exception:  # a broken EXIF block must not sink an otherwise good image
        return None
    return exif if len(exif) else None


def _orientation(img: Image.Image) -> int:
    exif = read_exif(img)
    value = exif.get(_EXIF_ORIENTATION, 1) if exif is not None else 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(img: Image.Image) -> Image.Image:
    if _orientation(img) == 1:
        return img
    try:
        upright = ImageOps.exif_transpose(img)
    except Exception:
        return img
    return upright if upright is not None else img


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        img.mode == "P" and "transparency" in img.info
    )


def has_alpha(img: Image.Image) -> bool:
    """True when the image carries transparency (an alpha band or a transparent palette entry)."""
    return _has_alpha(img)


def _prepare_mode(
    img: Image.Image, fmt: ImageFormat, background: tuple[int, int, int]
) -> Image.Image:
    """Convert to a mode the target format can hold, flattening alpha onto `background`."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        if fmt.pil_name in ("PNG", "TIFF"):
            return img
        img = img.point(lambda v: v / 256).convert("L")
        mode = "L"
    if mode == "F":
        img = img.convert("L")
        mode = "L"
    if mode == "CMYK" and fmt.pil_name not in ("JPEG", "TIFF"):
        img = img.convert("RGB")
        img.info.pop("icc_profile", None)  # a CMYK profile on RGB pixels would be a lie
        mode = "RGB"
    alpha = _has_alpha(img)
    if alpha and not fmt.supports_alpha:
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, background)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        flat.info = dict(img.info)
        flat.info.pop("transparency", None)
        return flat
    if fmt.pil_name == "JPEG" and mode not in ("RGB", "L", "CMYK"):
        return img.convert("RGB")
    if fmt.pil_name in ("WEBP", "AVIF", "HEIF") and mode not in ("RGB", "RGBA"):
        return img.convert("RGBA" if alpha else "RGB")
    if fmt.pil_name == "BMP" and mode not in ("RGB", "L", "P", "1"):
        return img.convert("RGB")
    if fmt.pil_name == "ICO" and mode not in ("RGBA", "RGB"):
        return img.convert("RGBA" if alpha else "RGB")
    return img


def encode_image(
    img: Image.Image,
    fmt: ImageFormat | str,
    *,
    quality: int | None = None,
    keep_metadata: bool = True,
    frames: list[Image.Image] | None = None,
    durations: list[int] | None = None,
    loop: int | None = 0,
    background: tuple[int, int, int] = (255, 255, 255),
    **options: Any,
) -> bytes:
    """Encode `img` (or the animation `[img, *frames]`) as `fmt` and return the bytes.

    The ICC profile always travels with the pixels where the format can hold it (colours stay
    right); EXIF travels too when `keep_metadata`. `quality` falls back to the format default.
    """
    if isinstance(fmt, str):
        fmt = format_by_name(fmt)
    if fmt.pil_name == "HEIF":
        _ensure_heif()
    first = _prepare_mode(img, fmt, background)
    params: dict[str, Any] = {}
    if fmt.has_quality:
        params["quality"] = quality if quality is not None else DEFAULT_QUALITY.get(fmt.name, 85)
    icc = first.info.get("icc_profile")
    if icc and fmt.supports_icc:
        params["icc_profile"] = icc
    if keep_metadata and fmt.supports_exif:
        exif = first.info.get("exif")
        if exif:
            params["exif"] = exif
    if fmt.pil_name == "JPEG":
        params.setdefault("optimize", False)
    if frames:
        if not fmt.supports_animation:
            raise AnimatedImageError(
                f"{fmt.name} cannot hold an animation; choose gif, webp, png or avif",
                details={"format": fmt.name},
            )
        params.update(
            save_all=True,
            append_images=[_prepare_mode(f, fmt, background) for f in frames],
            duration=durations or 100,
        )
        if loop is not None:
            params["loop"] = loop
    params.update(options)
    out = io.BytesIO()
    first.save(out, format=fmt.pil_name, **params)
    return out.getvalue()
