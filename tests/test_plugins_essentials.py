"""The essentials plugin (resize, crop, rotate, convert, compress) on real images."""

from __future__ import annotations

import io
import math
from typing import Any

import pillow_heif
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from pixmill.core.errors import (
    AnimatedImageError,
    BadRequestError,
    InvalidImageError,
    PixmillError,
    SettingsError,
    UnsupportedFormatError,
)
from pixmill.testing import images
from pixmill.testing.images import decode, encode

pillow_heif.register_heif_opener()  # so the test can decode HEIC/HEIF outputs itself

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
YELLOW = (255, 255, 0)


# --- helpers ----------------------------------------------------------------------------------


def quadrants(width: int = 100, height: int = 80) -> Image.Image:
    """Top-left red, top-right green, bottom-left blue, bottom-right yellow."""
    img = Image.new("RGB", (width, height), RED)
    draw = ImageDraw.Draw(img)
    draw.rectangle((width // 2, 0, width - 1, height // 2 - 1), fill=GREEN)
    draw.rectangle((0, height // 2, width // 2 - 1, height - 1), fill=BLUE)
    draw.rectangle((width // 2, height // 2, width - 1, height - 1), fill=YELLOW)
    return img


def marked(width: int = 60, height: int = 40) -> Image.Image:
    """Black with one red pixel in the top-left corner: shows where a corner went."""
    img = Image.new("RGB", (width, height), (0, 0, 0))
    img.putpixel((0, 0), RED)
    return img


def red_position(img: Image.Image) -> tuple[int, int]:
    rgb = img.convert("RGB")
    hits = [
        (x, y) for y in range(rgb.height) for x in range(rgb.width) if rgb.getpixel((x, y)) == RED
    ]
    assert len(hits) == 1, hits
    return hits[0]


def mean_color(img: Image.Image) -> tuple[float, ...]:
    return tuple(ImageStat.Stat(img.convert("RGB")).mean)


def close_to(actual: tuple[float, ...], expected: tuple[int, ...], tolerance: float = 12) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    mse = sum(rms**2 for rms in ImageStat.Stat(diff).rms) / 3
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def identical(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a, b).getbbox() is None


def frame_count(img: Image.Image) -> int:
    return int(getattr(img, "n_frames", 1))


def settings_error(run_tool: Any, tool: str, data: bytes, **settings: Any) -> dict[str, Any]:
    with pytest.raises(SettingsError) as caught:
        run_tool(tool, data, **settings)
    assert caught.value.status == 400
    assert caught.value.code == "VALIDATION_ERROR"
    fields: dict[str, Any] = caught.value.details["fields"]
    return fields


@pytest.fixture(scope="module")
def photo_jpeg() -> bytes:
    return images.jpeg(640, 480)


@pytest.fixture(scope="module")
def quadrants_png() -> bytes:
    return encode(quadrants(), "PNG")


@pytest.fixture(scope="module")
def marked_png() -> bytes:
    return encode(marked(), "PNG")


# --- resize -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fit", "expected"),
    [
        ("cover", (200, 200)),
        ("contain", (200, 200)),
        ("fill", (200, 200)),
        ("inside", (200, 150)),
        ("outside", (267, 200)),
    ],
)
def test_resize_fits_give_their_sizes(
    run_tool: Any, photo_jpeg: bytes, fit: str, expected: tuple[int, int]
) -> None:
    outcome = run_tool("resize", photo_jpeg, width=200, height=200, fit=fit)
    img = decode(outcome)
    assert img.size == expected
    assert img.format == "JPEG"
    assert outcome.filename == "input.jpg"


def test_resize_one_side_keeps_aspect_ratio(run_tool: Any, photo_jpeg: bytes) -> None:
    assert decode(run_tool("resize", photo_jpeg, width=320)).size == (320, 240)
    assert decode(run_tool("resize", photo_jpeg, height=120)).size == (160, 120)


def test_resize_percentage(run_tool: Any, photo_jpeg: bytes) -> None:
    assert decode(run_tool("resize", photo_jpeg, percentage=25)).size == (160, 120)
    assert decode(run_tool("resize", photo_jpeg, percentage=150)).size == (960, 720)


def test_resize_cover_keeps_the_centre(run_tool: Any) -> None:
    bands = Image.new("RGB", (300, 100), RED)
    ImageDraw.Draw(bands).rectangle((100, 0, 199, 99), fill=GREEN)
    ImageDraw.Draw(bands).rectangle((200, 0, 299, 99), fill=BLUE)
    img = decode(run_tool("resize", encode(bands, "PNG"), "b.png", width=50, height=50))
    assert img.size == (50, 50)
    assert close_to(mean_color(img), GREEN, tolerance=3)


def test_resize_contain_letterboxes_with_the_background(run_tool: Any) -> None:
    red = encode(Image.new("RGB", (200, 100), RED), "PNG")
    img = decode(
        run_tool("resize", red, "r.png", width=100, height=100, fit="contain", background="#00f")
    ).convert("RGB")
    assert img.size == (100, 100)
    assert img.getpixel((50, 5)) == BLUE
    assert img.getpixel((50, 95)) == BLUE
    assert img.getpixel((50, 50)) == RED


def test_resize_contain_is_transparent_by_default_in_png(run_tool: Any) -> None:
    red = encode(Image.new("RGB", (200, 100), RED), "PNG")
    img = decode(run_tool("resize", red, "r.png", width=100, height=100, fit="contain"))
    rgba = img.convert("RGBA")
    assert rgba.getpixel((50, 5))[3] == 0
    assert rgba.getpixel((50, 50)) == (*RED, 255)


def test_resize_fill_stretches(run_tool: Any, quadrants_png: bytes) -> None:
    img = decode(run_tool("resize", quadrants_png, "q.png", width=40, height=200, fit="fill"))
    assert img.size == (40, 200)
    assert img.convert("RGB").getpixel((5, 5)) == RED
    assert img.convert("RGB").getpixel((35, 195)) == YELLOW


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"width": 1000, "height": 1000, "fit": "inside"}, (640, 480)),
        ({"width": 1000, "height": 1000, "fit": "contain"}, (640, 480)),
        ({"width": 1000, "height": 100, "fit": "fill"}, (640, 100)),
        ({"width": 1000, "height": 100, "fit": "cover"}, (640, 100)),
        ({"width": 1000}, (640, 480)),
        ({"percentage": 200}, (640, 480)),
        ({"width": 320}, (320, 240)),
    ],
)
def test_resize_without_enlargement(
    run_tool: Any, photo_jpeg: bytes, settings: dict[str, Any], expected: tuple[int, int]
) -> None:
    img = decode(run_tool("resize", photo_jpeg, withoutEnlargement=True, **settings))
    assert img.size == expected


def test_resize_enlarges_when_allowed(run_tool: Any, photo_jpeg: bytes) -> None:
    assert decode(run_tool("resize", photo_jpeg, width=1000)).size == (1000, 750)


def test_resize_exif_rotated_input_comes_out_upright(run_tool: Any) -> None:
    # Stored 300x200 with a red band on the left; orientation 6 displays it turned 90 degrees
    # clockwise, so upright it is 200x300 with the red band along the top.
    stored = Image.new("RGB", (300, 200), (0, 0, 200))
    ImageDraw.Draw(stored).rectangle((0, 0, 59, 199), fill=RED)
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    img = decode(run_tool("resize", data, width=100))
    assert img.size == (100, 150)
    assert img.getexif().get(images.EXIF_ORIENTATION, 1) == 1
    assert close_to(img.getpixel((50, 5)), RED, tolerance=40)
    assert close_to(img.getpixel((50, 140)), (0, 0, 200), tolerance=40)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"width": 333}, (333, 250)),
        ({"width": 301, "height": 199}, (301, 199)),
        ({"width": 251, "height": 251, "fit": "contain"}, (251, 251)),
        ({"width": 130, "height": 50, "fit": "fill"}, (130, 50)),
    ],
)
def test_resize_draft_decoding_gives_the_exact_size(
    run_tool: Any, settings: dict[str, Any], expected: tuple[int, int]
) -> None:
    source = images.photo(2000, 1500)
    data = encode(source, "JPEG", quality=92)
    img = decode(run_tool("resize", data, **settings))
    assert img.size == expected
    if "fit" not in settings and "height" not in settings:
        # The reduced-scale decode must look like a full decode scaled down.
        reference = Image.open(io.BytesIO(data)).resize(expected, Image.Resampling.LANCZOS)
        assert psnr(img, reference) > 30


