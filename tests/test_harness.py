"""The plugin-author harness: fixtures, sample images, assert_similar, the conformance check
and `pixmill plugin check`. The fixtures come from the `pytest11` entry point, as they would
in a third-party plugin's suite (pixmill's own conftest shadows `run_tool`, so the tests use
the `pixmill_`-prefixed twins)."""

from __future__ import annotations

import random
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from marshmallow import EXCLUDE, Schema, fields, validate
from PIL import Image, ImageFilter

from pixmill import Context, ImageResult, Inputs, PixmillError, Settings, Tool, hookimpl
from pixmill.cli import main
from pixmill.core.plugin_host import Registry
from pixmill.testing import ConformanceError, assert_similar, check_plugin, images, ssim
from pixmill.testing.pytest_plugin import PixmillCli

PLUGINS_DIR = Path(__file__).parent / "plugins"


# ----- throwaway plugins ----------------------------------------------------------------------


class BlurSettings(Settings):
    radius = fields.Float(load_default=1.0, validate=validate.Range(min=0, max=50))


def _blur(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    return ImageResult(inputs.file.open().filter(ImageFilter.GaussianBlur(settings["radius"])))


BLUR = Tool(
    id="test-blur", name="Blur", description="a sound tool", settings=BlurSettings, run=_blur
)


class GoodPlugin:
    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        return [BLUR]


class LooseSettings(Schema):
    """Not derived from pixmill.Settings: unknown fields are dropped silently."""

    class Meta:
        unknown = EXCLUDE

    level = fields.Raw(load_default=1)


def _noisy(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    image = inputs.file.open().convert("RGB")
    image.putpixel((0, 0), (random.randrange(256), random.randrange(256), random.randrange(256)))
    return ImageResult(image, format="png")


def _crashes_on_animation(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    if inputs.file.header.frames > 1:
        raise IndexError("frame index out of range")
    return ImageResult(inputs.file.open())


def _unchanged(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    return ImageResult(inputs.file.open())


class BrokenPlugin:
    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        return [
            Tool(id="test-noisy", name="n", description="d", settings=Settings, run=_noisy),
            Tool(
                id="test-animation-crash",
                name="c",
                description="d",
                settings=Settings,
                run=_crashes_on_animation,
            ),
            Tool(
                id="test-silent-heavy",
                name="h",
                description="d",
                settings=Settings,
                run=_unchanged,
                heavy=True,
            ),
            Tool(
                id="test-loose", name="l", description="d", settings=LooseSettings, run=_unchanged
            ),
        ]


def failures_of(report: Any) -> dict[tuple[str, str], str]:
    return {(f.subject, f.check): f.message + " | " + f.fix for f in report.failures}


# ----- assert_similar ---------------------------------------------------------------------------


def test_identical_images_score_one() -> None:
    photo = images.photo(160, 120)
    assert ssim(photo, photo.copy()) == pytest.approx(1.0)
    assert assert_similar(images.encode(photo), photo) == pytest.approx(1.0)


def test_a_blurred_copy_scores_below_a_sharp_re_encoding() -> None:
    photo = images.photo(320, 240)
    re_encoded = images.decode(images.encode(photo, "JPEG", quality=95))
    blurred = photo.filter(ImageFilter.GaussianBlur(4))
    assert ssim(photo, re_encoded) > 0.9 > ssim(photo, blurred)
    assert_similar(re_encoded, photo, min_ssim=0.9)
    with pytest.raises(AssertionError, match=r"SSIM 0\.\d+ < min_ssim 0\.9"):
        assert_similar(blurred, photo, min_ssim=0.9)


def test_unrelated_images_score_low_and_alpha_counts() -> None:
    assert ssim(images.photo(64, 64, seed=1), images.photo(64, 64, seed=2)) < 0.7
    opaque = Image.new("RGBA", (16, 16), (200, 10, 10, 255))
    clear = Image.new("RGBA", (16, 16), (200, 10, 10, 0))
    assert ssim(opaque, clear) < 0.9


def test_different_sizes_are_refused_with_both_sizes() -> None:
    with pytest.raises(AssertionError, match="actual 20x10, expected 10x20"):
        assert_similar(images.photo(20, 10), images.photo(10, 20))
    with pytest.raises(ValueError, match="different sizes: 20x10 and 10x20"):
        ssim(images.photo(20, 10), images.photo(10, 20))


def test_bad_arguments_are_explained() -> None:
    with pytest.raises(ValueError, match=r"min_ssim must be in \(0, 1\]"):
        assert_similar(images.tiny(), images.tiny(), min_ssim=1.5)
    with pytest.raises(TypeError, match="cannot compare int"):
        ssim(42, images.tiny())


# ----- fixtures ---------------------------------------------------------------------------------


def test_sample_images_cover_the_common_kinds(pixmill_sample_images: Mapping[str, bytes]) -> None:
    decoded = {kind: images.decode(data) for kind, data in pixmill_sample_images.items()}
    assert decoded["photo-jpeg"].format == "JPEG"
    assert decoded["alpha-png"].mode == "RGBA"
    assert decoded["alpha-png"].getchannel("A").getextrema() == (0, 255)
    assert getattr(decoded["animated-gif"], "n_frames", 1) > 1
    assert decoded["exif-rotated-jpeg"].getexif()[images.EXIF_ORIENTATION] == 6
    assert decoded["cmyk-jpeg"].mode == "CMYK"
    assert decoded["tiny-png"].size == (1, 1)
    assert decoded["large-jpeg"].width * decoded["large-jpeg"].height >= 3_000_000
    # Deterministic: built again, byte for byte the same.
    assert {kind: build() for kind, build in images.SAMPLES.items()} == dict(pixmill_sample_images)


@pytest.mark.pixmill_plugins(GoodPlugin())
def test_the_marker_loads_only_the_plugins_under_test(
    pixmill_registry: Registry, pixmill_client: FlaskClient
) -> None:
    assert list(pixmill_registry.tools) == ["test-blur"]
    listed = pixmill_client.get("/api/v1/tools").get_json()
    ids = {tool["id"] for tool in listed["tools"]}
    assert ids == {"test-blur"}


def test_without_the_marker_every_installed_plugin_loads(pixmill_registry: Registry) -> None:
    assert {"resize", "compress", "watermark-text"} <= set(pixmill_registry.tools)


@pytest.mark.pixmill_plugins(GoodPlugin())
def test_run_tool_inline_and_through_the_worker_agree(
    pixmill_run_tool: Callable[..., Any], pixmill_sample_images: Mapping[str, bytes]
) -> None:
    photo = pixmill_sample_images["photo-jpeg"]
    inline = pixmill_run_tool("test-blur", photo, radius=2)
    queued = pixmill_run_tool("test-blur", photo, via="worker", radius=2)
    assert images.decode(inline).size == images.decode(photo).size
    assert assert_similar(queued, inline, min_ssim=0.99) > 0.99
    assert assert_similar(inline, photo, min_ssim=0.1) < 0.99  # it did blur


@pytest.mark.pixmill_plugins(GoodPlugin())
@pytest.mark.parametrize("via", ["inline", "worker"])
def test_run_tool_raises_the_documented_error(
    pixmill_run_tool: Callable[..., Any], via: str
) -> None:
    with pytest.raises(PixmillError) as refused:
        pixmill_run_tool("test-blur", images.tiny(), via=via, radius=-1)
    assert (refused.value.code, refused.value.status) == ("VALIDATION_ERROR", 400)
    assert "radius" in refused.value.details["fields"]
    with pytest.raises(PixmillError) as unknown:
        pixmill_run_tool("no-such-tool", images.tiny(), via=via)
    assert unknown.value.code == "TOOL_NOT_FOUND"
    with pytest.raises(ValueError, match="via must be"):
        pixmill_run_tool("test-blur", images.tiny(), via="carrier-pigeon")


@pytest.mark.pixmill_plugins("essentials")
def test_the_cli_fixture_sees_only_the_chosen_installed_plugins(pixmill_cli: PixmillCli) -> None:
    result = pixmill_cli.invoke("tools")
    assert result.exit_code == 0, result.output
    assert "resize" in result.output and "watermark-text" not in result.output


def test_the_conformance_fixture_passes_a_sound_plugin_and_fails_a_broken_one(
    pixmill_conformance: Callable[..., Any],
) -> None:
    assert pixmill_conformance(GoodPlugin()).ok
    with pytest.raises(ConformanceError, match="test-noisy"):
        pixmill_conformance(BrokenPlugin())


# ----- conformance -----------------------------------------------------------------------------


def test_the_built_in_plugins_conform() -> None:
    report = check_plugin("pixmill")  # the distribution: every built-in entry point
    report.assert_ok()
    assert {"resize", "compress"} <= set(report.tools)
    assert {"info"} <= set(report.extractors) and {"generate"} <= set(report.sources)


def test_a_broken_plugin_gets_one_precise_failure_per_problem() -> None:
    report = check_plugin(BrokenPlugin())
    failures = failures_of(report)
    assert set(failures) == {
        ("tool 'test-noisy'", "deterministic"),
        ("tool 'test-animation-crash'", "runs on every sample image kind"),
        ("tool 'test-silent-heavy'", "reports progress (heavy)"),
        ("tool 'test-loose'", "rejects bad settings with VALIDATION_ERROR"),
    }, report.text()
    assert "cacheable=False" in failures[("tool 'test-noisy'", "deterministic")]
    crash = failures[("tool 'test-animation-crash'", "runs on every sample image kind")]
    assert "animated-gif: TOOL_FAILED" in crash and "IndexError" in crash
    assert "photo-jpeg" not in crash  # only the kind that crashed is named
    assert "ctx.progress" in failures[("tool 'test-silent-heavy'", "reports progress (heavy)")]
    loose = failures[("tool 'test-loose'", "rejects bad settings with VALIDATION_ERROR")]
    assert "an unknown field" in loose and "pixmill.Settings" in loose
    text = report.text(verbose=False)
    assert "what happened:" in text and "how to fix:" in text and "FAILED: " in text
    with pytest.raises(ConformanceError) as raised:
        report.assert_ok()
    assert "test-animation-crash" in str(raised.value)


def test_a_non_deterministic_tool_that_says_so_passes() -> None:
    class Honest:
        @hookimpl
        def pixmill_tools(self) -> list[Tool]:
            return [
                Tool(
                    id="test-noisy",
                    name="n",
                    description="d",
                    settings=Settings,
                    run=_noisy,
                    cacheable=False,
                )
            ]

    check_plugin(Honest()).assert_ok()


def test_load_problems_of_a_module_path_are_failures() -> None:
    report = check_plugin(PLUGINS_DIR / "pixmill_test_bad_id.py")
    messages = [f.message for f in report.failures if f.check == "loads"]
    assert any("'Bad_ID' skipped: ids are kebab-case" in message for message in messages)
    assert "test-good-id" in report.tools and not report.ok


def test_a_schema_whose_defaults_do_not_load_is_reported() -> None:
    class Required(Settings):
        width = fields.Integer(required=True)

    class NeedsWidth:
        @hookimpl
        def pixmill_tools(self) -> list[Tool]:
            return [Tool(id="test-needs", name="n", description="d", settings=Required, run=_blur)]

    # The plugin host already refuses to serve it; the check says so, naming the field.
    failures = failures_of(check_plugin(NeedsWidth()))
    refused = failures[("plugin 'NeedsWidth'", "loads")]
    assert "'test-needs' skipped" in refused and "width: Missing data" in refused


def test_an_empty_plugin_and_an_unknown_name_fail() -> None:
    class Nothing:
        @hookimpl
        def pixmill_tools(self) -> list[Tool]:
            return []

    assert ("plugin 'Nothing'", "provides something") in failures_of(check_plugin(Nothing()))
    unknown = check_plugin("pixmill-no-such-plugin")
    assert not unknown.ok and "no installed plugin" in unknown.failures[0].message


# ----- pixmill plugin check ---------------------------------------------------------------------


BROKEN_MODULE = """
    import random
    from pixmill import ImageResult, Settings, Tool, hookimpl

    def run(ctx, inputs, settings):
        image = inputs.file.open().convert("RGB")
        image.putpixel((0, 0), (random.randrange(256), 0, 0))
        return ImageResult(image, format="png")

    @hookimpl
    def pixmill_tools():
        return [Tool(id="test-cli-noisy", name="n", description="d", settings=Settings, run=run)]
"""


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["plugin", "check", *args])


def test_plugin_check_passes_an_installed_plugin() -> None:
    result = invoke("essentials")
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and "tool 'resize'" in result.output


def test_plugin_check_fails_a_broken_module_path(tmp_path: Path) -> None:
    module = tmp_path / "pixmill_cli_broken_plugin.py"
    module.write_text(textwrap.dedent(BROKEN_MODULE))
    result = invoke("--quiet", str(module))
    assert result.exit_code == 1, result.output
    assert "FAIL tool 'test-cli-noisy': deterministic" in result.output
    assert "ok  " not in result.output  # --quiet lists only failures


@pytest.mark.parametrize(
    ("target", "message"),
    [("no-such-plugin", "no installed plugin or distribution"), ("./missing.py", "does not exist")],
)
def test_plugin_check_usage_errors_exit_2(target: str, message: str) -> None:
    result = invoke(target)
    assert result.exit_code == 2
    assert message in result.output
