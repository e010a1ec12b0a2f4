"""The adjustments plugin (adjust-colors, pixelate, vignette, duotone, replace-color,
color-blindness) on real images: every expectation is computed here from the documented maths."""

from __future__ import annotations

import colorsys
import io
from collections.abc import Callable
from typing import Any, cast

import pytest
from PIL import Image, ImageChops, ImageFilter, ImageOps, ImageStat

from pixmill.core.errors import BadRequestError, InvalidImageError, SettingsError
from pixmill.testing import images
from pixmill.testing.images import decode, encode
from pixmill.testing.similarity import ssim

Pixel = tuple[int, ...]


# --- helpers ----------------------------------------------------------------------------------


def run(run_tool: Any, tool: str, img: Image.Image, **settings: Any) -> Image.Image:
    return decode(run_tool(tool, encode(img), "in.png", **settings))


def mean_difference(first: Image.Image, second: Image.Image) -> float:
    diff = ImageChops.difference(first.convert("RGB"), second.convert("RGB"))
    return max(ImageStat.Stat(diff).mean)


def band_extrema(img: Image.Image) -> list[tuple[float, float]]:
    return [band.getextrema() for band in img.split()]  # type: ignore[misc]


def is_flat(img: Image.Image) -> bool:
    return all(low == high for low, high in band_extrema(img))


def max_difference(first: Image.Image, second: Image.Image) -> int:
    diff = ImageChops.difference(first.convert("RGB"), second.convert("RGB"))
    return int(max(high for _, high in band_extrema(diff)))


