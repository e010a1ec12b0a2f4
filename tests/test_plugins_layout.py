"""The layout plugin (border, circle-crop, image-pad, beautify, collage, stitch, split,
sprite-sheet) on real images."""

from __future__ import annotations

import io
import json
import math
import zipfile
from fractions import Fraction
from typing import Any

import pytest
from flask.testing import FlaskClient
from PIL import Image, ImageChops, ImageStat

import pixmill.plugins.layout as layout
from pixmill.core.errors import BadRequestError, InvalidImageError, PixmillError, SettingsError
from pixmill.testing import check_plugin, images, ssim
from pixmill.testing.images import decode, encode

WIDTH, HEIGHT = 300, 200
SRGB = images.srgb_icc_profile()  # once: littleCMS stamps each new profile with the time


# --- helpers ----------------------------------------------------------------------------------


def photo_png() -> bytes:
    return encode(images.photo(WIDTH, HEIGHT))


def solid(color: tuple[int, ...], size: tuple[int, int] = (WIDTH, HEIGHT)) -> Image.Image:
    return Image.new("RGB", size, color)


def run(run_tool: Any, tool: str, data: bytes, name: str = "in.png", **settings: Any) -> Any:
    return run_tool(tool, data, name, **settings)


def alpha_at(img: Image.Image, xy: tuple[int, int]) -> int:
    value: int = img.convert("RGBA").getpixel(xy)[3]  # type: ignore[index]
    return value


def rgb_at(img: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    red, green, blue = img.convert("RGB").getpixel(xy)  # type: ignore[misc]
    return red, green, blue


def close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 3) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(actual, expected, strict=True))


def frames_of(img: Image.Image) -> int:
    return int(getattr(img, "n_frames", 1))


def opaque_fraction(img: Image.Image) -> float:
    histogram = img.getchannel("A").histogram()
    return sum(histogram[128:]) / (img.width * img.height)


# --- conformance ------------------------------------------------------------------------------


def test_layout_plugin_conforms() -> None:
    report = check_plugin(layout)
    report.assert_ok()
    assert report.tools == [
        "border",
        "circle-crop",
        "image-pad",
        "beautify",
        "collage",
        "stitch",
        "split",
        "sprite-sheet",
    ]


# --- border -----------------------------------------------------------------------------------


def test_default_border_surrounds_the_untouched_picture(run_tool: Any) -> None:
    source = images.photo(WIDTH, HEIGHT)
    outcome = run(run_tool, "border", encode(source))
    out = decode(outcome)
    assert outcome.format.name == "png"
    assert out.size == (WIDTH + 40, HEIGHT + 40) and out.mode == "RGB"
    assert out.crop((20, 20, 20 + WIDTH, 20 + HEIGHT)).tobytes() == source.tobytes()
    ring = out.copy()
    ring.paste(solid((0, 0, 0)), (20, 20))
    assert ring.getextrema() == ((0, 0), (0, 0), (0, 0))  # every border pixel is black


def test_opaque_border_keeps_jpeg_icc_and_exif(run_tool: Any) -> None:
    exif = Image.Exif()
    exif[0x010E] = "a framed photo"  # ImageDescription
    data = encode(images.photo(WIDTH, HEIGHT), "JPEG", quality=95, icc_profile=SRGB, exif=exif)
    outcome = run(run_tool, "border", data, "in.jpg", width=10, color="#336699")
    out = decode(outcome)
    assert outcome.format.name == "jpg" and out.size == (WIDTH + 20, HEIGHT + 20)
    assert out.info.get("icc_profile") == SRGB
    assert out.getexif()[0x010E] == "a framed photo"
    assert close(rgb_at(out, (3, 3)), (0x33, 0x66, 0x99), 6)
    # The reference: the same frame built by hand and saved at the jpg default quality.
    expected = solid((0x33, 0x66, 0x99), (WIDTH + 20, HEIGHT + 20))
    expected.paste(decode(data), (10, 10))
    assert ssim(out, decode(encode(expected, "JPEG", quality=85))) > 0.97


