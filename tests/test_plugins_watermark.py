"""The watermark plugin (watermark-text, watermark-image, text-overlay, compose,
meme-generator) on real images."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import ExifTags, Image, ImageChops, ImageFont

import pixmill.plugins.watermark as watermark
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
from pixmill.testing import check_plugin, images
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
    _, brightest = out.convert("L").getextrema()
    assert isinstance(brightest, int) and 125 <= brightest <= 130


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
    assert getattr(out, "n_frames", 1) == 3
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


# === watermark-image, text-overlay, compose, meme-generator ===================================


def logo(size: tuple[int, int] = (100, 50), color: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """An opaque block of colour whose right half is fully transparent."""
    img = Image.new("RGBA", size, (*color, 255))
    img.paste((0, 0, 0, 0), (size[0] // 2, 0, size[0], size[1]))
    return encode(img)


def flat(color: tuple[int, ...], size: tuple[int, int] = (WIDTH, HEIGHT)) -> Image.Image:
    return Image.new("RGBA" if len(color) == 4 else "RGB", size, color)


def with_second(
    run_tool: Any, tool: str, img: Image.Image, part: str, second: bytes, **settings: Any
) -> Any:
    return run_tool(tool, encode(img), "in.png", files={part: [(second, "second.png")]}, **settings)


def post_tool(client: FlaskClient, tool: str, parts: dict[str, bytes], settings: Any) -> Any:
    form: dict[str, Any] = {"settings": json.dumps(settings)}
    for name, data in parts.items():
        form[name] = (io.BytesIO(data), f"{name}.png")
    return client.post(f"/api/v1/tools/image/{tool}", data=form, content_type="multipart/form-data")


def test_watermark_plugin_conforms() -> None:
    report = check_plugin(watermark)
    report.assert_ok()
    assert report.tools == [
        "watermark-text",
        "watermark-image",
        "text-overlay",
        "compose",
        "meme-generator",
    ]


# --- watermark-image --------------------------------------------------------------------------


def test_image_watermark_sits_bottom_right_scaled_to_the_width(run_tool: Any) -> None:
    img = base_image()
    outcome = with_second(run_tool, "watermark-image", img, "watermark", logo(), opacity=100)
    out = decode(outcome)
    assert out.size == img.size
    # 20% of 480 wide, aspect kept, 24 px from the bottom-right corner.
    assert outcome.meta == {"watermarkWidth": 96, "watermarkHeight": 48, "x": 360, "y": 288}
    box = changed_box(img, out)
    assert box is not None
    # Only the opaque left half of the logo shows: the transparent half leaves the image alone.
    assert box[0] == 360 and box[1] == 288 and box[3] == 288 + 48
    assert 360 + 46 <= box[2] <= 360 + 50
    assert out.getpixel((370, 300)) == (255, 0, 0)
    assert out.getpixel((360 + 80, 300)) == img.getpixel((0, 0))
    outside = out.copy()
    outside.paste(img.crop(box), box[:2])
    assert outside.tobytes() == img.tobytes()


def test_image_watermark_opacity_scale_position_and_margin(run_tool: Any) -> None:
    img = flat((0, 0, 0))
    half = decode(with_second(run_tool, "watermark-image", img, "watermark", logo(), opacity=50))
    assert half.getpixel((370, 300)) == (128, 0, 0)
    none = decode(with_second(run_tool, "watermark-image", img, "watermark", logo(), opacity=0))
    assert none.tobytes() == img.tobytes()
    outcome = with_second(
        run_tool,
        "watermark-image",
        img,
        "watermark",
        logo(),
        position="top-left",
        margin=5,
        scale=50,
    )
    assert outcome.meta == {"watermarkWidth": 240, "watermarkHeight": 120, "x": 5, "y": 5}
    box = changed_box(img, decode(outcome))
    assert box is not None and box[:2] == (5, 5) and box[3] == 125


def test_image_watermark_tiled_covers_the_image(run_tool: Any) -> None:
    img = flat((0, 0, 0))
    out = decode(
        with_second(
            run_tool,
            "watermark-image",
            img,
            "watermark",
            logo((40, 20)),
            position="tiled",
            scale=10,
            tileSpacing=10,
            opacity=100,
        )
    )
    for gx in range(4):
        for gy in range(4):
            cell = (gx * 120, gy * 90, (gx + 1) * 120, (gy + 1) * 90)
            assert changed_box(img.crop(cell), out.crop(cell)) is not None, cell


def test_image_watermark_marks_every_frame_of_an_animation(run_tool: Any) -> None:
    source = images.animated_gif(160, 120, frames=3)
    outcome = run_tool(
        "watermark-image",
        source,
        "a.gif",
        files={"watermark": [(logo(), "w.png")]},
        opacity=100,
        scale=40,
        margin=4,
    )
    out = decode(outcome)
    original = Image.open(io.BytesIO(source))
    assert getattr(out, "n_frames", 1) == 3
    for index in range(3):
        out.seek(index)
        original.seek(index)
        box = changed_box(original.convert("RGB"), out.convert("RGB"))
        assert box is not None and box[0] >= 160 - 4 - 64 and box[1] >= 120 - 4 - 32, index


def test_image_watermark_keeps_the_main_images_alpha(run_tool: Any) -> None:
    img = flat((0, 0, 0, 0))
    out = decode(with_second(run_tool, "watermark-image", img, "watermark", logo(), opacity=100))
    assert out.mode == "RGBA"
    assert out.getpixel((370, 300)) == (255, 0, 0, 255)
    assert out.getpixel((10, 10)) == (0, 0, 0, 0)


def test_image_watermark_refuses_a_missing_or_non_image_watermark(run_tool: Any) -> None:
    with pytest.raises(BadRequestError) as missing:
        run_tool("watermark-image", encode(base_image()), "a.png")
    assert missing.value.code == "MISSING_FILE" and missing.value.status == 400
    with pytest.raises(UnsupportedFormatError) as bad:
        with_second(run_tool, "watermark-image", base_image(), "watermark", b"not an image")
    assert bad.value.status == 415


def test_image_watermark_over_rest(pixmill_client: FlaskClient) -> None:
    main = encode(base_image())
    ok = post_tool(pixmill_client, "watermark-image", {"file": main, "watermark": logo()}, {})
    assert ok.status_code == 200
    for settings in (
        {"scale": 0},
        {"scale": 101},
        {"opacity": 101},
        {"position": "middle"},
        {"margin": -1},
        {"opacity": 50.5},
    ):
        response = post_tool(
            pixmill_client, "watermark-image", {"file": main, "watermark": logo()}, settings
        )
        assert response.status_code == 400, settings
        assert response.get_json()["code"] == "VALIDATION_ERROR", settings
    missing = post_tool(pixmill_client, "watermark-image", {"file": main}, {})
    assert missing.status_code == 400 and missing.get_json()["code"] == "MISSING_FILE"
    junk = post_tool(
        pixmill_client, "watermark-image", {"file": main, "watermark": b"plain text"}, {}
    )
    assert junk.status_code == 415


# --- text-overlay -----------------------------------------------------------------------------


def test_text_overlay_draws_a_box_of_the_background_colour(run_tool: Any) -> None:
    img = flat((0, 0, 0))
    outcome = run_tool(
        "text-overlay",
        encode(img),
        "a.png",
        text="Hello",
        background="#0000ff",
        backgroundOpacity=100,
        padding=20,
        borderRadius=0,
        x=50,
        y=40,
        color="#ffffff",
    )
    out = decode(outcome)
    meta = outcome.meta
    assert (meta["x"], meta["y"]) == (50, 40)
    assert changed_box(img, out) == (50, 40, 50 + meta["width"], 40 + meta["height"])
    assert out.getpixel((52, 42)) == (0, 0, 255)  # the padding: pure box colour
    assert out.getpixel((50 + meta["width"] - 3, 40 + meta["height"] - 3)) == (0, 0, 255)
    inside = out.crop((70, 60, 50 + meta["width"] - 20, 40 + meta["height"] - 20))
    assert (255, 255, 255) in {rgb for _, rgb in inside.getcolors(100000) or []}


def test_text_overlay_box_opacity_radius_and_anchor(run_tool: Any) -> None:
    img = flat((0, 0, 0))
    half = run_tool(
        "text-overlay",
        encode(img),
        "a.png",
        text="Hi",
        background="#ffffff",
        backgroundOpacity=50,
        borderRadius=0,
        position="bottom-right",
        margin=10,
    )
    meta = half.meta
    assert meta["x"] + meta["width"] == WIDTH - 10 and meta["y"] + meta["height"] == HEIGHT - 10
    assert decode(half).getpixel((meta["x"] + 1, meta["y"] + 1)) == (128, 128, 128)
    rounded = decode(
        run_tool(
            "text-overlay",
            encode(img),
            "a.png",
            text="Hi",
            borderRadius=30,
            x=0,
            y=0,
            backgroundOpacity=100,
            background="#ffffff",
        )
    )
    assert rounded.getpixel((0, 0)) == (0, 0, 0)  # the corner is cut
    assert rounded.getpixel((30, 1)) == (255, 255, 255)
    bare = decode(
        run_tool(
            "text-overlay",
            encode(img),
            "a.png",
            text="Hi",
            backgroundOpacity=0,
            x=0,
            y=0,
            padding=0,
        )
    )
    box = changed_box(img, bare)
    assert box is not None and box[0] <= 4 and box[3] < 60  # just the glyphs, no box


def test_text_overlay_is_clipped_at_negative_positions(run_tool: Any) -> None:
    img = flat((0, 0, 0))
    outcome = run_tool(
        "text-overlay",
        encode(img),
        "a.png",
        text="Clipped",
        x=-40,
        y=-30,
        backgroundOpacity=100,
        background="#00ff00",
    )
    out = decode(outcome)
    box = changed_box(img, out)
    assert box is not None and box[:2] == (0, 0)
    assert box[2:] == (outcome.meta["width"] - 40, outcome.meta["height"] - 30)
    assert out.getpixel((0, 0)) == (0, 255, 0)


def test_text_overlay_bad_settings_and_input(run_tool: Any) -> None:
    data = encode(base_image())
    with pytest.raises(SettingsError) as caught:
        run_tool("text-overlay", data, "a.png", text="")
    assert "text" in caught.value.details["fields"]
    for settings in (
        {"padding": -1},
        {"borderRadius": 1001},
        {"x": 10001},
        {"fontSize": 3},
        {"backgroundOpacity": 101},
        {"background": "#ff000080"},
        {"text": " "},
    ):
        with pytest.raises(SettingsError) as caught:
            run_tool("text-overlay", data, "a.png", **{"text": "x", **settings})
        assert caught.value.status == 400
    with pytest.raises(InvalidImageError):
        run_tool("text-overlay", data[: len(data) // 2], "cut.png", text="x")


# --- compose ----------------------------------------------------------------------------------

BASE = (200, 100, 30)
TOP = (100, 200, 128)


def reference(mode: str, base: np.ndarray, top: np.ndarray) -> np.ndarray:
    """The W3C compositing formulas, on 0..1 floats."""
    b, s = base, top
    if mode == "soft-light":
        d = np.where(b <= 0.25, ((16 * b - 12) * b + 4) * b, np.sqrt(b))
        return np.where(s <= 0.5, b - (1 - 2 * s) * b * (1 - b), b + (2 * s - 1) * (d - b))
    hard = np.where(s <= 0.5, 2 * b * s, 1 - 2 * (1 - b) * (1 - s))
    over = np.where(b <= 0.5, 2 * b * s, 1 - 2 * (1 - b) * (1 - s))
    return {
        "normal": s,
        "multiply": b * s,
        "screen": b + s - b * s,
        "overlay": over,
        "darken": np.minimum(b, s),
        "lighten": np.maximum(b, s),
        "difference": np.abs(b - s),
        "add": np.minimum(b + s, 1),
        "subtract": np.maximum(b - s, 0),
        "hard-light": hard,
    }[mode]


BLEND_MODES = (
    "normal",
    "multiply",
    "screen",
    "overlay",
    "darken",
    "lighten",
    "difference",
    "add",
    "subtract",
    "soft-light",
    "hard-light",
)


@pytest.mark.parametrize("mode", BLEND_MODES)
@pytest.mark.parametrize("opacity", [100, 50])
def test_compose_blend_modes_match_the_reference(run_tool: Any, mode: str, opacity: int) -> None:
    base_colors = [BASE, (10, 240, 128), (60, 30, 250)]
    top_colors = [TOP, (250, 20, 60), (128, 128, 10)]
    for base_color, top_color in zip(base_colors, top_colors, strict=True):
        img = flat(base_color, (64, 48))
        out = decode(
            with_second(
                run_tool,
                "compose",
                img,
                "overlay",
                encode(flat(top_color, (64, 48))),
                blend=mode,
                opacity=opacity,
            )
        )
        b = np.array(base_color, dtype=np.float64) / 255
        s = np.array(top_color, dtype=np.float64) / 255
        mixed = reference(mode, b, s)
        expected = np.rint(255 * (b + (mixed - b) * opacity / 100))
        actual = np.asarray(out, dtype=np.float64)
        assert np.abs(actual - expected).max() <= 1.01, (mode, base_color, actual[0, 0], expected)


def test_compose_places_and_clips_the_overlay(run_tool: Any) -> None:
    img = flat(BASE)
    top = encode(flat(TOP, (100, 80)))
    outcome = with_second(run_tool, "compose", img, "overlay", top, x=-30, y=-20)
    out = decode(outcome)
    assert out.size == img.size
    assert changed_box(img, out) == (0, 0, 70, 60)
    assert outcome.meta == {"visibleWidth": 70, "visibleHeight": 60}
    assert out.getpixel((0, 0)) == TOP and out.getpixel((70, 60)) == BASE
    edge = decode(with_second(run_tool, "compose", img, "overlay", top, x=WIDTH - 10, y=HEIGHT - 5))
    assert changed_box(img, edge) == (WIDTH - 10, HEIGHT - 5, WIDTH, HEIGHT)
    away = decode(with_second(run_tool, "compose", img, "overlay", top, x=WIDTH, y=0))
    assert away.tobytes() == img.tobytes()
    far = decode(with_second(run_tool, "compose", img, "overlay", top, x=-100, y=-80))
    assert far.tobytes() == img.tobytes()


def test_compose_respects_overlay_and_base_alpha(run_tool: Any) -> None:
    # The overlay's transparent half leaves the base alone.
    img = flat(BASE, (200, 100))
    out = decode(with_second(run_tool, "compose", img, "overlay", logo((100, 50), TOP)))
    assert out.getpixel((10, 10)) == TOP and out.getpixel((80, 10)) == BASE
    # On a transparent base any blend shows the overlay as it is (W3C: no backdrop to blend).
    clear = flat((0, 0, 0, 0), (200, 100))
    result = decode(
        with_second(
            run_tool, "compose", clear, "overlay", encode(flat(TOP, (50, 50))), blend="multiply"
        )
    )
    assert result.mode == "RGBA"
    assert result.getpixel((10, 10)) == (*TOP, 255)
    assert result.getpixel((100, 10)) == (0, 0, 0, 0)


def test_compose_maps_animation_frames(run_tool: Any) -> None:
    source = images.animated_gif(64, 48, frames=3)
    out = decode(
        run_tool(
            "compose",
            source,
            "a.gif",
            files={"overlay": [(encode(flat(TOP, (20, 20))), "o.png")]},
            x=5,
            y=5,
        )
    )
    assert getattr(out, "n_frames", 1) == 3
    for index in range(3):
        out.seek(index)
        green = out.convert("RGB").getchannel("G").getpixel((10, 10))
        assert isinstance(green, int) and abs(green - TOP[1]) < 40  # GIF palette quantises


def test_compose_bad_settings_and_inputs(run_tool: Any, pixmill_client: FlaskClient) -> None:
    img = base_image()
    top = encode(flat(TOP, (10, 10)))
    for settings in ({"blend": "burn"}, {"opacity": -1}, {"x": 1.5}, {"y": 99999}):
        with pytest.raises(SettingsError) as caught:
            with_second(run_tool, "compose", img, "overlay", top, **settings)
        assert caught.value.status == 400
    with pytest.raises(BadRequestError) as missing:
        run_tool("compose", encode(img), "a.png")
    assert missing.value.code == "MISSING_FILE"
    with pytest.raises(UnsupportedFormatError):
        with_second(run_tool, "compose", img, "overlay", b"\x00" * 64)
    response = post_tool(
        pixmill_client, "compose", {"file": encode(img), "overlay": top}, {"blend": "Multiply"}
    )
    assert response.status_code == 400 and response.get_json()["code"] == "VALIDATION_ERROR"


# --- meme-generator ---------------------------------------------------------------------------


def rows_changed(before: Image.Image, after: Image.Image) -> list[int]:
    diff = ImageChops.difference(before.convert("RGB"), after.convert("RGB")).convert("L")
    arr = np.asarray(diff)
    return [int(row) for row in np.nonzero(arr.max(axis=1))[0]]


def test_meme_text_is_at_the_top_and_bottom_only(run_tool: Any) -> None:
    img = flat((120, 120, 120))
    outcome = run_tool("meme-generator", encode(img), "m.png", topText="top", bottomText="bottom")
    out = decode(outcome)
    rows = rows_changed(img, out)
    assert rows and min(rows) < HEIGHT * 0.1 and max(rows) > HEIGHT * 0.9
    assert not [row for row in rows if HEIGHT * 0.4 < row < HEIGHT * 0.6]
    colors = {rgb for _, rgb in out.getcolors(WIDTH * HEIGHT) or []}
    assert (255, 255, 255) in colors and (0, 0, 0) in colors  # white letters, black outline
    top_size, bottom_size = outcome.meta["fontSizes"]
    assert top_size > 40 and bottom_size > 40


def test_meme_single_caption_and_caps(run_tool: Any) -> None:
    img = flat((120, 120, 120))
    top_only = decode(run_tool("meme-generator", encode(img), "m.png", topText="only on top"))
    rows = rows_changed(img, top_only)
    assert rows and max(rows) < HEIGHT / 2
    lower = decode(
        run_tool("meme-generator", encode(img), "m.png", topText="abc", allCaps=False, fontSize=40)
    )
    upper = decode(run_tool("meme-generator", encode(img), "m.png", topText="abc", fontSize=40))
    explicit = decode(
        run_tool("meme-generator", encode(img), "m.png", topText="ABC", allCaps=False, fontSize=40)
    )
    assert upper.tobytes() == explicit.tobytes() and lower.tobytes() != upper.tobytes()


def test_meme_auto_fit_shrinks_and_wraps_long_text(run_tool: Any) -> None:
    img = flat((120, 120, 120))
    short = run_tool("meme-generator", encode(img), "m.png", bottomText="hi")
    long = run_tool(
        "meme-generator",
        encode(img),
        "m.png",
        bottomText="a rather long caption that cannot possibly fit on one single line",
    )
    assert long.meta["fontSizes"][0] < short.meta["fontSizes"][0]
    out = decode(long)
    rows = rows_changed(img, out)
    assert min(rows) > HEIGHT * 0.6  # wrapped into a few lines inside the bottom third
    cols = np.nonzero(np.asarray(ImageChops.difference(img, out).convert("L")).max(axis=0))[0]
    assert cols.min() >= 0 and cols.max() < WIDTH  # and no wider than the image
    fixed = run_tool("meme-generator", encode(img), "m.png", bottomText="hi", fontSize=30)
    assert fixed.meta["fontSizes"] == [30]


def test_meme_stroke_width(run_tool: Any) -> None:
    img = flat((120, 120, 120))
    plain = decode(run_tool("meme-generator", encode(img), "m.png", topText="TEXT", strokeWidth=0))
    assert (0, 0, 0) not in {rgb for _, rgb in plain.getcolors(WIDTH * HEIGHT) or []}
    thin = run_tool(
        "meme-generator", encode(img), "m.png", topText="TEXT", strokeWidth=1, fontSize=40
    )
    thick = run_tool(
        "meme-generator", encode(img), "m.png", topText="TEXT", strokeWidth=6, fontSize=40
    )
    assert changed_pixels(img, decode(thick)) > changed_pixels(img, decode(thin))


def test_meme_bad_settings_and_input(run_tool: Any, pixmill_client: FlaskClient) -> None:
    data = encode(base_image())
    for settings in (
        {},
        {"topText": "  ", "bottomText": ""},
        {"topText": "x", "fontSize": 7},
        {"topText": "x", "strokeWidth": 101},
        {"topText": "x" * 501},
        {"topText": "x", "textColor": "white"},
        {"topText": "x", "allCaps": "maybe"},
    ):
        with pytest.raises(SettingsError):
            run_tool("meme-generator", data, "m.png", **settings)
    response = post_tool(pixmill_client, "meme-generator", {"file": data}, {"topText": ""})
    assert response.status_code == 400 and response.get_json()["code"] == "VALIDATION_ERROR"
    with pytest.raises(UnsupportedFormatError):
        run_tool("meme-generator", b"%PDF-1.4 not an image", "m.png", topText="x")