def pixel_at(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def per_pixel(img: Image.Image, transform: Callable[[Pixel], Pixel]) -> Image.Image:
    """A reference image built pixel by pixel in plain Python (for small images only)."""
    out = Image.new("RGB", img.size)
    pixels = cast("list[Pixel]", list(img.convert("RGB").get_flattened_data()))
    out.putdata([transform(pixel) for pixel in pixels])
    return out


def to_linear(value: float) -> float:
    return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4


def to_srgb(value: float) -> float:
    value = min(max(value, 0.0), 1.0)
    return value * 12.92 if value <= 0.0031308 else 1.055 * value ** (1 / 2.4) - 0.055


def small_photo() -> Image.Image:
    return images.photo(96, 72).convert("RGB")


def assert_bad_setting(run_tool: Any, tool: str, field: str, **settings: Any) -> None:
    with pytest.raises(SettingsError) as exc:
        run_tool(tool, encode(small_photo()), "in.png", **settings)
    assert field in exc.value.details["fields"], exc.value.details


# --- adjust-colors ----------------------------------------------------------------------------


def test_adjust_colors_defaults_leave_pixels_alone(run_tool: Any) -> None:
    img = small_photo()
    assert run(run_tool, "adjust-colors", img).tobytes() == img.tobytes()


@pytest.mark.parametrize(
    ("settings", "channel_map"),
    [
        ({"brightness": 30}, lambda v: v * 1.3),
        ({"brightness": -100}, lambda v: 0.0),
        ({"contrast": 50}, lambda v: (v - 127.5) * 1.5 + 127.5),
        ({"contrast": -100}, lambda v: 127.5),
        ({"exposure": 1.0}, lambda v: 255 * to_srgb(2 * to_linear(v / 255))),
        ({"effect": "invert"}, lambda v: 255 - v),
    ],
)
def test_adjust_colors_tone_curves(
    run_tool: Any, settings: dict[str, Any], channel_map: Callable[[float], float]
) -> None:
    img = small_photo()
    expected = per_pixel(img, lambda p: tuple(round(min(max(channel_map(v), 0), 255)) for v in p))
    out = run(run_tool, "adjust-colors", img, **settings)
    assert out.size == img.size
    # The 3D LUT interpolates between samples: exact on straight stretches, a few levels off
    # beside a clipping kink.
    assert max_difference(out, expected) <= 4
    assert mean_difference(out, expected) <= 0.6


def test_adjust_colors_channel_gains_and_white_balance(run_tool: Any) -> None:
    img = Image.new("RGB", (40, 30), (100, 120, 140))
    out = run(run_tool, "adjust-colors", img, red=50, blue=-50)
    assert pixel_at(out, (5, 5)) == pytest.approx((150, 120, 70), abs=1)
    warm = ImageStat.Stat(run(run_tool, "adjust-colors", img, temperature=80)).mean
    cool = ImageStat.Stat(run(run_tool, "adjust-colors", img, temperature=-80)).mean
    assert warm[0] > 100 + 10 and warm[2] < 140 - 10
    assert cool[0] < 100 - 10 and cool[2] > 140 + 10
    magenta = ImageStat.Stat(run(run_tool, "adjust-colors", img, tint=80)).mean
    assert magenta[1] < 120 - 10 and abs(magenta[0] - 100) <= 1


def test_adjust_colors_saturation_grayscale_and_sepia(run_tool: Any) -> None:
    img = small_photo()
    for settings in ({"saturation": -100}, {"effect": "grayscale"}):
        out = run(run_tool, "adjust-colors", img, **settings)
        red, green, blue = out.split()
        assert max_difference(red, green) <= 1 and max_difference(green, blue) <= 1, settings
        luma = per_pixel(img, lambda p: (round(0.2126 * p[0] + 0.7152 * p[1] + 0.0722 * p[2]),) * 3)
        assert max_difference(out, luma) <= 2
    vivid = run(run_tool, "adjust-colors", img, saturation=80)
    spread = [ImageStat.Stat(ImageChops.difference(x.split()[0], x.split()[2])).mean[0]
              for x in (img, vivid)]  # fmt: skip
    assert spread[1] > spread[0] * 1.4
    sepia = run(run_tool, "adjust-colors", img, effect="sepia")
    mean_r, mean_g, mean_b = ImageStat.Stat(sepia).mean
    assert mean_r > mean_g > mean_b  # brown tones


def test_adjust_colors_hue_turns_the_colour_wheel(run_tool: Any) -> None:
    img = Image.new("RGB", (20, 20), (200, 40, 40))
    before = colorsys.rgb_to_hsv(*(v / 255 for v in pixel_at(img, (0, 0))))[0] * 360
    out = run(run_tool, "adjust-colors", img, hue=120)
    after = colorsys.rgb_to_hsv(*(v / 255 for v in pixel_at(out, (10, 10))))[0] * 360
    turned = (after - before) % 360
    assert 90 < turned < 150  # the luma-keeping CSS matrix is close to, not exactly, 120 deg


def test_adjust_colors_sharpness_changes_edge_energy(run_tool: Any) -> None:
    img = small_photo()

    def edge_energy(x: Image.Image) -> float:
        return float(sum(ImageStat.Stat(x.convert("L").filter(ImageFilter.FIND_EDGES)).mean))

    assert edge_energy(run(run_tool, "adjust-colors", img, sharpness=100)) > edge_energy(img)
    assert edge_energy(run(run_tool, "adjust-colors", img, sharpness=-100)) < edge_energy(img)


def test_adjust_colors_keeps_alpha_icc_and_animation(run_tool: Any) -> None:
    rgba = small_photo().convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    out = run(run_tool, "adjust-colors", rgba, effect="invert")
    assert out.mode == "RGBA"
    assert out.getchannel("A").tobytes() == rgba.getchannel("A").tobytes()

    tagged = decode(run_tool("adjust-colors", images.jpeg_with_icc(), "p.jpg", brightness=10))
    assert tagged.info.get("icc_profile") == images.srgb_icc_profile()

    source = images.animated_gif(64, 48, frames=3)
    animated = decode(run_tool("adjust-colors", source, "a.gif", effect="invert"))
    original = Image.open(io.BytesIO(source))
    assert getattr(animated, "n_frames", 1) == 3
    for index in range(3):
        animated.seek(index)
        original.seek(index)
        inverted = ImageOps.invert(original.convert("RGB"))
        assert max_difference(animated.convert("RGB"), inverted) <= 8, index  # GIF palette


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"brightness": 101}, "brightness"),
        ({"contrast": -101}, "contrast"),
        ({"exposure": 5.5}, "exposure"),
        ({"hue": 181}, "hue"),
        ({"saturation": "10"}, "saturation"),
        ({"red": 2.5}, "red"),
        ({"effect": "blur"}, "effect"),
        ({"gamma": 2}, "gamma"),
    ],
)
def test_adjust_colors_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    assert_bad_setting(run_tool, "adjust-colors", field, **settings)


