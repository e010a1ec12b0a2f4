"""The optimization plugin (optimize-for-web, strip-metadata) on real images."""

from __future__ import annotations

import io
import math
import zlib
from typing import Any

import pillow_heif
import pytest
from PIL import ExifTags, Image, ImageChops, ImageDraw, ImageOps, ImageStat, PngImagePlugin

from pixmill.core.contracts import InputFile
from pixmill.core.errors import (
    AnimatedImageError,
    BadRequestError,
    InvalidImageError,
    SettingsError,
    UnsupportedFormatError,
)
from pixmill.testing import images
from pixmill.testing.images import decode, encode

MAKE = ExifTags.Base.Make
MODEL = ExifTags.Base.Model
ORIENTATION = ExifTags.Base.Orientation
DATE_TIME_ORIGINAL = ExifTags.Base.DateTimeOriginal
EXIF_IFD = ExifTags.IFD.Exif
GPS_IFD = ExifTags.IFD.GPSInfo
XMP_PACKET = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="Secret Photographer"/>'
    b"</rdf:RDF></x:xmpmeta>"
)
COMMENT = b"shot at home, 12 Example Street"
# One profile for the whole module: littleCMS stamps each new profile with the current time.
SRGB = images.srgb_icc_profile()


# --- helpers ----------------------------------------------------------------------------------


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    mse = sum(rms**2 for rms in ImageStat.Stat(diff).rms) / 3
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes()


def camera_exif(orientation: int | None = None) -> Image.Exif:
    """EXIF the way a phone writes it: make/model, a capture date and a GPS position."""
    exif = Image.Exif()
    exif[MAKE] = "Canon"
    exif[MODEL] = "EOS R5"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = "2024:05:06 07:08:09"
    gps = exif.get_ifd(GPS_IFD)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (13.0, 24.0, 1.0)
    return exif


def rich_image(fmt: str, width: int = 96, height: int = 64, **extra: Any) -> bytes:
    """A photo carrying EXIF (with GPS), an ICC profile, XMP and a comment where possible."""
    params: dict[str, Any] = {
        "exif": camera_exif(extra.pop("orientation", None)),
        "icc_profile": SRGB,
        **extra,
    }
    if fmt == "PNG":
        text = PngImagePlugin.PngInfo()
        text.add_itxt("XML:com.adobe.xmp", XMP_PACKET.decode())
        text.add_text("Comment", COMMENT.decode())
        text.add(b"tIME", b"\x07\xe8\x05\x06\x07\x08\x09")
        params["pnginfo"] = text
    else:
        params["xmp"] = XMP_PACKET
    if fmt == "JPEG":
        params.setdefault("quality", 90)
        params["comment"] = COMMENT
    return encode(images.photo(width, height), fmt, **params)


def xmp_of(img: Image.Image) -> Any:
    return img.info.get("xmp") or img.info.get("XML:com.adobe.xmp")


def comment_of(img: Image.Image) -> Any:
    return img.info.get("comment") or img.info.get("Comment")


def assert_field_error(exc: pytest.ExceptionInfo[SettingsError], field: str) -> None:
    assert field in exc.value.details["fields"], exc.value.details


# --- optimize-for-web: formats, quality, size -------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "name", "pil_format"),
    [
        ("webp", "webp", "WEBP"),
        ("jpeg", "jpg", "JPEG"),
        ("jpg", "jpg", "JPEG"),
        ("avif", "avif", "AVIF"),
        ("png", "png", "PNG"),
    ],
)
def test_optimize_writes_the_requested_format(
    run_tool: Any, requested: str, name: str, pil_format: str
) -> None:
    source = images.jpeg(160, 120, quality=95)
    outcome = run_tool("optimize-for-web", source, "holiday.jpg", format=requested)
    out = decode(outcome)
    assert outcome.format.name == name
    assert outcome.filename == f"holiday.{outcome.format.extension}"
    assert out.format == pil_format
    assert out.size == (160, 120)
    assert psnr(out, decode(source)) > 30


