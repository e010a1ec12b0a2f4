"""utilities: compare, histogram and find-duplicates on real images, every expectation computed
here (numpy stats, exact masks, pixmill.testing.ssim). image-to-base64 and lqip-placeholder are
tested in test_plugins_codes.py."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image, ImageDraw, ImageOps

import pixmill.plugins.utilities as utilities
from pixmill.core.errors import (
    AnimatedImageError,
    BadRequestError,
    SettingsError,
    UnsupportedFormatError,
)
from pixmill.testing import check_plugin, images, ssim
from pixmill.testing.images import decode, encode

TOOLS_URL = "/api/v1/tools/image/"
SQUARE = (30, 20, 50, 40)  # x0, y0, x1, y1 (exclusive)


def photo(width: int = 120, height: int = 90, seed: int = 1) -> Image.Image:
    return images.photo(width, height, seed).convert("RGB")


def with_black_square(img: Image.Image) -> Image.Image:
    changed = img.copy()
    x0, y0, x1, y1 = SQUARE
    ImageDraw.Draw(changed).rectangle((x0, y0, x1 - 1, y1 - 1), fill=(0, 0, 0))
    return changed


def compare(run_tool: Any, first: Image.Image, second: Image.Image, **settings: Any) -> Any:
    return run_tool(
        "compare",
        encode(first),
        "a.png",
        files={"compare": [(encode(second), "b.png")]},
        **settings,
    )


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


def post(
    client: FlaskClient, tool: str, parts: dict[str, list[tuple[bytes, str]]], **s: Any
) -> Any:
    form: dict[str, Any] = {"settings": json.dumps(s)}
    for name, uploads in parts.items():
        form[name] = [(io.BytesIO(data), filename) for data, filename in uploads]
    return client.post(TOOLS_URL + tool, data=form)


# --- compare ----------------------------------------------------------------------------------


def test_diff_of_identical_images_scores_one_and_highlights_nothing(run_tool: Any) -> None:
    img = photo()
    outcome = compare(run_tool, img, img, mode="diff")
    assert outcome.meta["ssim"] == 1.0
    assert outcome.meta["diffPixels"] == 0 and outcome.meta["diffPercent"] == 0
    assert (outcome.meta["width"], outcome.meta["height"]) == img.size
    assert outcome.meta["resized"] is False
    out = pixels(decode(outcome).convert("RGB"))
    assert out.shape[:2] == (img.height, img.width)
    # Only the faded grey original: every pixel is grey and light.
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert out.min() >= round(255 * utilities.DIFF_FADE) - 1


def test_diff_highlights_exactly_the_changed_square(run_tool: Any) -> None:
    img = photo()
    outcome = compare(run_tool, img, with_black_square(img), mode="diff", highlightColor="#00ff00")
    out = pixels(decode(outcome).convert("RGB"))
    highlighted = (out == (0, 255, 0)).all(axis=2)
    expected = np.zeros(highlighted.shape, dtype=bool)
    x0, y0, x1, y1 = SQUARE
    expected[y0:y1, x0:x1] = True
    assert (highlighted == expected).all()
    area = (x1 - x0) * (y1 - y0)
    assert outcome.meta["diffPixels"] == area
    assert outcome.meta["diffPercent"] == pytest.approx(
        100 * area / (img.width * img.height), abs=1e-4
    )
    assert 0 < outcome.meta["ssim"] < 1


def test_diff_threshold_decides_what_differs(run_tool: Any) -> None:
    img = photo()
    brighter = Image.fromarray(np.clip(pixels(img).astype(int) + 20, 0, 255).astype(np.uint8))
    changed = (np.abs(pixels(brighter).astype(int) - pixels(img)) > 10).any(axis=2).sum()
    assert compare(run_tool, img, brighter, diffThreshold=10).meta["diffPixels"] == changed
    assert compare(run_tool, img, brighter, diffThreshold=20).meta["diffPixels"] == 0


def test_ssim_matches_the_reference_implementation(run_tool: Any) -> None:
    first, second = photo(seed=1), photo(seed=2)
    outcome = compare(run_tool, first, second, mode="overlay")
    assert outcome.meta["ssim"] == pytest.approx(ssim(first, second), abs=1e-3)
    assert outcome.meta["ssim"] < 0.9


def test_overlay_is_a_half_blend_and_side_by_side_puts_them_next_to_each_other(
    run_tool: Any,
) -> None:
    first, second = photo(seed=1), photo(seed=2)
    overlay = decode(compare(run_tool, first, second, mode="overlay"))
    assert (pixels(overlay.convert("RGB")) == pixels(Image.blend(first, second, 0.5))).all()
    both = decode(compare(run_tool, first, second, mode="side-by-side")).convert("RGB")
    assert both.size == (first.width * 2, first.height)
    assert (pixels(both.crop((0, 0, first.width, first.height))) == pixels(first)).all()
    right = both.crop((first.width, 0, first.width * 2, first.height))
    assert (pixels(right) == pixels(second)).all()


def test_a_second_image_of_another_size_is_resized_to_the_first(run_tool: Any) -> None:
    first = photo(120, 90)
    small = first.resize((60, 45), Image.Resampling.LANCZOS)
    outcome = compare(run_tool, first, small, mode="side-by-side")
    meta = outcome.meta
    assert meta["resized"] is True
    assert (meta["compareWidth"], meta["compareHeight"]) == (60, 45)
    assert (meta["width"], meta["height"]) == (120, 90)
    assert decode(outcome).size == (240, 90)
    assert meta["ssim"] > 0.5


def test_compare_keeps_transparency_in_side_by_side(run_tool: Any) -> None:
    rgba = photo().convert("RGBA")
    rgba.putalpha(128)
    out = decode(compare(run_tool, rgba, photo(), mode="side-by-side"))
    assert out.mode == "RGBA"
    alpha = pixels(out)[..., 3]
    assert (alpha[:, :120] == 128).all() and (alpha[:, 120:] == 255).all()


def test_compare_refuses_bad_input(run_tool: Any) -> None:
    with pytest.raises(UnsupportedFormatError):
        run_tool(
            "compare", encode(photo()), "a.png", files={"compare": [(b"not an image", "b.txt")]}
        )
    with pytest.raises(BadRequestError) as missing:
        run_tool("compare", encode(photo()), "a.png")
    assert missing.value.code == "MISSING_FILE"
    with pytest.raises(AnimatedImageError):
        run_tool(
            "compare", images.animated_gif(), "a.gif", files={"compare": [(images.png(), "b.png")]}
        )


def test_compare_meta_reaches_the_rest_answer(pixmill_client: FlaskClient) -> None:
    img = photo()
    response = post(
        pixmill_client,
        "compare",
        {"file": [(encode(img), "a.png")], "compare": [(encode(with_black_square(img)), "b.png")]},
        mode="diff",
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["meta"]["diffPixels"] == 400
    assert 0 < body["meta"]["ssim"] < 1
    download = pixmill_client.get(body["downloadUrl"])
    assert download.status_code == 200
    assert Image.open(io.BytesIO(download.data)).format == "PNG"


# --- histogram --------------------------------------------------------------------------------


def known_rgba() -> tuple[Image.Image, np.ndarray]:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, size=(60, 80, 4), dtype=np.uint8)
    data[..., 3] = 255
    data[:10, :, 3] = 0  # fully transparent rows: left out
    data[10:20, :, 3] = 40  # partly transparent: counted
    return Image.fromarray(data, "RGBA"), data


def test_histogram_stats_equal_numpys(run_tool: Any) -> None:
    img, data = known_rgba()
    outcome = run_tool("histogram", encode(img), "h.png")
    meta = outcome.meta
    visible = data[data[..., 3] > 0][:, :3].astype(np.float64)
    assert meta["pixels"] == len(visible) == 50 * 80
    assert meta["transparentPixels"] == 10 * 80
    assert (meta["imageWidth"], meta["imageHeight"]) == (80, 60)
    luminance = np.rint(visible @ np.array(utilities.LUMA_WEIGHTS))
    columns = {"red": visible[:, 0], "green": visible[:, 1], "blue": visible[:, 2]}
    columns["luminance"] = luminance
    for name, values in columns.items():
        stats = meta["channels"][name]
        assert stats["mean"] == pytest.approx(values.mean(), abs=1e-4), name
        assert stats["median"] == np.median(values), name
        assert stats["stdDev"] == pytest.approx(values.std(), abs=1e-4), name
        assert (stats["min"], stats["max"]) == (values.min(), values.max()), name


def test_histogram_median_of_an_even_count_averages_the_middle_values(run_tool: Any) -> None:
    img = Image.new("L", (2, 1))
    img.putdata([10, 21])
    stats = run_tool("histogram", encode(img), "h.png").meta["channels"]["red"]
    assert stats == {"mean": 15.5, "median": 15.5, "stdDev": 5.5, "min": 10, "max": 21}


def test_histogram_chart_size_and_scale(run_tool: Any) -> None:
    data = encode(photo())
    linear = decode(run_tool("histogram", data, "h.png", width=300, height=150))
    assert linear.size == (300, 150)
    assert linear.format == "PNG"
    log = decode(run_tool("histogram", data, "h.png", width=300, height=150, scale="log"))
    assert (pixels(log) != pixels(linear)).any()
    # The curves are drawn in colour on a white background.
    rgb = pixels(linear.convert("RGB")).astype(int)
    assert ((rgb[..., 0] - rgb[..., 2]) > 100).any() and ((rgb[..., 2] - rgb[..., 0]) > 100).any()


def test_histogram_of_a_fully_transparent_image_has_empty_stats(run_tool: Any) -> None:
    clear = Image.new("RGBA", (10, 10), (200, 0, 0, 0))
    meta = run_tool("histogram", encode(clear), "h.png").meta
    assert meta["pixels"] == 0 and meta["transparentPixels"] == 100
    assert meta["channels"]["red"]["mean"] is None


def test_histogram_refuses_non_images(run_tool: Any) -> None:
    with pytest.raises(UnsupportedFormatError):
        run_tool("histogram", b"just text", "a.txt")


# --- find-duplicates --------------------------------------------------------------------------


def recompressed_small(img: Image.Image) -> bytes:
    return encode(img.resize((200, 150), Image.Resampling.LANCZOS), "JPEG", quality=60)


def find_duplicates(run_tool: Any, files: list[tuple[bytes, str]], **settings: Any) -> Any:
    return run_tool("find-duplicates", b"", files={"file": files}, **settings).json


def test_groups_a_resized_recompressed_copy_and_keeps_a_different_image_apart(
    run_tool: Any,
) -> None:
    original = images.photo(640, 480, seed=1)
    other = ImageOps.mirror(images.photo(640, 480, seed=3))
    files = [
        (encode(original, "JPEG", quality=90), "original.jpg"),
        (encode(other), "other.png"),
        (recompressed_small(original), "copy.jpg"),
        (encode(original, "JPEG", quality=90), "same.jpg"),
    ]
    result = find_duplicates(run_tool, files)
    assert result["count"] == 4 and result["duplicates"] == 2
    assert len(result["groups"]) == 1
    group = result["groups"][0]
    assert [(f["index"], f["filename"]) for f in group["files"]] == [
        (0, "original.jpg"),
        (2, "copy.jpg"),
        (3, "same.jpg"),
    ]
    distances = {(p["first"], p["second"]): p["distance"] for p in group["pairs"]}
    assert distances[(0, 3)] == 0
    assert distances[(0, 2)] <= 8
    hashes = [f["hash"] for f in result["files"]]
    assert hashes[0] == hashes[3] and hashes[1] != hashes[0]
    assert all(len(h) == 16 for h in hashes)
    assert [(f["width"], f["height"]) for f in result["files"]][:3] == [
        (640, 480),
        (640, 480),
        (200, 150),
    ]


def test_threshold_and_hash_size(run_tool: Any) -> None:
    original = images.photo(640, 480, seed=1)
    files = [(encode(original), "a.png"), (recompressed_small(original), "b.jpg")]
    strict = find_duplicates(run_tool, files, threshold=0, hashSize=16)
    first, second = (int(f["hash"], 16) for f in strict["files"])
    assert len(strict["files"][0]["hash"]) == 64  # 256 bits
    distance = (first ^ second).bit_count()
    assert distance > 0 and strict["groups"] == []
    loose = find_duplicates(run_tool, files, threshold=distance, hashSize=16)
    assert loose["groups"][0]["pairs"] == [{"first": 0, "second": 1, "distance": distance}]


def test_find_duplicates_needs_two_to_two_hundred_images(run_tool: Any) -> None:
    with pytest.raises(BadRequestError) as one:
        find_duplicates(run_tool, [(images.png(), "a.png")])
    assert one.value.status == 400 and one.value.code == "TOO_FEW_FILES"
    tiny = images.tiny()
    with pytest.raises(BadRequestError) as many:
        find_duplicates(run_tool, [(tiny, f"{i}.png") for i in range(201)])
    assert many.value.code == "TOO_MANY_FILES"
    with pytest.raises(UnsupportedFormatError):
        find_duplicates(run_tool, [(images.png(), "a.png"), (b"text", "b.txt")])


def test_find_duplicates_over_rest(pixmill_client: FlaskClient) -> None:
    original = images.photo(320, 240, seed=1)
    files = [(encode(original), "a.png"), (recompressed_small(original), "b.jpg")]
    response = post(pixmill_client, "find-duplicates", {"file": files})
    assert response.status_code == 200, response.get_json()
    assert len(response.get_json()["groups"]) == 1
    one = post(pixmill_client, "find-duplicates", {"file": files[:1]})
    assert one.status_code == 400 and one.get_json()["code"] == "TOO_FEW_FILES"


# --- settings bounds and conformance ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "settings"),
    [
        ("compare", {"mode": "blink"}),
        ("compare", {"diffThreshold": 256}),
        ("compare", {"diffThreshold": -1}),
        ("compare", {"highlightColor": "red"}),
        ("histogram", {"scale": "sqrt"}),
        ("histogram", {"width": 100}),
        ("histogram", {"height": 5000}),
        ("find-duplicates", {"threshold": 65}),
        ("find-duplicates", {"hashSize": 3}),
        ("find-duplicates", {"hashSize": 8.5}),
    ],
)
def test_out_of_range_settings_are_400(
    pixmill_client: FlaskClient, tool: str, settings: dict[str, Any]
) -> None:
    parts = {"file": [(images.png(), "a.png")]}
    if tool == "compare":
        parts["compare"] = [(images.png(), "b.png")]
    if tool == "find-duplicates":
        parts["file"].append((images.tiny(), "b.png"))
    response = post(pixmill_client, tool, parts, **settings)
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["code"] == "VALIDATION_ERROR"
    assert next(iter(settings)) in body["details"]["fields"]


def test_settings_errors_name_the_field(run_tool: Any) -> None:
    with pytest.raises(SettingsError) as exc:
        run_tool("histogram", images.png(), "a.png", width=5)
    assert "width" in exc.value.details["fields"]


def test_utilities_conform() -> None:
    check_plugin(utilities).assert_ok()
