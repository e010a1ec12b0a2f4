"""The decode path against hostile files, and the encode path's promises.

Every file here is built by the test: valid samples from Pillow's encoders, then truncated,
mutated, mislabelled, or crafted byte by byte into bombs. The promise under test: whatever the
bytes, `sniff_format`, `open_image`, `read_header` and `iter_frames` either succeed or raise a
`PixmillError` (400/413/415/422), and bombs are refused quickly in bounded memory.
"""

from __future__ import annotations

import io
import json
import math
import random
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import EpsImagePlugin, Image, ImageChops, ImageDraw, ImageStat, PsdImagePlugin

from pixmill.core.contracts import InputFile
from pixmill.core.errors import (
    AnimatedImageError,
    BadRequestError,
    ImageTooLargeError,
    InvalidImageError,
    PixmillError,
    UnsupportedFormatError,
)
from pixmill.core.imageio import (
    FORMATS,
    MAX_JPEG_SCANS,
    ImageLimits,
    encode_image,
    format_by_name,
    iter_frames,
    open_image,
    open_lazily,
    read_header,
    sniff_format,
)
from pixmill.testing import images

# Pillow warns (UserWarning) about much of the damage done to files here; that is expected.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LIMITS = ImageLimits(max_pixels=50_000_000, max_frames=200)
# Mutated headers can declare any size: keep what a fuzzed file may decode small.
FUZZ_LIMITS = ImageLimits(max_pixels=4_000_000, max_frames=50)


# --- samples ---------------------------------------------------------------------------------


def _save(img: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **params)
    return out.getvalue()


def _animation(fmt: str, **params: Any) -> bytes:
    frames = [images.photo(40, 30, seed=seed) for seed in range(3)]
    return _save(
        frames[0], fmt, save_all=True, append_images=frames[1:], duration=[80, 90, 100], **params
    )


@cache
def samples() -> dict[str, bytes]:
    """One or more valid files of every format the allow-list accepts."""
    photo = images.photo(48, 32)
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    return {
        "jpeg": images.jpeg(48, 32),
        "jpeg-progressive": _save(photo, "JPEG", progressive=True, quality=90),
        "jpeg-exif": images.exif_rotated_jpeg(40, 30, orientation=6),
        "png": images.png(48, 32),
        "png-animated": _animation("PNG"),
        "gif": _save(photo, "GIF"),
        "gif-animated": images.animated_gif(24, 16, 4),
        "webp": _save(photo, "WEBP", quality=80),
        "webp-lossless-alpha": _save(rgba, "WEBP", lossless=True),
        "webp-animated": _animation("WEBP"),
        "tiff": _save(photo, "TIFF", compression="tiff_lzw"),
        "tiff-raw-multipage": _save(
            photo, "TIFF", save_all=True, append_images=[images.photo(20, 10)]
        ),
        "bmp": _save(photo, "BMP"),
        "bmp-palette": _save(photo.convert("P"), "BMP"),
        "ico": _save(rgba, "ICO", sizes=[(32, 32), (16, 16)]),
        "avif": _save(photo, "AVIF", quality=60),
        "heic": encode_image(photo, "heic"),
    }


SAMPLE_NAMES = sorted(samples())
ALLOWED_FORMATS = ("jpg", "png", "gif", "webp", "tiff", "bmp", "ico", "avif", "heic")


def sample(name: str) -> bytes:
    return samples()[name]


def sniffable(data: bytes) -> bool:
    try:
        sniff_format(data)
    except PixmillError:
        return False
    return True


def attempt(call: Callable[[], object]) -> PixmillError | None:
    """Run a decode; a PixmillError is an answer, any other exception fails the test."""
    try:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    except PixmillError as exc:
        return exc
    return None


def exercise(data: bytes, limits: ImageLimits = FUZZ_LIMITS) -> list[PixmillError | None]:
    """Every entry point of the decode path on the same bytes."""
    return [
        attempt(lambda: sniff_format(data)),
        attempt(lambda: open_image(data, limits)),
        attempt(lambda: open_image(data, limits, allow_animation=True, draft_size=(8, 8))),
        attempt(lambda: read_header(data, limits)),
        attempt(lambda: iter_frames(data, limits)),
        attempt(lambda: open_lazily(data, limits, enforce_limits=False)),
    ]


def test_every_allowed_format_has_a_sample_that_decodes() -> None:
    covered = {sniff_format(data).name for data in samples().values()}
    assert covered == set(ALLOWED_FORMATS)
    for name, data in samples().items():
        img = open_image(data, LIMITS, allow_animation=True)
        assert img.width > 0 and img.height > 0, name
        assert all(error is None for error in exercise(data, LIMITS)[3:]), name


