"""The watermark plugin (watermark-text) on real images."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import ExifTags, Image, ImageChops, ImageFont

from pixmill.core.contracts import ModelCache
from pixmill.core.errors import (
    BadRequestError,
    InvalidImageError,
    SettingsError,
    UnsupportedFormatError,
)
from pixmill.core.execution import execute
from pixmill.core.imageio import ImageLimits
from pixmill.core.plugin_host import Registry
from pixmill.testing import images
from pixmill.testing.images import decode, encode

WIDTH, HEIGHT = 480, 360
SRGB = images.srgb_icc_profile()  # once: littleCMS stamps each new profile with the time


# --- helpers ----------------------------------------------------------------------------------


def base_image(color: tuple[int, int, int] = (30, 60, 90)) -> Image.Image:
    return Image.new("RGB", (WIDTH, HEIGHT), color)


def changed_box(before: Image.Image, after: Image.Image) -> tuple[int, int, int, int] | None:
    return ImageChops.difference(before.convert("RGB"), after.convert("RGB")).getbbox()


def changed_pixels(before: Image.Image, after: Image.Image) -> int:
    diff = ImageChops.difference(before.convert("RGB"), after.convert("RGB")).convert("L")
    return sum(diff.point(lambda v: 255 if v else 0).histogram()[255:])


def watermarked(run_tool: Any, img: Image.Image, **settings: Any) -> Image.Image:
    return decode(run_tool("watermark-text", encode(img), "in.png", **settings))


# --- placement --------------------------------------------------------------------------------


def test_default_is_a_bottom_right_mark_inside_the_margin(run_tool: Any) -> None:
    img = base_image()
    out = watermarked(run_tool, img)
    assert out.size == img.size and out.mode == "RGB"
    box = changed_box(img, out)
    assert box is not None
    left, top, right, bottom = box
    # The text box ends at the margin; the last glyph's ink may stop a few pixels short.
    assert WIDTH - 24 - 6 <= right <= WIDTH - 24
    assert HEIGHT - 24 - 6 <= bottom <= HEIGHT - 24
    assert left > WIDTH / 3 and top > HEIGHT * 3 / 4
    # Outside the text box every pixel is exactly the original.
    outside = out.copy()
    outside.paste(img.crop(box), box[:2])
    assert outside.tobytes() == img.tobytes()


@pytest.mark.parametrize(
    ("position", "column", "row"),
    [
        ("top-left", 0, 0),
        ("top", 1, 0),
        ("top-right", 2, 0),
        ("left", 0, 1),
        ("center", 1, 1),
        ("right", 2, 1),
        ("bottom-left", 0, 2),
        ("bottom", 1, 2),
        ("bottom-right", 2, 2),
    ],
)
def test_each_anchor_puts_the_text_in_its_third(
    run_tool: Any, position: str, column: int, row: int
) -> None:
    img = base_image()
    out = watermarked(run_tool, img, position=position, fontSize=32, text="mark")
    box = changed_box(img, out)
    assert box is not None
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    assert int(centre_x // (WIDTH / 3)) == column
    assert int(centre_y // (HEIGHT / 3)) == row
    if "left" in position:
        assert 24 <= box[0] <= 24 + 4
    if "top" in position:
        assert 24 <= box[1] <= 24 + 12  # the line box includes space above lowercase letters


def test_margin_moves_the_text(run_tool: Any) -> None:
    img = base_image()
    near = changed_box(img, watermarked(run_tool, img, position="top-left", margin=0))
    far = changed_box(img, watermarked(run_tool, img, position="top-left", margin=100))
    assert near is not None and far is not None
    assert far[0] - near[0] == 100
    assert far[1] - near[1] == 100


def test_tiled_covers_the_whole_image(run_tool: Any) -> None:
    img = base_image()
    out = watermarked(run_tool, img, position="tiled", fontSize=20, tileSpacing=30)
    cells_hit = 0
    for gx in range(4):
        for gy in range(4):
            cell = (
                gx * WIDTH // 4,
                gy * HEIGHT // 4,
                (gx + 1) * WIDTH // 4,
                (gy + 1) * HEIGHT // 4,
            )
            if changed_box(img.crop(cell), out.crop(cell)) is not None:
                cells_hit += 1
    assert cells_hit == 16
    single = watermarked(run_tool, img, position="center", fontSize=20)
    assert changed_pixels(img, out) > 10 * changed_pixels(img, single)


def test_tiled_spacing_controls_density(run_tool: Any) -> None:
    img = base_image()
    dense = watermarked(run_tool, img, position="tiled", fontSize=16, tileSpacing=10)
    sparse = watermarked(run_tool, img, position="tiled", fontSize=16, tileSpacing=150)
    assert changed_pixels(img, dense) > 3 * changed_pixels(img, sparse)


def test_tiny_text_tiled_over_a_large_image_is_fast_and_complete(run_tool: Any) -> None:
    img = Image.new("RGB", (3000, 2000), (0, 0, 0))
    out = watermarked(
        run_tool, img, position="tiled", fontSize=4, tileSpacing=0, text="x", opacity=100
    )
    box = changed_box(img, out)
    assert box is not None
    assert box[0] < 10 and box[1] < 10 and box[2] > 2990 and box[3] > 1990


# --- look: opacity, colour, font, size, rotation ----------------------------------------------


def test_opacity_zero_leaves_every_pixel_unchanged(run_tool: Any) -> None:
    img = images.photo(WIDTH, HEIGHT)
    for position in ("bottom-right", "tiled"):
        out = watermarked(run_tool, img, opacity=0, position=position)
        assert out.tobytes() == img.tobytes()


def test_full_opacity_draws_the_requested_colour(run_tool: Any) -> None:
    img = Image.new("RGB", (WIDTH, HEIGHT), (0, 0, 0))
    out = watermarked(
        run_tool,
        img,
        text="WATERMARK",
        font="dejavu-sans-bold",
        fontSize=80,
        color="#ff8000",
        opacity=100,
        position="center",
    )
    colors = out.getcolors(WIDTH * HEIGHT)
    assert colors is not None
    solid = sum(count for count, rgb in colors if rgb == (255, 128, 0))
    assert solid > 2000  # glyph interiors are exactly the colour, edges blend into black


def test_half_opacity_blends_half_way(run_tool: Any) -> None:
    img = Image.new("RGB", (WIDTH, HEIGHT), (0, 0, 0))
    out = watermarked(run_tool, img, text="HALF", font="dejavu-sans-bold", fontSize=90, opacity=50)
    brightest = out.convert("L").getextrema()[1]
    assert 125 <= brightest <= 130


def test_short_hex_colour_equals_the_long_form(run_tool: Any) -> None:
    img = base_image()
    short = watermarked(run_tool, img, color="#0f0")
    long = watermarked(run_tool, img, color="#00ff00")
    assert short.tobytes() == long.tobytes()
    other = watermarked(run_tool, img, color="#ff0000")
    assert other.tobytes() != long.tobytes()


def test_bold_font_inks_more_than_regular(run_tool: Any) -> None:
    img = base_image()
    regular = watermarked(run_tool, img, font="dejavu-sans", fontSize=60, opacity=100)
    bold = watermarked(run_tool, img, font="dejavu-sans-bold", fontSize=60, opacity=100)
    assert changed_pixels(img, bold) > 1.2 * changed_pixels(img, regular)


def test_font_size_scales_the_text(run_tool: Any) -> None:
    img = base_image()
    small = changed_box(img, watermarked(run_tool, img, fontSize=20, position="center"))
    large = changed_box(img, watermarked(run_tool, img, fontSize=60, position="center"))
    assert small is not None and large is not None
    small_w, large_w = small[2] - small[0], large[2] - large[0]
    assert 2.6 < large_w / small_w < 3.4


def test_rotation_changes_the_footprint(run_tool: Any) -> None:
    img = base_image()
    flat = changed_box(img, watermarked(run_tool, img, position="center", text="watermark"))
    upright = changed_box(
        img, watermarked(run_tool, img, position="center", text="watermark", rotation=90)
    )
    diagonal = changed_box(
        img, watermarked(run_tool, img, position="center", text="watermark", rotation=45)
    )
    assert flat is not None and upright is not None and diagonal is not None
    flat_w, flat_h = flat[2] - flat[0], flat[3] - flat[1]
    up_w, up_h = upright[2] - upright[0], upright[3] - upright[1]
    assert flat_w > 3 * flat_h
    assert up_h > 3 * up_w
    assert abs(up_h - flat_w) <= 3
    diag_w, diag_h = diagonal[2] - diagonal[0], diagonal[3] - diagonal[1]
    assert abs(diag_w - diag_h) < 0.35 * diag_w  # roughly square at 45 degrees


def ink_centroid(before: Image.Image, after: Image.Image) -> tuple[float, float]:
    diff = ImageChops.difference(before.convert("RGB"), after.convert("RGB")).convert("L")
    points = [
        (x, y) for y in range(diff.height) for x in range(diff.width) if diff.getpixel((x, y))
    ]
    assert points
    return sum(x for x, _ in points) / len(points), sum(y for _, y in points) / len(points)


def test_rotation_is_clockwise_and_full_turns_change_nothing(run_tool: Any) -> None:
    img = Image.new("RGB", (WIDTH, HEIGHT), (0, 0, 0))
    # A heavy start and a light end: turned clockwise, the start lands on top (on the left
    # at 180 it is on the right, and counter-clockwise it lands at the bottom).
    settings = {"text": "██....", "position": "center", "opacity": 100}
    flat = watermarked(run_tool, img, **settings)
    clockwise = watermarked(run_tool, img, rotation=90, **settings)
    counter = watermarked(run_tool, img, rotation=-90, **settings)
    flat_box, cw_box, ccw_box = (changed_box(img, out) for out in (flat, clockwise, counter))
    assert flat_box is not None and cw_box is not None and ccw_box is not None
    assert ink_centroid(img, flat)[0] < (flat_box[0] + flat_box[2]) / 2
    assert ink_centroid(img, clockwise)[1] < (cw_box[1] + cw_box[3]) / 2
    assert ink_centroid(img, counter)[1] > (ccw_box[1] + ccw_box[3]) / 2
    zero = watermarked(run_tool, img, text="abc", rotation=0)
    full = watermarked(run_tool, img, text="abc", rotation=360)
    assert zero.tobytes() == full.tobytes()


def test_multiline_text_is_taller(run_tool: Any) -> None:
    img = base_image()
    one = changed_box(img, watermarked(run_tool, img, text="one line"))
    two = changed_box(img, watermarked(run_tool, img, text="one line\nand another"))
    assert one is not None and two is not None
    assert (two[3] - two[1]) > 1.8 * (one[3] - one[1])


# --- modes, metadata, formats, animation ------------------------------------------------------


def test_rgba_input_keeps_its_alpha(run_tool: Any) -> None:
    img = Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0))
    img.paste((200, 20, 20, 255), (0, 0, WIDTH // 2, HEIGHT))  # left half opaque red
    out = watermarked(run_tool, img, position="bottom-right", opacity=100)
    assert out.mode == "RGBA"
    assert out.getpixel((5, 5)) == (200, 20, 20, 255)
    assert out.getpixel((WIDTH - 2, 2)) == (0, 0, 0, 0)
    box = changed_box(img, out)
    assert box is not None
    alphas = out.getchannel("A").crop(box)
    assert alphas.getextrema()[1] == 255  # the mark is visible over the transparent half


def test_greyscale_input_stays_greyscale(run_tool: Any) -> None:
    img = base_image().convert("L")
    out = watermarked(run_tool, img, color="#ffffff", opacity=100)
    assert out.mode == "L"
    assert out.getextrema()[1] == 255


def test_palette_input_is_watermarked_in_colour(run_tool: Any) -> None:
    img = images.photo(200, 150).quantize(32)
    out = decode(
        run_tool("watermark-text", encode(img), "p.png", color="#ff0000", opacity=100, text="X")
    )
    assert out.mode == "RGB"
    assert (255, 0, 0) in {rgb for _, rgb in out.getcolors(200 * 150) or []}


def test_jpeg_keeps_format_icc_and_exif(run_tool: Any) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Canon"
    source = encode(
        images.photo(WIDTH, HEIGHT), "JPEG", quality=92, icc_profile=SRGB, exif=exif.tobytes()
    )
    outcome = run_tool("watermark-text", source, "photo.jpg")
    out = decode(outcome)
    assert outcome.format.name == "jpg" and out.format == "JPEG"
    assert out.info.get("icc_profile") == SRGB
    assert out.getexif()[ExifTags.Base.Make] == "Canon"


def test_exif_rotated_jpeg_is_marked_in_its_upright_corner(run_tool: Any) -> None:
    source = images.exif_rotated_jpeg(300, 200, orientation=6)  # shows 200 wide, 300 tall
    plain = decode(run_tool("watermark-text", source, "r.jpg", opacity=0))
    out = decode(run_tool("watermark-text", source, "r.jpg", opacity=100, fontSize=30))
    assert out.size == (200, 300)
    diff = ImageChops.difference(plain, out).convert("L").point(lambda v: 255 if v > 40 else 0)
    box = diff.getbbox()
    assert box is not None
    assert 200 - 24 - 8 <= box[2] <= 200 - 24 + 2  # the right edge of the upright picture
    assert 300 - 24 - 8 <= box[3] <= 300 - 24 + 2


def test_animated_gif_marks_every_frame(run_tool: Any) -> None:
    source = images.animated_gif(160, 120, frames=3)
    out = decode(
        run_tool("watermark-text", source, "a.gif", fontSize=24, text="GIF", opacity=100, margin=4)
    )
    original = Image.open(io.BytesIO(source))
    assert out.n_frames == 3
    for index in range(3):
        out.seek(index)
        original.seek(index)
        box = changed_box(original.convert("RGB"), out.convert("RGB"))
        assert box is not None and box[0] > 80 and box[1] > 60, index


# --- fonts are cached -------------------------------------------------------------------------


def test_fonts_are_loaded_once_per_name_and_size(
    registry: Registry, limits: ImageLimits, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[tuple[str, int]] = []
    real_truetype = ImageFont.truetype

    def counting(font: Any, size: float = 10, *args: Any, **kwargs: Any) -> Any:
        loads.append((str(font), int(size)))
        return real_truetype(font, size, *args, **kwargs)

    monkeypatch.setattr(ImageFont, "truetype", counting)
    models = ModelCache()
    tool = registry.catalogue_entry("watermark-text")
    data = encode(base_image())
    for _ in range(3):
        execute(tool, {"file": [(data, "a.png")]}, {"fontSize": 30}, limits=limits, models=models)
    assert len(loads) == 1 and loads[0][0].endswith("DejaVuSans.ttf") and loads[0][1] == 30
    assert "font:dejavu-sans:30" in models
    execute(tool, {"file": [(data, "a.png")]}, {"fontSize": 31}, limits=limits, models=models)
    assert len(loads) == 2


# --- bad settings and inputs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"text": ""}, "text"),
        ({"text": "x" * 501}, "text"),
        ({"text": "   "}, "text"),
        ({"text": 12}, "text"),
        ({"font": "comic-sans"}, "font"),
        ({"font": "DejaVuSans.ttf"}, "font"),
        ({"fontSize": 3}, "fontSize"),
        ({"fontSize": 1001}, "fontSize"),
        ({"fontSize": "big"}, "fontSize"),
        ({"color": "red"}, "color"),
        ({"color": "#12345"}, "color"),
        ({"color": "#ggg"}, "color"),
        ({"color": "#ff000080"}, "color"),
        ({"opacity": -1}, "opacity"),
        ({"opacity": 101}, "opacity"),
        ({"position": "middle"}, "position"),
        ({"position": "Top-Left"}, "position"),
        ({"margin": -1}, "margin"),
        ({"margin": 10001}, "margin"),
        ({"rotation": 361}, "rotation"),
        ({"rotation": -360.5}, "rotation"),
        ({"tileSpacing": -1}, "tileSpacing"),
        ({"tileSpacing": 10001}, "tileSpacing"),
        ({"font_size": 20}, "font_size"),
        ({"tile": True}, "tile"),
    ],
)
def test_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        run_tool("watermark-text", encode(base_image()), "a.png", **settings)
    assert field in exc.value.details["fields"], exc.value.details


def test_bounds_themselves_are_accepted(run_tool: Any) -> None:
    img = base_image()
    for settings in (
        {"fontSize": 4, "opacity": 100, "rotation": -360, "margin": 0, "text": "x"},
        {"fontSize": 200, "opacity": 1, "rotation": 360, "tileSpacing": 0, "position": "tiled"},
        {"text": "y" * 500, "fontSize": 8},
    ):
        out = watermarked(run_tool, img, **settings)
        assert out.size == img.size


def test_text_too_large_to_draw_is_refused(run_tool: Any) -> None:
    with pytest.raises(BadRequestError) as exc:
        run_tool("watermark-text", encode(base_image()), "a.png", text="W" * 500, fontSize=1000)
    assert "fontSize" in exc.value.message


def test_bad_inputs(run_tool: Any) -> None:
    data = encode(images.photo(200, 150))
    with pytest.raises(InvalidImageError):
        run_tool("watermark-text", data[: len(data) // 2], "cut.png")
    with pytest.raises(UnsupportedFormatError):
        run_tool("watermark-text", b"GIF00 not really a gif", "x.gif")
    with pytest.raises(UnsupportedFormatError):
        run_tool("watermark-text", b"\x00" * 64, "zeros.png")