@pytest.mark.parametrize(
    ("angle", "start_xy", "end_xy"),
    [
        (180, "top", "bottom"),
        (90, "left", "right"),
        (0, "bottom", "top"),
        (135, "top-left", "bottom-right"),
    ],
)
def test_gradient_border_runs_along_its_angle(
    run_tool: Any, angle: int, start_xy: str, end_xy: str
) -> None:
    out = decode(
        run(
            run_tool,
            "border",
            encode(solid((128, 128, 128))),
            style="gradient",
            color="#ff0000",
            gradientColor="#0000ff",
            gradientAngle=angle,
            width=30,
        )
    )
    w, h = out.size
    points = {
        "top": (w // 2, 2),
        "bottom": (w // 2, h - 3),
        "left": (2, h // 2),
        "right": (w - 3, h // 2),
        "top-left": (1, 1),
        "bottom-right": (w - 2, h - 2),
    }
    start, end = rgb_at(out, points[start_xy]), rgb_at(out, points[end_xy])
    assert start[0] > 200 and start[2] < 60, start  # mostly red where it starts
    assert end[2] > 200 and end[0] < 60, end  # mostly blue where it ends
    if angle == 180:
        # Halfway down the side border the gradient is an even blend, not a step.
        assert close(rgb_at(out, (15, h // 2)), (128, 0, 128), 4), rgb_at(out, (15, h // 2))


def test_padding_sits_between_picture_and_border(run_tool: Any) -> None:
    out = decode(
        run(
            run_tool,
            "border",
            encode(solid((0, 200, 0))),
            width=10,
            padding=15,
            paddingColor="#ffff00",
            color="#ff0000",
        )
    )
    assert out.size == (WIDTH + 50, HEIGHT + 50)
    assert rgb_at(out, (5, 100)) == (255, 0, 0)
    assert rgb_at(out, (17, 100)) == (255, 255, 0)
    assert rgb_at(out, (30, 100)) == (0, 200, 0)


def test_rounded_corners_are_transparent_and_smooth_so_jpeg_becomes_png(run_tool: Any) -> None:
    data = encode(images.photo(WIDTH, HEIGHT), "JPEG", quality=90)
    outcome = run(run_tool, "border", data, "in.jpg", width=10, borderRadius=60)
    out = decode(outcome)
    assert outcome.format.name == "png" and out.mode == "RGBA"
    w, h = out.size
    for corner in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)):
        assert alpha_at(out, corner) == 0
    assert alpha_at(out, (w // 2, h // 2)) == 255
    assert alpha_at(out, (w // 2, 0)) == 255  # only the corners are cut
    # Anti-aliased: the edge of a 60 px corner has intermediate alpha values, symmetrically.
    alpha = out.getchannel("A")
    partial = sum(alpha.histogram()[1:255])
    assert partial > 4 * 30
    assert alpha.tobytes() == alpha.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
    assert alpha.tobytes() == alpha.transpose(Image.Transpose.FLIP_TOP_BOTTOM).tobytes()
    # The cut-away area of four 60 px corners is (4 - pi) * 60^2.
    cut = w * h * (1 - opaque_fraction(out))
    assert abs(cut - (4 - math.pi) * 60**2) < 0.03 * (4 - math.pi) * 60**2


def test_shadow_grows_the_canvas_and_falls_below(run_tool: Any) -> None:
    outcome = run(
        run_tool,
        "border",
        encode(solid((250, 250, 250))),
        width=0,
        shadow=True,
        shadowBlur=10,
        shadowOffsetY=12,
        shadowColor="#000000ff",
    )
    out = decode(outcome)
    assert out.size == (WIDTH + 40, HEIGHT + 40 + 12)
    assert out.mode == "RGBA"
    # The picture sits at (20, 20); the shadow shows below it and not above it.
    assert rgb_at(out, (20 + WIDTH // 2, 20 + HEIGHT // 2)) == (250, 250, 250)
    below, above = (
        alpha_at(out, (20 + WIDTH // 2, 20 + HEIGHT + 6)),
        alpha_at(out, (20 + WIDTH // 2, 14)),
    )
    assert below > 150 and above < 30, (below, above)
    assert alpha_at(out, (0, 0)) == 0


def test_border_on_an_animation_keeps_every_frame(run_tool: Any) -> None:
    data = images.animated_gif(64, 48, frames=4)
    outcome = run(run_tool, "border", data, "in.gif", width=5, color="#ff0000")
    out = decode(outcome)
    assert outcome.format.name == "gif"
    assert frames_of(out) == 4 and out.size == (74, 58)
    for index in range(4):
        out.seek(index)
        assert close(rgb_at(out, (1, 1)), (255, 0, 0), 8)


def test_border_bounds_are_accepted(run_tool: Any) -> None:
    data = encode(solid((10, 20, 30), (40, 30)))
    out = decode(run(run_tool, "border", data, width=0, padding=0, borderRadius=0))
    assert out.tobytes() == solid((10, 20, 30), (40, 30)).tobytes()
    big = decode(run(run_tool, "border", data, width=2000, borderRadius=5000, shadowBlur=200))
    assert big.size == (4040, 4030)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"width": -1}, "width"),
        ({"width": 2001}, "width"),
        ({"width": 2.5}, "width"),
        ({"style": "pattern"}, "style"),
        ({"color": "black"}, "color"),
        ({"gradientAngle": 361}, "gradientAngle"),
        ({"borderRadius": -1}, "borderRadius"),
        ({"padding": 2001}, "padding"),
        ({"shadowBlur": 201}, "shadowBlur"),
        ({"shadowOffsetX": -501}, "shadowOffsetX"),
        ({"shadowColor": "#12345"}, "shadowColor"),
        ({"frame": "macos"}, "frame"),
    ],
)
def test_border_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        run(run_tool, "border", photo_png(), **settings)
    assert field in exc.value.details["fields"], exc.value.details


def test_border_too_large_a_result_is_refused(run_tool: Any) -> None:
    with pytest.raises(BadRequestError) as exc:
        run(run_tool, "border", encode(solid((1, 2, 3), (3000, 3000))), width=2000, padding=2000)
    assert exc.value.code == "OUTPUT_TOO_LARGE"


# --- circle-crop ------------------------------------------------------------------------------


def test_default_circle_is_the_centred_largest_disc(run_tool: Any) -> None:
    source = images.photo(WIDTH, HEIGHT)
    data = encode(source, "JPEG", quality=95)
    outcome = run(run_tool, "circle-crop", data, "in.jpg")
    out = decode(outcome)
    assert outcome.format.name == "png" and out.mode == "RGBA" and out.size == (200, 200)
    for corner in ((0, 0), (199, 0), (0, 199), (199, 199)):
        assert alpha_at(out, corner) == 0
    assert abs(opaque_fraction(out) - math.pi / 4) < 0.01
    # Inside the circle is the centre of the photo.
    centre = out.crop((60, 60, 140, 140)).convert("RGB")
    assert ssim(centre, decode(data).crop((110, 60, 190, 140))) > 0.97


def test_zoom_and_offset_choose_the_square_inside_the_image(run_tool: Any) -> None:
    source = images.photo(WIDTH, HEIGHT)
    out = decode(run(run_tool, "circle-crop", encode(source), zoom=2, offsetX=100, offsetY=-100))
    assert out.size == (100, 100)
    # zoom 2: a 100 px circle; offsetX 100 / offsetY -100: the top-right corner of the room.
    expected = source.crop((200, 0, 300, 100))
    assert (
        out.convert("RGB").crop((30, 30, 70, 70)).tobytes()
        == expected.crop((30, 30, 70, 70)).tobytes()
    )


def test_ring_background_and_output_size(run_tool: Any) -> None:
    outcome = run(
        run_tool,
        "circle-crop",
        encode(solid((0, 0, 255)), "JPEG"),
        "in.jpg",
        borderWidth=10,
        borderColor="#ff0000",
        background="#00ff00",
        outputSize=128,
    )
    out = decode(outcome)
    # An opaque background needs no alpha: the jpg stays a jpg.
    assert outcome.format.name == "jpg" and out.size == (128, 128) and out.mode == "RGB"
    assert close(rgb_at(out, (1, 1)), (0, 255, 0), 12)
    assert close(rgb_at(out, (64, 4)), (255, 0, 0), 24)  # the ring at the top
    assert close(rgb_at(out, (64, 64)), (0, 0, 255), 12)


def test_circle_crop_on_an_animation_crops_every_frame(run_tool: Any) -> None:
    outcome = run(run_tool, "circle-crop", images.animated_gif(64, 48, frames=3), "in.gif")
    out = decode(outcome)
    assert outcome.format.name == "gif" and frames_of(out) == 3 and out.size == (48, 48)
    for index in range(3):
        out.seek(index)
        assert alpha_at(out, (0, 0)) == 0 and alpha_at(out, (24, 24)) == 255


def test_ring_wider_than_the_output_is_refused(run_tool: Any) -> None:
    with pytest.raises(BadRequestError) as exc:
        run(run_tool, "circle-crop", photo_png(), borderWidth=40, outputSize=80)
    assert "borderWidth" in exc.value.message


def test_circle_crop_bounds_are_accepted(run_tool: Any) -> None:
    cases: tuple[tuple[dict[str, Any], int], ...] = (
        ({"zoom": 1, "offsetX": -100, "offsetY": 100}, 200),
        ({"zoom": 5, "outputSize": 16}, 16),
        ({"borderWidth": 2000}, 4200),
    )
    for settings, side in cases:
        assert decode(run(run_tool, "circle-crop", photo_png(), **settings)).size == (side, side)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"zoom": 0.9}, "zoom"),
        ({"zoom": 5.1}, "zoom"),
        ({"offsetX": 101}, "offsetX"),
        ({"offsetY": -101}, "offsetY"),
        ({"borderWidth": -1}, "borderWidth"),
        ({"borderColor": "#ggg"}, "borderColor"),
        ({"background": "transparent"}, "background"),
        ({"outputSize": 15}, "outputSize"),
        ({"outputSize": 16385}, "outputSize"),
    ],
)
def test_circle_crop_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        run(run_tool, "circle-crop", photo_png(), **settings)
    assert field in exc.value.details["fields"], exc.value.details


# --- image-pad --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "size"),
    [
        ({}, (300, 300)),
        ({"target": "16:9"}, (356, 200)),
        ({"target": "9:16"}, (300, 534)),
        ({"target": "4:5"}, (300, 375)),
        ({"target": "custom", "ratioW": 2, "ratioH": 1}, (400, 200)),
        ({"target": "1:1", "padding": 10}, (360, 360)),
        ({"width": 500, "height": 250}, (500, 250)),
    ],
)
def test_pad_reaches_the_target_with_the_picture_centred(
    run_tool: Any, settings: dict[str, Any], size: tuple[int, int]
) -> None:
    source = images.photo(WIDTH, HEIGHT)
    out = decode(run(run_tool, "image-pad", encode(source), color="#ff00ff", **settings))
    assert out.size == size and out.mode == "RGB"
    left, top = (size[0] - WIDTH) // 2, (size[1] - HEIGHT) // 2
    assert out.crop((left, top, left + WIDTH, top + HEIGHT)).tobytes() == source.tobytes()
    padded = out.copy()
    padded.paste(solid((255, 0, 255)), (left, top))
    assert padded.getextrema() == ((255, 255), (0, 0), (255, 255))  # the rest is the colour


def test_pad_to_a_smaller_canvas_shrinks_and_never_enlarges(run_tool: Any) -> None:
    shrunk = decode(run(run_tool, "image-pad", photo_png(), width=150, height=150, color="#000"))
    assert shrunk.size == (150, 150)
    # The 300x200 picture fits as 150x100, centred: black bands of 25 px above and below.
    assert (
        ImageChops.difference(shrunk.crop((0, 0, 150, 25)), solid((0, 0, 0), (150, 25))).getbbox()
        is None
    )
    assert ImageStat.Stat(shrunk.crop((0, 30, 150, 120))).stddev[0] > 5
    small = decode(
        run(run_tool, "image-pad", encode(solid((9, 9, 9), (50, 40))), width=200, height=200)
    )
    assert ImageChops.difference(small, solid((255, 255, 255), (200, 200))).getbbox() == (
        75,
        80,
        125,
        120,
    )


def test_transparent_pad_turns_jpeg_into_png(run_tool: Any) -> None:
    data = encode(images.photo(WIDTH, HEIGHT), "JPEG", quality=90, icc_profile=SRGB)
    outcome = run(run_tool, "image-pad", data, "in.jpg", background="transparent")
    out = decode(outcome)
    assert outcome.format.name == "png" and out.mode == "RGBA" and out.size == (300, 300)
    assert out.info.get("icc_profile") == SRGB
    assert alpha_at(out, (150, 10)) == 0 and alpha_at(out, (150, 150)) == 255
    assert abs(opaque_fraction(out) - 2 / 3) < 0.01


def test_blur_pad_fills_with_a_soft_copy_of_the_picture(run_tool: Any) -> None:
    left_half_red = solid((0, 0, 255))
    left_half_red.paste(solid((255, 0, 0), (150, 200)), (0, 0))
    data = encode(left_half_red, "JPEG", quality=95)
    outcome = run(run_tool, "image-pad", data, "in.jpg", background="blur", target="9:16")
    out = decode(outcome)
    assert outcome.format.name == "jpg" and out.size == (300, 534)
    band = out.crop((0, 0, 300, 150))
    # The band above the picture continues its colours: red on the left, blue on the right...
    assert rgb_at(band, (20, 20))[0] > 200 and rgb_at(band, (280, 20))[2] > 200
    # ...blurred: the red-to-blue step spreads over many columns instead of one.
    row = [rgb_at(band, (x, 20))[0] for x in range(300)]
    assert sum(1 for value in row if 30 < value < 225) > 20


def test_pad_respects_exif_orientation(run_tool: Any) -> None:
    # 300x200 stored with orientation 6: upright it is 200x300, so 1:1 pads it sideways.
    out = decode(
        run(run_tool, "image-pad", images.exif_rotated_jpeg(300, 200), "in.jpg", color="#000")
    )
    assert out.size == (300, 300)
    assert rgb_at(out, (10, 150)) == (0, 0, 0) and rgb_at(out, (289, 150)) == (0, 0, 0)


def test_pad_on_an_animation_pads_every_frame(run_tool: Any) -> None:
    outcome = run(run_tool, "image-pad", images.animated_gif(64, 48, frames=3), "in.gif")
    out = decode(outcome)
    assert outcome.format.name == "gif" and frames_of(out) == 3 and out.size == (64, 64)


def test_pad_bounds_are_accepted(run_tool: Any) -> None:
    data = encode(images.photo(30, 20))
    cases: tuple[tuple[dict[str, Any], tuple[int, int]], ...] = (
        ({"target": "custom", "ratioW": 1, "ratioH": 100, "padding": 0}, (30, 3000)),
        # padding 50 doubles the box to 60x40 before widening it to 100:1
        ({"target": "custom", "ratioW": 100, "ratioH": 1, "padding": 50}, (4000, 40)),
        ({"width": 1, "height": 1, "blurRadius": 200, "background": "blur"}, (1, 1)),
        ({"width": 16384, "height": 1, "blurRadius": 1, "background": "blur"}, (16384, 1)),
    )
    for settings, size in cases:
        assert decode(run(run_tool, "image-pad", data, **settings)).size == size


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"target": "2:1"}, "target"),
        ({"target": "custom"}, "_schema"),
        ({"target": "custom", "ratioW": 3}, "_schema"),
        ({"ratioW": 3, "ratioH": 2}, "_schema"),
        ({"target": "custom", "ratioW": 0, "ratioH": 2}, "ratioW"),
        ({"target": "custom", "ratioW": 2, "ratioH": 101}, "ratioH"),
        ({"width": 100}, "_schema"),
        ({"width": 0, "height": 10}, "width"),
        ({"background": "image"}, "background"),
        ({"padding": 51}, "padding"),
        ({"padding": -1}, "padding"),
        ({"blurRadius": 0}, "blurRadius"),
        ({"color": "white"}, "color"),
    ],
)
def test_pad_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        run(run_tool, "image-pad", photo_png(), **settings)
    assert field in exc.value.details["fields"], exc.value.details


# --- beautify ---------------------------------------------------------------------------------


PLAIN: dict[str, Any] = {"backgroundType": "solid", "shadowPreset": "none", "borderRadius": 0}


def test_default_beautify_sets_the_picture_on_a_diagonal_gradient(run_tool: Any) -> None:
    source = images.photo(WIDTH, HEIGHT)
    data = encode(source, "JPEG", quality=95, icc_profile=SRGB)
    outcome = run(run_tool, "beautify", data, "in.jpg")
    out = decode(outcome)
    # Everything is opaque, so the jpg stays a jpg with its profile.
    assert outcome.format.name == "jpg" and out.mode == "RGB"
    assert out.size == (WIDTH + 128, HEIGHT + 128)
    assert out.info.get("icc_profile") == SRGB
    assert close(rgb_at(out, (0, 0)), (0x66, 0x7E, 0xEA), 8)  # the default stops, 135 degrees
    assert close(rgb_at(out, (WIDTH + 127, HEIGHT + 127)), (0x76, 0x4B, 0xA2), 8)
    inner = out.crop((64 + 12, 64 + 12, 64 + WIDTH - 12, 64 + HEIGHT - 12))
    # The reference: the input saved again at the jpg default quality (the picture sits at
    # (64, 64), on the encoder's block grid, so both went through the same blocks).
    reference = decode(encode(decode(data), "JPEG", quality=85))
    assert ssim(inner, reference.crop((12, 12, WIDTH - 12, HEIGHT - 12))) > 0.97


def test_shadow_presets_darken_the_backdrop_under_the_picture(run_tool: Any) -> None:
    data = encode(images.photo(WIDTH, HEIGHT))
    below = (64 + WIDTH // 2, 64 + HEIGHT + 8)
    darkness = {}
    for preset in ("none", "small", "medium", "large"):
        out = decode(
            run(
                run_tool,
                "beautify",
                data,
                backgroundType="solid",
                backgroundColor="#ffffff",
                shadowPreset=preset,
            )
        )
        darkness[preset] = 255 - rgb_at(out, below)[0]
        assert rgb_at(out, (2, 2)) == (255, 255, 255)  # far from the picture: no shadow
    assert darkness["none"] == 0
    assert 0 < darkness["small"] < darkness["medium"] < darkness["large"], darkness


def test_linear_and_radial_gradients_follow_their_stops(run_tool: Any) -> None:
    data = encode(images.photo(40, 30))
    linear = decode(
        run(
            run_tool,
            "beautify",
            data,
            gradientStops=["#ff0000", "#00ff00", "#0000ff"],
            gradientAngle=90,
            padding=200,
            shadowPreset="none",
        )
    )
    w = linear.width
    assert close(rgb_at(linear, (0, 5)), (255, 0, 0), 6)
    assert close(rgb_at(linear, (w // 2, 5)), (0, 255, 0), 6)
    assert close(rgb_at(linear, (w - 1, 5)), (0, 0, 255), 6)
    radial = decode(
        run(
            run_tool,
            "beautify",
            data,
            backgroundType="radial-gradient",
            gradientStops=["#ff0000", "#0000ff"],
            padding=200,
            shadowPreset="none",
        )
    )
    # Blue at the corners; an edge's midpoint lies 1/sqrt(2) of the way out from the centre.
    assert close(rgb_at(radial, (0, 0)), (0, 0, 255), 6)
    level = 1 / math.sqrt(2)
    expected = (round(255 * (1 - level)), 0, round(255 * level))
    assert close(rgb_at(radial, (w // 2, 0)), expected, 6), rgb_at(radial, (w // 2, 0))


def test_transparent_backdrop_and_rounded_picture_turn_jpeg_into_png(run_tool: Any) -> None:
    data = encode(solid((200, 100, 50)), "JPEG", quality=95)
    outcome = run(
        run_tool,
        "beautify",
        data,
        "in.jpg",
        backgroundType="transparent",
        shadowPreset="none",
        borderRadius=30,
    )
    out = decode(outcome)
    assert outcome.format.name == "png" and out.mode == "RGBA"
    assert alpha_at(out, (0, 0)) == 0
    assert alpha_at(out, (64, 64)) == 0  # the picture's own rounded corner
    assert (
        alpha_at(out, (64 + 30, 64)) == 255
        and alpha_at(out, (64 + WIDTH // 2, 64 + HEIGHT // 2)) == 255
    )


@pytest.mark.parametrize(
    ("preset", "size"),
    [("twitter", (1600, 900)), ("instagram-story", (1080, 1920)), ("linkedin", (1200, 627))],
)
def test_social_presets_fit_the_picture_into_the_network_size(
    run_tool: Any, preset: str, size: tuple[int, int]
) -> None:
    out = decode(
        run(
            run_tool,
            "beautify",
            encode(solid((0, 0, 0))),
            socialPreset=preset,
            backgroundColor="#ffffff",
            **PLAIN,
        )
    )
    assert out.size == size
    scale = min((size[0] - 128) / WIDTH, (size[1] - 128) / HEIGHT)
    picture = (round(WIDTH * scale), round(HEIGHT * scale))
    left, top = (size[0] - picture[0]) // 2, (size[1] - picture[1]) // 2
    box = ImageChops.difference(out, solid((255, 255, 255), size)).getbbox()
    assert box == (left, top, left + picture[0], top + picture[1])


def test_social_preset_with_too_much_padding_is_refused(run_tool: Any) -> None:
    with pytest.raises(BadRequestError) as exc:
        run(run_tool, "beautify", photo_png(), socialPreset="instagram-story", padding=600)
    assert "padding" in exc.value.message


def test_beautify_on_an_animation_keeps_every_frame(run_tool: Any) -> None:
    outcome = run(run_tool, "beautify", images.animated_gif(64, 48, frames=3), "in.gif", padding=8)
    out = decode(outcome)
    assert outcome.format.name == "gif" and frames_of(out) == 3 and out.size == (80, 64)


def test_beautify_bounds_are_accepted(run_tool: Any) -> None:
    source = solid((10, 20, 30), (40, 30))
    plain = decode(run(run_tool, "beautify", encode(source), padding=0, **PLAIN))
    assert plain.tobytes() == source.tobytes()
    cases: tuple[tuple[dict[str, Any], tuple[int, int]], ...] = (
        ({"padding": 2000, "borderRadius": 5000, "gradientAngle": 360}, (4040, 4030)),
        ({"gradientStops": ["#000"] * 8, "gradientAngle": 0}, (168, 158)),
    )
    for settings, size in cases:
        assert decode(run(run_tool, "beautify", encode(source), **settings)).size == size


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"backgroundType": "image"}, "backgroundType"),
        ({"backgroundColor": "white"}, "backgroundColor"),
        ({"gradientStops": ["#ffffff"]}, "gradientStops"),
        ({"gradientStops": ["#ffffff"] * 9}, "gradientStops"),
        ({"gradientStops": ["#ffffff", "blue"]}, "gradientStops"),
        ({"gradientStops": "#ffffff"}, "gradientStops"),
        ({"gradientAngle": -1}, "gradientAngle"),
        ({"padding": 2001}, "padding"),
        ({"borderRadius": -1}, "borderRadius"),
        ({"shadowPreset": "huge"}, "shadowPreset"),
        ({"socialPreset": "tiktok"}, "socialPreset"),
        ({"frame": "macos-light"}, "frame"),
    ],
)
def test_beautify_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        run(run_tool, "beautify", photo_png(), **settings)
    assert field in exc.value.details["fields"], exc.value.details


# --- bad input for every tool -----------------------------------------------------------------


@pytest.mark.parametrize("tool", ["border", "circle-crop", "image-pad", "beautify"])
def test_broken_input_is_refused(run_tool: Any, tool: str) -> None:
    data = images.jpeg(200, 150)
    with pytest.raises(InvalidImageError):
        run(run_tool, tool, data[: len(data) // 3], "cut.jpg")


# --- multi-image helpers ----------------------------------------------------------------------

# Well separated colours, none of them the grey background the collage tests use.
PALETTE = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
    (0, 0, 0),
    (255, 255, 255),
    (128, 0, 0),
    (0, 128, 0),
    (0, 0, 128),
    (128, 128, 0),
    (128, 0, 128),
    (0, 128, 128),
    (255, 128, 0),
    (0, 128, 255),
]
GREY = (128, 128, 128)


def many(run_tool: Any, tool: str, parts: list[tuple[bytes, str]], **settings: Any) -> Any:
    return run_tool(tool, parts[0][0], parts[0][1], files={"file": parts}, **settings)


def solids(sizes: list[tuple[int, int]], fmt: str = "PNG") -> list[tuple[bytes, str]]:
    ext = "jpg" if fmt == "JPEG" else fmt.lower()
    return [(encode(solid(PALETTE[i], size), fmt), f"s{i}.{ext}") for i, size in enumerate(sizes)]


def unzip(outcome: Any) -> dict[str, bytes]:
    assert outcome.format.name == "zip"
    with zipfile.ZipFile(io.BytesIO(outcome.data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def dominant(img: Image.Image, box: tuple[int, int, int, int]) -> tuple[tuple[int, ...], float]:
    """The most common colour in `box` and the share of the box it covers."""
    region = img.convert("RGB").crop(box)
    colors = region.getcolors(region.width * region.height)
    assert colors
    count, color = max(colors)
    assert isinstance(color, tuple)
    return color, count / (region.width * region.height)


def post_many(client: FlaskClient, tool: str, parts: list[tuple[bytes, str]], settings: Any) -> Any:
    form: dict[str, Any] = {
        "settings": json.dumps(settings),
        "file": [(io.BytesIO(data), name) for data, name in parts],
    }
    return client.post(f"/api/v1/tools/image/{tool}", data=form, content_type="multipart/form-data")


# --- collage ----------------------------------------------------------------------------------


def test_collage_offers_enough_templates_and_documents_them() -> None:
    assert len(layout.COLLAGE_TEMPLATES) >= 25
    described = layout.CollageSettings().fields["template"].metadata["description"]
    for name, (columns, rows, cells) in layout.COLLAGE_TEMPLATES.items():
        assert f"{name} ({len(cells)})" in described
        # Cells stay on the grid and never overlap: their areas add up to the whole.
        assert all(x >= 0 and y >= 0 and x + w <= columns and y + h <= rows for x, y, w, h in cells)
        assert sum(w * h for _, _, w, h in cells) == columns * rows


@pytest.mark.parametrize("template", list(layout.COLLAGE_TEMPLATES))
def test_every_collage_template_puts_each_image_in_its_cell(run_tool: Any, template: str) -> None:
    columns, rows, cells = layout.COLLAGE_TEMPLATES[template]
    width, height, gap = 480, 360, 6
    parts = solids([(40 + 7 * i, 30 + 5 * i) for i in range(len(cells))])
    outcome = many(
        run_tool,
        "collage",
        parts,
        template=template,
        width=width,
        height=height,
        gap=gap,
        backgroundColor="#808080",
    )
    out = decode(outcome)
    assert out.size == (width, height) and outcome.format.name == "png"
    assert outcome.meta == {"template": template, "used": len(cells), "ignored": 0}
    for index, (x, y, w, h) in enumerate(cells):
        # The cell's extent on the canvas, pulled in past the gaps and any rounding.
        left = math.ceil(Fraction(x, columns) * width) + gap + 1
        top = math.ceil(Fraction(y, rows) * height) + gap + 1
        right = math.floor(Fraction(x + w, columns) * width) - gap - 1
        bottom = math.floor(Fraction(y + h, rows) * height) - gap - 1
        color, share = dominant(out, (left, top, right, bottom))
        assert color == PALETTE[index] and share == 1.0, (index, color, share)
    assert rgb_at(out, (gap // 2, gap // 2)) == GREY  # the outer margin is the background


def test_collage_too_few_images_names_the_template_and_count(run_tool: Any) -> None:
    with pytest.raises(BadRequestError) as exc:
        many(run_tool, "collage", solids([(20, 20)] * 3), template="grid-2x2")
    assert exc.value.status == 400 and exc.value.code == "NOT_ENOUGH_IMAGES"
    assert "grid-2x2" in exc.value.message and "4" in exc.value.message
    assert "3" in exc.value.message
    assert exc.value.details == {"template": "grid-2x2", "needed": 4, "files": 3}


def test_collage_ignores_extra_images(run_tool: Any) -> None:
    outcome = many(run_tool, "collage", solids([(20, 20)] * 5), width=100, height=50, gap=0)
    assert outcome.meta == {"template": "2-horizontal", "used": 2, "ignored": 3}
    out = decode(outcome)
    assert rgb_at(out, (10, 25)) == PALETTE[0] and rgb_at(out, (90, 25)) == PALETTE[1]


def test_collage_contain_letterboxes_and_cover_crops(run_tool: Any) -> None:
    parts = solids([(200, 50), (200, 50)])
    common = {"width": 200, "height": 100, "gap": 0, "backgroundColor": "#808080"}
    cover = decode(many(run_tool, "collage", parts, fit="cover", **common))
    assert dominant(cover, (0, 0, 100, 100)) == (PALETTE[0], 1.0)
    contain = decode(many(run_tool, "collage", parts, fit="contain", **common))
    # A 4:1 picture in a 100x100 cell: 100x25, centred, grey above and below.
    assert rgb_at(contain, (50, 50)) == PALETTE[0]
    assert rgb_at(contain, (50, 10)) == GREY and rgb_at(contain, (50, 90)) == GREY
    assert dominant(contain, (0, 38, 100, 62)) == (PALETTE[0], 1.0)


def test_collage_rounded_cells_and_transparent_background(run_tool: Any) -> None:
    parts = solids([(50, 50), (50, 50)], "JPEG")
    opaque = many(run_tool, "collage", parts, width=200, height=100, gap=0, borderRadius=30)
    out = decode(opaque)
    assert opaque.format.name == "jpg"  # the first input's format, nothing transparent
    assert close(rgb_at(out, (1, 1)), (255, 255, 255), 8) and close(
        rgb_at(out, (50, 50)), (254, 0, 0), 8
    )
    clear = many(
        run_tool,
        "collage",
        parts,
        width=200,
        height=100,
        gap=10,
        backgroundColor="#0000",
        borderRadius=20,
    )
    assert clear.format.name == "png"  # a jpg cannot hold the transparent gaps
    image = decode(clear)
    assert alpha_at(image, (5, 50)) == 0 and alpha_at(image, (11, 11)) == 0
    assert alpha_at(image, (50, 50)) == 255


def test_collage_converts_differing_profiles_to_srgb(run_tool: Any) -> None:
    parts = [
        (encode(solid((200, 100, 50), (40, 40)), icc_profile=SRGB), "a.png"),
        (encode(solid((50, 100, 200), (40, 40))), "b.png"),
    ]
    out = decode(many(run_tool, "collage", parts, width=80, height=40, gap=0))
    assert "icc_profile" not in out.info
    assert close(rgb_at(out, (20, 20)), (200, 100, 50), 2)
    same = [(encode(solid(PALETTE[i], (40, 40)), icc_profile=SRGB), f"{i}.png") for i in range(2)]
    kept = decode(many(run_tool, "collage", same, width=80, height=40, gap=0))
    assert kept.info.get("icc_profile") == SRGB


def test_collage_gap_leaving_no_room_is_refused(run_tool: Any) -> None:
    with pytest.raises(BadRequestError) as exc:
        many(
            run_tool,
            "collage",
            solids([(20, 20)] * 9),
            template="grid-3x3",
            width=40,
            height=40,
            gap=20,
        )
    assert exc.value.status == 400 and "gap" in exc.value.message


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"template": "grid-9x9"}, "template"),
        ({"width": 15}, "width"),
        ({"height": 16385}, "height"),
        ({"gap": -1}, "gap"),
        ({"gap": 1001}, "gap"),
        ({"backgroundColor": "grey"}, "backgroundColor"),
        ({"borderRadius": 5001}, "borderRadius"),
        ({"fit": "stretch"}, "fit"),
    ],
)
def test_collage_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        many(run_tool, "collage", solids([(20, 20)] * 2), **settings)
    assert field in exc.value.details["fields"], exc.value.details


# --- stitch -----------------------------------------------------------------------------------

STITCH_SIZES = [(100, 50), (60, 80), (80, 30)]


@pytest.mark.parametrize(("alignment", "shift"), [("start", 0), ("center", 1), ("end", 2)])
def test_stitch_horizontal_aligns_each_image(run_tool: Any, alignment: str, shift: int) -> None:
    outcome = many(
        run_tool,
        "stitch",
        solids(STITCH_SIZES),
        alignment=alignment,
        gap=4,
        backgroundColor="#808080",
    )
    out = decode(outcome)
    assert out.size == (100 + 60 + 80 + 8, 80) and outcome.format.name == "png"
    left = 0
    for index, (width, height) in enumerate(STITCH_SIZES):
        top = (80 - height) * shift // 2
        assert dominant(out, (left, top, left + width, top + height)) == (PALETTE[index], 1.0)
        if height < 80:  # the rest of its column is background
            other = (left, 0, left + width, top) if top else (left, height, left + width, 80)
            assert dominant(out, other) == (GREY, 1.0)
        left += width + 4


@pytest.mark.parametrize(("alignment", "shift"), [("start", 0), ("center", 1), ("end", 2)])
def test_stitch_vertical_aligns_each_image(run_tool: Any, alignment: str, shift: int) -> None:
    out = decode(
        many(run_tool, "stitch", solids(STITCH_SIZES), direction="vertical", alignment=alignment)
    )
    assert out.size == (100, 50 + 80 + 30)
    top = 0
    for index, (width, height) in enumerate(STITCH_SIZES):
        left = (100 - width) * shift // 2
        assert dominant(out, (left, top, left + width, top + height)) == (PALETTE[index], 1.0)
        top += height


def test_stitch_grid_sizes_columns_and_rows_by_their_largest(run_tool: Any) -> None:
    sizes = [*STITCH_SIZES, (40, 40)]
    out = decode(
        many(
            run_tool,
            "stitch",
            solids(sizes),
            direction="grid",
            columns=2,
            gap=10,
            alignment="start",
        )
    )
    # Columns: max(100, 80) and max(60, 40); rows: max(50, 80) and max(30, 40).
    assert out.size == (100 + 60 + 10, 80 + 40 + 10)
    for index, (x, y) in enumerate([(0, 0), (110, 0), (0, 90), (110, 90)]):
        width, height = sizes[index]
        assert dominant(out, (x, y, x + width, y + height)) == (PALETTE[index], 1.0)


@pytest.mark.parametrize(
    ("resize", "direction", "size"),
    [
        ("match-height", "horizontal", (60 + 15 + 90, 30)),
        ("match-width", "vertical", (40, 20 + 80 + 13)),
        ("none", "horizontal", (80 + 40 + 90, 80)),
    ],
)
def test_stitch_resize_matches_the_smallest_side(
    run_tool: Any, resize: str, direction: str, size: tuple[int, int]
) -> None:
    parts = solids([(80, 40), (40, 80), (90, 30)])
    out = decode(many(run_tool, "stitch", parts, resize=resize, direction=direction))
    assert out.size == size


def test_stitch_keeps_jpeg_and_needs_two_images(run_tool: Any) -> None:
    outcome = many(run_tool, "stitch", solids([(40, 40), (40, 40)], "JPEG"))
    assert outcome.format.name == "jpg" and decode(outcome).size == (80, 40)
    with pytest.raises(BadRequestError) as exc:
        many(run_tool, "stitch", solids([(40, 40)]))
    assert exc.value.status == 400 and exc.value.code == "WRONG_FILE_COUNT"


def test_stitch_refuses_animations_and_oversized_results(run_tool: Any) -> None:
    parts = [(images.animated_gif(), "a.gif"), (encode(solid((1, 2, 3), (10, 10))), "b.png")]
    with pytest.raises(PixmillError) as exc:
        many(run_tool, "stitch", parts)
    assert exc.value.code == "ANIMATED_IMAGE_UNSUPPORTED"
    big = encode(solid((1, 2, 3), (16000, 10)))
    with pytest.raises(BadRequestError) as too_large:
        many(run_tool, "stitch", [(big, "a.png")] * 10, direction="vertical", gap=1000)
    assert too_large.value.code == "OUTPUT_TOO_LARGE"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"direction": "diagonal"}, "direction"),
        ({"columns": 0}, "columns"),
        ({"columns": 65}, "columns"),
        ({"alignment": "middle"}, "alignment"),
        ({"resize": "match-area"}, "resize"),
        ({"gap": 1001}, "gap"),
        ({"gap": 1.5}, "gap"),
        ({"backgroundColor": "#12345"}, "backgroundColor"),
    ],
)
def test_stitch_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        many(run_tool, "stitch", solids([(20, 20)] * 2), **settings)
    assert field in exc.value.details["fields"], exc.value.details


# --- split ------------------------------------------------------------------------------------


def reassemble(tiles: dict[str, bytes], stem: str, ext: str) -> Image.Image:
    pieces: dict[tuple[int, int], Image.Image] = {}
    for name, data in tiles.items():
        assert name.startswith(f"{stem}_r") and name.endswith(f".{ext}"), name
        row, col = name[len(stem) + 2 : -len(ext) - 1].split("_c")
        pieces[int(row), int(col)] = decode(data)
    rows = max(row for row, _ in pieces)
    cols = max(col for _, col in pieces)
    assert set(pieces) == {(r, c) for r in range(1, rows + 1) for c in range(1, cols + 1)}
    width = sum(pieces[1, c].width for c in range(1, cols + 1))
    height = sum(pieces[r, 1].height for r in range(1, rows + 1))
    whole = Image.new(pieces[1, 1].mode, (width, height))
    top = 0
    for r in range(1, rows + 1):
        left = 0
        for c in range(1, cols + 1):
            whole.paste(pieces[r, c], (left, top))
            left += pieces[r, c].width
        top += pieces[r, 1].height
    return whole


@pytest.mark.parametrize(
    ("settings", "grid"),
    [
        ({}, (2, 2)),
        ({"mode": "grid", "rows": 3, "cols": 4}, (3, 4)),
        ({"mode": "rows", "rows": 5}, (5, 1)),
        ({"mode": "cols", "cols": 7}, (1, 7)),
        ({"mode": "size", "tileWidth": 40, "tileHeight": 20}, (3, 3)),
        ({"mode": "size", "tileWidth": 64}, (1, 2)),
    ],
)
def test_split_tiles_reassemble_to_the_original(
    run_tool: Any, settings: dict[str, Any], grid: tuple[int, int]
) -> None:
    source = images.photo(101, 51)
    outcome = run(run_tool, "split", encode(source), "photo.png", **settings)
    tiles = unzip(outcome)
    assert outcome.filename == "photo-tiles.zip"
    assert len(tiles) == grid[0] * grid[1] and outcome.meta["tiles"] == len(tiles)
    assert (outcome.meta["rows"], outcome.meta["cols"]) == grid
    whole = reassemble(tiles, "photo", "png")
    assert whole.size == source.size and whole.tobytes() == source.tobytes()


def test_split_keeps_the_input_format_and_profile(run_tool: Any) -> None:
    data = encode(images.photo(90, 60), "JPEG", quality=95, icc_profile=SRGB)
    tiles = unzip(run(run_tool, "split", data, "pic.jpg", rows=2, cols=3))
    assert sorted(tiles) == [f"pic_r{r}_c{c}.jpg" for r in (1, 2) for c in (1, 2, 3)]
    first = decode(tiles["pic_r1_c1.jpg"])
    assert first.format == "JPEG" and first.size == (30, 30)
    assert first.info.get("icc_profile") == SRGB


def test_split_refusals(run_tool: Any) -> None:
    with pytest.raises(BadRequestError) as exc:
        run(
            run_tool,
            "split",
            encode(solid((1, 2, 3), (100, 100))),
            mode="size",
            tileWidth=1,
            tileHeight=1,
        )
    assert exc.value.code == "TOO_MANY_TILES"
    with pytest.raises(BadRequestError) as small:
        run(run_tool, "split", encode(solid((1, 2, 3), (3, 3))), rows=4)
    assert small.value.code == "IMAGE_TOO_SMALL"
    with pytest.raises(PixmillError) as animated:
        run(run_tool, "split", images.animated_gif(), "a.gif")
    assert animated.value.code == "ANIMATED_IMAGE_UNSUPPORTED"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"mode": "diagonal"}, "mode"),
        ({"rows": 0}, "rows"),
        ({"cols": 51}, "cols"),
        ({"mode": "size", "tileWidth": 0}, "tileWidth"),
        ({"mode": "size", "tileHeight": 16385}, "tileHeight"),
        ({"mode": "size"}, "_schema"),
        ({"tileWidth": 10}, "_schema"),
    ],
)
def test_split_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        run(run_tool, "split", photo_png(), **settings)
    assert field in json.dumps(exc.value.details), exc.value.details


