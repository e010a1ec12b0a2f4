"""The optimization plugin (optimize-for-web, strip-metadata, edit-metadata, bulk-rename,
image-to-pdf, favicon and the inspect sub-routes) on real images."""

from __future__ import annotations

import datetime
import io
import json
import math
import zipfile
import zlib
from typing import Any

import pillow_heif
import pypdfium2 as pdfium
import pytest
from flask.testing import FlaskClient
from PIL import ExifTags, Image, ImageChops, ImageDraw, ImageOps, ImageStat, PngImagePlugin

from pixmill.core.contracts import InputFile
from pixmill.core.errors import (
    AnimatedImageError,
    BadRequestError,
    InvalidImageError,
    SettingsError,
    UnsupportedFormatError,
)
from pixmill.plugins import optimization
from pixmill.testing import check_plugin, images
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


def test_optimize_preview_is_the_same_encoding_on_a_small_copy_with_an_estimate(
    run_tool: Any, pixmill_client: FlaskClient
) -> None:
    source = images.jpeg(1600, 1200, quality=95)
    settings = {"format": "jpeg", "quality": 60, "previewWidth": 400}
    preview = run_tool("optimize-for-web-preview", source, "big.jpg", **settings)
    out = decode(preview)
    assert out.format == "JPEG" and out.size == (400, 300)
    assert preview.filename == "big-preview.jpg"
    # Exactly what optimize-for-web gives for that size.
    small = run_tool("optimize-for-web", source, "big.jpg", format="jpeg", quality=60,
                     maxWidth=400)  # fmt: skip
    assert preview.data == small.data
    meta = preview.meta
    assert meta["previewBytes"] == preview.size
    assert (meta["previewWidth"], meta["previewHeight"]) == (400, 300)
    assert (meta["fullWidth"], meta["fullHeight"]) == (1600, 1200)
    assert meta["estimatedBytes"] == round(preview.size * 16)
    full = run_tool("optimize-for-web", source, "big.jpg", format="jpeg", quality=60)
    # Bytes do not scale exactly with pixels; the estimate is within a factor of two.
    assert full.size / 2 < meta["estimatedBytes"] < full.size * 2
    # maxWidth shrinks the "full" result the estimate is for; a preview never enlarges.
    capped = run_tool("optimize-for-web-preview", source, "big.jpg", maxWidth=800)
    assert (capped.meta["fullWidth"], capped.meta["fullHeight"]) == (800, 600)
    tiny = run_tool("optimize-for-web-preview", images.jpeg(100, 80), "t.jpg")
    assert decode(tiny).size == (100, 80)
    # Over REST, at the seed's sub-route, with the facts as `meta`.
    response = pixmill_client.post(
        "/api/v1/tools/image/optimize-for-web/preview",
        data={"file": (io.BytesIO(source), "big.jpg"), "settings": json.dumps(settings)},
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["meta"]["previewWidth"] == 400
    bad = pixmill_client.post(
        "/api/v1/tools/image/optimize-for-web/preview",
        data={"file": (io.BytesIO(source), "big.jpg"), "settings": '{"previewWidth": 10}'},
    )
    assert bad.status_code == 400 and bad.get_json()["code"] == "VALIDATION_ERROR"


def test_optimize_preview_of_an_animation_is_its_first_frame(run_tool: Any) -> None:
    preview = run_tool("optimize-for-web-preview", images.animated_gif(64, 48, 4), "a.gif",
                       format="png")  # fmt: skip
    out = decode(preview)
    assert out.size == (64, 48) and getattr(out, "n_frames", 1) == 1


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


# --- conformance ------------------------------------------------------------------------------


def test_optimization_plugin_conforms() -> None:
    report = check_plugin(optimization)
    report.assert_ok()
    assert report.tools == [
        "optimize-for-web",
        "optimize-for-web-preview",
        "strip-metadata",
        "edit-metadata",
        "bulk-rename",
        "image-to-pdf",
        "favicon",
    ]


# --- shared helpers for the multi-file and document tools --------------------------------------


def run_many(run_tool: Any, tool: str, uploads: list[tuple[bytes, str]], **settings: Any) -> Any:
    return run_tool(tool, uploads[0][0], uploads[0][1], files={"file": uploads}, **settings)


def zip_members(outcome: Any) -> dict[str, bytes]:
    assert outcome.format.name == "zip"
    with zipfile.ZipFile(io.BytesIO(outcome.data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def pdf_pages(data: bytes) -> list[tuple[float, float]]:
    document = pdfium.PdfDocument(data)
    try:
        return [document[i].get_size() for i in range(len(document))]
    finally:
        document.close()


def post_file(
    client: FlaskClient, route: str, uploads: list[tuple[bytes, str]], settings: Any = None
) -> Any:
    form: dict[str, Any] = {"file": [(io.BytesIO(data), name) for data, name in uploads]}
    if settings is not None:
        form["settings"] = json.dumps(settings)
    return client.post(f"/api/v1/tools/image/{route}", data=form)


def download(client: FlaskClient, response: Any) -> bytes:
    assert response.status_code == 200, response.get_json()
    return bytes(client.get(response.get_json()["downloadUrl"]).data)


# --- bulk-rename ------------------------------------------------------------------------------


def test_bulk_rename_numbers_pads_and_keeps_bytes_and_extensions(run_tool: Any) -> None:
    uploads = [
        (images.jpeg(20, 10), "beach.jpg"),
        (images.png(12, 12), "logo.PNG"),
        (images.tiny("GIF"), "dot.gif"),
    ]
    outcome = run_many(run_tool, "bulk-rename", uploads, pattern="trip-{n}", startIndex=7)
    members = zip_members(outcome)
    assert outcome.filename == "renamed.zip"
    assert sorted(members) == ["manifest.json", "trip-007.jpg", "trip-008.png", "trip-009.gif"]
    assert members["trip-007.jpg"] == uploads[0][0]
    assert members["trip-008.png"] == uploads[1][0]
    manifest = json.loads(members["manifest.json"])
    assert manifest["files"] == [
        {"from": "beach.jpg", "to": "trip-007.jpg"},
        {"from": "logo.PNG", "to": "trip-008.png"},
        {"from": "dot.gif", "to": "trip-009.gif"},
    ]


def test_bulk_rename_original_padding_and_collisions(run_tool: Any) -> None:
    data = images.jpeg(16, 16)
    uploads = [(data, "a.jpg"), (data, "b.jpg"), (data, "a.jpg")]
    members = zip_members(run_many(run_tool, "bulk-rename", uploads, pattern="{original}"))
    assert sorted(members) == ["a-2.jpg", "a.jpg", "b.jpg", "manifest.json"]
    numbered = zip_members(
        run_many(
            run_tool, "bulk-rename", uploads, pattern="{original}_{n}", padding=0, startIndex=0
        )
    )
    assert sorted(numbered) == ["a_0.jpg", "a_2.jpg", "b_1.jpg", "manifest.json"]
    constant = zip_members(run_many(run_tool, "bulk-rename", uploads, pattern="same"))
    assert sorted(constant) == ["manifest.json", "same-2.jpg", "same-3.jpg", "same.jpg"]


def test_bulk_rename_date_from_exif_else_today(run_tool: Any) -> None:
    dated = rich_image("JPEG")  # DateTimeOriginal 2024:05:06
    undated = images.jpeg(16, 16)
    uploads = [(dated, "x.jpg"), (undated, "y.jpg")]
    members = zip_members(run_many(run_tool, "bulk-rename", uploads, pattern="{date}-{n}"))
    today = datetime.date.today().isoformat()
    assert sorted(members) == sorted(["2024-05-06-001.jpg", f"{today}-002.jpg", "manifest.json"])


def test_bulk_rename_sanitises_unsafe_names(run_tool: Any) -> None:
    uploads = [(images.jpeg(16, 16), "..\\..\\evil.jpg"), (images.jpeg(16, 16), "ok.jpg")]
    members = zip_members(
        run_many(run_tool, "bulk-rename", uploads, pattern="../x/{original}\x07:{n}")
    )
    names = [name for name in members if name != "manifest.json"]
    assert names == ["x-evil-001.jpg", "x-ok-002.jpg"]
    for name in names:
        assert "/" not in name and "\\" not in name and ".." not in name


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"pattern": "img-{index}"}, "pattern"),
        ({"pattern": "img-{n"}, "pattern"),
        ({"pattern": "}{"}, "pattern"),
        ({"pattern": ""}, "pattern"),
        ({"pattern": "..//"}, "pattern"),
        ({"padding": 11}, "padding"),
        ({"padding": -1}, "padding"),
        ({"startIndex": -1}, "startIndex"),
        ({"startIndex": 1.5}, "startIndex"),
    ],
)
def test_bulk_rename_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        run_tool("bulk-rename", images.jpeg(16, 16), "a.jpg", **settings)
    assert exc.value.status == 400
    assert_field_error(exc, field)