def test_bounds_are_accepted(run_tool: Any) -> None:
    img = small_photo()
    for tool, settings in (
        ("adjust-colors", {"brightness": 100, "contrast": -100, "exposure": -5, "hue": -180}),
        ("pixelate", {"blockSize": 128}),
        ("vignette", {"strength": 0.1, "radius": 150, "softness": 0, "centerX": 100}),
        ("duotone", {"intensity": 0}),
        ("replace-color", {"tolerance": 100}),
        ("sharpening", {"sigma": 10, "m1": 100, "x1": 0, "y2": 100, "y3": 0}),
        ("sharpening", {"method": "unsharp-mask", "amount": 500, "radius": 50, "threshold": 0}),
        ("sharpening", {"method": "high-pass", "strength": 100, "kernelSize": 5}),
        ("color-blindness", {"simulationType": "tritanomaly"}),
    ):
        assert run(run_tool, tool, img, **settings).size == img.size, tool


def test_bad_input_is_refused(run_tool: Any) -> None:
    data = encode(small_photo())
    for tool in ("adjust-colors", "pixelate", "vignette", "duotone", "replace-color", "sharpening"):
        with pytest.raises(InvalidImageError):
            run_tool(tool, data[: len(data) // 2], "cut.png")
    with pytest.raises(InvalidImageError):
        run_tool("color-blindness", data[: len(data) // 2], "cut.png")


# --- pixelate ---------------------------------------------------------------------------------


def block_mean(img: Image.Image, box: tuple[int, int, int, int]) -> list[float]:
    return ImageStat.Stat(img.crop(box)).mean


def test_pixelate_paints_each_block_its_mean(run_tool: Any) -> None:
    img = images.photo(95, 72).convert("RGB")  # 95 is not a multiple of 10: partial blocks
    out = run(run_tool, "pixelate", img, blockSize=10)
    assert out.size == img.size
    for top in range(0, 72, 10):
        for left in range(0, 95, 10):
            box = (left, top, min(left + 10, 95), min(top + 10, 72))
            block = out.crop(box)
            assert is_flat(block), box
            expected = block_mean(img, box)
            assert pixel_at(block, (0, 0)) == pytest.approx(expected, abs=1), box


def test_pixelate_region_leaves_the_rest_untouched(run_tool: Any) -> None:
    img = small_photo()
    region = {"left": 20, "top": 10, "width": 40, "height": 32}
    out = run(run_tool, "pixelate", img, blockSize=8, region=region)
    box = (20, 10, 60, 42)
    assert ImageChops.difference(img, out).getbbox() == box
    first = out.crop((20, 10, 28, 18))
    assert is_flat(first)
    assert pixel_at(first, (0, 0)) == pytest.approx(block_mean(img, (20, 10, 28, 18)), abs=1)


def test_pixelate_region_outside_the_image_is_a_clear_400(run_tool: Any) -> None:
    with pytest.raises(BadRequestError) as exc:
        run(run_tool, "pixelate", small_photo(), region={"left": 90, "width": 20, "height": 5})
    assert exc.value.code == "REGION_OUTSIDE_IMAGE" and exc.value.status == 400
    assert exc.value.details["imageWidth"] == 96


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"blockSize": 1}, "blockSize"),
        ({"blockSize": 129}, "blockSize"),
        ({"region": {"left": 0, "top": 0, "height": 5}}, "region"),
        ({"region": {"width": 0, "height": 5}}, "region"),
        ({"region": "top-left"}, "region"),
    ],
)
def test_pixelate_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    assert_bad_setting(run_tool, "pixelate", field, **settings)


