"""Shared fixtures: the real plugin registry, limits, and a one-call way to run a tool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pixmill.core.config import Config
from pixmill.core.execution import Outcome, execute
from pixmill.core.imageio import ImageLimits
from pixmill.core.plugin_host import Registry, load_registry


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry()


@pytest.fixture
def limits() -> ImageLimits:
    return ImageLimits(max_pixels=50_000_000, max_frames=200)


@pytest.fixture
def config(tmp_path: Any) -> Config:
    return Config(data_dir=tmp_path / "data", local_folder_root=tmp_path / "library")


RunTool = Callable[..., Outcome]


@pytest.fixture
def run_tool(registry: Registry, limits: ImageLimits, config: Config) -> RunTool:
    """`run_tool("resize", data, width=10)`: run a tool or extractor through `execute`.

    Extra file parts go in `files={"watermark": [(bytes, "w.png")]}`.
    """

    def call(
        tool_id: str,
        data: bytes,
        filename: str = "input.jpg",
        files: dict[str, list[tuple[bytes, str]]] | None = None,
        **settings: Any,
    ) -> Outcome:
        parts = {"file": [(data, filename)], **(files or {})}
        return execute(
            registry.catalogue_entry(tool_id),
            parts,
            settings,
            limits=limits,
            config=config.plugin_config(),
        )

    return call
