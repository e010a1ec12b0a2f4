"""The animation plugin (gif-webp, gif-tools) on real animated GIFs and WebPs."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from flask.testing import FlaskClient
from PIL import Image, ImageChops, ImageSequence

from pixmill.core.errors import InvalidImageError, PixmillError, SettingsError
from pixmill.testing import check_plugin, images
from pixmill.testing.images import encode

# Far apart so that lossy WebP and GIF quantization cannot make two frames look alike.
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 220, 40)]
DURATIONS = [100, 200, 60, 140]
WIDTH, HEIGHT = 80, 60


def gif(
    colours: list[tuple[int, int, int]] = COLOURS,
    durations: list[int] = DURATIONS,
    loop: int | None = 0,
    transparent_corner: bool = False,
) -> bytes:
    frames = []
    for colour in colours:
        frame = Image.new("RGBA", (WIDTH, HEIGHT), (*colour, 255))
        if transparent_corner:
            frame.paste((0, 0, 0, 0), (0, 0, WIDTH // 2, HEIGHT // 2))
        frames.append(frame)
    params: dict[str, Any] = {"duration": durations, "disposal": 2}
    if loop is not None:
        params["loop"] = loop
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], **params)


def frames_of(data: bytes) -> tuple[Image.Image, list[Image.Image], list[int]]:
    """The decoded file, its frames as RGBA and their durations."""
    img = Image.open(io.BytesIO(data))
    frames, durations = [], []
    for frame in ImageSequence.Iterator(img):
        frames.append(frame.convert("RGBA"))
        durations.append(int(frame.info.get("duration", 0)))
    img.seek(0)
    return img, frames, durations


def frame_count(img: Image.Image) -> int:
    return int(getattr(img, "n_frames", 1))


def centre_colour(frame: Image.Image) -> tuple[int, ...]:
    return tuple(frame.getpixel((frame.width * 3 // 4, frame.height * 3 // 4)))  # type: ignore[arg-type]


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=False))


def run(run_tool: Any, tool: str, data: bytes, filename: str, **settings: Any) -> bytes:
    outcome = run_tool(tool, data, filename, **settings)
    assert isinstance(outcome.data, bytes)
    return outcome.data


# --- gif-webp ---------------------------------------------------------------------------------


def test_gif_becomes_animated_webp_with_frames_durations_and_colours(run_tool: Any) -> None:
    out = run(run_tool, "gif-webp", gif(), "in.gif")
    img, frames, durations = frames_of(out)
    assert img.format == "WEBP" and frame_count(img) == len(COLOURS)
    assert durations == DURATIONS
    assert img.size == (WIDTH, HEIGHT)
    for frame, colour in zip(frames, COLOURS, strict=True):
        assert close(centre_colour(frame), (*colour, 255))
    assert img.info["loop"] == 0  # infinite stays infinite


def test_round_trip_gif_webp_gif_keeps_frames_and_timing(run_tool: Any) -> None:
    webp = run(run_tool, "gif-webp", gif(), "in.gif")
    back = run(run_tool, "gif-webp", webp, "in.webp")
    img, frames, durations = frames_of(back)
    assert img.format == "GIF" and frame_count(img) == len(COLOURS)
    # GIF stores delays in 1/100 s.
    assert all(abs(a - b) <= 10 for a, b in zip(durations, DURATIONS, strict=True))
    for frame, colour in zip(frames, COLOURS, strict=True):
        assert close(centre_colour(frame), (*colour, 255), tolerance=20)
    assert img.info.get("loop") == 0


@pytest.mark.parametrize(
    ("gif_loop", "webp_loop"),
    [(None, 1), (0, 0), (2, 3)],
)
def test_loop_count_maps_between_gif_repeats_and_webp_plays(
    run_tool: Any, gif_loop: int | None, webp_loop: int
) -> None:
    webp = run(run_tool, "gif-webp", gif(loop=gif_loop), "in.gif")
    assert Image.open(io.BytesIO(webp)).info["loop"] == webp_loop
    back = Image.open(io.BytesIO(run(run_tool, "gif-webp", webp, "in.webp")))
    assert back.info.get("loop") == gif_loop


def test_transparency_survives_both_directions(run_tool: Any) -> None:
    source = gif(transparent_corner=True)
    webp = run(run_tool, "gif-webp", source, "in.gif")
    back = run(run_tool, "gif-webp", webp, "in.webp")
    for data in (webp, back):
        _, frames, _ = frames_of(data)
        assert len(frames) == len(COLOURS)
        for frame, colour in zip(frames, COLOURS, strict=True):
            assert frame.getpixel((2, 2))[3] == 0  # type: ignore[index]
            assert close(centre_colour(frame), (*colour, 255), tolerance=20)


def test_resize_percent_and_width_keep_the_aspect_ratio(run_tool: Any) -> None:
    half = Image.open(io.BytesIO(run(run_tool, "gif-webp", gif(), "a.gif", resizePercent=50)))
    assert half.size == (WIDTH // 2, HEIGHT // 2) and frame_count(half) == len(COLOURS)
    by_width = Image.open(io.BytesIO(run(run_tool, "gif-webp", gif(), "a.gif", width=40)))
    assert by_width.size == (40, 30)


def test_lossless_webp_keeps_exact_colours_and_quality_changes_size(run_tool: Any) -> None:
    noisy = [images.photo(WIDTH, HEIGHT, seed=seed) for seed in range(3)]
    source = encode(noisy[0], "GIF", save_all=True, append_images=noisy[1:], duration=100)
    _, original, _ = frames_of(source)
    lossless = run(run_tool, "gif-webp", source, "n.gif", lossless=True)
    _, frames, _ = frames_of(lossless)
    for before, after in zip(original, frames, strict=True):
        assert ImageChops.difference(before, after).getbbox() is None
    small = run(run_tool, "gif-webp", source, "n.gif", quality=5)
    large = run(run_tool, "gif-webp", source, "n.gif", quality=95)
    assert len(small) < len(large)


def test_explicit_format_and_still_input(run_tool: Any) -> None:
    gif_again = run(run_tool, "gif-webp", gif(), "in.gif", format="gif")
    assert frame_count(Image.open(io.BytesIO(gif_again))) == len(COLOURS)
    still = encode(Image.new("RGB", (30, 20), (10, 120, 200)), "PNG")
    img = Image.open(io.BytesIO(run(run_tool, "gif-webp", still, "s.png")))
    assert img.format == "WEBP" and img.size == (30, 20)
    assert close(tuple(img.convert("RGB").getpixel((15, 10))), (10, 120, 200))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "settings",
    [
        {"quality": 0},
        {"quality": 101},
        {"resizePercent": 9},
        {"resizePercent": 101},
        {"width": 0},
        {"format": "png"},
        {"width": 40, "resizePercent": 50},
        {"quality": 50.5},
    ],
)
def test_gif_webp_refuses_out_of_bounds_settings(run_tool: Any, settings: dict[str, Any]) -> None:
    with pytest.raises(SettingsError) as caught:
        run_tool("gif-webp", gif(), "in.gif", **settings)
    assert caught.value.status == 400 and caught.value.code == "VALIDATION_ERROR"


def test_truncated_gif_is_a_clean_422(run_tool: Any) -> None:
    data = gif()
    with pytest.raises(InvalidImageError) as caught:
        run_tool("gif-webp", data[: len(data) // 2], "cut.gif")
    assert caught.value.status == 422


# --- gif-tools --------------------------------------------------------------------------------


def tools(run_tool: Any, data: bytes, **settings: Any) -> tuple[Image.Image, list, list[int]]:
    out = run(run_tool, "gif-tools", data, "in.gif", **settings)
    img, frames, durations = frames_of(out)
    assert img.format == "GIF"
    return img, frames, durations


def test_reverse_plays_the_frames_backwards(run_tool: Any) -> None:
    img, frames, durations = tools(run_tool, gif(), action="reverse")
    assert frame_count(img) == len(COLOURS)
    for frame, colour in zip(frames, reversed(COLOURS), strict=True):
        assert close(centre_colour(frame), (*colour, 255))
    assert durations == list(reversed(DURATIONS))


def test_speed_divides_durations_and_never_goes_below_20ms(run_tool: Any) -> None:
    _, _, faster = tools(run_tool, gif(), action="speed", factor=2.0)
    assert faster == [max(20, round(d / 2 / 10) * 10) for d in DURATIONS]
    _, _, fastest = tools(run_tool, gif(durations=[30, 40, 30, 40]), action="speed", factor=4.0)
    assert min(fastest) >= 20
    _, _, slower = tools(run_tool, gif(), action="speed", factor=0.5)
    assert slower == [d * 2 for d in DURATIONS]


def test_resize_scales_every_frame_keeping_aspect(run_tool: Any) -> None:
    img, frames, durations = tools(run_tool, gif(), action="resize", width=40)
    assert img.size == (40, 30) and len(frames) == len(COLOURS)
    assert durations == DURATIONS
    for frame, colour in zip(frames, COLOURS, strict=True):
        assert close(centre_colour(frame), (*colour, 255))


@pytest.mark.parametrize(
    ("transform", "size", "corner"),
    [
        ("90", (HEIGHT, WIDTH), (HEIGHT - 2, 2)),
        ("180", (WIDTH, HEIGHT), (WIDTH - 2, HEIGHT - 2)),
        ("270", (HEIGHT, WIDTH), (2, WIDTH - 2)),
        ("hflip", (WIDTH, HEIGHT), (WIDTH - 2, 2)),
        ("vflip", (WIDTH, HEIGHT), (2, HEIGHT - 2)),
    ],
)
def test_rotate_moves_the_marked_corner(
    run_tool: Any, transform: str, size: tuple[int, int], corner: tuple[int, int]
) -> None:
    img, frames, _ = tools(
        run_tool, gif(transparent_corner=True), action="rotate", transform=transform
    )
    assert img.size == size and len(frames) == len(COLOURS)
    for frame in frames:
        assert frame.getpixel(corner)[3] == 0
        # The opposite corner stays opaque.
        assert frame.getpixel((size[0] - 1 - corner[0], size[1] - 1 - corner[1]))[3] == 255


def test_optimize_merges_identical_frames_and_limits_colours(run_tool: Any) -> None:
    photo = images.photo(WIDTH, HEIGHT)
    assert len(photo.getcolors(WIDTH * HEIGHT) or []) > 8  # so the limit has work to do
    frames_in = [photo, photo.copy(), photo.rotate(180)]
    source = encode(
        frames_in[0], "GIF", save_all=True, append_images=frames_in[1:], duration=[50, 70, 90]
    )
    img, frames, durations = tools(run_tool, source, action="optimize", colors=8)
    assert frame_count(img) == 2 and durations == [120, 90]
    for frame in frames:
        assert len(frame.getcolors(256) or []) <= 8


def test_add_text_changes_only_the_caption_band(run_tool: Any) -> None:
    img, frames, durations = tools(
        run_tool, gif(), action="add-text", text="HELLO", fontSize=16, position="bottom"
    )
    assert frame_count(img) == len(COLOURS) and durations == DURATIONS
    for frame, colour in zip(frames, COLOURS, strict=True):
        plain = Image.new("RGBA", frame.size, (*colour, 255))
        box = ImageChops.difference(plain.convert("RGB"), frame.convert("RGB")).getbbox()
        assert box is not None and box[1] >= HEIGHT // 2  # ink in the lower half only
        assert close(tuple(frame.getpixel((WIDTH // 2, 3))), (*colour, 255))


def test_slowing_down_never_exceeds_the_longest_gif_delay(run_tool: Any) -> None:
    longest_gif_delay_ms = 65_535 * 10  # 16 bits of 1/100 s
    source = gif(colours=COLOURS[:2], durations=[600_000, 100])
    _, _, durations = tools(run_tool, source, action="speed", factor=0.25)
    assert durations == [longest_gif_delay_ms, 400]


def test_optimize_keeps_transparent_pixels_transparent(run_tool: Any) -> None:
    _, frames, _ = tools(run_tool, gif(transparent_corner=True), action="optimize", colors=4)
    assert len(frames) == len(COLOURS)
    for frame, colour in zip(frames, COLOURS, strict=True):
        assert frame.getchannel("A").getpixel((2, 2)) == 0
        assert close(centre_colour(frame), (*colour, 255), tolerance=20)


def test_animated_webp_input_comes_out_as_a_gif_with_its_loop_count(run_tool: Any) -> None:
    webp = run(run_tool, "gif-webp", gif(loop=2), "in.gif")  # WebP: 3 plays
    img, frames, durations = tools(run_tool, webp, action="reverse")
    assert img.info.get("loop") == 2 and len(frames) == len(COLOURS)
    assert durations == list(reversed(DURATIONS))


@pytest.mark.parametrize("action", ["reverse", "speed"])
def test_still_png_is_refused_where_an_animation_is_needed(run_tool: Any, action: str) -> None:
    still = encode(Image.new("RGB", (20, 20), (1, 2, 3)), "PNG")
    with pytest.raises(PixmillError) as caught:
        run_tool("gif-tools", still, "still.png", action=action)
    assert caught.value.status == 422 and caught.value.code == "NOT_ANIMATED"


def test_still_png_is_handled_by_frame_wise_actions(run_tool: Any) -> None:
    still = encode(Image.new("RGB", (20, 10), (200, 10, 10)), "PNG")
    img, frames, _ = tools(run_tool, still, action="rotate", transform="90")
    assert img.size == (10, 20) and len(frames) == 1


@pytest.mark.parametrize(
    "settings",
    [
        {"action": "explode"},
        {"action": "resize"},
        {"action": "add-text", "text": "   "},
        {"action": "speed", "factor": 0.1},
        {"action": "speed", "factor": 5},
        {"action": "optimize", "colors": 1},
        {"action": "optimize", "colors": 257},
        {"action": "rotate", "transform": "45"},
        {"action": "resize", "width": 16385},
    ],
)
def test_gif_tools_refuses_bad_settings(run_tool: Any, settings: dict[str, Any]) -> None:
    with pytest.raises(SettingsError) as caught:
        run_tool("gif-tools", gif(), "in.gif", **settings)
    assert caught.value.status == 400 and caught.value.code == "VALIDATION_ERROR"


def test_gif_tools_truncated_gif_is_a_clean_422(run_tool: Any) -> None:
    data = gif()
    with pytest.raises(InvalidImageError):
        run_tool("gif-tools", data[: len(data) - 40], "cut.gif", action="reverse")


@pytest.mark.parametrize("loop", [None, 3, 0])
@pytest.mark.parametrize(
    "settings",
    [
        {"action": "reverse"},
        {"action": "optimize"},
        {"action": "rotate"},
        {"action": "speed"},
        {"action": "resize", "width": 40},
        {"action": "add-text", "text": "hi"},
    ],
)
def test_gif_tools_keep_the_input_loop_count(
    run_tool: Any, loop: int | None, settings: dict[str, Any]
) -> None:
    img, frames, _ = tools(run_tool, gif(loop=loop), **settings)
    assert len(frames) == len(COLOURS)
    # A GIF that plays once has no loop block and must not come back looping forever.
    assert img.info.get("loop") == loop


# --- gif-tools/extract-frames and gif-tools/info ----------------------------------------------


def test_extract_frames_gives_pngs_and_a_manifest(run_tool: Any) -> None:
    outcome = run_tool("gif-tools-extract-frames", gif(transparent_corner=True), "anim.gif")
    assert outcome.format.name == "zip" and outcome.filename == "anim.zip"
    archive = zipfile.ZipFile(io.BytesIO(outcome.data))
    names = [f"anim-frame-{n:03}.png" for n in range(1, len(COLOURS) + 1)]
    assert archive.namelist() == [*names, "frames.json"]
    for name, colour in zip(names, COLOURS, strict=True):
        frame = Image.open(io.BytesIO(archive.read(name)))
        assert frame.format == "PNG" and frame.size == (WIDTH, HEIGHT)
        assert close(centre_colour(frame.convert("RGBA")), (*colour, 255))
        assert frame.convert("RGBA").getpixel((2, 2))[3] == 0  # type: ignore[index]
    manifest = json.loads(archive.read("frames.json"))
    assert [f["duration"] for f in manifest["frames"]] == DURATIONS
    assert [f["file"] for f in manifest["frames"]] == names
    assert manifest["frameCount"] == len(COLOURS) and manifest["loop"] == 0


def test_extract_frames_every_start_and_end(run_tool: Any) -> None:
    colours = COLOURS * 2
    source = gif(colours=colours, durations=[100, 200, 300, 400, 500, 600, 700, 800])
    outcome = run_tool("gif-tools-extract-frames", source, "a.gif", every=2, start=2, end=7)
    archive = zipfile.ZipFile(io.BytesIO(outcome.data))
    manifest = json.loads(archive.read("frames.json"))
    assert [f["frame"] for f in manifest["frames"]] == [2, 4, 6]
    assert [f["duration"] for f in manifest["frames"]] == [200, 400, 600]
    assert archive.namelist()[:3] == ["a-frame-002.png", "a-frame-004.png", "a-frame-006.png"]
    with pytest.raises(PixmillError) as caught:
        run_tool("gif-tools-extract-frames", source, "a.gif", start=9)
    assert caught.value.status == 400 and caught.value.code == "FRAME_OUT_OF_RANGE"


def test_gif_info_values(run_tool: Any) -> None:
    info = run_tool("gif-tools-info", gif(loop=2, transparent_corner=True), "a.gif").json
    assert info["frameCount"] == len(COLOURS)
    assert (info["width"], info["height"]) == (WIDTH, HEIGHT)
    assert info["durations"] == DURATIONS and info["totalDuration"] == sum(DURATIONS)
    assert info["loop"] == 2 and info["loopsForever"] is False
    assert info["transparency"] is True and info["format"] == "gif"
    once = run_tool("gif-tools-info", gif(loop=None), "once.gif").json
    assert once["loop"] is None and once["transparency"] is False
    forever = run_tool("gif-tools-info", gif(loop=0), "f.gif").json
    assert forever["loopsForever"] is True
    still = run_tool("gif-tools-info", encode(Image.new("RGB", (5, 4)), "PNG"), "s.png").json
    assert still["frameCount"] == 1 and still["totalDuration"] == 0


@pytest.mark.pixmill_plugins("animation")
def test_gif_sub_routes_over_rest(pixmill_client: FlaskClient) -> None:
    def post(route: str, data: bytes, **settings: Any) -> Any:
        form = {"file": (io.BytesIO(data), "a.gif"), "settings": json.dumps(settings)}
        return pixmill_client.post(f"/api/v1/tools/image/{route}", data=form)

    info = post("gif-tools/info", gif())
    assert info.status_code == 200 and info.get_json()["frameCount"] == len(COLOURS)
    frames = post("gif-tools/extract-frames", gif(), every=2)
    assert frames.status_code == 200
    download = pixmill_client.get(frames.get_json()["downloadUrl"])
    assert len(zipfile.ZipFile(io.BytesIO(download.data)).namelist()) == 3  # 2 frames + json
    for bad in ({"every": 0}, {"start": 0}, {"start": 3, "end": 2}, {"every": 1001}):
        response = post("gif-tools/extract-frames", gif(), **bad)
        assert response.status_code == 400 and response.get_json()["code"] == "VALIDATION_ERROR"
    broken = post("gif-tools/info", gif()[:30])
    assert broken.status_code == 422


def test_the_plugin_conforms() -> None:
    check_plugin("animation").assert_ok()


@pytest.mark.parametrize("action", ["extract-frames", "info"])
def test_gif_tools_points_sub_route_actions_to_their_endpoints(
    pixmill_client: Any, action: str
) -> None:
    response = pixmill_client.post(
        "/api/v1/tools/image/gif-tools",
        data={
            "file": (io.BytesIO(images.animated_gif()), "a.gif"),
            "settings": json.dumps({"action": action}),
        },
    )
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "VALIDATION_ERROR"
    message = body["details"]["fields"]["action"][0]
    assert f"POST /api/v1/tools/image/gif-tools/{action}" in message