# --- vignette ---------------------------------------------------------------------------------


def test_vignette_darkens_towards_the_corners(run_tool: Any) -> None:
    img = Image.new("RGB", (200, 100), (255, 255, 255))
    out = run(run_tool, "vignette", img, strength=0.5)
    centre = pixel_at(out, (100, 50))
    assert centre == (255, 255, 255)
    # Corners are beyond radius + softness (100% of the half-size): exactly half strength.
    assert pixel_at(out, (0, 0)) == pytest.approx((128, 128, 128), abs=2)
    along_diagonal = [pixel_at(out, (100 - i, 50 - i // 2))[0] for i in range(0, 100, 10)]
    assert along_diagonal == sorted(along_diagonal, reverse=True)
    # Default roundness follows the aspect: the edge midpoints fade alike.
    assert pixel_at(out, (1, 50))[0] == pytest.approx(pixel_at(out, (100, 1))[0], abs=3)


def test_vignette_roundness_centre_and_colour(run_tool: Any) -> None:
    img = Image.new("RGB", (200, 100), (255, 255, 255))
    round_ = run(run_tool, "vignette", img, strength=1, roundness=100, radius=20, softness=60)
    # A circle: equal distances from the centre fade equally, whatever the direction.
    assert pixel_at(round_, (140, 50))[0] == pytest.approx(pixel_at(round_, (100, 90))[0], abs=3)
    shifted = run(run_tool, "vignette", img, centerX=0, strength=1)
    assert pixel_at(shifted, (2, 50))[0] > pixel_at(shifted, (197, 50))[0] + 100
    red = run(run_tool, "vignette", img, strength=1, color="#ff0000")
    assert pixel_at(red, (0, 0)) == pytest.approx((255, 0, 0), abs=2)


def test_vignette_keeps_alpha(run_tool: Any) -> None:
    img = Image.new("RGBA", (60, 40), (255, 255, 255, 90))
    out = run(run_tool, "vignette", img, strength=1)
    assert out.mode == "RGBA" and out.getchannel("A").getextrema() == (90, 90)
    assert pixel_at(out, (0, 0))[0] < 20


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"strength": 0.05}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"color": "#12345"}, "color"),
        ({"color": "#00000080"}, "color"),
        ({"radius": 151}, "radius"),
        ({"softness": -1}, "softness"),
        ({"roundness": 101}, "roundness"),
        ({"centerX": 101}, "centerX"),
    ],
)
def test_vignette_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    assert_bad_setting(run_tool, "vignette", field, **settings)


# --- duotone ----------------------------------------------------------------------------------


def test_duotone_maps_luma_onto_the_two_colours(run_tool: Any) -> None:
    ramp = Image.linear_gradient("L").rotate(90).resize((256, 16)).convert("RGB")
    shadow, highlight = (20, 40, 120), (250, 200, 60)
    out = run(run_tool, "duotone", ramp, shadow="#142878", highlight="#fac83c")
    for x in range(0, 256, 17):
        level = pixel_at(ramp, (x, 8))[0] / 255
        expected = tuple(round(s + (h - s) * level) for s, h in zip(shadow, highlight, strict=True))
        assert pixel_at(out, (x, 8)) == pytest.approx(expected, abs=2), x