def test_resize_contain_keeps_16_bit_tones(run_tool: Any) -> None:
    data = encode(Image.new("I;16", (80, 40), 32768), "PNG")
    img = decode(
        run_tool("resize", data, "g.png", width=40, height=40, fit="contain", background="#000")
    ).convert("RGB")
    assert img.size == (40, 40)
    assert close_to(img.getpixel((20, 20)), (128, 128, 128), tolerance=2)
    assert img.getpixel((20, 2)) == (0, 0, 0)


def test_resize_palette_image_is_filtered_not_sampled(run_tool: Any) -> None:
    stripes = Image.new("P", (100, 10))
    stripes.putpalette([0, 0, 0, 255, 255, 255])
    draw = ImageDraw.Draw(stripes)
    for x in range(0, 100, 2):
        draw.line((x, 0, x, 9), fill=1)
    img = decode(run_tool("resize", encode(stripes, "PNG"), "s.png", width=50))
    grey = img.convert("L")
    assert grey.size == (50, 5)
    # Nearest-neighbour would give pure black or white; a real filter averages the stripes.
    darkest, lightest = grey.getextrema()
    assert 90 < darkest <= lightest < 165


def test_resize_animated_gif_keeps_every_frame(run_tool: Any) -> None:
    data = images.animated_gif(64, 48, frames=5)
    img = decode(run_tool("resize", data, "a.gif", width=32))
    assert img.format == "GIF"
    assert frame_count(img) == 5
    for index in range(5):
        img.seek(index)
        assert img.size == (32, 24)
        assert img.info["duration"] == 80