# --- corrupt and truncated files ---------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_truncated_files_are_refused_with_422_or_decoded(name: str) -> None:
    data = sample(name)
    size = len(data)
    cuts = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, size // 4, size // 3, size // 2}
    cuts |= {2 * size // 3, 3 * size // 4, size - 16, size - 2, size - 1}
    for cut in sorted(c for c in cuts if 0 < c < size):
        piece = data[:cut]
        error = attempt(lambda piece=piece: open_image(piece, LIMITS, allow_animation=True))
        if not sniffable(piece):
            assert isinstance(error, UnsupportedFormatError), (name, cut, error)
        else:
            assert error is None or isinstance(error, InvalidImageError), (name, cut, error)
        assert all(
            e is None
            or isinstance(e, InvalidImageError | UnsupportedFormatError | AnimatedImageError)
            for e in exercise(piece, LIMITS)
        ), (name, cut)


@pytest.mark.parametrize(
    "name", ["jpeg", "png", "gif", "webp", "tiff", "bmp", "avif", "heic", "ico"]
)
def test_a_file_cut_in_half_is_refused_never_half_decoded(name: str) -> None:
    data = sample(name)
    with pytest.raises(InvalidImageError) as caught:
        open_image(data[: len(data) // 2], LIMITS)
    assert caught.value.status == 422
    assert caught.value.code == "INVALID_IMAGE"


MAGICS = {
    "jpg": b"\xff\xd8\xff",
    "png": b"\x89PNG\r\n\x1a\n",
    "gif": b"GIF89a",
    "webp": b"RIFF\x10\x00\x00\x00WEBPVP8 ",
    "tiff": b"II*\x00",
    "tiff-be": b"MM\x00*",
    "bmp": b"BM",
    "ico": b"\x00\x00\x01\x00",
    "avif": b"\x00\x00\x00\x1cftypavif",
    "heic": b"\x00\x00\x00\x18ftypheic",
}


@pytest.mark.parametrize("magic", sorted(MAGICS))
def test_random_bytes_after_a_valid_magic_are_refused(magic: str) -> None:
    rng = random.Random(magic)
    for length in (0, 1, 7, 30, 200, 5000):
        for _ in range(8):
            data = MAGICS[magic] + rng.randbytes(length)
            assert sniff_format(data).name in FORMATS
            error = attempt(lambda data=data: open_image(data, LIMITS))
            # Random header fields may declare a huge size: refusing that as 413 is right too.
            assert isinstance(error, InvalidImageError | ImageTooLargeError), (magic, length)
            exercise(data)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_flipped_bytes_in_the_middle_give_422_or_an_image(name: str) -> None:
    data = sample(name)
    for start_fraction in (0.3, 0.5, 0.7, 0.9):
        for run in (1, 4, 64):
            start = int(len(data) * start_fraction)
            flipped = bytearray(data)
            for i in range(start, min(start + run, len(data))):
                flipped[i] ^= 0xFF
            mutated = bytes(flipped)
            error = attempt(lambda mutated=mutated: open_image(mutated, LIMITS))
            assert error is None or isinstance(
                error, InvalidImageError | ImageTooLargeError | AnimatedImageError
            ), (name, start, run, error)
            if error is None:
                img = open_image(mutated, LIMITS)
                assert img.size == open_image(data, LIMITS, allow_animation=True).size
            exercise(mutated)


# Each of these made an exception other than PixmillError escape the decode path (found by
# fuzzing); rebuilt here from a valid file by the same kind of damage.


def _second_gif_frame_at(data: bytes) -> int:
    first = data.index(b",")  # the first image descriptor: no ',' earlier in this sample
    return data.index(b"\x00,", first + 10) + 1


def test_gif_ending_inside_a_frame_descriptor_is_422() -> None:
    data = sample("gif-animated")
    cut = data[: _second_gif_frame_at(data) + 5]  # the 9-byte descriptor is incomplete
    assert isinstance(attempt(lambda: iter_frames(cut, LIMITS)), InvalidImageError)
    refusals = InvalidImageError | AnimatedImageError  # frame 1 is whole: 2 frames are seen
    assert all(e is None or isinstance(e, refusals) for e in exercise(cut, LIMITS))


def test_gif_ending_on_an_extension_introducer_is_handled() -> None:
    data = sample("gif-animated")
    cut = data[: _second_gif_frame_at(data)] + b"!"
    exercise(cut, LIMITS)
    header = read_header(cut, LIMITS)
    assert header.frames == 1


def test_tiff_page_without_dimensions_is_422() -> None:
    data = bytearray(sample("tiff-raw-multipage"))
    second = _tiff_ifd_offsets(bytes(data))[1]
    entries = int.from_bytes(data[second : second + 2], "little")
    for entry in range(second + 2, second + 2 + 12 * entries, 12):
        if int.from_bytes(data[entry : entry + 2], "little") == 256:  # ImageWidth
            data[entry : entry + 2] = (255).to_bytes(2, "little")  # now SubfileType
    broken = bytes(data)
    error = attempt(lambda: iter_frames(broken, LIMITS))
    assert isinstance(error, InvalidImageError)
    assert read_header(broken, LIMITS).frames == 2


def test_avif_with_corrupt_image_data_is_422() -> None:
    data = bytearray(sample("avif"))
    mdat = data.index(b"mdat") + 4
    for i in range(mdat, len(data)):
        data[i] ^= 0x5A
    broken = bytes(data)
    assert isinstance(attempt(lambda: open_image(broken, LIMITS)), InvalidImageError)
    exercise(broken, LIMITS)


def test_avif_without_its_image_item_is_422() -> None:
    data = sample("avif")
    meta = data.index(b"meta") - 4
    meta_size = int.from_bytes(data[meta : meta + 4], "big")
    # Keep the ftyp and meta boxes, drop the media data the meta box points into.
    broken = data[: meta + meta_size]
    assert isinstance(attempt(lambda: open_image(broken, LIMITS)), InvalidImageError)
    exercise(broken, LIMITS)


def _tiff_ifd_offsets(data: bytes) -> list[int]:
    order = "little" if data[:2] == b"II" else "big"
    offsets, offset = [], int.from_bytes(data[4:8], order)
    while offset:
        offsets.append(offset)
        count = int.from_bytes(data[offset : offset + 2], order)
        at = offset + 2 + 12 * count
        offset = int.from_bytes(data[at : at + 4], order)
    return offsets


# --- fuzzing -----------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes(data: bytes) -> None:
    results = exercise(data)
    if not sniffable(data):
        assert all(isinstance(e, UnsupportedFormatError | BadRequestError) for e in results)


@FUZZ
@given(st.sampled_from(sorted(MAGICS)), st.binary(min_size=0, max_size=4096))
def test_fuzz_random_bytes_behind_a_valid_magic(magic: str, tail: bytes) -> None:
    exercise(MAGICS[magic] + tail)


_MUTATION = st.tuples(
    st.floats(min_value=0, max_value=1, exclude_max=True),
    st.sampled_from(["set", "insert", "delete", "int32"]),
    st.integers(min_value=0, max_value=255),
    st.sampled_from([0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]),
)


def _mutate(data: bytes, mutations: list[tuple[float, str, int, int]], cut: float) -> bytes:
    out = bytearray(data)
    for where, how, byte, number in mutations:
        if not out:
            break
        i = int(where * len(out))
        if how == "set":
            out[i] = byte
        elif how == "insert":
            out[i:i] = bytes([byte]) * (1 + byte % 8)
        elif how == "delete":
            del out[i : i + 1 + byte % 8]
        else:
            out[i : i + 4] = number.to_bytes(4, random.Random(byte).choice(["big", "little"]))
    return bytes(out[: max(1, int(len(out) * cut))])


@FUZZ
@given(
    st.sampled_from(SAMPLE_NAMES),
    st.lists(_MUTATION, min_size=1, max_size=12),
    st.sampled_from([1.0, 1.0, 1.0, 0.97, 0.8, 0.5]),
)
def test_fuzz_mutated_valid_images(
    name: str, mutations: list[tuple[float, str, int, int]], cut: float
) -> None:
    exercise(_mutate(sample(name), mutations, cut))


# --- lying files --------------------------------------------------------------------------------


def test_a_png_named_jpg_is_decoded_as_png(run_tool: Any) -> None:
    data = images.png(64, 48)
    assert InputFile(data, "holiday.jpg", LIMITS).format.name == "png"
    outcome = run_tool("resize", data, filename="holiday.jpg", width=32)
    assert outcome.format is not None and outcome.format.name == "png"
    assert outcome.filename == "holiday.png"
    result = Image.open(io.BytesIO(outcome.data or b""))
    assert result.format == "PNG" and result.size == (32, 24) and result.mode == "RGBA"


def _fits() -> bytes:
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =                    2",
        "NAXIS1  =                    4",
        "NAXIS2  =                    4",
        "END",
    ]
    header = "".join(card.ljust(80) for card in cards).ljust(2880).encode()
    return header + bytes(range(16)).ljust(2880, b"\x00")


def _psd(width: int = 4, height: int = 4) -> bytes:
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    sections = struct.pack(">III", 0, 0, 0)  # colour mode data, image resources, layers
    return header + sections + struct.pack(">H", 0) + bytes(3 * width * height)


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("inside.png", images.tiny())
    return out.getvalue()


def _pillow_writes(fmt: str, mode: str = "RGB", **params: Any) -> bytes:
    return _save(Image.new(mode, (8, 8), 90), fmt, **params)


DOS_EPS_HEADER = b"\xc5\xd0\xd3\xc6"

DANGEROUS = {
    # formats Pillow (or a helper it runs) could decode, none of them on the allow-list
    "eps": lambda: _pillow_writes("EPS"),
    "postscript": lambda: b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n",
    "dos-eps": lambda: DOS_EPS_HEADER + struct.pack("<6I", 30, 40, 0, 0, 0, 0) + b"\0" * 40,
    "pdf": lambda: _pillow_writes("PDF"),
    "pdf-minimal": lambda: b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
    "fits": _fits,
    "psd": _psd,
    "svg": lambda: (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" '
        b'width="10" height="10"><script>alert(1)</script></svg>'
    ),
    "svg-bare": lambda: b'<svg width="10" height="10"/>',
    "html": lambda: b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
    "zip": _zip,
    "elf": lambda: b"\x7fELF\x02\x01\x01\x00" + bytes(56),
    "ppm": lambda: _pillow_writes("PPM"),
    "tga": lambda: _pillow_writes("TGA"),
    "pcx": lambda: _pillow_writes("PCX"),
    "sgi": lambda: _pillow_writes("SGI"),
    "jpeg2000": lambda: _pillow_writes("JPEG2000"),
    "dds": lambda: _pillow_writes("DDS", "RGBA"),
    "xbm": lambda: _pillow_writes("XBM", "1"),
    "msp": lambda: _pillow_writes("MSP", "1"),
    "bigtiff": lambda: b"II+\x00\x08\x00\x00\x00" + bytes(32),
    "text": lambda: b"just some text, not an image\n",
}
# Those Pillow itself recognises when it is not told which decoder to use.
PILLOW_OPENS = {
    "eps": "EPS",
    "postscript": "EPS",
    "pdf": None,  # Pillow writes PDF but cannot read it: a renamed PDF is still refused
    "fits": "FITS",
    "psd": "PSD",
    "ppm": "PPM",
    "tga": "TGA",
    "pcx": "PCX",
    "sgi": "SGI",
    "jpeg2000": "JPEG2000",
    "dds": "DDS",
    "xbm": "XBM",
    "msp": "MSP",
}


@pytest.mark.parametrize("kind", sorted(DANGEROUS))
def test_files_outside_the_allow_list_are_refused_with_415(kind: str, run_tool: Any) -> None:
    data = DANGEROUS[kind]()
    if PILLOW_OPENS.get(kind):
        # The file is real: unrestricted Pillow would hand it to that decoder.
        assert Image.open(io.BytesIO(data)).format == PILLOW_OPENS[kind]
    for call in (
        lambda: sniff_format(data),
        lambda: open_image(data, LIMITS),
        lambda: read_header(data, LIMITS),
        lambda: list(iter_frames(data, LIMITS)),
        lambda: open_lazily(data, LIMITS, enforce_limits=False),
        lambda: InputFile(data, "photo.png", LIMITS).format,
    ):
        with pytest.raises(UnsupportedFormatError) as caught:
            call()
        assert caught.value.status == 415 and caught.value.code == "UNSUPPORTED_FORMAT"
    for name in ("photo.png", "photo.jpg", f"photo.{kind}"):
        with pytest.raises(UnsupportedFormatError):
            run_tool("resize", data, filename=name, width=4)


def test_an_empty_file_is_refused_as_empty() -> None:
    # The existing contract (and the server's tests) answer an empty body with 400 EMPTY_FILE.
    for call in (
        lambda: sniff_format(b""),
        lambda: open_image(b"", LIMITS),
        lambda: read_header(b"", LIMITS),
    ):
        with pytest.raises(BadRequestError) as caught:
            call()
        assert caught.value.status == 400 and caught.value.code == "EMPTY_FILE"


@pytest.fixture
def ghostscript_tripwire(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every way Pillow could reach EPS handling or Ghostscript."""
    reached: list[str] = []
    original_open = EpsImagePlugin.EpsImageFile._open

    def eps_open(self: Any) -> None:
        reached.append("EpsImageFile._open")
        original_open(self)

    def ghostscript(*args: Any, **kwargs: Any) -> Any:
        reached.append("Ghostscript")
        raise OSError("tripwire: Ghostscript would have run")

    def which(*args: Any, **kwargs: Any) -> None:
        reached.append(f"shutil.which{args}")
        return None

    def has_ghostscript() -> bool:
        reached.append("has_ghostscript")
        return True

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", eps_open)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", has_ghostscript)
    monkeypatch.setattr(shutil, "which", which)
    monkeypatch.setattr(EpsImagePlugin.subprocess, "check_call", ghostscript)
    return reached


def test_ghostscript_is_never_reached(ghostscript_tripwire: list[str], run_tool: Any) -> None:
    postscript = [DANGEROUS[kind]() for kind in ("eps", "postscript", "dos-eps")]
    disguised = [b"\x89PNG\r\n\x1a\n" + postscript[0], b"\xff\xd8\xff" + postscript[0]]
    for data in postscript + disguised:
        for name in ("cover.png", "cover.jpg", "cover.eps"):
            with pytest.raises(PixmillError):
                run_tool("resize", data, filename=name, width=4)
        exercise(data, LIMITS)
    assert ghostscript_tripwire == []

    # The tripwire works: unrestricted Pillow walks straight into it with the same bytes.
    img = Image.open(io.BytesIO(postscript[0]))
    with pytest.raises(OSError, match="tripwire"):
        img.load()
    assert ghostscript_tripwire[0] == "EpsImageFile._open"
    assert "Ghostscript" in ghostscript_tripwire


def test_only_the_sniffed_decoder_is_ever_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    reached: list[str] = []
    original = PsdImagePlugin.PsdImageFile._open

    def psd_open(self: Any) -> None:
        reached.append("psd")
        original(self)

    monkeypatch.setattr(PsdImagePlugin.PsdImageFile, "_open", psd_open)
    psd = _psd()
    for data in (psd, b"\x89PNG\r\n\x1a\n" + psd, b"BM" + psd, b"GIF89a" + psd):
        exercise(data, LIMITS)
    assert reached == []
    assert Image.open(io.BytesIO(psd)).format == "PSD" and reached == ["psd"]


# --- decompression bombs -------------------------------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, idat: bytes, *extra: bytes, color_type: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + b"".join(extra)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _deflate_zeros(total: int, block: int = 1 << 20) -> bytes:
    """zlib data that inflates to `total` zero bytes, built without holding them."""
    packer = zlib.compressobj(9)
    zeros = bytes(block)
    parts = []
    for start in range(0, total, block):
        parts.append(packer.compress(zeros[: min(block, total - start)]))
    parts.append(packer.flush())
    return b"".join(parts)


def _inflated_size(data: bytes) -> int:
    """How many bytes zlib data really inflates to, counted without holding them."""
    inflater, size, pending = zlib.decompressobj(), 0, data
    while pending:
        size += len(inflater.decompress(pending, 1 << 22))
        pending = inflater.unconsumed_tail
    return size + len(inflater.flush())


def _real_zero_png(side: int, channels: int = 1) -> bytes:
    # Each row is a filter byte (0) and `side` zero pixels: the stream really inflates to that.
    color_type = {1: 0, 4: 6}[channels]
    return _png(side, side, _deflate_zeros(side * (side * channels + 1)), color_type=color_type)


def _gif(
    width: int, height: int, frames: list[tuple[int, int, int, int]], tail: bytes = b""
) -> bytes:
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    body = b"".join(
        b"," + struct.pack("<HHHHB", *frame, 0) + b"\x02\x02\x44\x01\x00" for frame in frames
    )
    return screen + body + tail + b";"


def _jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(images.jpeg(16, 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _progressive_jpeg_with_scans(extra_scans: int) -> bytes:
    data = _save(Image.new("L", (512, 512), 128), "JPEG", progressive=True)
    last_scan = data[data.rindex(b"\xff\xda") : -2]
    return data[:-2] + last_scan * extra_scans + b"\xff\xd9"


def _tiff(entries: list[tuple[int, int, int, int]], next_offset: int = 0) -> bytes:
    directory = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", *entry) for entry in sorted(entries)
    )
    return b"II*\x00" + struct.pack("<I", 8) + directory + struct.pack("<I", next_offset)


def _tiff_pages(pages: int) -> bytes:
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for page in range(pages):
        entries = [(256, 3, 1, 1), (257, 3, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1)]
        entries += [(262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (279, 4, 1, 1)]
        directory = struct.pack("<H", len(entries))
        directory += b"".join(struct.pack("<HHII", *entry) for entry in entries)
        following = len(out) + len(directory) + 4 if page < pages - 1 else 0
        out += directory + struct.pack("<I", following)
    return bytes(out)


def _tiff_overlapping_directories(count: int = 1000) -> bytes:
    """Directories two bytes apart, each claiming ~65,000 entries of the same bytes."""
    base = 8
    size = base + 2 + 12 * 65_535 + 4 + 16
    data = bytearray(size)
    data[0:8] = b"II*\x00" + struct.pack("<I", base)
    for k in range(count):
        entries = 65_535 - k
        data[base + 2 * k : base + 2 * k + 2] = struct.pack("<H", entries)
        pointer = base + 2 * k + 2 + 12 * entries
        following = base + 2 * (k + 1) if k < count - 1 else 0
        data[pointer : pointer + 4] = struct.pack("<I", following)
    return bytes(data)


def _tiff_many_strips(strips: int) -> bytes:
    offsets_at = 8 + 2 + 12 * 10 + 4 + 16
    counts_at = offsets_at + 4 * strips
    entries = [(256, 3, 1, 16), (257, 4, 1, strips), (258, 3, 1, 8), (259, 3, 1, 1)]
    entries += [(262, 3, 1, 1), (273, 4, strips, offsets_at), (277, 3, 1, 1)]
    entries += [(278, 3, 1, 1), (279, 4, strips, counts_at), (284, 3, 1, 1)]
    head = _tiff(entries)
    pixels_at = len(head)
    return (
        head
        + bytes(offsets_at - len(head))
        + struct.pack("<I", pixels_at) * strips
        + struct.pack("<I", 16) * strips
    )


def _tiff_with_huge_second_page() -> bytes:
    data = bytearray(_tiff_pages(2))
    second = _tiff_ifd_offsets(bytes(data))[1]
    for entry in range(second + 2, second + 2 + 12 * 8, 12):
        if struct.unpack_from("<H", data, entry)[0] in (256, 257):
            struct.pack_into(
                "<HHII", data, entry, struct.unpack_from("<H", data, entry)[0], 4, 1, 60_000
            )
    return bytes(data)


def _ico_holding(png: bytes) -> bytes:
    directory = struct.pack("<HHH", 0, 1, 1) + struct.pack(
        "<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22
    )
    return directory + png


def _rle8_bmp_of_line_ends(width: int, height: int) -> bytes:
    """Each row: one pixel, then end-of-line; Pillow pads the rest of the row in Python."""
    pixels = b"\x01\x05\x00\x00" * height + b"\x00\x01"
    palette = bytes(4 * 256)
    offset = 14 + 40 + len(palette)
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 0, 0, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + dib + palette + pixels


def _jpeg_with_stray_bytes(count: int) -> bytes:
    data = images.jpeg(16, 16)
    app0_end = 4 + int.from_bytes(data[4:6], "big")
    return data[:app0_end] + b"\x01" * count + data[app0_end:]


def _apng_declaring_frames(frames: int) -> bytes:
    actl = _png_chunk(b"acTL", struct.pack(">II", frames, 0))
    return _png(1, 1, zlib.compress(b"\x00\x00"), actl)


def _webp_with_canvas(width: int, height: int) -> bytes:
    tiny = _save(Image.new("RGB", (1, 1)), "WEBP", lossless=True)
    frame = tiny[12:]  # the VP8L chunk
    flags = (
        struct.pack("<I", 0)
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(flags)) + flags + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


_CHILD = r"""
import json, resource, sys, time
from PIL import Image
from pixmill.core.errors import PixmillError
from pixmill.core.imageio import ImageLimits, iter_frames, open_image, read_header
Image.init()  # import every Pillow plugin before measuring
data = open(sys.argv[1], "rb").read()
limits = ImageLimits(max_pixels=int(sys.argv[3]), max_frames=int(sys.argv[4]))
calls = {
    "open_image": lambda: open_image(data, limits, allow_animation=True),
    "read_header": lambda: read_header(data, limits),
    "iter_frames": lambda: list(iter_frames(data, limits)),
}
def hwm():  # the same peak as the kernel keeps it for this process image, as a cross-check
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
hwm_before = hwm()
start = time.perf_counter()
try:
    calls[sys.argv[2]]()
    error = status = None
except PixmillError as exc:
    error, status = type(exc).__name__, exc.status
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"error": error, "status": status, "seconds": seconds, "before": before,
                  "after": after, "hwmBefore": hwm_before, "hwmAfter": hwm()}))
