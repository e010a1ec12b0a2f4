"""The vision plugin (smart-crop, blur-faces, red-eye-removal, noise-removal,
image-enhancement and its analyze sub-route, content-aware-resize) on real and synthetic images.

The face photo is scikit-image's astronaut (Eileen Collins, NASA, public domain), read straight
from the file the scikit-image wheel ships (the `test` extra installs it): no network.
"""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image, ImageDraw

import pixmill.plugins.vision as vision
from pixmill import Context, InputFile, Inputs
from pixmill.core.errors import (
    BadRequestError,
    CancelledError,
    InvalidImageError,
    SettingsError,
    UnsupportedFormatError,
)
from pixmill.core.imageio import ImageLimits
from pixmill.testing import check_plugin, images
from pixmill.testing.images import decode, encode

pytestmark = pytest.mark.pixmill_plugins(vision)

TOOLS_URL = "/api/v1/tools/image"


# --- helpers ----------------------------------------------------------------------------------


def astronaut() -> Image.Image:
    spec = importlib.util.find_spec("skimage")
    assert spec is not None and spec.submodule_search_locations, "pip install -e '.[test]'"
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "astronaut.png"
    with Image.open(path) as img:
        return img.convert("RGB")


# Where the Haar cascade finds the astronaut's face (left, top, width, height).
FACE = (177, 66, 95, 95)


def array(img: Image.Image, mode: str = "RGB") -> np.ndarray:
    return np.asarray(img.convert(mode)).astype(np.float64)


def post(client: FlaskClient, tool: str, data: bytes, **settings: Any) -> Any:
    return client.post(
        f"{TOOLS_URL}/{tool}",
        data={"file": (io.BytesIO(data), "in.png"), "settings": json.dumps(settings)},
    )


def assert_400(client: FlaskClient, tool: str, field: str, **settings: Any) -> None:
    response = post(client, tool, encode(images.photo(64, 48)), **settings)
    body = response.get_json()
    assert response.status_code == 400, body
    assert body["code"] == "VALIDATION_ERROR" and field in body["details"]["fields"], body


def assert_bad_input(client: FlaskClient, tool: str, **settings: Any) -> None:
    response = post(client, tool, b"not an image at all", **settings)
    assert response.status_code in (415, 422), response.get_json()
    assert response.get_json()["code"] in ("UNSUPPORTED_FORMAT", "INVALID_IMAGE")


def psnr(actual: np.ndarray, reference: np.ndarray) -> float:
    mse = float(((actual - reference) ** 2).mean())
    return 10 * np.log10(255**2 / mse)


def laplacian_variance(values: np.ndarray) -> float:
    gray = values.mean(axis=2)
    lap = (
        -4 * gray[1:-1, 1:-1] + gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:]
    )
    return float(lap.var())