def test_resize_keeps_the_icc_profile(run_tool: Any) -> None:
    img = decode(run_tool("resize", images.jpeg_with_icc(), width=100))
    assert img.info.get("icc_profile") == images.srgb_icc_profile()


def test_resize_cover_of_a_thin_strip_never_builds_the_huge_intermediate(run_tool: Any) -> None:
    # cover scales 100x2000 by 163.84 (to 16384 x 327680) before cropping to 16384x1: only
    # the kept region may be built.
    img = decode(run_tool("resize", images.jpeg(100, 2000), width=16384, height=1))
    assert img.size == (16384, 1)


def test_resize_refuses_an_output_over_the_pixel_limit(run_tool: Any) -> None:
    with pytest.raises(BadRequestError) as caught:
        run_tool("resize", images.jpeg(1000, 1000), percentage=1000)
    assert caught.value.code == "OUTPUT_TOO_LARGE"
    assert "10000x10000" in caught.value.message


def test_resize_refuses_a_letterbox_over_the_pixel_limit(run_tool: Any) -> None:
    with pytest.raises(BadRequestError) as caught:
        run_tool("resize", images.jpeg(40, 30), width=16384, height=16384, fit="contain")
    assert caught.value.code == "OUTPUT_TOO_LARGE"


def test_resize_refuses_an_animation_over_the_pixel_budget(run_tool: Any) -> None:
    # 8000x6000 fits the 50M-pixel limit frame by frame, not 20 times over.
    with pytest.raises(BadRequestError) as caught:
        run_tool("resize", images.animated_gif(64, 48, 20), "a.gif", width=8000)
    assert caught.value.code == "OUTPUT_TOO_LARGE"
    assert caught.value.details["frames"] == 20


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"width": 0}, "width"),
        ({"width": 16385}, "width"),
        ({"height": -5}, "height"),
        ({"width": "wide"}, "width"),
        ({"width": 10, "fit": "stretch"}, "fit"),
        ({"percentage": 0}, "percentage"),
        ({"percentage": 1001}, "percentage"),
        ({"width": 10, "background": "red"}, "background"),
        ({"width": 10, "withoutEnlargement": "maybe"}, "withoutEnlargement"),
        ({"width": 10, "colour": "#fff"}, "colour"),
        ({"width": 10, "without_enlargement": True}, "without_enlargement"),
        ({}, "_schema"),
        ({"width": 10, "percentage": 50}, "_schema"),
    ],
)
def test_resize_bad_settings(
    run_tool: Any, photo_jpeg: bytes, settings: dict[str, Any], field: str
) -> None:
    fields = settings_error(run_tool, "resize", photo_jpeg, **settings)
    assert field in fields


# --- crop -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "size", "color"),
    [
        ({"left": 0, "top": 0, "width": 50, "height": 40}, (50, 40), RED),
        ({"left": 50, "top": 0, "width": 50, "height": 40}, (50, 40), GREEN),
        ({"left": 0, "top": 40, "width": 50, "height": 40}, (50, 40), BLUE),
        ({"left": 60, "top": 50, "width": 20, "height": 10}, (20, 10), YELLOW),
        ({"left": 50, "top": 50, "width": 50, "height": 50, "unit": "percent"}, (50, 40), YELLOW),
        ({"left": 0, "top": 0, "width": 25, "height": 25, "unit": "percent"}, (25, 20), RED),
        ({"left": 75, "top": 10}, (25, 70), None),
    ],
)
def test_crop_selects_the_rectangle(
    run_tool: Any,
    quadrants_png: bytes,
    settings: dict[str, Any],
    size: tuple[int, int],
    color: tuple[int, int, int] | None,
) -> None:
    img = decode(run_tool("crop", quadrants_png, "q.png", **settings))
    assert img.format == "PNG"
    assert img.size == size
    colors = img.convert("RGB").getcolors()
    assert colors is not None
    if color is not None:
        assert colors == [(size[0] * size[1], color)]


