"""The example third-party plugin (examples/pixmill-example), installed as a user would install it.

`scripts/test` installs the package non-editably into the venv, so these tests see it the way
pixmill sees a plugin from PyPI: through its `pixmill` entry point, imported from
site-packages, never from the source tree. They walk the whole path: install -> discover ->
validate -> run, on the CLI, over REST and in the OpenAPI document.

Without the package installed these tests skip and say how to install it, except under CI
(`PIXMILL_REQUIRE_EXAMPLE_PLUGIN=1`, set by .ci/run), where a missing example is a failure:
the point of the example is that CI proves a third-party plugin works end to end.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask.testing import FlaskClient
from PIL import Image

import pixmill.cli as cli
from pixmill.core.config import Config
from pixmill.core.plugin_host import load_registry
from pixmill.server.app import create_app
from pixmill.testing import images

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "pixmill-example"
DISTRIBUTION = "pixmill-example"
ENTRY_POINT = "example"
TOOL, SOURCE, EXTRACTOR = "posterize", "checkerboard", "brightness-stats"
INSTALL_COMMAND = (
    ".venv/bin/python -m pip install --no-deps --no-build-isolation ./examples/pixmill-example"
)
REQUIRED = os.environ.get("PIXMILL_REQUIRE_EXAMPLE_PLUGIN") == "1"


def installed_version() -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.fixture(autouse=True)
def example_installed() -> None:
    if installed_version() is not None:
        return
    message = f"{DISTRIBUTION} is not installed; ./scripts/test installs it, or run: "
    message += INSTALL_COMMAND
    if REQUIRED:
        pytest.fail(f"PIXMILL_REQUIRE_EXAMPLE_PLUGIN=1 but {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def all_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every installed plugin loads, whatever the developer's shell selects."""
    monkeypatch.delenv("PIXMILL_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("PIXMILL_PLUGINS_DIR", raising=False)


# --- install and discovery -------------------------------------------------------------------


def test_the_entry_point_is_found_and_reported_as_a_third_party_plugin() -> None:
    registry = load_registry()
    [info] = [p for p in registry.plugins if p.name == ENTRY_POINT]
    assert info.package == DISTRIBUTION
    assert info.version == installed_version()
    assert not info.builtin
    assert info.loaded and info.errors == []
    assert (info.tools, info.sources, info.extractors) == ([TOOL], [SOURCE], [EXTRACTOR])
    assert sorted(info.hooks) == ["pixmill_extractors", "pixmill_sources", "pixmill_tools"]
    assert registry.owner(registry.tool(TOOL)) == ENTRY_POINT
    assert registry.owner(registry.source(SOURCE)) == ENTRY_POINT
    assert registry.owner(registry.extractor(EXTRACTOR)) == ENTRY_POINT


def test_only_the_named_entry_points_load_when_selected() -> None:
    registry = load_registry(["essentials"])
    assert TOOL not in registry.tools
    registry = load_registry([ENTRY_POINT])
    assert set(registry.tools) == {TOOL}


def test_it_is_imported_from_site_packages_and_matches_the_source_tree() -> None:
    """Not the source tree (that would hide a packaging mistake), and not a stale copy."""
    import pixmill_example

    package_dir = Path(pixmill_example.__file__).resolve().parent
    assert EXAMPLE not in package_dir.parents, (
        f"pixmill_example is imported from {package_dir}, inside the source tree: install it "
        f"non-editably ({INSTALL_COMMAND})"
    )
    site_packages = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    assert package_dir.parent in site_packages
    sources = sorted((EXAMPLE / "src" / "pixmill_example").glob("*.py"))
    assert sources
    stale = [s.name for s in sources if (package_dir / s.name).read_bytes() != s.read_bytes()]
    assert stale == [], f"the installed example is out of date ({stale}): {INSTALL_COMMAND}"


# --- CLI -------------------------------------------------------------------------------------


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.main, list(args))


def test_cli_lists_its_tool_source_and_extractor() -> None:
    result = invoke("tools", "--json")
    assert result.exit_code == 0, result.output
    entries = {entry["id"]: entry for entry in json.loads(result.stdout)}
    assert entries[TOOL]["kind"] == "tool"
    assert entries[SOURCE]["kind"] == "source"
    assert entries[EXTRACTOR]["kind"] == "extractor"
    levels = entries[TOOL]["settingsSchema"]["properties"]["levels"]
    assert (levels["minimum"], levels["maximum"], levels["default"]) == (2, 64, 4)


def test_cli_fetch_run_and_extract(tmp_path: Path) -> None:
    boards = tmp_path / "boards"
    fetched = invoke(
        "fetch", SOURCE, "--set", "width=64", "--set", "height=32", "--set", "square=16",
        "--set", "color=#ff0000", "-o", str(boards), "--json",
    )  # fmt: skip
    assert fetched.exit_code == 0, fetched.output
    [entry] = json.loads(fetched.stdout)
    board = Path(entry["path"])
    assert board.parent == boards
    with Image.open(board) as img:
        assert img.size == (64, 32)
        assert img.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
        assert img.convert("RGB").getpixel((16, 0)) == (255, 255, 255)

    photo = tmp_path / "photo.png"  # lossless in and out: the tones are exactly the levels
    photo.write_bytes(images.png(160, 120, alpha=False))
    poster = tmp_path / "poster.png"
    ran = invoke("run", TOOL, str(photo), "--set", "levels=2", "-o", str(poster), "-q")
    assert ran.exit_code == 0, ran.output
    with Image.open(poster) as img:
        assert img.size == (160, 120)
        tones = {value for value, n in enumerate(img.convert("RGB").histogram()) if n}
        assert {value % 256 for value in tones} <= {0, 255}

    extracted = invoke("extract", EXTRACTOR, str(board))
    assert extracted.exit_code == 0, extracted.output
    stats = json.loads(extracted.stdout)
    assert (stats["minimum"], stats["maximum"]) == (76, 255)  # luma of pure red, white
    assert stats["brightShare"] == 0.5