def test_bulk_rename_refuses_a_non_image(run_tool: Any) -> None:
    uploads = [(images.jpeg(16, 16), "a.jpg"), (b"%PDF-1.4 not an image", "b.jpg")]
    with pytest.raises(UnsupportedFormatError) as exc:
        run_many(run_tool, "bulk-rename", uploads)
    assert exc.value.status == 415


# --- image-to-pdf -----------------------------------------------------------------------------


def test_image_to_pdf_one_page_per_image_on_a4(run_tool: Any) -> None:
    uploads = [
        (images.jpeg(300, 200), "wide.jpg"),
        (images.png(100, 160), "tall.png"),
        (images.jpeg(120, 120), "square.jpg"),
    ]
    outcome = run_many(run_tool, "image-to-pdf", uploads, pageSize="A4", orientation="portrait")
    assert outcome.format.name == "pdf" and outcome.filename == "images.pdf"
    assert outcome.meta == {"pages": 3, "jpegQuality": 90}
    pages = pdf_pages(outcome.data)
    assert len(pages) == 3
    for width, height in pages:
        assert width == pytest.approx(595, abs=1) and height == pytest.approx(842, abs=1)


def test_image_to_pdf_landscape_auto_and_letter(run_tool: Any) -> None:
    wide = images.jpeg(300, 200)
    landscape = run_tool("image-to-pdf", wide, "w.jpg", orientation="landscape")
    assert pdf_pages(landscape.data) == [pytest.approx((842, 595), abs=1)]
    auto = run_tool("image-to-pdf", wide, "w.jpg")  # auto: wide image, landscape page
    assert pdf_pages(auto.data) == [pytest.approx((842, 595), abs=1)]
    letter = run_tool("image-to-pdf", images.jpeg(100, 300), "t.jpg", pageSize="Letter")
    assert pdf_pages(letter.data) == [pytest.approx((612, 792), abs=1)]