def test_crop_without_size_runs_to_the_edges(run_tool: Any, quadrants_png: bytes) -> None:
    img = decode(run_tool("crop", quadrants_png, "q.png", left=75, top=10)).convert("RGB")
    assert img.size == (25, 70)
    assert img.getpixel((0, 0)) == GREEN
    assert img.getpixel((24, 69)) == YELLOW


def test_crop_jpeg_keeps_format_and_colour(run_tool: Any) -> None:
    data = encode(quadrants(200, 160), "JPEG", quality=95)
    img = decode(run_tool("crop", data, left=110, top=90, width=80, height=60))
    assert img.format == "JPEG"
    assert img.size == (80, 60)
    assert close_to(mean_color(img), YELLOW)


def test_crop_uses_upright_coordinates(run_tool: Any) -> None:
    stored = Image.new("RGB", (300, 200), (0, 0, 200))
    ImageDraw.Draw(stored).rectangle((0, 0, 59, 199), fill=RED)
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    # Upright the image is 200x300 with the red band along the top 60 rows.
    img = decode(run_tool("crop", data, left=0, top=0, width=200, height=50))
    assert img.size == (200, 50)
    assert close_to(mean_color(img), RED, tolerance=20)


@pytest.mark.parametrize(
    "settings",
    [
        {"left": 90, "top": 0, "width": 20, "height": 10},
        {"left": 0, "top": 50, "width": 10, "height": 40},
        {"left": 100, "top": 0},
        {"left": 0, "top": 0, "width": 101, "height": 80},
    ],
)
def test_crop_outside_the_image_is_refused(
    run_tool: Any, quadrants_png: bytes, settings: dict[str, Any]
) -> None:
    with pytest.raises(BadRequestError) as caught:
        run_tool("crop", quadrants_png, "q.png", **settings)
    assert caught.value.status == 400
    assert caught.value.code == "CROP_OUTSIDE_IMAGE"
    assert "100x80" in caught.value.message
    assert caught.value.details["imageWidth"] == 100
    assert caught.value.details["imageHeight"] == 80


def test_crop_animated_gif_crops_every_frame(run_tool: Any) -> None:
    img = decode(run_tool("crop", images.animated_gif(64, 48, 4), "a.gif", width=20, height=10))
    assert frame_count(img) == 4
    img.seek(3)
    assert img.size == (20, 10)
    assert close_to(mean_color(img), (180, 135, 120), tolerance=8)


def test_crop_keeps_the_icc_profile(run_tool: Any) -> None:
    img = decode(run_tool("crop", images.jpeg_with_icc(), width=50, height=50))
    assert img.info.get("icc_profile") == images.srgb_icc_profile()


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"left": -1}, "left"),
        ({"top": 1_000_001}, "top"),
        ({"width": 0}, "width"),
        ({"height": -10}, "height"),
        ({"left": 10.5}, "left"),
        ({"height": 3.2}, "height"),
        ({"unit": "mm"}, "unit"),
        ({"unit": "percent", "left": 100}, "left"),
        ({"unit": "percent", "left": 60, "width": 50}, "width"),
        ({"unit": "percent", "top": 20, "height": 81}, "height"),
        ({"right": 10}, "right"),
    ],
)
def test_crop_bad_settings(
    run_tool: Any, quadrants_png: bytes, settings: dict[str, Any], field: str
) -> None:
    fields = settings_error(run_tool, "crop", quadrants_png, **settings)
    assert field in fields