def outside(mask_boxes: list[tuple[int, int, int, int]], shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of pixels outside every (left, top, right, bottom) box."""
    mask = np.ones(shape, dtype=bool)
    for left, top, right, bottom in mask_boxes:
        mask[top:bottom, left:right] = False
    return mask


# --- conformance and catalogue ----------------------------------------------------------------


def test_vision_plugin_conforms() -> None:
    report = check_plugin(vision)
    report.assert_ok()
    assert report.tools == [
        "smart-crop",
        "blur-faces",
        "red-eye-removal",
        "noise-removal",
        "image-enhancement",
        "content-aware-resize",
    ]


def test_catalogue_marks_cv_tools_and_the_analyze_route(pixmill_client: FlaskClient) -> None:
    tools = {t["id"]: t for t in pixmill_client.get("/api/v1/tools").get_json()["tools"]}
    assert tools["blur-faces"]["available"] is True
    assert tools["content-aware-resize"]["heavy"] is True
    assert tools["image-enhancement-analyze"]["endpoint"] == (
        "/api/v1/tools/image/image-enhancement/analyze"
    )
    declared = {t.id: t for t in vision.pixmill_tools()}
    assert declared["blur-faces"].requires == ("cv2",)
    assert declared["noise-removal"].install == "pixmill[cv]"
    assert declared["smart-crop"].requires == () and declared["image-enhancement"].requires == ()


# --- blur-faces -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gaussian", "pixelate"])
def test_blur_faces_blurs_the_face_and_nothing_else(run_tool: Any, method: str) -> None:
    source = astronaut()
    outcome = run_tool("blur-faces", encode(source), "a.png", method=method)
    assert outcome.meta["faces"] == 1
    box = outcome.meta["boxes"][0]
    assert all(
        abs(box[key] - value) <= 8
        for key, value in zip(("left", "top", "width", "height"), FACE, strict=True)
    )
    out, before = array(decode(outcome)), array(source)
    left, top, width, height = FACE
    face = (slice(top + 10, top + height - 10), slice(left + 10, left + width - 10))
    if method == "gaussian":
        assert laplacian_variance(out[face]) < laplacian_variance(before[face]) / 5
    else:  # a mosaic: few distinct colours, each block flat
        distinct = len(np.unique(out[face].reshape(-1, 3), axis=0))
        assert distinct < len(np.unique(before[face].reshape(-1, 3), axis=0)) / 20
    assert out[face].std() < before[face].std()
    region = vision.padded((box["left"], box["top"], box["width"], box["height"]), 0.15, (512, 512))
    keep = outside([region], (512, 512))
    assert np.array_equal(out[keep], before[keep])


def test_blur_faces_without_faces_changes_nothing(run_tool: Any) -> None:
    source = images.photo(200, 150).convert("RGB")
    outcome = run_tool("blur-faces", encode(source), "p.png")
    assert outcome.meta == {"faces": 0, "boxes": []}
    assert decode(outcome).convert("RGB").tobytes() == source.tobytes()


def test_blur_faces_bounds_and_bad_input(pixmill_client: FlaskClient) -> None:
    assert_400(pixmill_client, "blur-faces", "blurRadius", blurRadius=0)
    assert_400(pixmill_client, "blur-faces", "sensitivity", sensitivity=1.5)
    assert_400(pixmill_client, "blur-faces", "method", method="smudge")
    assert_bad_input(pixmill_client, "blur-faces")


# --- red-eye-removal --------------------------------------------------------------------------


def test_red_eye_mask_and_fix() -> None:
    pixels = np.zeros((10, 10, 3), dtype=np.uint8)
    pixels[:] = (120, 90, 80)  # skin: red leads, but not by 1.5x
    pixels[2:5, 2:5] = (200, 40, 50)  # red eye
    pixels[7, 7] = (50, 10, 10)  # red-ish but too dark to be a lit pupil
    mask = vision.red_eye_mask(pixels, 1.5)
    assert mask.sum() == 9 and mask[2:5, 2:5].all()
    assert vision.red_eye_mask(pixels, 1.2).sum() == 100 - 1  # skin too, but not the dark pixel
    fixed = vision.fix_red(pixels, mask, 1.0)
    assert tuple(fixed[3, 3]) == (45, 40, 50)  # red -> mean(green, blue)
    assert np.array_equal(fixed[~mask], pixels[~mask])
    half = vision.fix_red(pixels, mask, 0.5)
    assert tuple(half[3, 3]) == (123, 40, 50)  # 122.5 rounded


def red_eyed_astronaut() -> tuple[Image.Image, list[tuple[int, int]]]:
    img = astronaut()
    draw = ImageDraw.Draw(img)
    centres = [(202, 101), (245, 103)]
    for x, y in centres:
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=(220, 30, 30))
    return img, centres


def test_red_eye_removal_desaturates_red_pupils_only(run_tool: Any) -> None:
    source, centres = red_eyed_astronaut()
    outcome = run_tool("red-eye-removal", encode(source), "a.png")
    assert outcome.meta["eyesFound"] == 2 and outcome.meta["eyesFixed"] == 2
    out, before = array(decode(outcome)), array(source)
    for x, y in centres:
        red, green, blue = out[y, x]
        assert red <= max(green, blue) + 2, out[y, x]
    boxes = [
        (b["left"], b["top"], b["left"] + b["width"], b["top"] + b["height"])
        for b in outcome.meta["boxes"]
    ]
    for x, y in centres:
        assert any(left <= x < right and top <= y < bottom for left, top, right, bottom in boxes)
    keep = outside(boxes, (512, 512))
    assert np.array_equal(out[keep], before[keep])
    assert not vision.red_eye_mask(out[101:102, 198:207].astype(np.uint8), 1.5).any()


def test_red_eye_removal_keeps_alpha(run_tool: Any) -> None:
    source, _centres = red_eyed_astronaut()
    rgba = source.convert("RGBA")
    alpha = Image.linear_gradient("L").resize(rgba.size)
    rgba.putalpha(alpha)
    out = decode(run_tool("red-eye-removal", encode(rgba), "a.png"))
    assert out.mode == "RGBA" and out.getchannel("A").tobytes() == alpha.tobytes()


def test_red_eye_bounds_and_bad_input(pixmill_client: FlaskClient) -> None:
    assert_400(pixmill_client, "red-eye-removal", "threshold", threshold=0.5)
    assert_400(pixmill_client, "red-eye-removal", "strength", strength=2)
    assert_bad_input(pixmill_client, "red-eye-removal")


# --- noise-removal ----------------------------------------------------------------------------


def clean_and_noisy(alpha: bool = False) -> tuple[np.ndarray, Image.Image]:
    clean_img = Image.new("RGB", (160, 120), (90, 120, 160))
    draw = ImageDraw.Draw(clean_img)
    draw.rectangle((20, 20, 80, 90), fill=(220, 200, 60))
    draw.ellipse((90, 30, 150, 100), fill=(40, 160, 80))
    clean = np.asarray(clean_img).astype(np.float64)
    noise = np.random.default_rng(3).normal(0, 20, clean.shape)
    noisy = Image.fromarray(np.clip(clean + noise, 0, 255).astype(np.uint8), "RGB")
    if alpha:
        noisy.putalpha(Image.linear_gradient("L").resize(noisy.size))
    return clean, noisy


@pytest.mark.parametrize("tier", vision.NOISE_TIERS)
def test_noise_removal_raises_psnr(run_tool: Any, tier: str) -> None:
    clean, noisy = clean_and_noisy()
    out = array(decode(run_tool("noise-removal", encode(noisy), "n.png", tier=tier)))
    before, after = psnr(array(noisy), clean), psnr(out, clean)
    assert after > before + 3, (tier, before, after)


def test_noise_removal_keeps_alpha_and_detail_option(run_tool: Any) -> None:
    _clean, noisy = clean_and_noisy(alpha=True)
    outcome = run_tool("noise-removal", encode(noisy), "n.png", tier="quality")
    out = decode(outcome)
    assert out.mode == "RGBA" and out.getchannel("A").tobytes() == noisy.getchannel("A").tobytes()
    kept = run_tool("noise-removal", encode(noisy), "n.png", tier="quality", detailPreservation=100)
    # Half the residual comes back: closer to the noisy input than the plain result.
    noisy_rgb = array(noisy)
    assert psnr(array(decode(kept)), noisy_rgb) > psnr(array(out), noisy_rgb)
    jpeg = run_tool("noise-removal", encode(noisy.convert("RGB")), "n.png", format="jpeg")
    assert jpeg.format.name == "jpg"


def test_noise_removal_bounds_and_bad_input(pixmill_client: FlaskClient) -> None:
    assert_400(pixmill_client, "noise-removal", "strength", strength=0)
    assert_400(pixmill_client, "noise-removal", "tier", tier="extreme")
    assert_400(pixmill_client, "noise-removal", "colorNoise", colorNoise=101)
    assert_bad_input(pixmill_client, "noise-removal")


# --- image-enhancement ------------------------------------------------------------------------


def low_contrast() -> Image.Image:
    photo = np.asarray(images.photo(160, 120).convert("RGB")).astype(np.float64)
    return Image.fromarray((100 + photo * 50 / 255).astype(np.uint8), "RGB")


def test_auto_enhancement_stretches_a_flat_image(run_tool: Any) -> None:
    source = low_contrast()
    outcome = run_tool("image-enhancement", encode(source), "f.png")
    assert "contrast" in outcome.meta["applied"]
    out, before = array(decode(outcome)), array(source)
    assert out.std() > before.std() * 2.5
    for channel in range(3):
        low, high = np.percentile(out[..., channel], (0.5, 99.5))
        assert low <= 5 and high >= 250


def test_analyze_measures_and_recommends(pixmill_client: FlaskClient, run_tool: Any) -> None:
    dark = Image.fromarray((array(images.photo(160, 120)) * 0.25).astype(np.uint8), "RGB")
    response = pixmill_client.post(
        f"{TOOLS_URL}/image-enhancement/analyze",
        data={"file": (io.BytesIO(encode(dark)), "d.png")},
    )
    body = response.get_json()
    assert response.status_code == 200, body
    facts = body["measurements"]
    assert facts["meanBrightness"] < 0.3 and 0 <= facts["clippedHighlights"] <= 100
    advice = {item["adjustment"]: item for item in body["recommendations"]}
    assert "exposure" in advice and advice["exposure"]["amount"] < 1
    brighter = array(decode(run_tool("image-enhancement", encode(dark), "d.png")))
    assert brighter.mean() > array(dark).mean() * 1.5
    well_exposed = run_tool("image-enhancement-analyze", encode(astronaut()), "a.png").json
    assert well_exposed["recommendations"] == []


def test_single_modes_and_zero_strength(run_tool: Any) -> None:
    source = images.photo(120, 90).convert("RGB")

    def saturation(img: Image.Image) -> float:
        values = array(img)
        return float((values.max(axis=2) - values.min(axis=2)).mean())

    vivid = decode(run_tool("image-enhancement", encode(source), "p.png", mode="color"))
    assert saturation(vivid) > saturation(source) * 1.3
    sharp = decode(run_tool("image-enhancement", encode(source), "p.png", mode="sharpness"))
    assert laplacian_variance(array(sharp)) > laplacian_variance(array(source))
    same = run_tool("image-enhancement", encode(source), "p.png", mode="contrast", strength=0)
    assert decode(same).convert("RGB").tobytes() == source.tobytes()


def test_enhancement_bounds_and_bad_input(pixmill_client: FlaskClient) -> None:
    assert_400(pixmill_client, "image-enhancement", "strength", strength=101)
    assert_400(pixmill_client, "image-enhancement", "mode", mode="magic")
    assert_bad_input(pixmill_client, "image-enhancement")


# --- smart-crop -------------------------------------------------------------------------------


def object_on_the_right() -> Image.Image:
    """A flat grey 400x200 canvas with a colourful, detailed 80x80 object at x 280-360."""
    img = Image.new("RGB", (400, 200), (128, 128, 128))
    draw = ImageDraw.Draw(img)
    for i in range(8):
        for j in range(8):
            colour = (230, 40, 40) if (i + j) % 2 else (30, 60, 220)
            draw.rectangle((280 + i * 10, 60 + j * 10, 289 + i * 10, 69 + j * 10), fill=colour)
    return img


@pytest.mark.parametrize("strategy", ["attention", "entropy"])
def test_smart_crop_finds_the_object(run_tool: Any, strategy: str) -> None:
    outcome = run_tool(
        "smart-crop",
        encode(object_on_the_right()),
        "o.png",
        width=100,
        height=100,
        strategy=strategy,
    )
    out = decode(outcome)
    assert out.size == (100, 100)
    crop = outcome.meta["crop"]
    assert crop["width"] == crop["height"] == 200  # the largest square, scaled to 100
    assert crop["left"] <= 280 and crop["left"] + 200 >= 360


def test_smart_crop_measures_large_images_on_a_thumbnail(run_tool: Any) -> None:
    big = object_on_the_right().resize((1200, 600), Image.Resampling.NEAREST)
    outcome = run_tool("smart-crop", encode(big), "o.png", width=150, height=150)
    crop = outcome.meta["crop"]
    assert decode(outcome).size == (150, 150) and crop["width"] == crop["height"] == 600
    assert crop["left"] <= 840 and crop["left"] + 600 >= 1080


def test_smart_crop_center_aspect_and_padding(run_tool: Any) -> None:
    source = object_on_the_right()
    centre = run_tool("smart-crop", encode(source), "o.png", aspect="1:1", strategy="center")
    assert decode(centre).size == (200, 200)
    assert centre.meta["crop"] == {"left": 100, "top": 0, "width": 200, "height": 200}
    squared = run_tool(
        "smart-crop", encode(source), "o.png", aspect="4:1", width=200, padToSquare=True
    )
    out = decode(squared)
    assert out.size == (200, 200) and out.getpixel((5, 5)) == (255, 255, 255)


def test_smart_crop_trim_removes_uniform_borders(run_tool: Any) -> None:
    inner = images.photo(120, 80).convert("RGB")
    framed = Image.new("RGB", (200, 160), (255, 255, 255))
    framed.paste(inner, (30, 50))
    outcome = run_tool("smart-crop", encode(framed), "t.png", mode="trim")
    assert decode(outcome).convert("RGB").tobytes() == inner.tobytes()
    assert outcome.meta["crop"] == {"left": 30, "top": 50, "width": 120, "height": 80}


def test_smart_crop_face_mode_frames_the_face(run_tool: Any) -> None:
    outcome = run_tool(
        "smart-crop",
        encode(astronaut()),
        "a.png",
        mode="face",
        aspect="1:1",
        facePreset="closeup",
    )
    assert outcome.meta["faces"] == 1 and outcome.meta["strategy"] == "face"
    crop = outcome.meta["crop"]
    left, top, width, height = FACE
    assert crop["left"] <= left and crop["top"] <= top
    assert crop["left"] + crop["width"] >= left + width
    assert crop["top"] + crop["height"] >= top + height
    assert crop["width"] == crop["height"] < 200  # close around the face, not the whole photo
    no_face = run_tool(
        "smart-crop", encode(object_on_the_right()), "o.png", mode="face", aspect="1:1"
    )
    assert no_face.meta["faces"] == 0 and no_face.meta["strategy"] == "attention"


def test_smart_crop_bounds_and_bad_input(pixmill_client: FlaskClient, run_tool: Any) -> None:
    assert_400(pixmill_client, "smart-crop", "width", width=0, height=10)
    assert_400(pixmill_client, "smart-crop", "aspect", aspect="wide")
    assert_400(pixmill_client, "smart-crop", "threshold", threshold=300)
    assert_bad_input(pixmill_client, "smart-crop")
    with pytest.raises(BadRequestError) as exc:
        run_tool("smart-crop", encode(images.photo(64, 48)), "p.png", width=20)
    assert exc.value.code == "MISSING_DIMENSION"


# --- content-aware-resize ---------------------------------------------------------------------


def checker(size: int = 30) -> Image.Image:
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    for i in range(0, size, 5):
        for j in range(0, size, 5):
            draw.rectangle(
                (i, j, i + 4, j + 4), fill=(250, 200, 0) if (i + j) % 10 else (20, 20, 120)
            )
    return img


def carving_scene() -> Image.Image:
    img = Image.new("RGB", (160, 100), (90, 140, 200))
    img.paste(checker(), (60, 35))
    return img


def contains(haystack: Image.Image, needle: Image.Image) -> bool:
    big, small = np.asarray(haystack.convert("RGB")), np.asarray(needle)
    height, width = small.shape[:2]
    for y in range(big.shape[0] - height + 1):
        for x in range(big.shape[1] - width + 1):
            if np.array_equal(big[y : y + height, x : x + width], small):
                return True
    return False


def test_seam_carving_keeps_the_salient_object(run_tool: Any) -> None:
    outcome = run_tool(
        "content-aware-resize", encode(carving_scene()), "s.png", width=100, height=70
    )
    out = decode(outcome)
    assert out.size == (100, 70)
    assert outcome.meta["seamsRemoved"] == {"vertical": 60, "horizontal": 30}
    assert contains(out, checker())
    square = decode(run_tool("content-aware-resize", encode(carving_scene()), "s.png", square=True))
    assert square.size == (100, 100) and contains(square, checker())


def test_find_seam_follows_the_cheapest_path() -> None:
    energy = np.full((5, 6), 9.0)
    path = [1, 2, 3, 3, 2]
    for row, col in enumerate(path):
        energy[row, col] = 0
    assert vision.find_seam(energy).tolist() == path


def cv_context(**options: Any) -> Context:
    limits = ImageLimits(max_pixels=50_000_000, max_frames=100)
    return Context(plugin_id="content-aware-resize", limits=limits, **options)


def carve_directly(ctx: Context, **settings: Any) -> Any:
    loaded = vision.ContentAwareResizeSettings().load(settings)
    data = encode(carving_scene())
    inputs = Inputs({"file": InputFile(data, "s.png", ctx.limits)})
    return vision.run_content_aware_resize(ctx, inputs, loaded)


def test_seam_carving_reports_progress_and_honours_cancel() -> None:
    seen: list[float] = []
    result = carve_directly(cv_context(on_progress=lambda f, _m: seen.append(f)), width=140)
    assert result.image.size == (140, 100)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 3
    with pytest.raises(CancelledError):
        carve_directly(cv_context(is_cancelled=lambda: True), width=140)


def test_seam_carving_bounds(pixmill_client: FlaskClient, run_tool: Any) -> None:
    with pytest.raises(BadRequestError) as exc:
        run_tool("content-aware-resize", encode(carving_scene()), "s.png", width=200)
    assert exc.value.code == "TARGET_LARGER_THAN_IMAGE"
    big = encode(Image.new("RGB", (1500, 1400), (10, 20, 30)))
    with pytest.raises(BadRequestError) as exc:
        run_tool("content-aware-resize", big, "b.png", width=100)
    assert exc.value.code == "IMAGE_TOO_LARGE_FOR_TOOL" and exc.value.status == 400
    with pytest.raises(SettingsError):
        run_tool("content-aware-resize", encode(carving_scene()), "s.png")  # no target
    assert_400(pixmill_client, "content-aware-resize", "width", width=0)
    assert_400(pixmill_client, "content-aware-resize", "blurRadius", width=10, blurRadius=25)
    assert_400(pixmill_client, "content-aware-resize", "square", width=10, square=True)
    with pytest.raises((UnsupportedFormatError, InvalidImageError)):
        run_tool("content-aware-resize", b"not an image", "x.png", width=10)


def test_seam_carving_can_protect_faces(run_tool: Any) -> None:
    source = astronaut()
    outcome = run_tool(
        "content-aware-resize", encode(source), "a.png", width=440, protectFaces=True
    )
    out = np.asarray(decode(outcome).convert("RGB"))
    assert out.shape == (512, 440, 3)
    left, top, width, height = FACE
    face = np.asarray(source)[top : top + height, left : left + width]
    # Vertical seams keep rows in place: the whole face is still there, shifted left.
    assert any(
        np.array_equal(out[top : top + height, x : x + width], face) for x in range(left + 1)
    )


# --- without OpenCV ---------------------------------------------------------------------------


def test_tools_needing_cv2_are_unavailable_without_it(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import io, json, sys
        sys.modules["cv2"] = None  # as if opencv were not installed
        from pathlib import Path
        import pixmill.plugins.vision as vision
        from pixmill.testing.harness import Harness, registry_for
        from pixmill.testing.images import encode, photo

        client = Harness(registry_for([vision]), Path({str(tmp_path)!r})).client()
        tools = {{t["id"]: t for t in client.get("/api/v1/tools").get_json()["tools"]}}
        data = encode(photo(64, 48))

        def call(tool, **settings):
            response = client.post(
                "/api/v1/tools/image/" + tool,
                data={{"file": (io.BytesIO(data), "p.png"), "settings": json.dumps(settings)}},
            )
            return response.status_code, (response.get_json(silent=True) or {{}}).get("code")

        print(json.dumps({{
            "blur": {{k: tools["blur-faces"].get(k) for k in ("available", "install")}},
            "smart": tools["smart-crop"]["available"],
            "enhance": tools["image-enhancement"]["available"],
            "post_blur": call("blur-faces"),
            "post_noise": call("noise-removal"),
            "post_face_crop": call("smart-crop", mode="face", aspect="1:1"),
            "post_attention_crop": call("smart-crop", aspect="1:1"),
            "post_enhance": call("image-enhancement"),
        }}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["blur"] == {"available": False, "install": "pip install 'pixmill[cv]'"}
    assert result["smart"] is True and result["enhance"] is True
    assert result["post_blur"] == [503, "TOOL_UNAVAILABLE"]
    assert result["post_noise"] == [503, "TOOL_UNAVAILABLE"]
    assert result["post_face_crop"] == [503, "TOOL_UNAVAILABLE"]
    assert result["post_attention_crop"][0] == 200
    assert result["post_enhance"][0] == 200