def test_image_to_pdf_fit_page_is_the_image_plus_margins(run_tool: Any) -> None:
    outcome = run_tool("image-to-pdf", images.jpeg(300, 200), "w.jpg", pageSize="fit", margin=10)
    assert pdf_pages(outcome.data) == [pytest.approx((320, 220), abs=1)]


def test_image_to_pdf_renders_the_image_with_margins_and_white_alpha(run_tool: Any) -> None:
    img = Image.new("RGBA", (200, 200), (0, 0, 255, 255))
    ImageDraw.Draw(img).rectangle((0, 0, 99, 199), fill=(255, 0, 0, 0))  # left half transparent
    outcome = run_tool("image-to-pdf", encode(img, "PNG"), "a.png", pageSize="fit", margin=50)
    document = pdfium.PdfDocument(outcome.data)
    rendered = document[0].render(scale=1).to_pil().convert("RGB")
    document.close()
    assert rendered.size == (300, 300)
    assert rendered.getpixel((10, 10)) == pytest.approx((255, 255, 255), abs=3)  # margin
    assert rendered.getpixel((100, 150)) == pytest.approx((255, 255, 255), abs=6)  # was clear
    blue = rendered.getpixel((200, 150))
    assert blue[2] > 230 and blue[0] < 30


def test_image_to_pdf_target_size(run_tool: Any) -> None:
    source = encode(images.photo(600, 600), "PNG")
    free = run_tool("image-to-pdf", source, "p.png")
    target = len(free.data) // 3
    small = run_tool("image-to-pdf", source, "p.png", targetSize={"value": target, "unit": "B"})
    assert len(small.data) <= target and small.meta["jpegQuality"] < 90
    assert len(pdf_pages(small.data)) == 1
    with pytest.raises(BadRequestError) as exc:
        run_tool("image-to-pdf", source, "p.png", targetSize={"value": 1, "unit": "KB"})
    assert exc.value.status == 400 and exc.value.code == "TARGET_SIZE_UNREACHABLE"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"pageSize": "B5"}, "pageSize"),
        ({"orientation": "sideways"}, "orientation"),
        ({"margin": -1}, "margin"),
        ({"margin": 2001}, "margin"),
        ({"margin": 400}, "margin"),  # leaves no room on A4
        ({"targetSize": {"value": 0}}, "targetSize"),
        ({"targetSize": {"value": 10, "unit": "GB"}}, "targetSize"),
        ({"targetSize": 100}, "targetSize"),
    ],
)
def test_image_to_pdf_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        run_tool("image-to-pdf", images.jpeg(40, 30), "a.jpg", **settings)
    assert exc.value.status == 400
    assert_field_error(exc, field)


