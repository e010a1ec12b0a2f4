"""Safe image decoding and encoding: the only place pixmill hands bytes to a decoder.

Decoding is refused unless the bytes' magic matches a format on the allow-list, and Pillow is
told to try only that one decoder, so a PostScript, PDF, FITS or PSD file renamed to `.png`
never reaches a decoder (and Ghostscript is never run). Sizes are checked from the header
before any pixel is decoded. Before Pillow parses anything, the container's structure is
walked (frames, pages, chunks, scans, embedded icons) so that a small file cannot make the
parser or decoder spend seconds or hundreds of MB. Whatever a decoder raises on bad bytes
becomes a 413 or 422. JPEG inputs can be decoded at reduced size (DCT scaling) when the
caller says how small it needs them.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image, ImageFile, ImageOps

from pixmill.core.errors import (
    AnimatedImageError,
    BadRequestError,
    ImageTooLargeError,
    InvalidImageError,
    PixmillError,
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
# Files a tool may return that are not images (`OutputKind.FILE`): never decoded, never accepted
# as inputs, only stored and served with their media type.
DOCUMENT_FORMATS: dict[str, ImageFormat] = {
    f.name: f
    for f in (
        ImageFormat("zip", "", "zip", "application/zip", False, False, False, False, False),
        ImageFormat("pdf", "", "pdf", "application/pdf", False, False, False, False, False),
        ImageFormat("svg", "", "svg", "image/svg+xml", False, False, False, False, False),
        ImageFormat("json", "", "json", "application/json", False, False, False, False, False),
    )
}
FORMAT_ALIASES = {"jpeg": "jpg", "tif": "tiff", "jpe": "jpg"}
OUTPUT_FORMAT_NAMES = tuple(FORMATS)

DEFAULT_QUALITY = {"jpg": 85, "webp": 80, "avif": 60, "heic": 60, "heif": 60}

# Largest side each container can record; bigger outputs are refused before the encoder fails.
MAX_SIDE = {"JPEG": 65_535, "WEBP": 16_383, "GIF": 65_535, "AVIF": 65_536, "HEIF": 65_536}

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


def result_format_by_name(name: str) -> ImageFormat:
    """An image format or a document format (zip, pdf, svg, json) a tool's result may have."""
    document = DOCUMENT_FORMATS.get(name.lower().lstrip("."))
    return document if document is not None else format_by_name(name)


def sniff_document(data: bytes, accepted: tuple[str, ...]) -> ImageFormat | None:
    """The document format (`pdf`, `svg`) of a file a tool accepts besides images, or None."""
    if "pdf" in accepted and data[:5] == b"%PDF-":
        return DOCUMENT_FORMATS["pdf"]
    if "svg" in accepted:
        head = data[:65536].lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith((b"<?xml", b"<svg", b"<!--", b"<!DOCTYPE")) and b"<svg" in head:
            return DOCUMENT_FORMATS["svg"]
    return None


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

# Budgets on the structures Pillow walks in Python before (or instead of) handing work to C.
# Each is far above what any real encoder writes and far below what makes a small file cost
# seconds of CPU or hundreds of MB of bookkeeping (measured: a 91 KB progressive JPEG with
# 1000 scans took 17 s to decode; a 12 MB PNG of a million empty chunks took 5 s and 150 MB).
MAX_JPEG_SCANS = 64
_MAX_JPEG_SEGMENTS = 65_536
_MAX_PNG_CHUNKS = 100_000
_MAX_TIFF_DIRECTORIES = 65_536
_MAX_TIFF_STRIPS = 65_536
_TIFF_STRIP_OFFSETS = 273
_TIFF_TILE_OFFSETS = 324
_GIF_BASE_STEPS = 65_536
# Pillow decodes run-length-encoded BMPs in Python, byte by byte: 4 Mpx is ~0.5 s worst case.
MAX_RLE_BMP_PIXELS = 4_194_304


@dataclass(frozen=True)
class _Structure:
    """What walking the container established, kept on the opened image (`_STRUCTURE`)."""

    frames: int
    # The largest frame or page, when frames may differ in size (GIF frames can grow the
    # canvas, TIFF pages each have their own size): Pillow resizes the image as it seeks.
    largest: tuple[int, int] | None = None


_STRUCTURE = "_pixmill_structure"