def test_optimize_defaults_to_webp_quality_80(run_tool: Any) -> None:
    source = images.jpeg(200, 150, quality=95)
    default = run_tool("optimize-for-web", source)
    explicit = run_tool("optimize-for-web", source, format="webp", quality=80)
    assert decode(default).format == "WEBP"
    assert default.data == explicit.data


def test_optimize_makes_a_big_png_photo_much_smaller(run_tool: Any) -> None:
    source = encode(images.photo(1200, 900), "PNG")
    outcome = run_tool("optimize-for-web", source, "big.png")
    assert outcome.size < len(source) / 5
    assert psnr(decode(outcome), decode(source)) > 28


def test_optimize_lower_quality_gives_a_smaller_file(run_tool: Any) -> None:
    source = encode(images.photo(320, 240), "PNG")
    for fmt in ("webp", "jpeg", "avif"):
        low = run_tool("optimize-for-web", source, "p.png", format=fmt, quality=20)
        high = run_tool("optimize-for-web", source, "p.png", format=fmt, quality=95)
        assert low.size < high.size, fmt
        assert psnr(decode(high), decode(source)) > psnr(decode(low), decode(source))


def test_optimize_png_is_lossless(run_tool: Any) -> None:
    source = images.png(120, 90, alpha=True)
    out = decode(run_tool("optimize-for-web", source, "a.png", format="png"))
    assert same_pixels(out, decode(source))


def test_optimize_keeps_alpha_in_webp_and_flattens_it_onto_white_for_jpeg(run_tool: Any) -> None:
    source = images.png(120, 90, alpha=True)  # an opaque ellipse, transparent corners
    webp = decode(run_tool("optimize-for-web", source, "a.png", format="webp"))
    assert webp.mode == "RGBA"
    assert webp.getpixel((0, 0))[3] == 0
    assert webp.getpixel((60, 45))[3] == 255
    jpeg = decode(run_tool("optimize-for-web", source, "a.png", format="jpeg"))
    assert jpeg.mode == "RGB"
    assert all(channel > 245 for channel in jpeg.getpixel((1, 1)))


# --- optimize-for-web: maximum size -----------------------------------------------------------


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ({"maxWidth": 300}, (300, 225)),
        ({"maxHeight": 100}, (133, 100)),
        ({"maxWidth": 300, "maxHeight": 100}, (133, 100)),
        ({"maxWidth": 200, "maxHeight": 1000}, (200, 150)),
        ({"maxWidth": 2000}, (800, 600)),  # never enlarged
        ({"maxWidth": 800, "maxHeight": 600}, (800, 600)),
    ],
)
def test_optimize_respects_max_dimensions_and_aspect(
    run_tool: Any, bounds: dict[str, int], expected: tuple[int, int]
) -> None:
    source = images.jpeg(800, 600)
    out = decode(run_tool("optimize-for-web", source, **bounds))
    assert out.size == expected
    reference = decode(source).resize(expected, Image.Resampling.LANCZOS)
    assert psnr(out, reference) > 27