def test_image_to_pdf_refuses_non_images_and_animations(run_tool: Any) -> None:
    with pytest.raises(UnsupportedFormatError):
        run_tool("image-to-pdf", b"just some text, not a picture", "a.jpg")
    with pytest.raises(AnimatedImageError):
        run_tool("image-to-pdf", images.animated_gif(), "a.gif")


# --- favicon ----------------------------------------------------------------------------------


def test_favicon_zip_holds_every_size(run_tool: Any) -> None:
    outcome = run_tool("favicon", images.png(300, 200), "logo.png")
    members = zip_members(outcome)
    assert outcome.filename == "logo-favicon.zip"
    assert set(members) == {
        "favicon.ico",
        "favicon-16x16.png",
        "favicon-32x32.png",
        "favicon-48x48.png",
        "apple-touch-icon.png",
        "android-chrome-192x192.png",
        "android-chrome-512x512.png",
        "site.webmanifest",
        "favicon.html",
    }
    ico = Image.open(io.BytesIO(members["favicon.ico"]))
    assert ico.format == "ICO"
    assert sorted(ico.info["sizes"]) == [(16, 16), (32, 32), (48, 48)]
    for name, side in optimization.FAVICON_PNGS.items():
        png = decode(members[name])
        assert png.format == "PNG" and png.size == (side, side), name
    # Padded (the default): transparent bands above and below a wide image, opaque middle.
    big = decode(members["android-chrome-512x512.png"])
    assert big.getpixel((256, 5))[3] == 0 and big.getpixel((256, 256))[3] == 255
    assert decode(members["apple-touch-icon.png"]).mode == "RGB"  # no alpha for iOS
    manifest = json.loads(members["site.webmanifest"])
    assert [icon["sizes"] for icon in manifest["icons"]] == ["192x192", "512x512"]
    html = members["favicon.html"].decode()
    assert '<link rel="apple-touch-icon"' in html and "site.webmanifest" in html


