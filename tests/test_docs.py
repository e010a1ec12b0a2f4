"""Docs cannot rot: examples in the docs are the tested files, every hook is documented."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

from PIL import Image

from pixmill.core import hookspecs
from pixmill.core.execution import execute
from pixmill.core.imageio import ImageLimits
from pixmill.core.plugin_host import load_registry
from pixmill.testing import images

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_hook_is_documented() -> None:
    text = (DOCS / "plugins.md").read_text()
    hooks = [
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("pixmill_")
    ]
    assert hooks
    for name in hooks:
        assert f"`{name}`" in text, f"hook {name} is not documented in docs/plugins.md"


def test_plugin_example_in_docs_is_the_tested_file() -> None:
    source = (DOCS / "examples" / "invert_plugin.py").read_text()
    assert f"```python\n{source}```" in (DOCS / "plugins.md").read_text()


def test_plugin_example_runs() -> None:
    spec = importlib.util.spec_from_file_location(
        "invert_plugin", DOCS / "examples" / "invert_plugin.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    registry = load_registry(extra_plugins=[module], entry_points=False)
    assert registry.errors == []
    white = images.tiny("PNG")
    outcome = execute(
        registry.tool("invert"),
        {"file": [(white, "red.png")]},
        {"strength": 100},
        limits=ImageLimits(1_000_000, 10),
    )
    assert outcome.filename == "red.png"
    assert outcome.data is not None
    import io

    assert Image.open(io.BytesIO(outcome.data)).convert("RGB").getpixel((0, 0)) == (0, 255, 255)


def test_tool_reference_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_tool_docs", DOCS.parent / "scripts" / "gen_tool_docs.py"
    )
    assert spec and spec.loader
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    expected = generator.render(load_registry())
    assert (DOCS / "tools.md").read_text() == expected, (
        "docs/tools.md is stale: run .venv/bin/python scripts/gen_tool_docs.py"
    )
