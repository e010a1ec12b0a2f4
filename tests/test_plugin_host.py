"""The plugin host against broken, clashing and misnamed plugins.

The throwaway plugins live in tests/plugins/. They are loaded two ways: handed straight to
`load_registry(extra_plugins=...)`, and installed for real as distributions (a `.dist-info`
folder with METADATA and entry_points.txt on `sys.path`) that importlib.metadata discovers
through the `pixmill` entry-point group, exactly as a pip-installed package would be.

The promise: every bad plugin or definition is reported with what to do about it, nothing
raises, and every good definition (built-in or not) still loads.
"""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from marshmallow import fields
from PIL import Image

from pixmill import ImageResult, Settings, Tool, hookimpl
from pixmill.core.config import Config
from pixmill.core.errors import NotFoundError
from pixmill.core.execution import execute, fetch
from pixmill.core.imageio import ImageLimits
from pixmill.core.plugin_host import (
    BUILTIN_PACKAGE,
    ENTRY_POINT_GROUP,
    Registry,
    load_registry,
)
from pixmill.testing import images

PLUGINS_DIR = Path(__file__).parent / "plugins"
LIMITS = ImageLimits(max_pixels=10_000_000, max_frames=100)


@pytest.fixture
def plugin_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make tests/plugins importable, and forget its modules afterwards."""
    monkeypatch.syspath_prepend(str(PLUGINS_DIR))
    yield
    for name in [name for name in sys.modules if name.startswith("pixmill_test_")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def plugin(name: str) -> ModuleType:
    return importlib.import_module(f"pixmill_test_{name}")


@pytest.fixture
def install(plugin_modules: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`install("pkg-name", {"entry": "module"})`: a real installed distribution on sys.path."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def make(package: str, entry_points: dict[str, str], version: str = "1.0") -> Path:
        dist_info = site / f"{package.replace('-', '_')}-{version}.dist-info"
        if dist_info.exists():  # a second copy of the same distribution, elsewhere on the path
            other = tmp_path / f"site-{len(list(tmp_path.iterdir()))}"
            other.mkdir()
            monkeypatch.syspath_prepend(str(other))
            dist_info = other / dist_info.name
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
        )
        lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
        (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        importlib.invalidate_caches()
        return dist_info

    yield make
    importlib.invalidate_caches()


def info(registry: Registry, name: str) -> Any:
    matches = [p for p in registry.plugins if p.name == name]
    assert len(matches) == 1, [p.name for p in registry.plugins]
    return matches[0]


BUILTIN_TOOLS = {"resize", "crop", "rotate", "convert"}


def assert_builtins_intact(registry: Registry) -> None:
    assert set(registry.tools) >= BUILTIN_TOOLS
    assert registry.tools["resize"].name != "Impostor"
    assert registry.owner(registry.tools["resize"]) == "essentials"
    for p in registry.plugins:
        if p.builtin:
            assert p.loaded and p.errors == [], p.to_dict()


# --- definitions handed straight to the host ---------------------------------------------------


def test_a_good_plugin_loads_everything_it_declares(plugin_modules: None) -> None:
    registry = load_registry(extra_plugins=[plugin("good")], entry_points=False)
    [good] = registry.plugins
    assert good.loaded and good.errors == []
    assert good.hooks == ["pixmill_extractors", "pixmill_sources", "pixmill_tools"]
    assert (good.tools, good.extractors, good.sources) == (
        ["test-mirror"],
        ["test-mean-color"],
        ["test-solid"],
    )
    assert registry.errors == []


def test_definitions_of_a_good_plugin_really_run(plugin_modules: None) -> None:
    registry = load_registry(extra_plugins=[plugin("good")], entry_points=False)
    source = Image.new("RGB", (4, 2), (0, 0, 0))
    source.putpixel((0, 0), (255, 0, 0))
    data = io.BytesIO()
    source.save(data, "PNG")
    files = {"file": [(data.getvalue(), "in.png")]}
    mirrored = execute(registry.tool("test-mirror"), files, {}, limits=LIMITS)
    result = Image.open(io.BytesIO(mirrored.data or b""))
    assert result.getpixel((3, 0)) == (255, 0, 0) and result.getpixel((0, 0)) == (0, 0, 0)
    mean = execute(registry.extractor("test-mean-color"), files, {"precision": 0}, limits=LIMITS)
    assert mean.json == {"mean": [32.0, 0.0, 0.0]}
    [fetched] = fetch(registry.source("test-solid"), {"size": 3}, limits=LIMITS)
    assert fetched.format.name == "png" and fetched.license == "CC0"
    assert Image.open(io.BytesIO(fetched.data)).size == (3, 3)


def test_every_bad_schema_is_reported_and_the_good_definition_still_loads(
    plugin_modules: None,
) -> None:
    registry = load_registry(extra_plugins=[plugin("bad_schemas")], entry_points=False)
    [report] = registry.plugins
    assert report.loaded and report.tools == ["test-schema-fine"] and report.extractors == []
    assert "test-schema-fine" in registry.tools
    errors = "\n".join(report.errors)
    expected = {
        "test-settings-is-a-dict": "settings must be a marshmallow Schema class",
        "test-settings-is-an-instance": "settings must be a marshmallow Schema class",
        "test-example-out-of-bounds": "example settings do not validate: invalid settings: "
        "quality: Must be greater than or equal to 1",
        "test-example-unknown-field": "qualty: unknown field",
        "test-example-not-an-object": "settings must be a JSON object",
        "test-unexportable-schema": "cannot be exported as JSON Schema",
        "test-exploding-schema": "cannot even be instantiated",
        "test-output-schema-not-a-schema": "output_schema must be a marshmallow Schema class",
    }
    for definition_id, message in expected.items():
        [line] = [e for e in report.errors if f"'{definition_id}'" in e]
        assert message in line and "skipped" in line, line
        assert definition_id not in registry.tools and definition_id not in registry.extractors
    assert "expected a pixmill.Tool, got str" in errors
    assert len(report.errors) == len(expected) + 1


def test_ids_the_api_cannot_route_are_refused(plugin_modules: None) -> None:
    registry = load_registry(extra_plugins=[plugin("bad_id")], entry_points=False)
    [report] = registry.plugins
    assert report.tools == ["test-good-id"]
    for bad in ("Bad_ID", "double--hyphen", "-leading", "trailing-", "has space", ""):
        [line] = [e for e in report.errors if e.startswith(f"tool {bad!r} skipped")]
        assert "kebab-case" in line
    [section] = [e for e in report.errors if "test-wrong-section" in e]
    assert "unknown section 'video'" in section and "known: image" in section


def test_a_raising_hook_is_reported_and_its_other_hooks_still_load(plugin_modules: None) -> None:
    registry = load_registry(extra_plugins=[plugin("hook_raises")], entry_points=False)
    [report] = registry.plugins
    assert report.errors == ["pixmill_tools() raised ValueError: the tools hook fails on purpose"]
    assert report.sources == ["test-empty-source"] and "test-empty-source" in registry.sources


def test_a_misspelt_hook_is_reported(plugin_modules: None) -> None:
    registry = load_registry(extra_plugins=[plugin("typo")], entry_points=False)
    [report] = registry.plugins
    assert not report.loaded
    [error] = report.errors
    assert "pixmill_toolz" in error
    assert "known hooks: pixmill_extractors, pixmill_sources, pixmill_tools" in error


def test_a_duplicate_of_a_builtin_id_is_refused_and_the_builtin_kept(plugin_modules: None) -> None:
    registry = load_registry(extra_plugins=[plugin("duplicate")])
    report = info(registry, "pixmill_test_duplicate")
    assert report.tools == ["test-shrink"]
    [error] = report.errors
    assert "tool 'resize' skipped: the id is already provided by plugin 'essentials'" in error
    assert f"(package {BUILTIN_PACKAGE})" in error and "PIXMILL_LOAD_PLUGINS" in error
    assert_builtins_intact(registry)


def test_all_bad_plugins_together_leave_every_good_definition_loaded(
    plugin_modules: None,
) -> None:
    names = ["good", "bad_schemas", "bad_id", "hook_raises", "typo", "duplicate"]
    registry = load_registry(extra_plugins=[plugin(name) for name in names])
    assert_builtins_intact(registry)
    good = {"test-mirror", "test-schema-fine", "test-good-id", "test-shrink"}
    assert good <= set(registry.tools)
    assert {"test-mean-color"} <= set(registry.extractors)
    assert {"test-solid", "test-empty-source"} <= set(registry.sources)
    broken = {p.name for p in registry.plugins if p.errors}
    assert broken == {f"pixmill_test_{n}" for n in names if n != "good"}
    assert all(message for _, message in registry.errors)


def test_a_tool_and_an_extractor_cannot_share_an_id(plugin_modules: None) -> None:
    # Both are served at /api/v1/tools/<section>/<id>: one namespace.
    good = plugin("good")
    extractor = good.pixmill_extractors()[0]

    class Clash:
        @hookimpl
        def pixmill_extractors(self) -> list[Any]:
            return [replace(extractor, id="test-mirror")]

    registry = load_registry(extra_plugins=[good, Clash()], entry_points=False)
    [error] = info(registry, "Clash").errors
    assert "extractor 'test-mirror' skipped: the id is already provided by plugin" in error
    assert "test-mirror" not in registry.extractors
    assert registry.catalogue_entry("test-mirror").kind.value == "tool"


def test_hook_signatures_the_spec_does_not_offer_are_reported() -> None:
    class WantsConfig:
        @hookimpl
        def pixmill_tools(self, config: Any) -> list[Any]:
            return []

    registry = load_registry(extra_plugins=[WantsConfig()], entry_points=False)
    [report] = registry.plugins
    assert not report.loaded
    assert report.errors[0].startswith("invalid hook implementation")
    assert "config" in report.errors[0]


def test_a_hook_returning_a_single_definition_instead_of_a_list_is_reported(
    plugin_modules: None,
) -> None:
    tool = plugin("good").pixmill_tools()[0]

    class ReturnsOne:
        @hookimpl
        def pixmill_tools(self) -> Any:
            return tool

    registry = load_registry(extra_plugins=[ReturnsOne()], entry_points=False)
    [report] = registry.plugins
    assert report.errors == ["pixmill_tools() raised TypeError: 'Tool' object is not iterable"]


def test_the_same_plugin_registered_twice_is_reported_once(plugin_modules: None) -> None:
    good = plugin("good")
    registry = load_registry(extra_plugins=[good, good], entry_points=False)
    first, second = registry.plugins
    assert first.loaded and first.errors == []
    assert not second.loaded and "registered twice" in second.errors[0]
    assert set(registry.tools) == {"test-mirror"}


class _HelperSettings(Settings):
    level = fields.Integer(load_default=1, metadata={"description": "level"})


def _passthrough(ctx: Any, inputs: Any, settings: Any) -> ImageResult:
    return ImageResult(inputs.file.open())


def test_a_helper_named_like_a_hook_does_not_sink_the_plugin() -> None:
    module = ModuleType("helper_prefixed")

    @hookimpl
    def pixmill_tools() -> list[Tool]:
        return [
            Tool(id="helped", name="h", description="d", settings=_HelperSettings, run=_passthrough)
        ]

    def pixmill_make_tool() -> None:  # a plain helper, never marked @hookimpl
        return None

    module.pixmill_tools = pixmill_tools  # type: ignore[attr-defined]
    module.pixmill_make_tool = pixmill_make_tool  # type: ignore[attr-defined]
    registry = load_registry(extra_plugins=[module], entry_points=False)
    assert "helped" in registry.tools


def test_a_hook_without_the_hookimpl_marker_is_reported() -> None:
    module = ModuleType("undecorated")

    def pixmill_tools() -> list[Tool]:
        return [
            Tool(id="undec", name="u", description="d", settings=_HelperSettings, run=_passthrough)
        ]

    module.pixmill_tools = pixmill_tools  # type: ignore[attr-defined]
    registry = load_registry(extra_plugins=[module], entry_points=False)
    [report] = registry.plugins
    assert report.errors and "hookimpl" in report.errors[0]


def test_a_tool_whose_run_is_not_callable_is_refused() -> None:
    class NoRun:
        @hookimpl
        def pixmill_tools(self) -> list[Tool]:
            return [
                Tool(id="no-run", name="n", description="d", settings=_HelperSettings, run=None)
            ]  # type: ignore[arg-type]

    registry = load_registry(extra_plugins=[NoRun()], entry_points=False)
    assert "no-run" not in registry.tools


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        ({"queue": "AI"}, "queue 'AI'"),
        ({"queue": ""}, "queue ''"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.5}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
    ],
)
def test_a_bad_run_policy_is_refused_with_its_reason(policy: dict[str, Any], reason: str) -> None:
    def run(ctx: Any, inputs: Any, settings: Any) -> Any:
        raise AssertionError("never runs")

    class BadPolicy:
        @hookimpl
        def pixmill_tools(self) -> list[Tool]:
            fields_ = {"name": "n", "description": "d", "settings": _HelperSettings, "run": run}
            return [
                Tool(id="bad-policy", **fields_, **policy),
                Tool(
                    id="good-policy", **fields_, heavy=True, queue="ai", timeout=5, max_attempts=1
                ),
            ]

    registry = load_registry(extra_plugins=[BadPolicy()], entry_points=False)
    assert "bad-policy" not in registry.tools and "good-policy" in registry.tools
    [report] = registry.plugins
    assert len(report.errors) == 1 and reason in report.errors[0], report.errors


# --- real installed distributions and entry points ---------------------------------------------


def test_an_installed_distribution_is_discovered_through_its_entry_point(install: Any) -> None:
    install("pixmill-test-good", {"good": "pixmill_test_good"}, version="2.5.1")
    registry = load_registry()
    report = info(registry, "good")
    assert (report.package, report.version, report.builtin) == ("pixmill-test-good", "2.5.1", False)
    assert report.loaded and report.errors == [] and "test-mirror" in registry.tools
    assert registry.owner(registry.tools["test-mirror"]) == "good"
    assert report.to_dict()["package"] == "pixmill-test-good"
    assert_builtins_intact(registry)


def test_builtins_are_loaded_first_whatever_the_names(install: Any) -> None:
    # "aaa" sorts before every built-in name and package: it must still come after them.
    install("aaa-first-package", {"aaa": "pixmill_test_duplicate"})
    install("pixmill-test-good", {"good": "pixmill_test_good"})
    registry = load_registry()
    packages = [p.package for p in registry.plugins]
    builtins = [i for i, package in enumerate(packages) if package == BUILTIN_PACKAGE]
    others = [i for i, package in enumerate(packages) if package != BUILTIN_PACKAGE]
    assert builtins and others and max(builtins) < min(others)
    # Only the two installed here: the venv may hold real third-party plugins too (CI installs
    # examples/pixmill-example).
    ours = {"aaa-first-package", "pixmill-test-good"}
    installed_here = [registry.plugins[i].name for i in others if packages[i] in ours]
    assert installed_here == ["aaa", "good"]
    report = info(registry, "aaa")
    assert "tool 'resize' skipped" in report.errors[0]
    assert "plugin 'aaa' (package aaa-first-package)" in report.errors[0]
    assert_builtins_intact(registry)


def test_a_package_that_fails_to_import_says_how_to_remove_it(install: Any) -> None:
    install("pixmill-test-broken", {"broken": "pixmill_test_broken_import"})
    install("pixmill-test-good", {"good": "pixmill_test_good"})
    registry = load_registry()
    report = info(registry, "broken")
    assert not report.loaded and report.package == "pixmill-test-broken"
    [error] = report.errors
    assert error.startswith("failed to import pixmill_test_broken_import: RuntimeError: ")
    assert "this plugin is broken on purpose" in error
    assert error.endswith("pip uninstall pixmill-test-broken")
    assert "test-mirror" in registry.tools
    assert_builtins_intact(registry)


def test_an_entry_point_to_a_missing_module_says_how_to_remove_it(install: Any) -> None:
    install("pixmill-test-ghost", {"ghost": "pixmill_test_module_that_does_not_exist"})
    registry = load_registry()
    [error] = info(registry, "ghost").errors
    assert "ModuleNotFoundError" in error and error.endswith("pip uninstall pixmill-test-ghost")
    assert_builtins_intact(registry)


def test_two_packages_declaring_one_id_name_both_plugins_and_both_packages(
    install: Any,
) -> None:
    install("pixmill-test-pkg-b", {"shared-b": "pixmill_test_shared_b"})
    install("pixmill-test-pkg-a", {"shared-a": "pixmill_test_shared_a"})
    registry = load_registry()
    # Packages load in name order, so the same one wins on every machine.
    assert registry.tools["test-shared"].description == "from package a"
    assert info(registry, "shared-a").errors == []
    [error] = info(registry, "shared-b").errors
    assert (
        "tool 'test-shared' skipped: the id is already provided by plugin 'shared-a' "
        "(package pixmill-test-pkg-a); plugin 'shared-b' (package pixmill-test-pkg-b) "
        "declares it again" in error
    )


def test_two_packages_using_one_plugin_name_keep_the_first(install: Any) -> None:
    install("pixmill-test-pkg-a", {"same-name": "pixmill_test_shared_a"})
    install("pixmill-test-pkg-b", {"same-name": "pixmill_test_shared_b"})
    registry = load_registry()
    reports = [p for p in registry.plugins if p.name == "same-name"]
    assert [p.package for p in reports] == ["pixmill-test-pkg-a", "pixmill-test-pkg-b"]
    assert reports[0].loaded and reports[0].errors == []
    assert not reports[1].loaded and "registered twice" in reports[1].errors[0]
    assert registry.tools["test-shared"].description == "from package a"


def test_the_same_distribution_twice_on_the_path_is_loaded_once(install: Any) -> None:
    install("pixmill-test-good", {"good": "pixmill_test_good"})
    install("pixmill-test-good", {"good": "pixmill_test_good"})
    registry = load_registry()
    assert [p.package for p in registry.plugins if p.name == "good"] == ["pixmill-test-good"]
    assert registry.errors == []


def test_load_plugins_restricts_loading_and_never_imports_the_others(install: Any) -> None:
    install("pixmill-test-broken", {"broken": "pixmill_test_broken_import"})
    install("pixmill-test-good", {"good": "pixmill_test_good"})
    install("pixmill-test-dup", {"dup": "pixmill_test_duplicate"})
    registry = load_registry(load_plugins=["good", "essentials"])
    assert [p.name for p in registry.plugins] == ["essentials", "good"]
    assert registry.errors == []
    assert {"resize", "test-mirror"} <= set(registry.tools) and "crop" in registry.tools
    assert "pixmill_test_broken_import" not in sys.modules
    assert "pixmill_test_duplicate" not in sys.modules

    only_third_party = load_registry(load_plugins=["good"])
    assert "resize" not in only_third_party.tools and "test-mirror" in only_third_party.tools
    with pytest.raises(NotFoundError):
        only_third_party.tool("resize")
    assert load_registry(load_plugins=[]).plugins == []


def test_pixmill_load_plugins_from_the_environment_restricts_loading(install: Any) -> None:
    install("pixmill-test-broken", {"broken": "pixmill_test_broken_import"})
    install("pixmill-test-dup", {"dup": "pixmill_test_duplicate"})
    config = Config.from_env({"PIXMILL_LOAD_PLUGINS": " essentials , dup "})
    assert config.load_plugins == ("essentials", "dup")
    registry = load_registry(load_plugins=config.load_plugins)
    assert [p.name for p in registry.plugins] == ["essentials", "dup"]
    assert "tool 'resize' skipped" in info(registry, "dup").errors[0]
    assert "pixmill_test_broken_import" not in sys.modules


def test_installed_plugins_show_up_in_the_real_catalogue(install: Any) -> None:
    install("pixmill-test-good", {"good": "pixmill_test_good"})
    registry = load_registry()
    entry = registry.catalogue_entry("test-mirror", "image")
    assert entry.id == "test-mirror"
    keys = [(item.section, item.id) for item in registry.catalogue()]
    ids = [item_id for _, item_id in keys]
    assert keys == sorted(keys) and "test-mean-color" in ids and "resize" in ids
    outcome = execute(entry, {"file": [(images.jpeg(32, 24), "x.jpg")]}, {}, limits=LIMITS)
    assert outcome.format is not None and outcome.format.name == "jpg"


def test_an_installed_plugin_for_another_api_is_refused_before_any_hook_runs(
    install: Any, tmp_path: Path
) -> None:
    # Written next to the installed distribution: a package whose import succeeds but whose
    # declared plugin API this pixmill does not provide.
    (tmp_path / "site-packages" / "pixmill_test_future_api.py").write_text(
        "from pixmill import Settings, Tool, hookimpl\n"
        "PIXMILL_PLUGIN_API = 2\n"
        "@hookimpl\n"
        "def pixmill_tools():\n"
        "    raise AssertionError('the hook of an incompatible plugin was called')\n"
    )
    install("pixmill-test-future", {"future": "pixmill_test_future_api"}, version="3.0")
    install("pixmill-test-good", {"good": "pixmill_test_good"})
    registry = load_registry()
    report = info(registry, "future")
    assert not report.loaded and report.api_version == 2 and report.hooks == []
    assert report.errors == [
        "targets plugin API 2, this pixmill provides 1: upgrade pixmill (pip install -U "
        "pixmill) or install a release of pixmill-test-future for API 1; none of its tools, "
        "extractors or sources were loaded"
    ]
    assert report.to_dict()["pluginApi"] == 2
    assert "test-mirror" in registry.tools
    assert_builtins_intact(registry)