# --- sprite-sheet -----------------------------------------------------------------------------


def test_sprite_sheet_map_points_at_each_sprite(run_tool: Any) -> None:
    sources = [images.photo(30 + 5 * i, 20 + 3 * i, seed=i + 1) for i in range(5)]
    parts = [(encode(img), f"sprite{i}.png") for i, img in enumerate(sources)]
    parts[4] = (parts[4][0], "sprite0.png")  # a duplicate name gets a suffix
    outcome = many(run_tool, "sprite-sheet", parts, columns=3, padding=2)
    assert outcome.filename == "spritesheet.zip"
    members = unzip(outcome)
    assert sorted(members) == ["spritesheet.json", "spritesheet.png"]
    mapping = json.loads(members["spritesheet.json"])
    sheet = decode(members["spritesheet.png"]).convert("RGBA")
    assert mapping["meta"]["image"] == "spritesheet.png"
    assert mapping["meta"]["size"] == {"w": sheet.width, "h": sheet.height}
    # Columns 45/50/40 wide (+ padding 2 between and around), rows 26/32 tall.
    assert sheet.size == (2 + 45 + 2 + 50 + 2 + 40 + 2, 2 + 26 + 2 + 32 + 2)
    names = ["sprite0.png", "sprite1.png", "sprite2.png", "sprite3.png", "sprite0-2.png"]
    assert list(mapping["frames"]) == names
    for name, source in zip(names, sources, strict=True):
        frame = mapping["frames"][name]["frame"]
        assert (frame["w"], frame["h"]) == source.size
        box = (frame["x"], frame["y"], frame["x"] + frame["w"], frame["y"] + frame["h"])
        assert sheet.crop(box).tobytes() == source.convert("RGBA").tobytes(), name
    assert mapping["frames"]["sprite0.png"]["frame"]["x"] == 2
    assert alpha_at(sheet, (0, 0)) == 0  # transparent background by default