# --- rotate -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "size", "red_at"),
    [
        ({"angle": 90}, (40, 60), (39, 0)),
        ({"angle": -270}, (40, 60), (39, 0)),
        ({"angle": 180}, (60, 40), (59, 39)),
        ({"angle": 270}, (40, 60), (0, 59)),
        ({"angle": -90}, (40, 60), (0, 59)),
        ({"angle": 360}, (60, 40), (0, 0)),
        ({"horizontal": True}, (60, 40), (59, 0)),
        ({"vertical": True}, (60, 40), (0, 39)),
        ({"horizontal": True, "vertical": True}, (60, 40), (59, 39)),
        ({"angle": 90, "horizontal": True}, (40, 60), (0, 0)),
        ({"angle": 90, "vertical": True}, (40, 60), (39, 59)),
    ],
)
def test_rotate_and_flip_move_pixels_where_expected(
    run_tool: Any,
    marked_png: bytes,
    settings: dict[str, Any],
    size: tuple[int, int],
    red_at: tuple[int, int],
) -> None:
    img = decode(run_tool("rotate", marked_png, "m.png", **settings))
    assert img.size == size
    assert red_position(img) == red_at


def test_rotate_right_angles_are_lossless(run_tool: Any) -> None:
    source = images.photo(90, 70)
    data = encode(source, "PNG")
    turned = decode(run_tool("rotate", data, "p.png", angle=90)).convert("RGB")
    assert identical(turned, source.transpose(Image.Transpose.ROTATE_270))
    back = decode(run_tool("rotate", encode(turned, "PNG"), "p.png", angle=-90)).convert("RGB")
    assert identical(back, source)