"""

DEFAULT = (100_000_000, 1000)  # the server's default limits (defaults.py)
TOO_LARGE, INVALID = {"ImageTooLargeError"}, {"InvalidImageError"}

BOMBS: dict[str, tuple[Callable[[], bytes], str, tuple[int, int], set[str]]] = {
    "png-100000x100000-header": (
        lambda: _png(100_000, 100_000, zlib.compress(b"\0" * 64)),
        "open_image",
        DEFAULT,
        TOO_LARGE,
    ),
    "png-20000x20000-inflating-to-400MB": (
        lambda: _real_zero_png(20_000),
        "open_image",
        DEFAULT,
        TOO_LARGE,
    ),
    "png-9000x9000-under-pillow-limit-over-ours": (
        lambda: _real_zero_png(9_000),
        "open_image",
        (10_000_000, 1000),
        TOO_LARGE,
    ),
    "gif-65535x65535-screen": (
        lambda: _gif(65_535, 65_535, [(0, 0, 1, 1)]),
        "open_image",
        DEFAULT,
        TOO_LARGE,
    ),
    "gif-frame-growing-the-canvas": (
        lambda: _gif(16, 16, [(0, 0, 1, 1), (0, 0, 9_000, 9_000)]),
        "iter_frames",
        (10_000_000, 1000),
        TOO_LARGE,
    ),
    "jpeg-sof-65000x65000": (
        lambda: _jpeg_with_size(65_000, 65_000),
        "open_image",
        DEFAULT,
        TOO_LARGE,
    ),
    "gif-5000-frames": (
        lambda: _gif(1, 1, [(0, 0, 1, 1)] * 5000),
        "iter_frames",
        DEFAULT,
        TOO_LARGE,
    ),
    "apng-declaring-a-million-frames": (
        lambda: _apng_declaring_frames(1_000_000),
        "read_header",
        DEFAULT,
        TOO_LARGE,
    ),
    "png-ztxt-inflating-to-256MB": (
        lambda: _png(
            1, 1, zlib.compress(b"\0\0"), _png_chunk(b"zTXt", b"k\0\0" + _deflate_zeros(1 << 28))
        ),
        "open_image",
        DEFAULT,
        INVALID,
    ),
    "png-itxt-inflating-to-256MB": (
        lambda: _png(
            1,
            1,
            zlib.compress(b"\0\0"),
            _png_chunk(b"iTXt", b"k\0\1\0\0\0" + _deflate_zeros(1 << 28)),
        ),
        "open_image",
        DEFAULT,
        INVALID,
    ),
    "png-iccp-inflating-to-256MB": (
        lambda: _png(
            1, 1, zlib.compress(b"\0\0"), _png_chunk(b"iCCP", b"p\0\0" + _deflate_zeros(1 << 28))
        ),
        "open_image",
        DEFAULT,
        INVALID,
    ),
    "png-200000-empty-chunks": (
        lambda: _png(1, 1, zlib.compress(b"\0\0"), _png_chunk(b"prVt", b"") * 200_000),
        "open_image",
        DEFAULT,
        INVALID,
    ),
    "jpeg-progressive-1000-scans": (
        lambda: _progressive_jpeg_with_scans(1000),
        "open_image",
        DEFAULT,
        INVALID,
    ),
    "jpeg-10MB-of-stray-bytes": (
        lambda: _jpeg_with_stray_bytes(10_000_000),
        "open_image",
        DEFAULT,
        INVALID,
    ),
    "gif-comment-of-a-million-1-byte-sub-blocks": (
        lambda: _gif(1, 1, [(0, 0, 1, 1)], b"!\xfe" + b"\x01c" * 1_000_000 + b"\x00"),
        "open_image",
        DEFAULT,
        INVALID,
    ),
    "gif-10MB-of-stray-bytes": (
        lambda: _gif(1, 1, [(0, 0, 1, 1)], b"\x01" * 10_000_000),
        "iter_frames",
        DEFAULT,
        INVALID,
    ),
    "tiff-100000-pages": (
        lambda: _tiff_pages(100_000),
        "read_header",
        DEFAULT,
        TOO_LARGE,
    ),
    "tiff-overlapping-directories": (
        _tiff_overlapping_directories,
        "iter_frames",
        DEFAULT,
        INVALID,
    ),
    "tiff-262144-strips": (
        lambda: _tiff_many_strips(262_144),
        "open_image",
        DEFAULT,
        INVALID,
    ),
    "tiff-second-page-60000x60000": (
        _tiff_with_huge_second_page,
        "iter_frames",
        DEFAULT,
        TOO_LARGE,
    ),
    "ico-holding-a-9000x9000-rgba-png": (
        # Pillow decodes an icon while opening it: 324 MB here, unless refused before.
        lambda: _ico_holding(_real_zero_png(9_000, channels=4)),
        "open_image",
        (10_000_000, 1000),
        TOO_LARGE,
    ),
    "bmp-rle8-10000x10000-line-ends": (
        lambda: _rle8_bmp_of_line_ends(10_000, 10_000),
        "open_image",
        DEFAULT,
        TOO_LARGE,
    ),
    "webp-16384x16384-canvas": (
        lambda: _webp_with_canvas(16_384, 16_384),
        "open_image",
        (10_000_000, 1000),
        TOO_LARGE | INVALID,
    ),
}

BOMB_SECONDS = 2.0
BOMB_RSS_GROWTH_MB = 256


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bombs_are_refused_fast_in_bounded_memory(name: str, tmp_path: Path) -> None:
    build, call, (max_pixels, max_frames), expected = BOMBS[name]
    bomb = tmp_path / "bomb"
    bomb.write_bytes(build())
    command = [sys.executable, "-c", _CHILD, str(bomb), call, str(max_pixels), str(max_frames)]
    completed = subprocess.run(
        # Linux carries the peak RSS of the process a child was forked from over exec: a child
        # of this (large) test process would start with its peak. A small shell forks it
        # instead (the trailing `exit` keeps the shell from exec-ing it in its own place).
        ["/bin/sh", "-c", '"$@"; exit $?', "sh", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    growth_mb = (result["after"] - result["before"]) / 1024  # ru_maxrss is in KiB on Linux
    print(
        f"bomb {name}: {bomb.stat().st_size:,} bytes -> {result['error']} {result['status']} "
        f"in {result['seconds'] * 1000:.0f} ms, peak RSS {result['before'] / 1024:.0f} -> "
        f"{result['after'] / 1024:.0f} MB (+{growth_mb:.1f} MB)"
    )
    assert result["error"] in expected, result
    assert result["status"] in (413, 422)
    assert result["seconds"] < BOMB_SECONDS, result
    assert growth_mb < BOMB_RSS_GROWTH_MB, result
    assert (result["hwmAfter"] - result["hwmBefore"]) / 1024 < BOMB_RSS_GROWTH_MB, result
    assert result["before"] < 200 * 1024, "the child started with someone else's peak RSS"


def test_the_inflating_bombs_really_inflate() -> None:
    # A refusal only means something if the bomb was real: these streams do inflate that far.
    png = _real_zero_png(20_000)
    idat = png.index(b"IDAT")
    length = int.from_bytes(png[idat - 4 : idat], "big")
    assert len(png) < 1_000_000
    assert _inflated_size(png[idat + 4 : idat + 4 + length]) == 20_000 * 20_001
    assert _inflated_size(_deflate_zeros(1 << 28)) == 1 << 28


def test_images_between_pillows_limit_and_ours_are_accepted() -> None:
    # Pillow warns from ~89.5 Mpx; the configured limit (here the default 100 Mpx) decides.
    limits = ImageLimits(max_pixels=100_000_000, max_frames=1000)
    header = read_header(_png(10_000, 9_500, zlib.compress(b"\0" * 64)), limits)
    assert (header.width, header.height) == (10_000, 9_500)
    with pytest.raises(ImageTooLargeError) as caught:
        read_header(_png(10_001, 10_000, zlib.compress(b"\0" * 64)), limits)
    assert caught.value.details == {"width": 10_001, "height": 10_000, "maxPixels": 100_000_000}


def test_frame_and_page_limits_apply_exactly() -> None:
    limits = ImageLimits(max_pixels=1_000_000, max_frames=10)
    assert read_header(_gif(1, 1, [(0, 0, 1, 1)] * 10), limits).frames == 10
    with pytest.raises(ImageTooLargeError) as caught:
        read_header(_gif(1, 1, [(0, 0, 1, 1)] * 11), limits)
    assert caught.value.details["maxFrames"] == 10
    assert read_header(_tiff_pages(10), limits).frames == 10
    with pytest.raises(ImageTooLargeError):
        read_header(_tiff_pages(11), limits)
    # A reader that never decodes may still count them.
    assert open_lazily(_tiff_pages(11), limits, enforce_limits=False) is not None


def test_frame_counts_agree_with_pillows_own_on_real_files() -> None:
    # GIF and TIFF frames are counted by pixmill's own walk (Pillow's count is unbounded).
    frames = [images.photo(30, 20, seed=seed) for seed in range(7)]
    commented = _save(
        frames[0],
        "GIF",
        save_all=True,
        append_images=frames[1:],
        comment=b"made by a test " * 40,
        duration=50,
        loop=0,
    )
    pages = _save(frames[0], "TIFF", save_all=True, append_images=frames[1:5])
    jpeg_pages = _save(
        frames[0], "TIFF", compression="jpeg", save_all=True, append_images=frames[1:3]
    )
    files = [commented, pages, jpeg_pages, sample("gif-animated"), sample("tiff-raw-multipage")]
    files += [sample("png-animated"), sample("webp-animated"), sample("gif")]
    for data in files:
        expected = getattr(Image.open(io.BytesIO(data)), "n_frames", 1)
        assert read_header(data, LIMITS).frames == expected
        assert len(list(iter_frames(data, LIMITS))) == expected
    assert read_header(commented, LIMITS).frames == 7


def test_progressive_jpegs_up_to_the_scan_cap_still_decode() -> None:
    ordinary = _save(images.photo(64, 48), "JPEG", progressive=True)
    assert ordinary.count(b"\xff\xda") >= 6
    assert open_image(ordinary, LIMITS).size == (64, 48)
    near_cap = _progressive_jpeg_with_scans(MAX_JPEG_SCANS - 10)
    assert open_image(near_cap, LIMITS).size == (512, 512)
    with pytest.raises(InvalidImageError, match="scans"):
        open_image(_progressive_jpeg_with_scans(MAX_JPEG_SCANS), LIMITS)


def test_data_after_the_end_of_a_jpeg_is_not_counted() -> None:
    # Phones append MP4 clips or depth maps after the EOI marker.
    trailer = _progressive_jpeg_with_scans(200)
    data = images.jpeg(32, 24) + trailer + b"\x01" * 200_000
    assert open_image(data, LIMITS).size == (32, 24)


# --- multi-picture JPEG -------------------------------------------------------------------------


def test_a_multi_picture_jpeg_is_a_still_image() -> None:
    left, right = (
        Image.new("RGB", (64, 48), (200, 30, 30)),
        Image.new("RGB", (64, 48), (30, 30, 200)),
    )
    mpo = _save(left, "MPO", save_all=True, append_images=[right])
    assert Image.open(io.BytesIO(mpo)).n_frames == 2  # Pillow sees two pictures
    assert read_header(mpo, LIMITS).frames == 1
    img = open_image(mpo, LIMITS, draft_size=(32, 24))
    assert img.size == (32, 24)  # the draft applies to the primary picture
    assert img.getpixel((10, 10))[0] > 150
    frames = list(iter_frames(mpo, LIMITS))
    assert len(frames) == 1 and frames[0][0].getpixel((10, 10))[0] > 150


# --- EXIF orientation and draft decoding --------------------------------------------------------

# The EXIF definition of each orientation: which side of the upright picture the stored
# picture's first row and first column show. stored(x, y) = upright(mapping(x, y, w, h)).
STORED_FROM_UPRIGHT: dict[int, Callable[[int, int, int, int], tuple[int, int]]] = {
    1: lambda x, y, w, h: (x, y),
    2: lambda x, y, w, h: (w - 1 - x, y),
    3: lambda x, y, w, h: (w - 1 - x, h - 1 - y),
    4: lambda x, y, w, h: (x, h - 1 - y),
    5: lambda x, y, w, h: (y, x),
    6: lambda x, y, w, h: (w - 1 - y, x),
    7: lambda x, y, w, h: (w - 1 - y, h - 1 - x),
    8: lambda x, y, w, h: (y, h - 1 - x),
}


def _asymmetric(width: int = 6, height: int = 4) -> Image.Image:
    """No two pixels alike, so any wrong flip or turn shows."""
    img = Image.new("RGB", (width, height))
    for y in range(height):
        for x in range(width):
            img.putpixel((x, y), (40 * x + 10, 60 * y + 10, 255 - 11 * (x + y * width)))
    return img


def _stored_for(upright: Image.Image, orientation: int) -> Image.Image:
    w, h = upright.size
    size = (w, h) if orientation <= 4 else (h, w)
    stored = Image.new("RGB", size)
    for y in range(size[1]):
        for x in range(size[0]):
            stored.putpixel((x, y), upright.getpixel(STORED_FROM_UPRIGHT[orientation](x, y, w, h)))
    return stored


def _with_orientation(img: Image.Image, fmt: str, orientation: int, **params: Any) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(img, fmt, exif=exif.tobytes(), **params)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation: int) -> None:
    upright = _asymmetric()
    stored = _stored_for(upright, orientation)
    for fmt in ("PNG", "WEBP", "TIFF"):
        params: dict[str, Any] = {"lossless": True} if fmt == "WEBP" else {}
        data = _with_orientation(stored, fmt, orientation, **params)
        img = open_image(data, LIMITS)
        assert img.size == upright.size, fmt
        assert img.convert("RGB").tobytes() == upright.tobytes(), fmt
        assert img.getexif().get(0x0112, 1) == 1, fmt  # the tag no longer applies
        header = read_header(data, LIMITS)
        assert (header.width, header.height) == upright.size, fmt
        [(frame, _)] = list(iter_frames(data, LIMITS))
        assert frame.tobytes() == upright.tobytes(), fmt


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_of_a_jpeg_comes_out_upright(orientation: int) -> None:
    # JPEG is lossy: each pixel of the pattern becomes a flat 16x16 block, compared by mean.
    upright = _asymmetric().resize((96, 64), Image.Resampling.NEAREST)
    data = _with_orientation(_stored_for(upright, orientation), "JPEG", orientation, quality=95)
    img = open_image(data, LIMITS)
    assert img.size == (96, 64)
    for by in range(4):
        for bx in range(6):
            box = (bx * 16 + 4, by * 16 + 4, bx * 16 + 12, by * 16 + 12)
            got = ImageStat.Stat(img.crop(box)).mean
            want = upright.getpixel((bx * 16 + 8, by * 16 + 8))
            assert all(abs(g - w) < 12 for g, w in zip(got, want, strict=True)), (bx, by)


def _big_jpeg(orientation: int | None = None) -> bytes:
    img = Image.new("RGB", (4000, 3000), (90, 140, 200))
    ImageDraw.Draw(img).rectangle((0, 0, 1999, 1499), fill=(250, 20, 20))
    if orientation is None:
        return _save(img, "JPEG", quality=80)
    return _with_orientation(img, "JPEG", orientation, quality=80)


def test_draft_decoding_picks_the_smallest_scale_that_stays_large_enough() -> None:
    data = _big_jpeg()
    assert open_image(data, LIMITS, draft_size=(800, 600)).size == (1000, 750)  # 1/4
    assert open_image(data, LIMITS, draft_size=(1000, 750)).size == (1000, 750)
    assert open_image(data, LIMITS, draft_size=(1001, 750)).size == (2000, 1500)  # 1/2
    assert open_image(data, LIMITS, draft_size=(100, 100)).size == (500, 375)  # 1/8 at most
    assert open_image(data, LIMITS).size == (4000, 3000)
    corner = open_image(data, LIMITS, draft_size=(800, 600)).getpixel((100, 100))
    assert corner[0] > 200 and corner[1] < 60  # the red quarter is still top-left


def test_draft_decoding_swaps_the_target_for_a_turned_jpeg() -> None:
    data = _big_jpeg(orientation=6)
    # Stored 4000x3000, shown 3000x4000: the caller asks in displayed terms.
    img = open_image(data, LIMITS, draft_size=(600, 800))
    assert img.size == (750, 1000)  # 1/4; without the swap it would have been 1/2
    corner = img.getpixel((700, 100))  # stored top-left turns to the top-right
    assert corner[0] > 200 and corner[1] < 60


# --- encoding -----------------------------------------------------------------------------------


def _psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    histogram = diff.histogram()
    squares = sum(count * (value % 256) ** 2 for value, count in enumerate(histogram))
    mse = squares / (a.width * a.height * 3)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


# Lossless formats must give the pixels back exactly.
MIN_PSNR = {"jpg": 35, "webp": 35, "avif": 35, "heic": 35, "heif": 35, "gif": 30}


def _smooth(width: int, height: int) -> Image.Image:
    """Gradients, as in skies and skin: where lossy codecs should be near-transparent."""
    across = Image.linear_gradient("L").resize((width, height))
    down = Image.linear_gradient("L").rotate(90).resize((width, height))
    return Image.merge("RGB", (across, down, Image.new("L", (width, height), 120)))


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_encode_round_trips_for_every_format(name: str) -> None:
    original = _smooth(64, 48)
    data = encode_image(original, name)
    fmt = format_by_name(name)
    assert sniff_format(data).pil_name == fmt.pil_name
    decoded = open_image(data, LIMITS)
    assert decoded.size == (64, 48)
    assert _psnr(original, decoded) >= MIN_PSNR.get(name, math.inf)


@pytest.mark.parametrize("name", ["jpg", "bmp"])
def test_alpha_is_flattened_onto_white_where_the_format_has_none(name: str) -> None:
    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(img).rectangle((16, 0, 31, 31), fill=(10, 120, 10, 255))
    decoded = open_image(encode_image(img, name), LIMITS)
    assert decoded.mode in ("RGB", "L")
    assert all(abs(c - 255) <= 3 for c in decoded.convert("RGB").getpixel((4, 16)))
    assert all(
        abs(c - w) <= 8 for c, w in zip(decoded.getpixel((28, 16)), (10, 120, 10), strict=True)
    )
    black = open_image(encode_image(img, name, background=(0, 0, 0)), LIMITS)
    assert all(c <= 3 for c in black.convert("RGB").getpixel((4, 16)))


@pytest.mark.parametrize("name", ["png", "webp", "avif"])
def test_cmyk_becomes_rgb_and_loses_its_cmyk_profile(name: str) -> None:
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    img.info["icc_profile"] = b"a CMYK profile"
    decoded = open_image(encode_image(img, name), LIMITS)
    assert decoded.mode == "RGB"
    assert "icc_profile" not in decoded.info
    red, green, blue = decoded.getpixel((8, 8))
    assert red > 240 and green < 15 and blue < 15


@pytest.mark.parametrize("name", ["jpg", "tiff"])
def test_cmyk_stays_cmyk_with_its_profile_where_the_format_holds_it(name: str) -> None:
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    img.info["icc_profile"] = b"a CMYK profile"
    decoded = open_image(encode_image(img, name), LIMITS)
    assert decoded.mode == "CMYK" and decoded.info["icc_profile"] == b"a CMYK profile"


def test_a_16_bit_png_converts_to_8_bit_jpeg() -> None:
    gradient = Image.new("I;16", (256, 4))
    for x in range(256):
        for y in range(4):
            gradient.putpixel((x, y), x * 257)  # 0 .. 65535
    source = open_image(_save(gradient, "PNG"), LIMITS)
    assert source.mode.startswith("I")
    decoded = open_image(encode_image(source, "jpg"), LIMITS)
    assert decoded.mode == "L"
    for x in (0, 64, 128, 200, 255):
        assert abs(decoded.getpixel((x, 2)) - x) <= 3, x
    png16 = open_image(encode_image(source, "png"), LIMITS)
    assert png16.getpixel((128, 2)) == 128 * 257  # PNG keeps all 16 bits


@pytest.mark.parametrize("name", ["jpg", "png", "webp", "tiff", "avif"])
def test_the_icc_profile_travels_with_the_pixels(name: str) -> None:
    profile = images.srgb_icc_profile()
    img = images.photo(32, 24)
    img.info["icc_profile"] = profile
    assert open_image(encode_image(img, name), LIMITS).info.get("icc_profile") == profile
    assert "icc_profile" not in open_image(encode_image(images.photo(32, 24), name), LIMITS).info


@pytest.mark.parametrize("name", ["gif", "webp", "png", "avif"])
def test_animations_are_written_where_the_format_holds_them(name: str) -> None:
    colours = [(220, 20, 20), (20, 200, 20), (20, 20, 220)]
    frames = [Image.new("RGB", (24, 16), colour) for colour in colours]
    data = encode_image(frames[0], name, frames=frames[1:], durations=[100, 200, 300])
    assert read_header(data, LIMITS).frames == 3
    decoded = list(iter_frames(data, LIMITS))
    assert [duration for _, duration in decoded] == [100, 200, 300]
    for (frame, _), colour in zip(decoded, colours, strict=True):
        assert all(abs(c - w) <= 12 for c, w in zip(frame.getpixel((12, 8)), colour, strict=True))
    with pytest.raises(AnimatedImageError):
        open_image(data, LIMITS)


@pytest.mark.parametrize("name", ["jpg", "bmp", "tiff", "ico", "heic"])
def test_animations_are_refused_where_the_format_cannot_hold_them(name: str) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    with pytest.raises(AnimatedImageError) as caught:
        encode_image(frames[0], name, frames=frames[1:])
    assert caught.value.status == 422 and caught.value.details == {"format": name}


def test_an_icon_keeps_its_size() -> None:
    for size in ((64, 48), (16, 16), (256, 256)):
        assert open_image(encode_image(images.photo(*size), "ico"), LIMITS).size == size
    assert open_image(encode_image(images.photo(512, 256), "ico"), LIMITS).size == (256, 128)


def test_sequential_jpeg_with_repeated_scans_is_refused_quickly() -> None:
    """Only progressive frames get the scan walk: libjpeg itself refuses a sequential frame
    whose scans repeat, before doing the work again."""
    import time

    from pixmill.testing.images import jpeg

    data = jpeg(800, 600)
    last_scan = data[data.rfind(b"\xff\xda") : -2]
    bomb = data[:-2] + last_scan * 300 + b"\xff\xd9"
    started = time.perf_counter()
    with pytest.raises(InvalidImageError):
        open_image(bomb, LIMITS)
    assert time.perf_counter() - started < 2