def test_sprite_sheet_in_jpeg_and_webp(run_tool: Any) -> None:
    parts = solids([(20, 20), (20, 20), (20, 20)])
    jpeg = unzip(many(run_tool, "sprite-sheet", parts, format="jpeg", background="#808080"))
    assert sorted(jpeg) == ["spritesheet.jpg", "spritesheet.json"]
    sheet = decode(jpeg["spritesheet.jpg"])
    assert sheet.format == "JPEG" and sheet.size == (60, 20)
    webp = unzip(many(run_tool, "sprite-sheet", parts, format="webp", quality=50, columns=1))
    assert decode(webp["spritesheet.webp"]).size == (20, 60)


def test_sprite_sheet_takes_2_to_64_images(run_tool: Any) -> None:
    tiny = encode(solid((1, 2, 3), (4, 4)))
    ok = many(run_tool, "sprite-sheet", [(tiny, f"{i}.png") for i in range(64)], columns=16)
    assert decode(unzip(ok)["spritesheet.png"]).size == (64, 16)
    for count in (1, 65):
        with pytest.raises(BadRequestError) as exc:
            many(run_tool, "sprite-sheet", [(tiny, f"{i}.png") for i in range(count)])
        assert exc.value.status == 400 and exc.value.code == "WRONG_FILE_COUNT"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"columns": 0}, "columns"),
        ({"columns": 17}, "columns"),
        ({"padding": 257}, "padding"),
        ({"background": "transparent"}, "background"),
        ({"format": "gif"}, "format"),
        ({"quality": 101}, "quality"),
    ],
)
def test_sprite_sheet_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as exc:
        many(run_tool, "sprite-sheet", solids([(20, 20)] * 2), **settings)
    assert field in exc.value.details["fields"], exc.value.details