def test_cli_refuses_bad_settings_with_the_field_and_its_bounds(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(images.jpeg(32, 24))
    result = invoke("run", TOOL, str(photo), "--set", "levels=1", "-o", str(tmp_path / "o.jpg"))
    assert result.exit_code != 0
    assert "levels" in result.stderr
    assert not (tmp_path / "o.jpg").exists()
    result = invoke("fetch", SOURCE, "--set", "width=8", "--set", "height=8", "--set", "square=9")
    assert result.exit_code != 0
    assert "square" in result.stderr


def test_a_fresh_pixmill_process_finds_it_through_the_console_script() -> None:
    """What a user does after `pip install`: no import from this test process can help."""
    pixmill = Path(sys.executable).with_name("pixmill")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXMILL_")}
    completed = subprocess.run(
        [str(pixmill), "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env=env,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    [report] = [p for p in json.loads(completed.stdout) if p["name"] == ENTRY_POINT]
    assert report["package"] == DISTRIBUTION and report["builtin"] is False
    assert report["errors"] == []
    assert report["tools"] == [TOOL]


def test_its_own_test_suite_passes_against_the_installed_package() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=EXAMPLE,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    assert " passed" in completed.stdout


# --- REST and OpenAPI ------------------------------------------------------------------------


@pytest.fixture
def client(config: Config) -> FlaskClient:
    return create_app(config).test_client()


def post(
    client: FlaskClient, tool_id: str, data: bytes, settings: Any = None, accept: str = ""
) -> Any:
    form: dict[str, Any] = {"file": (io.BytesIO(data), "photo.png")}
    if settings is not None:
        form["settings"] = settings if isinstance(settings, str) else json.dumps(settings)
    headers = {"Accept": accept} if accept else {}
    return client.post(f"/api/v1/tools/image/{tool_id}", data=form, headers=headers)


def test_rest_runs_the_tool_and_keeps_the_input_format(client: FlaskClient) -> None:
    response = post(client, TOOL, images.png(64, 48, alpha=True), {"levels": 2}, "image/*")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "image/png"
    img = Image.open(io.BytesIO(response.data))
    assert img.size == (64, 48) and img.mode == "RGBA"
    red, green, blue, _ = img.split()
    for band in (red, green, blue):
        assert {value for value, n in enumerate(band.histogram()) if n} <= {0, 255}


def test_rest_runs_the_extractor(client: FlaskClient) -> None:
    white = images.encode(Image.new("RGB", (20, 10), "white"))
    response = post(client, EXTRACTOR, white, {"brightAbove": 200})
    assert response.status_code == 200, response.get_data(as_text=True)
    stats = response.get_json()
    assert stats["mean"] == 255.0 and stats["brightShare"] == 1.0 and stats["darkShare"] == 0.0


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"levels": 1}, "levels"),
        ({"levels": 65}, "levels"),
        ({"levels": 2.5}, "levels"),
        ({"keepAlpha": "sometimes"}, "keepAlpha"),
        ({"colours": 3}, "colours"),
    ],
)
def test_rest_refuses_bad_settings(client: FlaskClient, settings: Any, field: str) -> None:
    response = post(client, TOOL, images.tiny("PNG"), settings)
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == "VALIDATION_ERROR"
    assert field in body["details"]["fields"], body


def test_rest_refuses_an_animation_the_tool_cannot_handle(client: FlaskClient) -> None:
    response = post(client, TOOL, images.animated_gif(), {"levels": 3})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["code"] == "ANIMATED_IMAGE_UNSUPPORTED"


def test_rest_catalogue_plugins_and_openapi_describe_it(client: FlaskClient) -> None:
    catalogue = client.get("/api/v1/tools").get_json()
    entries = {entry["id"]: entry for entry in catalogue["tools"]}
    assert entries[TOOL]["settingsSchema"]["properties"]["keepAlpha"]["type"] == "boolean"
    assert "outputSchema" in entries[EXTRACTOR]

    plugins = client.get("/api/v1/plugins").get_json()
    [report] = [p for p in plugins["plugins"] if p["name"] == ENTRY_POINT]
    assert report["package"] == DISTRIBUTION and report["version"] == installed_version()

    spec = client.get("/api/v1/openapi.json").get_json()
    assert "/api/v1/tools/image/posterize" in spec["paths"]
    assert "/api/v1/tools/image/brightness-stats" in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert schemas["PosterizeSettings"]["properties"]["levels"]["maximum"] == 64
    assert "darkShare" in schemas["BrightnessStatsOutput"]["properties"]