def test_optimize_decodes_a_big_jpeg_at_reduced_scale(
    run_tool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    requested: list[tuple[int, int] | None] = []
    original_open = InputFile.open

    def spy(self: InputFile, *, draft_size: tuple[int, int] | None = None) -> Image.Image:
        requested.append(draft_size)
        img = original_open(self, draft_size=draft_size)
        requested.append(img.size)
        return img

    monkeypatch.setattr(InputFile, "open", spy)
    out = decode(run_tool("optimize-for-web", images.jpeg(1600, 1200), maxWidth=200))
    assert out.size == (200, 150)
    assert requested[0] == (200, 150)
    # DCT scaling decoded 1/8 of each side (200x150), not 1600x1200 pixels.
    assert requested[1] == (200, 150)


def test_optimize_applies_exif_orientation_before_fitting(run_tool: Any) -> None:
    source = images.exif_rotated_jpeg(300, 200, orientation=6)  # displays 200 wide, 300 tall
    out = decode(run_tool("optimize-for-web", source, maxWidth=100))
    assert out.size == (100, 150)
    assert ORIENTATION not in out.getexif()


# --- optimize-for-web: progressive and interlaced ---------------------------------------------


def test_optimize_progressive_jpeg(run_tool: Any) -> None:
    source = images.jpeg(200, 150)
    progressive = decode(run_tool("optimize-for-web", source, format="jpeg", progressive=True))
    baseline = decode(run_tool("optimize-for-web", source, format="jpeg"))
    assert progressive.info.get("progressive") == 1
    assert "progressive" not in baseline.info
    assert psnr(progressive, baseline) > 40


@pytest.mark.parametrize(
    ("mode", "size"),
    [("RGB", (37, 23)), ("RGBA", (64, 48)), ("L", (9, 9)), ("P", (17, 5)), ("RGB", (1, 1))],
)
def test_optimize_interlaced_png_keeps_every_pixel(
    run_tool: Any, mode: str, size: tuple[int, int]
) -> None:
    img = images.photo(*size)
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(Image.linear_gradient("L").resize(size))
    elif mode == "P":
        img = img.quantize(16)
    else:
        img = img.convert(mode)
    source = encode(img, "PNG")
    outcome = run_tool("optimize-for-web", source, "i.png", format="png", progressive=True)
    assert outcome.data is not None
    assert outcome.data[8 + 8 + 12] == 1  # IHDR interlace method: Adam7
    out = decode(outcome)
    assert out.info.get("interlace") == 1
    assert out.mode == mode
    assert same_pixels(out, img)


def test_optimize_interlaced_png_keeps_the_icc_profile(run_tool: Any) -> None:
    profile = SRGB
    source = encode(images.photo(40, 30), "PNG", icc_profile=profile)
    out = decode(run_tool("optimize-for-web", source, "i.png", format="png", progressive=True))
    assert out.info.get("icc_profile") == profile
    assert out.info.get("interlace") == 1


# --- optimize-for-web: metadata ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["webp", "jpeg", "png", "avif"])
def test_optimize_strips_metadata_but_keeps_the_icc_profile(run_tool: Any, fmt: str) -> None:
    source = rich_image("JPEG", 120, 90)
    out = decode(run_tool("optimize-for-web", source, format=fmt))
    assert len(out.getexif()) == 0
    assert not xmp_of(out)
    assert not comment_of(out)
    assert out.info.get("icc_profile") == SRGB


def test_optimize_keeps_metadata_when_asked(run_tool: Any) -> None:
    source = rich_image("JPEG", 120, 90)
    for fmt in ("webp", "jpeg", "png"):
        out = decode(run_tool("optimize-for-web", source, format=fmt, stripMetadata=False))
        exif = out.getexif()
        assert exif[MAKE] == "Canon", fmt
        assert exif.get_ifd(GPS_IFD)[ExifTags.GPS.GPSLatitudeRef] == "N", fmt
        xmp = xmp_of(out)
        assert xmp and "Secret Photographer" in (xmp if isinstance(xmp, str) else xmp.decode())
        assert out.info.get("icc_profile") == SRGB
    jpeg = decode(run_tool("optimize-for-web", source, format="jpeg", stripMetadata=False))
    assert jpeg.info["comment"] == COMMENT


def test_optimize_strips_png_text_and_exif(run_tool: Any) -> None:
    source = rich_image("PNG", 60, 40)
    assert decode(source).info.get("Comment")
    out = decode(run_tool("optimize-for-web", source, "m.png", format="png"))
    assert "Comment" not in out.info
    assert not xmp_of(out)
    assert len(out.getexif()) == 0


def test_optimize_cmyk_jpeg_becomes_rgb_webp_with_the_same_colours(run_tool: Any) -> None:
    source = images.cmyk_jpeg(120, 90)
    out = decode(run_tool("optimize-for-web", source, format="webp", quality=95))
    assert out.mode == "RGB"
    expected = ImageStat.Stat(decode(source).convert("RGB")).mean
    actual = ImageStat.Stat(out).mean
    assert all(abs(a - e) < 2 for a, e in zip(actual, expected, strict=True))


# --- optimize-for-web: animation --------------------------------------------------------------


def test_optimize_animated_gif_to_animated_webp(run_tool: Any) -> None:
    source = images.animated_gif(64, 48, frames=4)
    out = decode(run_tool("optimize-for-web", source, "a.gif", maxWidth=32))
    assert out.format == "WEBP"
    assert out.n_frames == 4
    assert out.size == (32, 24)
    out.seek(2)
    expected = Image.open(io.BytesIO(source))
    expected.seek(2)
    assert psnr(out.convert("RGB"), expected.convert("RGB").resize((32, 24))) > 30


def test_optimize_refuses_to_squash_an_animation_into_jpeg(run_tool: Any) -> None:
    with pytest.raises(AnimatedImageError):
        run_tool("optimize-for-web", images.animated_gif(), "a.gif", format="jpeg")


# --- optimize-for-web: bad settings and inputs ------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"format": "gif"}, "format"),
        ({"format": "bmp"}, "format"),
        ({"format": ""}, "format"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"quality": "high"}, "quality"),
        ({"maxWidth": 0}, "maxWidth"),
        ({"maxWidth": 16385}, "maxWidth"),
        ({"maxHeight": 0}, "maxHeight"),
        ({"maxHeight": -5}, "maxHeight"),
        ({"progressive": "maybe"}, "progressive"),
        ({"stripMetadata": "sometimes"}, "stripMetadata"),
        ({"max_width": 100}, "max_width"),
        ({"lossless": True}, "lossless"),
    ],
)
def test_optimize_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        run_tool("optimize-for-web", images.jpeg(40, 30), **settings)
    assert_field_error(exc, field)