def test_duotone_intensity_blends_with_the_original(run_tool: Any) -> None:
    img = small_photo()
    assert run(run_tool, "duotone", img, intensity=0).tobytes() == img.tobytes()
    full = run(run_tool, "duotone", img)
    half = run(run_tool, "duotone", img, intensity=50)
    assert max_difference(half, Image.blend(img, full, 0.5)) <= 2
    assert ssim(half, img) > ssim(full, img)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"intensity": 101}, "intensity"),
        ({"intensity": -1}, "intensity"),
        ({"shadow": "navy"}, "shadow"),
        ({"highlight": "#fff8"}, "highlight"),
    ],
)
def test_duotone_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    assert_bad_setting(run_tool, "duotone", field, **settings)


# --- replace-color ----------------------------------------------------------------------------


def two_colour_image() -> Image.Image:
    img = Image.new("RGB", (60, 40), (255, 255, 255))
    img.paste((200, 30, 30), (10, 10, 30, 30))
    img.paste((250, 250, 250), (40, 10, 50, 20))  # 8.66 from white: 1.96% of black-white
    return img


def test_replace_color_recolours_within_tolerance(run_tool: Any) -> None:
    img = two_colour_image()
    exact = run(run_tool, "replace-color", img, targetColor="#0000ff", tolerance=0)
    assert pixel_at(exact, (0, 0)) == (0, 0, 255)
    assert pixel_at(exact, (15, 15)) == (200, 30, 30)
    assert pixel_at(exact, (45, 15)) == (250, 250, 250)  # not exact: kept at tolerance 0
    just_outside = run(run_tool, "replace-color", img, targetColor="#0000ff", tolerance=1)
    assert pixel_at(just_outside, (45, 15)) == (250, 250, 250)
    just_inside = run(run_tool, "replace-color", img, targetColor="#0000ff", tolerance=2)
    assert pixel_at(just_inside, (45, 15)) == (0, 0, 255)
    assert pixel_at(just_inside, (15, 15)) == (200, 30, 30)


def test_replace_color_make_transparent(run_tool: Any) -> None:
    out = run(run_tool, "replace-color", two_colour_image(), makeTransparent=True, tolerance=5)
    assert out.mode == "RGBA"
    alpha = out.getchannel("A")
    assert alpha.getpixel((0, 0)) == 0 and alpha.getpixel((45, 15)) == 0
    assert alpha.getpixel((15, 15)) == 255
    assert alpha.getbbox() == (10, 10, 30, 30)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"tolerance": 101}, "tolerance"),
        ({"tolerance": -1}, "tolerance"),
        ({"sourceColor": "#ffffffff"}, "sourceColor"),
        ({"targetColor": "blue"}, "targetColor"),
        ({"makeTransparent": "perhaps"}, "makeTransparent"),
    ],
)
def test_replace_color_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    assert_bad_setting(run_tool, "replace-color", field, **settings)


# --- color-blindness --------------------------------------------------------------------------

# Machado, Oliveira & Fernandes (2009), protanopia at severity 1.0, as published.
PROTANOPIA = (
    (0.152286, 1.052583, -0.204868),
    (0.114503, 0.786281, 0.099216),
    (-0.003882, -0.048116, 1.051998),
)


def simulated(matrix: Any, pixel: Pixel) -> Pixel:
    linear = [to_linear(v / 255) for v in pixel[:3]]
    seen = [sum(m * c for m, c in zip(row, linear, strict=True)) for row in matrix]
    return tuple(round(255 * to_srgb(c)) for c in seen)


def test_protanopia_matches_the_published_matrix_in_linear_rgb(run_tool: Any) -> None:
    img = small_photo()
    out = run(run_tool, "color-blindness", img, simulationType="protanopia")
    expected = per_pixel(img, lambda p: simulated(PROTANOPIA, p))
    # The LUT is exact to a level or two except right where the model clips negative light
    # to black, where the sRGB curve is steepest.
    assert max_difference(out, expected) <= 6
    assert mean_difference(out, expected) <= 0.3
    red = run(run_tool, "color-blindness", Image.new("RGB", (8, 8), (255, 0, 0)),
              simulationType="protanopia")  # fmt: skip
    assert pixel_at(red, (0, 0)) == pytest.approx(simulated(PROTANOPIA, (255, 0, 0)), abs=1)