# --- the multi-image tools over REST ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "settings"),
    [
        ("collage", {"gap": -1}),
        ("stitch", {"columns": 65}),
        ("split", {"rows": 51}),
        ("sprite-sheet", {"columns": 17}),
    ],
)
def test_out_of_range_settings_are_400_over_rest(
    pixmill_client: FlaskClient, tool: str, settings: dict[str, Any]
) -> None:
    response = post_many(pixmill_client, tool, solids([(20, 20)] * 2), settings)
    assert response.status_code == 400
    assert response.get_json()["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("tool", ["collage", "stitch", "split", "sprite-sheet"])
def test_non_image_is_415_over_rest(pixmill_client: FlaskClient, tool: str) -> None:
    parts = [(b"just some text, not a picture", "notes.txt"), *solids([(20, 20)])]
    response = post_many(pixmill_client, tool, parts[:1] if tool == "split" else parts, {})
    assert response.status_code == 415
    assert response.get_json()["code"] == "UNSUPPORTED_FORMAT"


def test_one_file_for_stitch_is_400_over_rest(pixmill_client: FlaskClient) -> None:
    response = post_many(pixmill_client, "stitch", solids([(20, 20)]), {})
    assert response.status_code == 400 and response.get_json()["code"] == "WRONG_FILE_COUNT"


def test_sprite_sheet_zip_over_rest(pixmill_client: FlaskClient) -> None:
    response = post_many(pixmill_client, "sprite-sheet", solids([(20, 20)] * 3), {"columns": 2})
    assert response.status_code == 200, response.get_json(silent=True)
    body = response.get_json(silent=True)
    data = response.data
    if body is not None:  # the result was stored: fetch it from its download URL
        first = body["files"][0] if "files" in body else body
        data = pixmill_client.get(first["downloadUrl"]).data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["spritesheet.json", "spritesheet.png"]


def test_multi_image_tools_use_upright_sizes(run_tool: Any) -> None:
    rotated = images.exif_rotated_jpeg(300, 200)  # stored 300x200, shown 200x300
    parts = [(rotated, "r.jpg"), (encode(solid((1, 2, 3), (10, 10))), "s.png")]
    assert decode(many(run_tool, "stitch", parts, alignment="start")).size == (210, 300)
    members = unzip(many(run_tool, "sprite-sheet", parts))
    frames = json.loads(members["spritesheet.json"])["frames"]
    assert (frames["r.jpg"]["frame"]["w"], frames["r.jpg"]["frame"]["h"]) == (200, 300)
    tiles = unzip(run(run_tool, "split", rotated, "r.jpg", rows=1, cols=2))
    for data in tiles.values():
        tile = decode(data)
        assert tile.size == (100, 300) and tile.getexif().get(0x0112) in (None, 1)


def test_an_icon_first_gives_a_png_collage(run_tool: Any) -> None:
    icon = encode(solid((10, 20, 30), (32, 32)), "ICO")
    outcome = many(run_tool, "collage", [(icon, "a.ico"), (icon, "b.ico")], width=300, height=100)
    assert outcome.format.name == "png" and decode(outcome).size == (300, 100)


def test_split_through_the_worker_returns_the_zip(pixmill_run_tool: Any) -> None:
    outcome = pixmill_run_tool("split", encode(images.photo(40, 40)), "p.png", via="worker")
    assert sorted(unzip(outcome)) == [f"p_r{r}_c{c}.png" for r in (1, 2) for c in (1, 2)]