@contextmanager
def _decoding(failure: str, fmt: str | None = None) -> Iterator[None]:
    """Turn whatever a decoder raises on hostile bytes into a 413 or a 422.

    Pillow's decoders answer malformed input with many exception types: besides OSError,
    SyntaxError, ValueError and EOFError, fuzzing found IndexError, TypeError, struct.error and
    libavif's RuntimeError. None of them may escape as a 500.
    """
    try:
        yield
    except PixmillError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"the image is too large to decode: {exc}") from exc
    except MemoryError as exc:
        raise ImageTooLargeError(
            "the image is too large to decode with the memory available"
        ) from exc
    except Exception as exc:
        raise InvalidImageError(
            f"{failure}: {str(exc) or type(exc).__name__}",
            details={"format": fmt} if fmt else {},
        ) from exc


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
    return decode_opened(
        open_lazily(data, limits), draft_size=draft_size, allow_animation=allow_animation
    )


def decode_opened(
    img: Image.Image,
    *,
    draft_size: tuple[int, int] | None = None,
    allow_animation: bool = False,
) -> Image.Image:
    """Finish what `open_image` does for an image already opened (and checked) by
    `open_lazily`, so a caller that read the header first does not parse the file twice."""
    frames = frame_count(img)
    if not allow_animation and frames > 1:
        raise AnimatedImageError(
            f"this tool works on still images and the input is animated ({frames} frames); "
            "it was refused rather than flattened to its first frame",
            details={"frames": frames},
        )
    if draft_size is not None and img.format in ("JPEG", "MPO"):
        width, height = draft_size
        if _orientation(img) in _SWAPS_AXES:
            width, height = height, width
        # draft() only chooses a DCT scale that keeps the image at least this large.
        with _decoding("the JPEG cannot be decoded at reduced size", "jpg"):
            img.draft(img.mode if img.mode in ("RGB", "L", "CMYK") else "RGB", (width, height))
    _load(img)
    return _upright(img)