def test_achromatopsia_is_luminance_and_greys_survive_every_type(run_tool: Any) -> None:
    img = small_photo()
    mono = run(run_tool, "color-blindness", img, simulationType="achromatopsia")
    luminance = (0.2126, 0.7152, 0.0722)

    def grey(pixel: Pixel) -> Pixel:
        linear = sum(w * to_linear(v / 255) for w, v in zip(luminance, pixel, strict=True))
        return (round(255 * to_srgb(linear)),) * 3

    expected = per_pixel(img, grey)
    assert max_difference(mono, expected) <= 2
    greys = Image.linear_gradient("L").resize((64, 8)).convert("RGB")
    kinds = (
        "protanopia", "deuteranopia", "tritanopia", "protanomaly", "deuteranomaly",
        "tritanomaly", "achromatopsia", "achromatomaly", "blueConeMonochromacy",
    )  # fmt: skip
    for kind in kinds:
        out = run(run_tool, "color-blindness", greys, simulationType=kind)
        assert max_difference(out, greys) <= 2, kind  # each model keeps the neutral axis


def test_blue_cone_monochromacy_sees_only_the_s_cone_response(run_tool: Any) -> None:
    blue, red = (0, 0, 255), (255, 0, 0)
    img = Image.new("RGB", (16, 8), blue)
    img.paste(red, (8, 0, 16, 8))
    out = run(run_tool, "color-blindness", img, simulationType="blueConeMonochromacy")
    seen_blue, seen_red = pixel_at(out, (2, 2)), pixel_at(out, (12, 2))
    # One signal, so every colour comes out grey; pure blue is most of it, pure red little.
    assert seen_blue[0] == seen_blue[1] == seen_blue[2]
    assert seen_red[0] == seen_red[1] == seen_red[2]
    weights = (0.01775, 0.10944, 0.87257)
    expected_blue = round(255 * to_srgb(weights[2] / sum(weights)))
    expected_red = round(255 * to_srgb(weights[0] / sum(weights)))
    assert seen_blue[0] == pytest.approx(expected_blue, abs=2)
    assert seen_red[0] == pytest.approx(expected_red, abs=3)
    assert seen_blue[0] > 230 and seen_red[0] < 40


def test_anomalies_are_milder_than_the_dichromacies(run_tool: Any) -> None:
    img = small_photo()
    for weaker, stronger in (
        ("protanomaly", "protanopia"),
        ("deuteranomaly", "deuteranopia"),
        ("tritanomaly", "tritanopia"),
        ("achromatomaly", "achromatopsia"),
    ):
        mild = run(run_tool, "color-blindness", img, simulationType=weaker)
        full = run(run_tool, "color-blindness", img, simulationType=stronger)
        assert ssim(img, mild) > ssim(img, full), weaker
        assert max_difference(img, mild) > 5  # but still a visible change


def test_default_is_deuteranomaly(run_tool: Any) -> None:
    img = small_photo()
    default = run(run_tool, "color-blindness", img)
    named = run(run_tool, "color-blindness", img, simulationType="deuteranomaly")
    assert default.tobytes() == named.tobytes()
    assert max_difference(default, img) > 5


@pytest.mark.parametrize("value", ["colorblind", "Protanopia", 3, None])
def test_color_blindness_bad_settings(run_tool: Any, value: Any) -> None:
    assert_bad_setting(run_tool, "color-blindness", "simulationType", simulationType=value)


def test_replace_color_full_tolerance_matches_every_colour(run_tool: Any) -> None:
    # 100% is the black-to-white distance, the largest there is: every pixel is replaced.
    out = run(run_tool, "replace-color", two_colour_image(), targetColor="#00ff00", tolerance=100)
    assert out.getextrema() == ((0, 0), (255, 255), (0, 0))