def test_optimize_bad_inputs(run_tool: Any) -> None:
    jpeg = images.jpeg(200, 150)
    with pytest.raises(InvalidImageError):
        run_tool("optimize-for-web", jpeg[: len(jpeg) // 2])
    with pytest.raises(UnsupportedFormatError):
        run_tool("optimize-for-web", b"%PDF-1.7 not an image at all", "fake.jpg")
    with pytest.raises(BadRequestError):
        run_tool("optimize-for-web", b"")


# --- strip-metadata: the flags, read back from the output -------------------------------------

CONTAINER_FORMATS = [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")]


@pytest.mark.parametrize(("pil_format", "name"), CONTAINER_FORMATS)
def test_strip_defaults_remove_exif_gps_xmp_comments_and_keep_icc(
    run_tool: Any, pil_format: str, name: str
) -> None:
    source = rich_image(pil_format)
    before = decode(source)
    assert before.getexif()[MAKE] == "Canon" and xmp_of(before)
    outcome = run_tool("strip-metadata", source, f"x.{name}")
    out = decode(outcome)
    assert outcome.format.name == name
    assert out.format == pil_format
    assert len(out.getexif()) == 0
    assert not xmp_of(out)
    assert not comment_of(out)
    assert out.info.get("icc_profile") == SRGB
    assert same_pixels(out, before)  # the compressed image data was not touched
    assert outcome.size < len(source)


@pytest.mark.parametrize(("pil_format", "name"), CONTAINER_FORMATS)
def test_strip_gps_only_keeps_the_rest_of_exif(run_tool: Any, pil_format: str, name: str) -> None:
    source = rich_image(pil_format)
    out = decode(run_tool("strip-metadata", source, f"x.{name}", stripExif=False))
    exif = out.getexif()
    assert exif[MAKE] == "Canon"
    assert exif[MODEL] == "EOS R5"
    assert exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] == "2024:05:06 07:08:09"
    assert GPS_IFD not in exif
    assert exif.get_ifd(GPS_IFD) == {}
    assert same_pixels(out, decode(source))


@pytest.mark.parametrize(("pil_format", "name"), CONTAINER_FORMATS)
def test_strip_nothing_keeps_everything(run_tool: Any, pil_format: str, name: str) -> None:
    source = rich_image(pil_format)
    settings = {
        "stripExif": False,
        "stripGps": False,
        "stripIcc": False,
        "stripXmp": False,
        "stripComments": False,
    }
    out = decode(run_tool("strip-metadata", source, f"x.{name}", **settings))
    exif = out.getexif()
    assert exif[MAKE] == "Canon"
    assert exif.get_ifd(GPS_IFD)[ExifTags.GPS.GPSLatitude] == (52.0, 31.0, 12.0)
    xmp = xmp_of(out)
    assert "Secret Photographer" in (xmp if isinstance(xmp, str) else xmp.decode())
    assert out.info.get("icc_profile") == SRGB
    if pil_format != "WEBP":  # WebP has no comment field
        assert comment_of(out) in (COMMENT, COMMENT.decode())


@pytest.mark.parametrize(("pil_format", "name"), CONTAINER_FORMATS)
def test_strip_icc_removes_only_the_profile(run_tool: Any, pil_format: str, name: str) -> None:
    source = rich_image(pil_format)
    out = decode(run_tool("strip-metadata", source, f"x.{name}", stripIcc=True, stripExif=False))
    assert "icc_profile" not in out.info or not out.info["icc_profile"]
    assert out.getexif()[MAKE] == "Canon"


@pytest.mark.parametrize(("pil_format", "name"), CONTAINER_FORMATS)
def test_strip_keeps_xmp_when_asked(run_tool: Any, pil_format: str, name: str) -> None:
    out = decode(run_tool("strip-metadata", rich_image(pil_format), f"x.{name}", stripXmp=False))
    xmp = xmp_of(out)
    assert "Secret Photographer" in (xmp if isinstance(xmp, str) else xmp.decode())
    assert len(out.getexif()) == 0


def test_strip_comments_flag_on_jpeg_and_png(run_tool: Any) -> None:
    jpeg = decode(run_tool("strip-metadata", rich_image("JPEG"), stripComments=False))
    assert jpeg.info["comment"] == COMMENT
    png_kept = decode(run_tool("strip-metadata", rich_image("PNG"), "x.png", stripComments=False))
    assert png_kept.info["Comment"] == COMMENT.decode()
    png_stripped = run_tool("strip-metadata", rich_image("PNG"), "x.png")
    assert png_stripped.data is not None
    assert b"tIME" not in png_stripped.data and b"tEXt" not in png_stripped.data


def test_strip_webp_clears_the_vp8x_flags_of_removed_chunks(run_tool: Any) -> None:
    outcome = run_tool("strip-metadata", rich_image("WEBP"), "x.webp")
    assert outcome.data is not None
    data = outcome.data
    assert data[12:16] == b"VP8X"
    flags = data[20]
    assert flags & 0x20  # ICC still there
    assert not flags & 0x08 and not flags & 0x04  # EXIF and XMP gone
    assert b"EXIF" not in data and b"XMP " not in data
    assert int.from_bytes(data[4:8], "little") == len(data) - 8


def test_strip_keeps_a_lone_orientation_so_the_photo_stays_upright(run_tool: Any) -> None:
    source = rich_image("JPEG", 90, 60, orientation=6)
    out = decode(run_tool("strip-metadata", source))
    assert dict(out.getexif()) == {ORIENTATION: 6}
    upright = ImageOps.exif_transpose(out)
    assert upright.size == (60, 90)
    assert same_pixels(upright, ImageOps.exif_transpose(decode(source)))


def test_strip_jpeg_drops_data_after_the_end_of_image(run_tool: Any) -> None:
    trailer = b"SEFT hidden vendor data with a location 52.52N 13.40E"
    source = rich_image("JPEG") + trailer
    outcome = run_tool("strip-metadata", source)
    assert outcome.data is not None
    assert outcome.data.endswith(b"\xff\xd9")
    assert b"SEFT" not in outcome.data


def test_strip_progressive_jpeg_with_restart_markers_is_bit_exact(run_tool: Any) -> None:
    source = rich_image("JPEG", 130, 70, progressive=True, restart_marker_blocks=3)
    out = decode(run_tool("strip-metadata", source))
    assert out.info.get("progressive") == 1
    assert len(out.getexif()) == 0
    assert same_pixels(out, decode(source))


def test_strip_animated_webp_keeps_the_animation(run_tool: Any) -> None:
    frames = [Image.new("RGB", (40, 30), (40 * i, 200 - 40 * i, 90)) for i in range(3)]
    source = encode(
        frames[0],
        "WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=70,
        lossless=True,
        exif=camera_exif(),
        xmp=XMP_PACKET,
    )
    out = decode(run_tool("strip-metadata", source, "a.webp"))
    assert out.n_frames == 3
    assert len(out.getexif()) == 0 and not xmp_of(out)
    out.seek(1)
    assert out.convert("RGB").getpixel((5, 5)) == (40, 160, 90)


def gif_with_xmp(comment: bytes) -> bytes:
    """An animated GIF with a comment and an XMP application extension (as Adobe writes it)."""
    frames = [Image.new("RGB", (32, 24), (70 * i, 120, 255 - 70 * i)) for i in range(3)]
    ImageDraw.Draw(frames[1]).rectangle((4, 4, 12, 12), fill=(255, 255, 0))
    data = encode(
        frames[0], "GIF", save_all=True, append_images=frames[1:], comment=comment, duration=80
    )
    # Lets a reader that walks the XMP as GIF sub-blocks land on a terminator whatever it hit.
    magic_trailer = b"\x01" + bytes(range(255, -1, -1)) + b"\x00"
    extension = b"\x21\xff\x0bXMP DataXMP" + XMP_PACKET + magic_trailer
    header_end = 13 + 3 * 2 ** ((data[10] & 7) + 1)
    return data[:header_end] + extension + data[header_end:]


def test_strip_gif_comment_and_xmp_keeps_frames(run_tool: Any) -> None:
    source = gif_with_xmp(COMMENT)
    before = Image.open(io.BytesIO(source))
    assert before.info.get("comment") == COMMENT and b"XMP DataXMP" in source
    outcome = run_tool("strip-metadata", source, "a.gif")
    assert outcome.format.name == "gif"
    out = Image.open(io.BytesIO(outcome.data or b""))
    assert "comment" not in out.info
    assert b"XMP DataXMP" not in (outcome.data or b"")
    assert b"Secret Photographer" not in (outcome.data or b"")
    assert out.n_frames == before.n_frames == 3
    for index in range(3):
        out.seek(index)
        before.seek(index)
        assert out.convert("RGB").tobytes() == before.convert("RGB").tobytes()
    kept_data = run_tool("strip-metadata", source, "a.gif", stripComments=False).data or b""
    assert Image.open(io.BytesIO(kept_data)).info.get("comment") == COMMENT
    assert b"XMP DataXMP" not in kept_data
    with_xmp = run_tool("strip-metadata", source, "a.gif", stripXmp=False).data or b""
    assert b"XMP DataXMP" in with_xmp and b"Secret Photographer" in with_xmp
    assert Image.open(io.BytesIO(with_xmp)).n_frames == 3


def test_strip_tiff_by_reencoding_keeps_pixels_exact(run_tool: Any) -> None:
    exif = Image.Exif()
    exif[MAKE] = "Canon"
    exif[ExifTags.Base.Artist] = "Secret Photographer"
    img = images.photo(60, 40)
    source = encode(img, "TIFF", exif=exif, icc_profile=SRGB, compression="tiff_lzw")
    assert decode(source).getexif()[ExifTags.Base.Artist] == "Secret Photographer"
    out = decode(run_tool("strip-metadata", source, "x.tiff"))
    assert out.format == "TIFF"
    assert ExifTags.Base.Artist not in out.getexif() and MAKE not in out.getexif()
    assert out.info.get("icc_profile") == SRGB
    assert out.info.get("compression") == "tiff_lzw"
    assert same_pixels(out, img)
    kept = decode(run_tool("strip-metadata", source, "x.tiff", stripExif=False))
    assert kept.getexif()[ExifTags.Base.Artist] == "Secret Photographer"


def test_strip_avif_by_reencoding_at_high_quality(run_tool: Any) -> None:
    source = rich_image("AVIF", 64, 48)
    before = decode(source)
    assert before.getexif()[MAKE] == "Canon"
    out = decode(run_tool("strip-metadata", source, "x.avif"))
    assert out.format == "AVIF"
    assert len(out.getexif()) == 0 and not xmp_of(out)
    assert out.info.get("icc_profile") == SRGB
    assert psnr(out, before) > 38
    gps_only = decode(run_tool("strip-metadata", source, "x.avif", stripExif=False))
    assert gps_only.getexif()[MAKE] == "Canon" and GPS_IFD not in gps_only.getexif()


def test_strip_heic_by_reencoding(run_tool: Any) -> None:
    pillow_heif.register_heif_opener()
    img = images.photo(64, 48)
    source = encode(img, "HEIF", quality=90, exif=camera_exif().tobytes(), icc_profile=SRGB)
    before = decode(source)
    assert GPS_IFD in before.getexif()
    outcome = run_tool("strip-metadata", source, "x.heic")
    out = decode(outcome)
    assert outcome.format.name == "heic"
    assert len(out.getexif()) == 0
    assert out.info.get("icc_profile") == SRGB
    assert psnr(out, before) > 38
    gps_only = decode(run_tool("strip-metadata", source, "x.heic", stripExif=False))
    assert gps_only.getexif()[MAKE] == "Canon" and GPS_IFD not in gps_only.getexif()


def test_strip_bmp_passes_through(run_tool: Any) -> None:
    source = encode(images.photo(20, 10), "BMP")
    outcome = run_tool("strip-metadata", source, "x.bmp")
    assert outcome.data == source and outcome.format.name == "bmp"


# --- strip-metadata: bad settings and inputs --------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"stripExif": "maybe"}, "stripExif"),
        ({"stripGps": "perhaps"}, "stripGps"),
        ({"stripIcc": 7}, "stripIcc"),
        ({"stripXmp": [True]}, "stripXmp"),
        ({"stripComments": {"x": 1}}, "stripComments"),
        ({"strip_exif": True}, "strip_exif"),
        ({"stripIptc": True}, "stripIptc"),
    ],
)
def test_strip_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        run_tool("strip-metadata", images.jpeg(40, 30), **settings)
    assert_field_error(exc, field)