def test_favicon_crop_background_padding_and_radius(run_tool: Any) -> None:
    img = Image.new("RGB", (300, 100), (255, 0, 0))
    ImageDraw.Draw(img).rectangle((0, 0, 99, 99), fill=(0, 255, 0))
    cropped = zip_members(run_tool("favicon", encode(img, "PNG"), "r.png", fit="crop"))
    centre = decode(cropped["android-chrome-192x192.png"]).convert("RGBA")
    assert centre.getpixel((5, 5)) == (255, 0, 0, 255)  # the green left third was cropped off
    padded = zip_members(
        run_tool(
            "favicon",
            encode(img, "PNG"),
            "r.png",
            padding=20,
            backgroundColor="#0000ff",
            borderRadius=50,
        )
    )
    icon = decode(padded["android-chrome-512x512.png"]).convert("RGBA")
    assert icon.getpixel((0, 0))[3] == 0  # a circle: the corners are clear
    assert icon.getpixel((256, 120)) == (0, 0, 255, 255)  # padding in the background colour


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"padding": 41}, "padding"),
        ({"borderRadius": 51}, "borderRadius"),
        ({"backgroundColor": "blue"}, "backgroundColor"),
        ({"fit": "stretch"}, "fit"),
    ],
)
def test_favicon_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        run_tool("favicon", images.png(32, 32), "a.png", **settings)
    assert_field_error(exc, field)


def test_favicon_refuses_non_images(run_tool: Any) -> None:
    with pytest.raises(UnsupportedFormatError):
        run_tool("favicon", b"<svg-ish but not really>", "a.png")


# --- edit-metadata and the inspect sub-routes -------------------------------------------------

EDIT = {
    "title": "Harbour at dawn",
    "description": "Boats leaving the harbour",
    "author": "Ada Lovelace",
    "copyright": "(c) 2024 Ada",
    "keywords": ["harbour", "dawn", "boats"],
    "gps": {"latitude": -33.8568, "longitude": 151.2153, "altitude": 12.5},
    "dateTime": "2023-02-03T04:05:06",
}


def assert_edited_fields(found: dict[str, Any]) -> None:
    for key in ("title", "description", "author", "copyright", "keywords"):
        assert found[key] == EDIT[key], key
    assert found["gps"]["latitude"] == pytest.approx(-33.8568, abs=1e-5)
    assert found["gps"]["longitude"] == pytest.approx(151.2153, abs=1e-5)
    assert found["gps"]["altitude"] == pytest.approx(12.5)
    assert found["dateTime"] == "2023-02-03T04:05:06"


@pytest.mark.parametrize(
    ("pil_format", "name"), [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")]
)
def test_edit_metadata_round_trips_and_keeps_pixels(
    run_tool: Any, pil_format: str, name: str
) -> None:
    source = encode(
        images.photo(64, 48), pil_format, **({"lossless": True} if name == "webp" else {})
    )
    outcome = run_tool("edit-metadata", source, f"x.{name}", **EDIT)
    assert outcome.format.name == name
    out = decode(outcome)
    assert same_pixels(out.convert("RGB"), decode(source).convert("RGB"))
    if name == "jpg":  # the entropy-coded data is copied, not re-encoded
        assert (
            source[source.index(b"\xff\xda") :] == outcome.data[outcome.data.index(b"\xff\xda") :]
        )
    # Pillow's own EXIF reader sees what was written.
    exif = out.getexif()
    assert exif[ExifTags.Base.Artist] == "Ada Lovelace"
    assert exif[ExifTags.Base.Copyright] == "(c) 2024 Ada"
    assert exif[ExifTags.Base.ImageDescription] == "Boats leaving the harbour"
    assert exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] == "2023:02:03 04:05:06"
    gps = exif.get_ifd(GPS_IFD)
    assert gps[ExifTags.GPS.GPSLatitudeRef] == "S" and gps[ExifTags.GPS.GPSLongitudeRef] == "E"
    assert float(gps[ExifTags.GPS.GPSLatitude][0]) == 33
    # And the inspect sub-route reads the same fields back.
    found = run_tool("edit-metadata-inspect", outcome.data, f"x.{name}").json
    assert_edited_fields(found)
    assert found["exif"]["Artist"] == "Ada Lovelace"
    assert "GPSLatitude" in found["exif"]["GPSInfo"]


