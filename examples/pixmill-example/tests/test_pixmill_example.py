"""The example plugin's own tests: plain pytest, pixmill's public API and sample images.

Each definition is checked as pixmill would run it: settings loaded through the definition's
schema (defaults, bounds, camelCase wire names), then the plugin function called with a real
`Context` and real encoded images.
"""

from __future__ import annotations

import io
from typing import Any

import pixmill_example
import pytest
from marshmallow import ValidationError
from PIL import Image
from pixmill_example.posterize import level_table

from pixmill import PLUGIN_API_VERSION, Context, Extractor, InputFile, Inputs, Source, Tool
from pixmill.testing import images

SAMPLE_LIMITS_PIXELS = 50_000_000


class Limits:
    """What `Context` and `InputFile` read from pixmill's image limits."""

    max_pixels = SAMPLE_LIMITS_PIXELS
    max_frames = 100


def context(plugin_id: str, progress: list[float] | None = None) -> Context:
    def on_progress(fraction: float, message: str | None) -> None:
        if progress is not None:
            progress.append(fraction)

    return Context(plugin_id=plugin_id, limits=Limits(), on_progress=on_progress)  # type: ignore[arg-type]


def load(definition: Tool | Source | Extractor, raw: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = definition.settings().load(raw)
    return loaded


def run_posterize(data: bytes, **raw: Any) -> Image.Image:
    tool = pixmill_example.POSTERIZE
    inputs = Inputs({"file": InputFile(data, "in.png", Limits())})  # type: ignore[arg-type]
    result = tool.run(context(tool.id), inputs, load(tool, raw))
    image: Image.Image = result.image
    return image


def test_declares_the_plugin_api_it_targets() -> None:
    assert pixmill_example.PIXMILL_PLUGIN_API == PLUGIN_API_VERSION


def test_hooks_return_one_definition_of_each_kind() -> None:
    assert [t.id for t in pixmill_example.pixmill_tools()] == ["posterize"]
    assert [s.id for s in pixmill_example.pixmill_sources()] == ["checkerboard"]
    assert [e.id for e in pixmill_example.pixmill_extractors()] == ["brightness-stats"]


@pytest.mark.parametrize(
    "definition",
    [pixmill_example.POSTERIZE, pixmill_example.CHECKERBOARD, pixmill_example.BRIGHTNESS_STATS],
    ids=lambda d: d.id,
)
def test_examples_and_defaults_load(definition: Tool | Source | Extractor) -> None:
    assert load(definition, dict(definition.example))
    assert load(definition, {})


@pytest.mark.parametrize("levels", [2, 3, 4, 64])
def test_level_table_keeps_black_and_white_and_uses_levels_tones(levels: int) -> None:
    table = level_table(levels)
    assert table[0] == 0 and table[255] == 255
    assert len(set(table)) == levels
    assert table == sorted(table)


def test_posterize_leaves_only_the_requested_tones() -> None:
    out = run_posterize(images.jpeg(), levels=3)
    assert out.mode == "RGB"
    for band in out.split():
        assert {value for value, count in enumerate(band.histogram()) if count} <= {0, 128, 255}


def test_posterize_keeps_or_flattens_transparency() -> None:
    kept = run_posterize(images.png(alpha=True), levels=2)
    flattened = run_posterize(images.png(alpha=True), levels=2, keepAlpha=False)
    source = images.decode(images.png(alpha=True))
    assert kept.mode == "RGBA"
    assert kept.getchannel("A").tobytes() == source.getchannel("A").tobytes()
    assert flattened.mode == "RGB"


@pytest.mark.parametrize("bad", [{"levels": 1}, {"levels": 65}, {"levels": "many"}, {"x": 1}])
def test_posterize_refuses_bad_settings(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        load(pixmill_example.POSTERIZE, bad)


def fetch_one(**raw: Any) -> Image.Image:
    source = pixmill_example.CHECKERBOARD
    fetched = list(source.fetch(context(source.id), load(source, raw)))
    assert len(fetched) == 1
    assert fetched[0].filename.endswith(".png")
    return images.decode(fetched[0].data)


def test_checkerboard_alternates_colours_per_square() -> None:
    img = fetch_one(width=40, height=20, square=10, color="#ff0000", otherColor="#0000ff")
    assert img.size == (40, 20)
    red, blue = (255, 0, 0), (0, 0, 255)
    assert [img.getpixel((x, 5)) for x in (0, 10, 20, 30)] == [red, blue, red, blue]
    assert [img.getpixel((x, 15)) for x in (0, 10, 20, 30)] == [blue, red, blue, red]


def test_checkerboard_is_deterministic_and_keeps_alpha() -> None:
    settings = {"width": 64, "height": 48, "square": 8, "otherColor": "#00ff0080"}
    source = pixmill_example.CHECKERBOARD
    first = next(iter(source.fetch(context(source.id), load(source, settings)))).data
    second = next(iter(source.fetch(context(source.id), load(source, settings)))).data
    assert first == second
    assert Image.open(io.BytesIO(first)).mode == "RGBA"


@pytest.mark.parametrize(
    "bad",
    [{"width": 0}, {"square": 2000}, {"width": 8, "height": 8, "square": 9}, {"color": "red"}],
)
def test_checkerboard_refuses_bad_settings(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        load(pixmill_example.CHECKERBOARD, bad)


def brightness(data: bytes, **raw: Any) -> dict[str, Any]:
    extractor = pixmill_example.BRIGHTNESS_STATS
    image = InputFile(data, "in", Limits())  # type: ignore[arg-type]
    result = dict(extractor.extract(context(extractor.id), image, load(extractor, raw)))
    assert extractor.output_schema is not None
    extractor.output_schema().load(result)  # the answer matches the schema pixmill publishes
    return result


def test_brightness_of_a_half_black_half_white_image() -> None:
    img = Image.new("L", (100, 10), 0)
    img.paste(255, (50, 0, 100, 10))
    stats = brightness(images.encode(img))
    assert stats["minimum"] == 0 and stats["maximum"] == 255
    assert stats["darkShare"] == 0.5 and stats["brightShare"] == 0.5
    assert stats["mean"] == 127.5


def test_brightness_thresholds_move_the_shares() -> None:
    gray = images.encode(Image.new("RGB", (10, 10), (100, 100, 100)))
    assert brightness(gray)["darkShare"] == 0.0
    assert brightness(gray, darkBelow=101)["darkShare"] == 1.0
    assert brightness(gray, brightAbove=99)["brightShare"] == 1.0


@pytest.mark.parametrize(
    "data",
    [images.jpeg(), images.png(), images.animated_gif(), images.cmyk_jpeg(), images.tiny("PNG")],
    ids=["jpeg", "png-alpha", "animated-gif", "cmyk-jpeg", "tiny"],
)
def test_brightness_reads_every_sample_kind(data: bytes) -> None:
    stats = brightness(data)
    assert 0 <= stats["minimum"] <= stats["median"] <= stats["maximum"] <= 255
    assert 0.0 <= stats["darkShare"] + stats["brightShare"] <= 1.0