def test_rotate_free_angle_expands_onto_transparency_in_png(run_tool: Any) -> None:
    img = decode(
        run_tool("rotate", encode(Image.new("RGB", (60, 40), RED), "PNG"), "r.png", angle=45)
    )
    # The bounding box of a 60x40 rectangle turned 45 degrees is (60 + 40) / sqrt(2) a side.
    assert abs(img.width - 71) <= 1 and abs(img.height - 71) <= 1
    rgba = img.convert("RGBA")
    assert rgba.getpixel((0, 0))[3] == 0
    assert rgba.getpixel((img.width // 2, img.height // 2)) == (*RED, 255)


def test_rotate_free_angle_on_jpeg_fills_corners_white(run_tool: Any) -> None:
    data = encode(Image.new("RGB", (60, 40), BLUE), "JPEG", quality=95)
    img = decode(run_tool("rotate", data, angle=30))
    assert img.format == "JPEG"
    assert img.mode == "RGB"
    assert close_to(img.getpixel((0, 0)), (255, 255, 255), tolerance=6)
    assert close_to(img.getpixel((img.width // 2, img.height // 2)), BLUE, tolerance=12)


def test_rotate_background_colour(run_tool: Any) -> None:
    data = encode(Image.new("RGB", (60, 40), BLUE), "PNG")
    img = decode(run_tool("rotate", data, "b.png", angle=-30, background="#ff0000")).convert("RGBA")
    assert img.getpixel((0, 0)) == (*RED, 255)
    assert img.getpixel((img.width // 2, img.height // 2)) == (*BLUE, 255)


def test_rotate_animated_gif_turns_every_frame(run_tool: Any) -> None:
    img = decode(run_tool("rotate", images.animated_gif(64, 48, 4), "a.gif", angle=90))
    assert frame_count(img) == 4
    img.seek(2)
    assert img.size == (48, 64)


def test_rotate_free_angle_keeps_16_bit_tones(run_tool: Any) -> None:
    data = encode(Image.new("I;16", (60, 40), 32768), "PNG")
    img = decode(run_tool("rotate", data, "g.png", angle=30)).convert("RGBA")
    # Half of the 16-bit range is mid-grey, not clipped to white.
    assert close_to(img.getpixel((img.width // 2, img.height // 2)), (128, 128, 128, 255), 2)
    assert img.getpixel((0, 0))[3] == 0


@pytest.mark.parametrize("angle", [90, 30])
def test_rotate_keeps_the_icc_profile(run_tool: Any, angle: int) -> None:
    img = decode(run_tool("rotate", images.jpeg_with_icc(), angle=angle))
    assert img.info.get("icc_profile") == images.srgb_icc_profile()


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"angle": 360.5}, "angle"),
        ({"angle": -361}, "angle"),
        ({"angle": "left"}, "angle"),
        ({"angle": "nan"}, "angle"),
        ({"horizontal": "sideways"}, "horizontal"),
        ({"background": "blue"}, "background"),
        ({"background": "#12345"}, "background"),
        ({"flip": True}, "flip"),
    ],
)
def test_rotate_bad_settings(
    run_tool: Any, marked_png: bytes, settings: dict[str, Any], field: str
) -> None:
    fields = settings_error(run_tool, "rotate", marked_png, **settings)
    assert field in fields


# --- convert ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "name", "pil_format"),
    [
        ("jpg", "jpg", "JPEG"),
        ("jpeg", "jpg", "JPEG"),
        ("png", "png", "PNG"),
        ("webp", "webp", "WEBP"),
        ("avif", "avif", "AVIF"),
        ("tiff", "tiff", "TIFF"),
        ("gif", "gif", "GIF"),
        ("bmp", "bmp", "BMP"),
        ("ico", "ico", "ICO"),
        ("heic", "heic", "HEIF"),
        ("heif", "heif", "HEIF"),
    ],
)
def test_convert_to_every_format(run_tool: Any, target: str, name: str, pil_format: str) -> None:
    source = images.photo(120, 90)
    outcome = run_tool("convert", encode(source, "PNG"), "photo.png", format=target)
    assert outcome.format.name == name
    assert outcome.filename == f"photo.{outcome.format.extension}"
    img = decode(outcome)
    assert img.format == pil_format
    assert img.size == (120, 90)
    assert psnr(img, source) > 24


def test_convert_alpha_to_jpeg_flattens_on_white(run_tool: Any) -> None:
    img = decode(run_tool("convert", images.png(80, 60), "a.png", format="jpg"))
    assert img.mode == "RGB"
    assert close_to(mean_color(img.crop((0, 0, 6, 6))), (255, 255, 255), tolerance=8)


def test_convert_keeps_alpha_where_the_format_has_it(run_tool: Any) -> None:
    img = decode(run_tool("convert", images.png(80, 60), "a.png", format="webp", lossless=True))
    rgba = img.convert("RGBA")
    assert rgba.getpixel((0, 0))[3] == 0
    assert rgba.getpixel((40, 30))[3] == 255


@pytest.mark.parametrize("target", ["jpg", "webp", "avif"])
def test_convert_quality_changes_size(run_tool: Any, target: str) -> None:
    data = images.jpeg(320, 240, quality=95)
    low = run_tool("convert", data, format=target, quality=20)
    high = run_tool("convert", data, format=target, quality=95)
    assert low.size < high.size * 0.7
    assert psnr(decode(high), decode(low)) > 20


def test_convert_lossless_webp_is_exact(run_tool: Any) -> None:
    source = images.photo(80, 60)
    img = decode(run_tool("convert", encode(source, "PNG"), "p.png", format="webp", lossless=True))
    assert identical(img.convert("RGB"), source)
    lossy = decode(run_tool("convert", encode(source, "PNG"), "p.png", format="webp"))
    assert not identical(lossy.convert("RGB"), source)


@pytest.mark.parametrize("target", ["gif", "webp", "png", "avif"])
def test_convert_animation_stays_animated(run_tool: Any, target: str) -> None:
    img = decode(run_tool("convert", images.animated_gif(64, 48, 4), "a.gif", format=target))
    assert frame_count(img) == 4
    img.seek(2)
    assert close_to(mean_color(img), (120, 175, 120), tolerance=10)


@pytest.mark.parametrize("target", ["jpg", "bmp", "tiff", "heic", "ico"])
def test_convert_animation_to_a_still_format_is_refused(run_tool: Any, target: str) -> None:
    with pytest.raises(AnimatedImageError) as caught:
        run_tool("convert", images.animated_gif(64, 48, 4), "a.gif", format=target)
    assert caught.value.status == 422
    assert "4 frames" in caught.value.message
    assert "frame" in caught.value.message


def test_convert_picks_the_requested_frame(run_tool: Any) -> None:
    img = decode(
        run_tool("convert", images.animated_gif(64, 48, 4), "a.gif", format="jpg", frame=2)
    )
    assert img.format == "JPEG"
    assert img.size == (64, 48)
    assert close_to(mean_color(img), (120, 175, 120), tolerance=10)
    still = decode(
        run_tool("convert", images.animated_gif(64, 48, 4), "a.gif", format="gif", frame=1)
    )
    assert frame_count(still) == 1
    assert close_to(mean_color(still), (60, 215, 120), tolerance=10)


@pytest.mark.parametrize(
    ("data", "frame"), [(images.animated_gif(64, 48, 4), 4), (images.png(), 1)]
)
def test_convert_frame_out_of_range(run_tool: Any, data: bytes, frame: int) -> None:
    with pytest.raises(BadRequestError) as caught:
        run_tool("convert", data, "a.gif", format="png", frame=frame)
    assert caught.value.code == "FRAME_OUT_OF_RANGE"


def test_convert_frame_zero_of_a_still_image(run_tool: Any, photo_jpeg: bytes) -> None:
    assert decode(run_tool("convert", photo_jpeg, format="png", frame=0)).size == (640, 480)


def test_convert_to_ico_fits_256(run_tool: Any) -> None:
    img = decode(run_tool("convert", images.jpeg(600, 400), format="ico"))
    assert img.format == "ICO"
    assert img.size == (256, 171)
    small = decode(run_tool("convert", images.jpeg(48, 48), format="ico"))
    assert small.size == (48, 48)


@pytest.mark.parametrize("target", ["png", "webp", "tiff", "jpg", "avif"])
def test_convert_keeps_the_icc_profile(run_tool: Any, target: str) -> None:
    img = decode(run_tool("convert", images.jpeg_with_icc(), format=target))
    assert img.info.get("icc_profile") == images.srgb_icc_profile()


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"format": "svg"}, "format"),
        ({"format": "JPEG2000"}, "format"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"format": "png", "lossless": True}, "lossless"),
        ({"frame": -1}, "frame"),
        ({"speed": 3}, "speed"),
    ],
)
def test_convert_bad_settings(
    run_tool: Any, photo_jpeg: bytes, settings: dict[str, Any], field: str
) -> None:
    fields = settings_error(run_tool, "convert", photo_jpeg, **settings)
    assert field in fields


