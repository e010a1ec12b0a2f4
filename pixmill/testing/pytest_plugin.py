"""pixmill's pytest plugin: fixtures for testing plugins (registered through `pytest11`).

Installed with pixmill, so a plugin's test suite needs no conftest to use them::

    import pytest
    import pixmill_sepia

    pytestmark = pytest.mark.pixmill_plugins(pixmill_sepia)   # only the plugin under test

    def test_sepia(run_tool, sample_images, assert_similar): ...

Without the marker (or an override of the `pixmill_plugins` fixture) every installed plugin is
loaded. Fixture names are prefixed `pixmill_` except the three a plugin test uses most
(`run_tool`, `sample_images`, `assert_similar`); a project's own conftest fixture of the same
name takes precedence, as pytest gives conftest fixtures priority over plugin ones, so each of
those also has a `pixmill_`-prefixed twin that is never shadowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient

from pixmill.core.execution import Outcome
from pixmill.core.plugin_host import Registry
from pixmill.testing import images
from pixmill.testing.conformance import ConformanceReport, check_plugin
from pixmill.testing.harness import Harness, PluginSpec, registry_for
from pixmill.testing.similarity import assert_similar as _assert_similar

MARKER = "pixmill_plugins"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*plugins): load only these plugins (modules, objects or installed names) "
        "in pixmill's harness fixtures",
    )


@pytest.fixture
def pixmill_plugins(request: pytest.FixtureRequest) -> Sequence[PluginSpec] | None:
    """The plugins under test: the `pixmill_plugins` marker's arguments, or None for every
    installed plugin. Override this fixture in a conftest to choose them for a whole suite."""
    marker = request.node.get_closest_marker(MARKER)
    return list(marker.args) if marker is not None else None


@pytest.fixture
def pixmill_registry(pixmill_plugins: Sequence[PluginSpec] | None) -> Registry:
    return registry_for(pixmill_plugins)


@pytest.fixture
def pixmill_harness(pixmill_registry: Registry, tmp_path: Path) -> Harness:
    return Harness(pixmill_registry, tmp_path / "pixmill-data")


@pytest.fixture
def pixmill_app(pixmill_harness: Harness) -> Flask:
    """A pixmill app serving only the plugins under test; its queued jobs run in-process."""
    return pixmill_harness.app


@pytest.fixture
def pixmill_client(pixmill_app: Flask) -> FlaskClient:
    return pixmill_app.test_client()


class PixmillCli:
    """`pixmill_cli.invoke("tools", "--json")`: the real CLI, in-process, with a scratch
    data directory and only the plugins under test that are installed ones (the CLI loads
    plugins by entry point, as a user's shell would)."""

    def __init__(self, data_dir: Path, load_plugins: Sequence[str] | None) -> None:
        self.env = {"PIXMILL_DATA_DIR": str(data_dir)}
        if load_plugins is not None:
            self.env["PIXMILL_LOAD_PLUGINS"] = ",".join(load_plugins)

    def invoke(self, *args: str, input: str | bytes | None = None) -> Result:
        from pixmill.cli import main

        return CliRunner().invoke(main, list(args), input=input, env=self.env)


@pytest.fixture
def pixmill_cli(pixmill_registry: Registry, pixmill_plugins: Any, tmp_path: Path) -> PixmillCli:
    installed = [info.name for info in pixmill_registry.plugins if info.package is not None]
    return PixmillCli(tmp_path / "pixmill-cli-data", None if pixmill_plugins is None else installed)


RunTool = Callable[..., Outcome]


@pytest.fixture
def pixmill_run_tool(pixmill_harness: Harness) -> RunTool:
    """`run_tool("sepia", image_bytes, strength=0.5)` -> the run's `Outcome` (`.data`,
    `.format`, `.json`); `via="worker"` runs it as a queued job. Refusals raise PixmillError."""
    return pixmill_harness.run_tool


@pytest.fixture
def run_tool(pixmill_run_tool: RunTool) -> RunTool:
    return pixmill_run_tool


@pytest.fixture(scope="session")
def pixmill_sample_images() -> Mapping[str, bytes]:
    """Encoded sample images by kind: photo-jpeg, alpha-png, animated-gif, exif-rotated-jpeg,
    cmyk-jpeg, tiny-png (1x1), large-jpeg. Shared by the session: do not modify."""
    return images.sample_images()


@pytest.fixture(scope="session")
def sample_images(pixmill_sample_images: Mapping[str, bytes]) -> Mapping[str, bytes]:
    return pixmill_sample_images


@pytest.fixture
def pixmill_assert_similar() -> Callable[..., float]:
    """`assert_similar(actual, expected, min_ssim=0.95)`; also `pixmill.testing.assert_similar`."""
    return _assert_similar


@pytest.fixture
def assert_similar(pixmill_assert_similar: Callable[..., float]) -> Callable[..., float]:
    return pixmill_assert_similar


@pytest.fixture
def pixmill_conformance() -> Iterator[Callable[..., ConformanceReport]]:
    """`pixmill_conformance(my_plugin)`: run the conformance check; fail with its report."""

    def check(plugin: Any, **options: Any) -> ConformanceReport:
        return check_plugin(plugin, **options).assert_ok()

    yield check
