"""The layout plugin (border, circle-crop, image-pad, beautify) on real images."""

from __future__ import annotations

import math
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

import pixmill.plugins.layout as layout
from pixmill.core.errors import BadRequestError, InvalidImageError, SettingsError
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
    assert report.tools == ["border", "circle-crop", "image-pad", "beautify"]


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