# --- compress ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_jpeg() -> bytes:
    return images.jpeg(1200, 900, quality=95)


def test_compress_quality_lowers_size(run_tool: Any, large_jpeg: bytes) -> None:
    q80 = run_tool("compress", large_jpeg)
    q20 = run_tool("compress", large_jpeg, quality=20)
    assert q20.size < q80.size < len(large_jpeg)
    img = decode(q20)
    assert img.format == "JPEG"
    assert img.size == (1200, 900)
    assert psnr(img, Image.open(io.BytesIO(large_jpeg))) > 25


def test_compress_never_grows_the_file(run_tool: Any) -> None:
    data = images.jpeg(300, 200, quality=30)
    outcome = run_tool("compress", data, quality=95)
    assert outcome.data == data


@pytest.mark.parametrize(
    ("fmt", "name", "target_kb"), [("JPEG", "p.jpg", 40), ("WEBP", "p.webp", 15)]
)
def test_compress_target_size_is_met_and_close(
    run_tool: Any, fmt: str, name: str, target_kb: int
) -> None:
    data = encode(images.photo(800, 600), fmt, quality=95)
    outcome = run_tool("compress", data, name, mode="targetSize", targetSizeKb=target_kb)
    target = target_kb * 1024
    assert outcome.size <= target
    assert outcome.size >= target * 0.85
    img = decode(outcome)
    assert img.format == fmt
    assert img.size == (800, 600)


def test_compress_target_size_downscales_when_quality_is_not_enough(
    run_tool: Any, large_jpeg: bytes
) -> None:
    outcome = run_tool("compress", large_jpeg, mode="targetSize", targetSizeKb=3)
    assert outcome.size <= 3 * 1024
    img = decode(outcome)
    assert img.width < 1200
    assert abs(img.width / img.height - 4 / 3) < 0.02


def test_compress_target_already_met_returns_the_input(run_tool: Any) -> None:
    data = images.jpeg(100, 80)
    outcome = run_tool("compress", data, mode="targetSize", targetSizeKb=len(data) / 1024 + 1)
    assert outcome.data == data


def test_compress_target_unreachable(run_tool: Any) -> None:
    # 6 KB of EXIF that compress keeps: no quality or size can bring the file under 2 KB.
    exif = Image.Exif()
    exif[0x010E] = "a long description " * 320
    data = encode(images.photo(200, 150), "JPEG", quality=90, exif=exif.tobytes())
    with pytest.raises(PixmillError) as caught:
        run_tool("compress", data, mode="targetSize", targetSizeKb=2)
    assert caught.value.status == 422
    assert caught.value.code == "TARGET_SIZE_UNREACHABLE"
    assert caught.value.details["smallestBytes"] > 2048
    assert caught.value.details["targetBytes"] == 2048


def test_compress_png_quality_reduces_to_a_palette_keeping_alpha(run_tool: Any) -> None:
    data = images.png(320, 240)
    outcome = run_tool("compress", data, "a.png", quality=50)
    assert outcome.size < len(data) * 0.6
    img = decode(outcome)
    assert img.format == "PNG"
    assert img.size == (320, 240)
    colors = img.convert("RGBA").getcolors(1000)
    assert colors is not None and len(colors) <= 128
    assert img.convert("RGBA").getpixel((0, 0))[3] == 0
    assert img.convert("RGBA").getpixel((160, 120))[3] == 255