def test_edit_metadata_keeps_other_tags_unless_cleared(run_tool: Any) -> None:
    source = rich_image("JPEG")  # Canon make/model, GPS, XMP, ICC, a comment
    kept = decode(run_tool("edit-metadata", source, "x.jpg", author="Me"))
    assert kept.getexif()[MAKE] == "Canon" and kept.getexif()[ExifTags.Base.Artist] == "Me"
    assert GPS_IFD in kept.getexif() and xmp_of(kept) and kept.info.get("icc_profile") == SRGB
    assert kept.getexif().get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] == "2024:05:06 07:08:09"
    cleared = decode(run_tool("edit-metadata", source, "x.jpg", author="Me", clear=True))
    exif = cleared.getexif()
    assert MAKE not in exif and GPS_IFD not in exif and exif[ExifTags.Base.Artist] == "Me"
    assert not xmp_of(cleared) and not comment_of(cleared)
    assert cleared.info.get("icc_profile") == SRGB


def test_edit_metadata_empty_string_removes_and_remove_gps(run_tool: Any) -> None:
    first = run_tool("edit-metadata", images.png(30, 20), "x.png", **EDIT)
    second = run_tool("edit-metadata", first.data, "x.png", author="", removeGps=True)
    found = run_tool("edit-metadata-inspect", second.data, "x.png").json
    assert found["author"] is None and found["gps"] is None
    assert found["title"] == EDIT["title"]


def test_edit_metadata_tiff_is_lossless(run_tool: Any) -> None:
    source = encode(images.photo(40, 30), "TIFF", compression="tiff_lzw")
    settings = {k: v for k, v in EDIT.items() if k != "gps"}
    outcome = run_tool("edit-metadata", source, "x.tiff", **settings)
    out = decode(outcome)
    assert out.format == "TIFF" and same_pixels(out, decode(source))
    found = run_tool("edit-metadata-inspect", outcome.data, "x.tiff").json
    assert found["author"] == "Ada Lovelace" and found["dateTime"] == "2023-02-03T04:05:06"
    with pytest.raises(SettingsError):
        run_tool("edit-metadata", source, "x.tiff", gps={"latitude": 1, "longitude": 2})


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"gps": {"latitude": 91, "longitude": 0}}, "gps"),
        ({"gps": {"latitude": 0, "longitude": -180.5}}, "gps"),
        ({"gps": {"longitude": 10}}, "gps"),
        ({"dateTime": "yesterday"}, "dateTime"),
        ({"title": "x" * 2001}, "title"),
        ({"keywords": "a;b"}, "keywords"),
        ({"clear": "yes please"}, "clear"),
        ({"artist": "Me"}, "artist"),
    ],
)
def test_edit_metadata_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        run_tool("edit-metadata", images.jpeg(40, 30), "a.jpg", **settings)
    assert exc.value.status == 400
    assert_field_error(exc, field)


def test_edit_metadata_bad_inputs(run_tool: Any) -> None:
    with pytest.raises(UnsupportedFormatError) as exc:
        run_tool("edit-metadata", b"hello world, plain text", "a.jpg", author="x")
    assert exc.value.status == 415
    with pytest.raises(UnsupportedFormatError):  # BMP carries no EXIF
        run_tool("edit-metadata", images.tiny("BMP"), "a.bmp", author="x")
    with pytest.raises(UnsupportedFormatError):  # GIF has no EXIF either
        run_tool("edit-metadata", images.tiny("GIF"), "a.gif", author="x")
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue")]
    animated = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    with pytest.raises(AnimatedImageError):
        run_tool("edit-metadata", animated, "a.webp", author="x")