def iter_frames(data: bytes, limits: ImageLimits) -> Iterator[tuple[Image.Image, int]]:
    """Yield each frame of a (possibly animated) image as an upright RGBA/RGB copy with its
    duration in ms (a still image yields one frame)."""
    img = open_lazily(data, limits)
    frames = frame_count(img)
    structure = getattr(img, _STRUCTURE, None)
    width, height = img.size
    if isinstance(structure, _Structure) and structure.largest is not None:
        width, height = structure.largest
    if frames * width * height > limits.max_pixels * 4:
        raise ImageTooLargeError(
            f"the animation holds {frames} frames of up to {width}x{height} pixels, more than "
            "this server decodes",
            details={"frames": frames, "width": width, "height": height},
        )
    orientation = _orientation(img)
    for index in range(frames):
        # The yield stays outside the guard: errors raised in the consumer are not ours.
        with _decoding("the animation could not be decoded"):
            if index:
                img.seek(index)
            converted = img.convert("RGBA" if _has_alpha(img) else "RGB")
            # Read after decoding: WebP and AVIF only know a frame's duration once it is loaded.
            duration = int(img.info.get("duration", 100) or 100)
            converted.info = dict(img.info)
        yield (_upright(converted) if orientation != 1 else converted), duration


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, before any pixel is decoded; sizes are as displayed (upright)."""

    width: int
    height: int
    frames: int
    mode: str


def read_header(data: bytes, limits: ImageLimits) -> ImageHeader:
    return header_of(open_lazily(data, limits))


def header_of(img: Image.Image) -> ImageHeader:
    """The header of an image opened by `open_lazily` (no pixel decoded)."""
    width, height = img.size
    if _orientation(img) in _SWAPS_AXES:
        width, height = height, width
    return ImageHeader(width, height, frame_count(img), img.mode)


def open_lazily(data: bytes, limits: ImageLimits, *, enforce_limits: bool = True) -> Image.Image:
    """Open the header only, with the sniffed format's decoder alone; no pixel is decoded.

    Before Pillow sees the bytes, the file's structure is walked (without decoding) so that
    inputs which would make Pillow's own parsing slow or memory-hungry are refused, and so
    that no pixel is decoded at open time beyond `limits` (ICO decodes its icon on open).

    `enforce_limits=False` is for readers that never decode (e.g. the info extractor): they
    may report the size of an image this server would refuse to process.
    """
    fmt = sniff_format(data)
    if fmt.pil_name == "HEIF":
        _ensure_heif()
    structure = _check_structure(fmt, data, limits, enforce_limits)
    if Image.MAX_IMAGE_PIXELS is not None and limits.max_pixels > Image.MAX_IMAGE_PIXELS:
        # Pillow's process-wide cap (~89 Mpx, error above twice that) must not undercut a
        # higher PIXMILL_MAX_IMAGE_PIXELS: the configured limit, checked below, is the rule.
        Image.MAX_IMAGE_PIXELS = limits.max_pixels
    with (
        warnings.catch_warnings(),
        _decoding(f"the file looks like {fmt.pil_name} but cannot be read", fmt.name),
    ):
        # Pillow warns between its own MAX_IMAGE_PIXELS (~89 Mpx) and twice that; our limit,
        # checked below, is the one that counts (Pillow's error above 2x still stands).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data), formats=[fmt.pil_name])
    if structure is not None:
        setattr(img, _STRUCTURE, structure)
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
            raise _too_many_frames(frames, limits)
    return img


def frame_count(img: Image.Image) -> int:
    """Frames in a lazily opened image (1 for stills); a broken frame table is 422."""
    structure = getattr(img, _STRUCTURE, None)
    if isinstance(structure, _Structure):
        return structure.frames
    with _decoding("the image's frames cannot be read"):
        return int(getattr(img, "n_frames", 1))


def _load(img: Image.Image) -> None:
    with _decoding("the image data is corrupt or truncated"):
        img.load()


def _too_many_frames(frames: int, limits: ImageLimits) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"the image has {frames} frames; this server accepts at most {limits.max_frames}",
        details={"frames": frames, "maxFrames": limits.max_frames},
    )


def _abnormal(fmt: ImageFormat, what: str) -> InvalidImageError:
    return InvalidImageError(
        f"the {fmt.pil_name} file is malformed: {what}; it was refused before decoding",
        details={"format": fmt.name},
    )


def _check_structure(
    fmt: ImageFormat, data: bytes, limits: ImageLimits, enforce_limits: bool
) -> _Structure | None:
    """Walk the container (no decoding) and refuse what would make decoding a bomb.

    Returns what the walk established (GIF, TIFF, JPEG), else None. The walks are lenient:
    anything they do not understand is left for the decoder to reject.
    """
    enforced = limits if enforce_limits else None
    if fmt.pil_name == "JPEG":
        _check_jpeg(fmt, data)
        # A multi-picture JPEG (MPO) holds alternates (stereo pair, depth map, preview), not
        # an animation: only its primary picture is ever decoded.
        return _Structure(frames=1)
    if fmt.pil_name == "PNG":
        _check_png(fmt, data)
    elif fmt.pil_name == "GIF":
        return _walk_gif(fmt, data, enforced)
    elif fmt.pil_name == "TIFF":
        return _walk_tiff(fmt, data, enforced)
    elif fmt.pil_name == "ICO":
        _check_ico(fmt, data, limits)
    elif fmt.pil_name == "BMP" and enforce_limits:
        _check_bmp(data, 14)
    return None


def _check_jpeg(fmt: ImageFormat, data: bytes) -> None:
    """Count the primary picture's segments and scans (SOS markers) up to its EOI.

    libjpeg re-walks the whole coefficient buffer once per progressive scan, so the scan
    count multiplies the decoding time; Pillow walks the header segments (and stray bytes
    between them, one at a time) in Python and keeps every APPn segment in a list.
    """
    end = len(data)
    pos = 2
    steps = scans = 0
    in_scan = progressive = False
    while pos + 1 < end:
        steps += 1
        if steps > _MAX_JPEG_SEGMENTS:
            raise _abnormal(fmt, f"more than {_MAX_JPEG_SEGMENTS:,} segments or stray bytes")
        if data[pos] != 0xFF:
            if in_scan:
                found = _JPEG_NEXT_MARKER.search(data, pos)
                if found is None:
                    return
                pos = found.start()
            else:
                next_marker = data.find(b"\xff", pos)
                if next_marker < 0:
                    return
                steps += next_marker - pos
                pos = next_marker
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in (0x00, 0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without length
            pos += 2
        elif marker == 0xD9:  # end of the primary picture: the rest is never decoded here
            return
        else:
            if pos + 4 > end:
                return
            if marker in _PROGRESSIVE_SOF:
                progressive = True
            if marker == 0xDA:
                if not progressive:
                    # A sequential frame holds at most one scan per component; libjpeg refuses
                    # extra scans at once, so the (costly) walk through the entropy-coded data
                    # is only needed for progressive frames.
                    return
                scans += 1
                if scans > MAX_JPEG_SCANS:
                    raise _abnormal(fmt, f"more than {MAX_JPEG_SCANS} progressive scans")
                in_scan = True
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")


# SOF markers of progressive frames (Huffman and arithmetic, plain and differential).
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})

# The next marker inside entropy-coded data: 0xFF not followed by a stuffed 0x00, a restart
# marker or another 0xFF (fill).
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _check_png(fmt: ImageFormat, data: bytes) -> None:
    """Pillow handles each chunk in Python and keeps every private chunk: count them."""
    pos, end, chunks = 8, len(data), 0
    while pos + 8 <= end:
        chunks += 1
        if chunks > _MAX_PNG_CHUNKS:
            raise _abnormal(fmt, f"more than {_MAX_PNG_CHUNKS:,} chunks")
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IEND":
            return
        pos += 12 + length


# Where the next GIF block may start after stray bytes (Pillow skips them one at a time).
_GIF_BLOCK_START = re.compile(rb"[!,;]")


def _walk_gif(fmt: ImageFormat, data: bytes, limits: ImageLimits | None) -> _Structure:
    """Count image descriptors by walking GIF blocks as Pillow's frame seeking does, and find
    the canvas the frames really need.

    Pillow reads every data sub-block (1 to 255 bytes) and every stray byte with a Python
    call, and keeps each comment sub-block in a list: a file of tiny sub-blocks is cheap to
    send and costly to open, so the walk has a budget proportional to the file's size. And a
    frame that reaches past the logical screen grows the image when Pillow seeks to it,
    after the size was checked: the largest extent is checked here instead.
    """
    end = len(data)
    if end < 13:
        return _Structure(frames=1)  # too short to hold a frame: left for the decoder
    budget = _GIF_BASE_STEPS + end // 128
    steps = frames = 0
    canvas_w = int.from_bytes(data[6:8], "little")
    canvas_h = int.from_bytes(data[8:10], "little")
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)

    def skip_sub_blocks(at: int) -> int:
        nonlocal steps
        while at < end:
            steps += 1
            if steps > budget:
                raise _abnormal(fmt, "too many data sub-blocks or stray bytes for its size")
            size = data[at]
            at += 1 + size
            if size == 0:
                break
        return at

    while pos < end:
        steps += 1
        tag = data[pos]
        if tag == 0x3B:  # trailer
            break
        if tag == 0x21:  # extension: a label, then sub-blocks
            pos = skip_sub_blocks(pos + 2)
        elif tag == 0x2C:  # image descriptor
            frames += 1
            if pos + 10 > end:
                break
            left, top, width, height = struct.unpack_from("<4H", data, pos + 1)
            canvas_w, canvas_h = max(canvas_w, left + width), max(canvas_h, top + height)
            if limits is not None:
                if frames > limits.max_frames:
                    raise _too_many_frames(frames, limits)
                _check_pixels(canvas_w, canvas_h, limits, "a frame of the animation reaches")
            packed = data[pos + 9]
            pos += 10 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
            pos = skip_sub_blocks(pos + 1)  # after the LZW minimum code size
        else:
            found = _GIF_BLOCK_START.search(data, pos)
            next_block = found.start() if found else end
            steps += next_block - pos
            pos = next_block
        if steps > budget:
            raise _abnormal(fmt, "too many data sub-blocks or stray bytes for its size")
    return _Structure(frames=max(frames, 1), largest=(canvas_w, canvas_h))


def _walk_tiff(fmt: ImageFormat, data: bytes, limits: ImageLimits | None) -> _Structure:
    """Follow the IFD chain as Pillow does: count the pages and check each page's size.

    Pillow looks each new offset up in a list (quadratic: 100,000 pages took 90 s) and parses
    every directory entry in Python, so directories that overlap each other (no real file
    does that) would let a small file make it parse millions of entries. Each page has its
    own size, which Pillow takes on when it seeks there, after the first page was checked.
    """
    end = len(data)
    if end < 8:
        return _Structure(frames=1)
    order: Literal["little", "big"] = "little" if data[:2] == b"II" else "big"
    prefix = "<" if order == "little" else ">"
    offset = int.from_bytes(data[4:8], order)
    seen: set[int] = set()
    entries = 0
    largest = (0, 0)
    while offset and offset not in seen and offset + 2 <= end:
        seen.add(offset)
        if limits is not None and len(seen) > limits.max_frames:
            raise _too_many_frames(len(seen), limits)
        if len(seen) > _MAX_TIFF_DIRECTORIES:
            raise _abnormal(fmt, f"more than {_MAX_TIFF_DIRECTORIES:,} image directories")
        count = int.from_bytes(data[offset : offset + 2], order)
        entries += count
        if entries * 12 > end:
            raise _abnormal(
                fmt, "its image directories hold more entries than the file has room for"
            )
        size = {256: 0, 257: 0}
        for entry in range(offset + 2, min(offset + 2 + 12 * count, end - 11), 12):
            tag, kind, values = struct.unpack_from(prefix + "HHI", data, entry)
            if tag > _TIFF_TILE_OFFSETS:
                break  # entries are sorted by tag: the ones looked at here come first
            if tag in size:
                value_format = prefix + ("H" if kind == 3 else "I")
                size[tag] = struct.unpack_from(value_format, data, entry + 8)[0]
            elif tag in (_TIFF_STRIP_OFFSETS, _TIFF_TILE_OFFSETS) and values > _MAX_TIFF_STRIPS:
                # Pillow builds a Python tile per strip of an uncompressed page.
                raise _abnormal(fmt, f"a page has more than {_MAX_TIFF_STRIPS:,} strips or tiles")
        if size[256] * size[257] > largest[0] * largest[1]:
            largest = (size[256], size[257])
        if limits is not None:
            _check_pixels(size[256], size[257], limits, f"page {len(seen)} is")
        next_at = offset + 2 + 12 * count
        if next_at + 4 > end:
            break
        offset = int.from_bytes(data[next_at : next_at + 4], order)
    return _Structure(frames=max(len(seen), 1), largest=largest if largest[0] else None)


def _check_pixels(width: int, height: int, limits: ImageLimits, what: str) -> None:
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"{what} {width}x{height} ({width * height:,} pixels); this server decodes at most "
            f"{limits.max_pixels:,} pixels",
            details={"width": width, "height": height, "maxPixels": limits.max_pixels},
        )


def _check_ico(fmt: ImageFormat, data: bytes, limits: ImageLimits) -> None:
    """Check every icon's real size: the directory's 1-byte sizes say nothing about the PNG
    or BMP inside, and Pillow decodes the largest icon while opening the file."""
    if len(data) < 6:
        return
    count = int.from_bytes(data[4:6], "little")
    for index in range(count):
        entry = 6 + 16 * index
        if entry + 16 > len(data):
            return
        offset = int.from_bytes(data[entry + 12 : entry + 16], "little")
        if data[offset : offset + 8] == b"\x89PNG\r\n\x1a\n":
            width = int.from_bytes(data[offset + 16 : offset + 20], "big")
            height = int.from_bytes(data[offset + 20 : offset + 24], "big")
        else:
            # The height of an icon's bitmap counts its AND mask too: halve it.
            width, height = _check_bmp(data, offset, height_scale=2)
        _check_pixels(width, height, limits, "the icon holds an image of")


def _check_bmp(data: bytes, dib_offset: int, height_scale: int = 1) -> tuple[int, int]:
    """The bitmap's size from its DIB header; run-length-encoded ones have their own cap."""
    header = data[dib_offset : dib_offset + 20]
    if len(header) < 20:
        return 0, 0
    header_size = int.from_bytes(header[0:4], "little")
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes, never compressed
        return (
            int.from_bytes(header[4:6], "little"),
            int.from_bytes(header[6:8], "little") // height_scale,
        )
    width = abs(int.from_bytes(header[4:8], "little", signed=True))
    height = abs(int.from_bytes(header[8:12], "little", signed=True)) // height_scale
    compression = int.from_bytes(header[16:20], "little")
    if compression in (1, 2) and width * height > MAX_RLE_BMP_PIXELS:
        raise ImageTooLargeError(
            f"the run-length-encoded bitmap is {width}x{height}; such bitmaps are decoded by a "
            f"slow path and this server accepts them up to {MAX_RLE_BMP_PIXELS:,} pixels",
            details={"width": width, "height": height, "maxPixels": MAX_RLE_BMP_PIXELS},
        )
    return width, height


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
    """The EXIF orientation still to be applied to `img` (1: none)."""
    if img.format == "TIFF":
        # Pillow orients TIFF pages itself: the size it reports is already upright, and
        # load() turns the pixels and drops the tag. Applying it again would undo that.
        return 1
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
        converted = img.convert("RGBA" if alpha else "RGB")
        if mode in ("L", "LA", "I", "1"):
            converted.info.pop("icc_profile", None)  # a grey profile on RGB pixels would be a lie
        return converted
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
    max_side = MAX_SIDE.get(fmt.pil_name)
    if max_side is not None and max(img.size) > max_side:
        raise BadRequestError(
            f"{fmt.name} images can be at most {max_side} pixels on a side; the result is "
            f"{img.width}x{img.height}. Choose a smaller size or another format (png, tiff)",
            code="OUTPUT_TOO_LARGE",
            details={"width": img.width, "height": img.height, "maxSide": max_side},
        )
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
    if fmt.pil_name == "ICO":
        # Pillow's default icon sizes are squares: a 64x48 image would come back as 48x36.
        # An icon holds at most 256x256; larger images are shrunk to fit, keeping their shape.
        params["sizes"] = [(min(first.width, 256), min(first.height, 256))]
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