def test_compress_png_to_target_size(run_tool: Any) -> None:
    data = images.png(320, 240, alpha=False)
    target_kb = 40
    outcome = run_tool("compress", data, "a.png", mode="targetSize", targetSizeKb=target_kb)
    assert outcome.size <= target_kb * 1024
    img = decode(outcome)
    assert img.format == "PNG"
    assert img.size == (320, 240)
    assert psnr(img, images.photo(320, 240)) > 22


@pytest.mark.parametrize(("fmt", "name"), [("BMP", "p.bmp"), ("ICO", "p.ico"), ("TIFF", "p.tif")])
def test_compress_lossless_formats_to_target_size(run_tool: Any, fmt: str, name: str) -> None:
    data = encode(images.photo(200, 150), fmt)
    target = len(data) // 3
    outcome = run_tool("compress", data, name, mode="targetSize", targetSizeKb=target / 1024)
    assert outcome.size <= target
    assert decode(outcome).format == fmt


def test_compress_animated_webp_keeps_frames(run_tool: Any) -> None:
    frames = [images.photo(96, 72, seed=seed) for seed in range(4)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    outcome = run_tool("compress", data, "a.webp", quality=40)
    assert outcome.size < len(data)
    img = decode(outcome)
    assert img.format == "WEBP"
    assert frame_count(img) == 4


def test_compress_keeps_the_icc_profile(run_tool: Any) -> None:
    img = decode(run_tool("compress", images.jpeg_with_icc(), quality=40))
    assert img.info.get("icc_profile") == images.srgb_icc_profile()


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"mode": "size"}, "mode"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"mode": "targetSize"}, "targetSizeKb"),
        ({"mode": "targetSize", "targetSizeKb": 0.5}, "targetSizeKb"),
        ({"mode": "targetSize", "targetSizeKb": "small"}, "targetSizeKb"),
        ({"targetSize": 10}, "targetSize"),
    ],
)
def test_compress_bad_settings(
    run_tool: Any, photo_jpeg: bytes, settings: dict[str, Any], field: str
) -> None:
    fields = settings_error(run_tool, "compress", photo_jpeg, **settings)
    assert field in fields


# --- bad inputs -------------------------------------------------------------------------------

VALID_SETTINGS = {
    "resize": {"width": 50},
    "crop": {"width": 10, "height": 10},
    "rotate": {"angle": 90},
    "convert": {"format": "png"},
    "compress": {"quality": 50},
}


@pytest.mark.parametrize("tool", sorted(VALID_SETTINGS))
def test_truncated_jpeg_is_an_invalid_image(run_tool: Any, tool: str) -> None:
    data = images.jpeg(200, 150)
    with pytest.raises(InvalidImageError) as caught:
        run_tool(tool, data[: len(data) // 2], **VALID_SETTINGS[tool])
    assert caught.value.status == 422


@pytest.mark.parametrize("tool", sorted(VALID_SETTINGS))
def test_a_text_file_is_an_unsupported_format(run_tool: Any, tool: str) -> None:
    with pytest.raises(UnsupportedFormatError) as caught:
        run_tool(tool, b"just some notes, not a picture\n", "notes.png", **VALID_SETTINGS[tool])
    assert caught.value.status == 415


def _animation(fmt: str, loop: int | None) -> bytes:
    frames = [Image.new("RGB", (40, 30), (i * 60, 0, 0)) for i in range(3)]
    buffer = io.BytesIO()
    extra = {} if loop is None else {"loop": loop}
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=100, **extra)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("tool", "settings"),
    [
        ("resize", {"width": 20}),
        ("rotate", {"angle": 90}),
        ("crop", {"left": 1, "top": 1, "width": 10, "height": 10}),
        ("watermark-text", {}),
        ("adjust-colors", {"brightness": 10}),
    ],
)
@pytest.mark.parametrize(("fmt", "loop"), [("GIF", None), ("GIF", 0), ("GIF", 3),
                                           ("WEBP", 0), ("WEBP", 3), ("PNG", 3)])  # fmt: skip
def test_frame_by_frame_tools_keep_the_loop_count(
    run_tool: Any, tool: str, settings: dict[str, Any], fmt: str, loop: int | None
) -> None:
    # A GIF without a loop block plays once; it must not come back looping forever.
    source = _animation(fmt, loop)
    stored = Image.open(io.BytesIO(source)).info.get("loop")
    out = decode(run_tool(tool, source, f"a.{fmt.lower()}", **settings))
    assert getattr(out, "n_frames", 1) == 3
    assert out.info.get("loop") == stored