def test_strip_inspect_lists_what_would_go(run_tool: Any) -> None:
    found = run_tool("strip-metadata-inspect", rich_image("JPEG"), "x.jpg").json
    assert found["format"] == "jpg"
    assert found["gps"] is True
    assert found["location"]["latitude"] == pytest.approx(52 + 31 / 60 + 12 / 3600, abs=1e-5)
    assert {"Make", "Model", "DateTimeOriginal", "GPSLatitude"} <= set(found["exifTags"])
    assert found["iccProfile"] == {"present": True, "size": len(SRGB)}
    assert found["xmp"]["present"] is True
    assert found["comments"] == [COMMENT.decode()]
    png = run_tool("strip-metadata-inspect", rich_image("PNG"), "x.png").json
    assert png["gps"] is True and png["xmp"]["present"] is True
    assert any(c.startswith("Comment") for c in png["comments"])
    clean = run_tool("strip-metadata-inspect", images.tiny("PNG"), "x.png").json
    assert clean["gps"] is False and clean["exifTags"] == [] and clean["comments"] == []


def test_strip_inspect_agrees_with_strip(run_tool: Any) -> None:
    stripped = run_tool("strip-metadata", rich_image("JPEG"), "x.jpg")
    found = run_tool("strip-metadata-inspect", stripped.data, "x.jpg").json
    assert found["gps"] is False and found["xmp"]["present"] is False
    assert found["iccProfile"]["present"] is True  # kept by default


def test_inspect_sub_routes_over_rest(pixmill_client: FlaskClient) -> None:
    source = rich_image("JPEG")
    edited = download(
        pixmill_client,
        post_file(pixmill_client, "edit-metadata", [(source, "x.jpg")], EDIT),
    )
    response = post_file(pixmill_client, "edit-metadata/inspect", [(edited, "x.jpg")])
    assert response.status_code == 200, response.get_json()
    assert_edited_fields(response.get_json())
    stripped = post_file(pixmill_client, "strip-metadata/inspect", [(source, "x.jpg")])
    assert stripped.status_code == 200 and stripped.get_json()["gps"] is True
    described = pixmill_client.get("/api/v1/tools/image/edit-metadata-inspect").get_json()
    assert described["endpoint"] == "/api/v1/tools/image/edit-metadata/inspect"
    bad = post_file(
        pixmill_client,
        "edit-metadata",
        [(source, "x.jpg")],
        {"gps": {"latitude": 95, "longitude": 0}},
    )
    assert bad.status_code == 400 and bad.get_json()["code"] == "VALIDATION_ERROR"
    not_image = post_file(pixmill_client, "strip-metadata/inspect", [(b"plain text", "a.jpg")])
    assert not_image.status_code == 415


def test_document_tools_over_rest(pixmill_client: FlaskClient) -> None:
    uploads = [(images.jpeg(40, 30), "a.jpg"), (images.png(30, 40), "b.png")]
    pdf = download(pixmill_client, post_file(pixmill_client, "image-to-pdf", uploads))
    assert len(pdf_pages(pdf)) == 2
    archive = download(
        pixmill_client, post_file(pixmill_client, "bulk-rename", uploads, {"pattern": "{n}"})
    )
    with zipfile.ZipFile(io.BytesIO(archive)) as members:
        assert sorted(members.namelist()) == ["001.jpg", "002.png", "manifest.json"]
    bad = post_file(pixmill_client, "bulk-rename", uploads, {"pattern": "{nope}"})
    assert bad.status_code == 400 and bad.get_json()["code"] == "VALIDATION_ERROR"
    bounds = post_file(pixmill_client, "favicon", uploads[:1], {"padding": 99})
    assert bounds.status_code == 400 and bounds.get_json()["code"] == "VALIDATION_ERROR"