@pytest.mark.parametrize(("pil_format", "name"), [*CONTAINER_FORMATS, ("GIF", "gif")])
def test_strip_refuses_truncated_files(run_tool: Any, pil_format: str, name: str) -> None:
    source = gif_with_xmp(COMMENT) if pil_format == "GIF" else rich_image(pil_format, 200, 150)
    with pytest.raises(InvalidImageError):
        run_tool("strip-metadata", source[: len(source) * 2 // 3], f"x.{name}")


def test_strip_refuses_non_images(run_tool: Any) -> None:
    with pytest.raises(UnsupportedFormatError):
        run_tool("strip-metadata", b"<html><body>hello</body></html>", "page.jpg")
    with pytest.raises(UnsupportedFormatError):
        run_tool("strip-metadata", b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 10 10\n", "x.png")


def test_strip_refuses_a_jpeg_whose_segments_are_cut(run_tool: Any) -> None:
    # Valid start, then a segment that claims more bytes than the file holds.
    source = b"\xff\xd8\xff\xe1\x40\x00Exif\x00\x00" + b"\x00" * 40
    with pytest.raises(InvalidImageError):
        run_tool("strip-metadata", source)


def test_interlaced_png_chunks_are_well_formed(run_tool: Any) -> None:
    source = encode(images.photo(33, 17), "PNG")
    outcome = run_tool("optimize-for-web", source, "i.png", format="png", progressive=True)
    data = outcome.data or b""
    pos = 8
    seen = []
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunk_type = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        crc = int.from_bytes(data[pos + 8 + length : pos + 12 + length], "big")
        assert zlib.crc32(chunk_type + body) == crc, chunk_type
        seen.append(chunk_type)
        pos += 12 + length
    assert seen[0] == b"IHDR" and seen[-1] == b"IEND" and b"IDAT" in seen


def test_quadrant_colours_survive_optimize(run_tool: Any) -> None:
    img = Image.new("RGB", (100, 80), (255, 0, 0))
    ImageDraw.Draw(img).rectangle((50, 0, 99, 39), fill=(0, 0, 255))
    out = decode(run_tool("optimize-for-web", encode(img, "PNG"), "q.png", maxWidth=50))
    assert out.size == (50, 40)
    red = out.convert("RGB").getpixel((5, 35))
    blue = out.convert("RGB").getpixel((45, 5))
    assert red[0] > 230 and red[2] < 30
    assert blue[2] > 230 and blue[0] < 30