# --- sharpening -------------------------------------------------------------------------------


def edge_energy(img: Image.Image) -> float:
    return float(ImageStat.Stat(img.convert("L").filter(ImageFilter.FIND_EDGES)).mean[0])


def soft_photo() -> Image.Image:
    return small_photo().filter(ImageFilter.GaussianBlur(1.5))


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"method": "unsharp-mask"},
        {"method": "high-pass", "strength": 100, "kernelSize": 5},
    ],
)
def test_every_sharpening_method_adds_edge_contrast(
    run_tool: Any, settings: dict[str, Any]
) -> None:
    img = soft_photo()
    out = run(run_tool, "sharpening", img, **settings)
    assert out.size == img.size
    assert edge_energy(out) > edge_energy(img) * 1.1
    assert 0.5 < ssim(out, img) < 0.999  # the same picture, visibly changed


def test_adaptive_sharpening_respects_its_caps(run_tool: Any) -> None:
    img = soft_photo()
    luma = img.convert("YCbCr").getchannel("Y")
    out = run(run_tool, "sharpening", img, m1=5, m2=5, y2=2, y3=4)
    out_luma = out.convert("YCbCr").getchannel("Y")
    brightened = ImageChops.subtract(out_luma, luma)
    darkened = ImageChops.subtract(luma, out_luma)
    # y2/y3 are L* units (x2.55 levels); YCbCr round trips may add a level or two.
    assert 0 < band_extrema(brightened)[0][1] <= round(2 * 2.55) + 2
    assert 0 < band_extrema(darkened)[0][1] <= round(4 * 2.55) + 2
    assert band_extrema(darkened)[0][1] > band_extrema(brightened)[0][1]
    flat = run(run_tool, "sharpening", img, m1=0, m2=0)
    assert max_difference(flat, img) <= 3  # zero slopes: nothing but YCbCr rounding


def test_sharpening_thresholds_and_zero_strength_leave_pixels(run_tool: Any) -> None:
    img = soft_photo()
    calm = run(run_tool, "sharpening", img, method="unsharp-mask", threshold=255)
    assert calm.tobytes() == img.tobytes()
    none = run(run_tool, "sharpening", img, method="high-pass", strength=0)
    assert none.tobytes() == img.tobytes()


def test_denoise_levels_smooth_noise_before_sharpening(run_tool: Any) -> None:
    noise = Image.effect_noise((96, 72), 30).convert("RGB")
    spread = [
        ImageStat.Stat(
            run(run_tool, "sharpening", noise, method="high-pass", denoise=level)
        ).stddev[0]
        for level in ("off", "light", "medium", "strong")
    ]
    assert spread == sorted(spread, reverse=True) and spread[-1] < spread[0] / 2


def test_sharpening_keeps_alpha(run_tool: Any) -> None:
    img = soft_photo().convert("RGBA")
    img.putalpha(Image.linear_gradient("L").resize(img.size))
    out = run(run_tool, "sharpening", img, method="unsharp-mask", amount=300)
    assert out.mode == "RGBA"
    assert out.getchannel("A").tobytes() == img.getchannel("A").tobytes()


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"method": "laplace"}, "method"),
        ({"sigma": 0}, "sigma"),
        ({"sigma": 11}, "sigma"),
        ({"m2": -1}, "m2"),
        ({"y3": 101}, "y3"),
        ({"amount": 501}, "amount"),
        ({"radius": 0.05}, "radius"),
        ({"threshold": 256}, "threshold"),
        ({"strength": 101}, "strength"),
        ({"kernelSize": 4}, "kernelSize"),
        ({"denoise": "extreme"}, "denoise"),
    ],
)
def test_sharpening_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    assert_bad_setting(run_tool, "sharpening", field, **settings)
