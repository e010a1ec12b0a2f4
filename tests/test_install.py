"""Installing plugins, the plugin API version check, `--plugins-dir`, and plugin tracing.

`pixmill install` / `uninstall` run for real: pip installs a throwaway plugin package into a
throwaway virtual environment (never into the shared `.venv`: other tests would see it). That
environment sees the dev environment's packages (pixmill, pip, setuptools) through a `.pth`
file, and pip runs with `--no-index --no-deps --no-build-isolation`, so it works offline.

The plugins-dir modules are written per test under tmp_path: a good one, a package, a broken
one, one declaring a built-in's id, one targeting a future plugin API.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

import pixmill
from pixmill.cli import main
from pixmill.core.config import Config
from pixmill.core.plugin_host import (
    PLUGINS_DIR_PACKAGE,
    Registry,
    get_plugin_manager,
    load_registry,
)
from pixmill.core.worker import build_state
from pixmill.server.app import create_app
from pixmill.server.supervisor import child_environment
from pixmill.testing import images
from pixmill.testing.venvs import overlay_venv

PIP_OFFLINE = ["--no-index", "--no-deps", "--no-build-isolation"]
# pip builds and installs a tiny package in a few seconds; this bounds a hung one.
SUBPROCESS_TIMEOUT_S = 180

GOOD_MODULE = """
from marshmallow import fields
from PIL import ImageOps
from pixmill import ImageResult, Settings, Tool, hookimpl

PIXMILL_PLUGIN_API = 1

class InvertSettings(Settings):
    keep_alpha = fields.Boolean(load_default=True)

def run(ctx, inputs, settings):
    return ImageResult(ImageOps.invert(inputs.file.open().convert("RGB")))

@hookimpl
def pixmill_tools():
    return [Tool(id="dir-invert", name="Invert (dir)", description="Inverts colours.",
                 settings=InvertSettings, run=run)]
"""

PACKAGE_INIT = """
from pixmill import Tool, hookimpl
from .helpers import flip, FlipSettings

@hookimpl
def pixmill_tools():
    return [Tool(id="dir-flip", name="Flip (dir)", description="Flips top to bottom.",
                 settings=FlipSettings, run=flip)]
"""

PACKAGE_HELPERS = """
from PIL import ImageOps
from pixmill import ImageResult, Settings

class FlipSettings(Settings):
    pass

def flip(ctx, inputs, settings):
    return ImageResult(ImageOps.flip(inputs.file.open()))
"""

BROKEN_MODULE = "import pixmill\nraise RuntimeError('half-written on purpose')\n"

DUPLICATE_MODULE = """
from pixmill import ImageResult, Settings, Tool, hookimpl

@hookimpl
def pixmill_tools():
    return [Tool(id="resize", name="Impostor", description="Not the real resize.",
                 settings=Settings, run=lambda ctx, inputs, settings: None)]
"""

FUTURE_API_MODULE = """
from pixmill import ImageResult, Settings, Tool, hookimpl

PIXMILL_PLUGIN_API = 2
CALLED = []

@hookimpl
def pixmill_tools():
    CALLED.append("pixmill_tools")
    return [Tool(id="from-the-future", name="Future", description="Needs API 2.",
                 settings=Settings, run=lambda ctx, inputs, settings: None)]
"""

NOT_A_VERSION_MODULE = """
from pixmill import hookimpl

PIXMILL_PLUGIN_API = "one"

@hookimpl
def pixmill_tools():
    return []
"""


def write_plugins_dir(root: Path) -> Path:
    """A plugins dir holding one of each kind of module, plus files that are not plugins."""
    directory = root / "plugins"
    directory.mkdir()
    (directory / "good_invert.py").write_text(GOOD_MODULE)
    package = directory / "flipper"
    package.mkdir()
    (package / "__init__.py").write_text(PACKAGE_INIT)
    (package / "helpers.py").write_text(PACKAGE_HELPERS)
    (directory / "half_written.py").write_text(BROKEN_MODULE)
    (directory / "impostor.py").write_text(DUPLICATE_MODULE)
    (directory / "future.py").write_text(FUTURE_API_MODULE)
    (directory / "not_a_version.py").write_text(NOT_A_VERSION_MODULE)
    (directory / "_private.py").write_text(BROKEN_MODULE)  # leading _: not a plugin
    (directory / "notes.txt").write_text("not a plugin")
    (directory / "empty_dir").mkdir()  # no __init__.py: not a plugin
    return directory


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    return write_plugins_dir(tmp_path)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No plugins dir, tracing or plugin restriction from the caller's environment; the CLI's
    `--plugins-dir` sets PIXMILL_PLUGINS_DIR, which monkeypatch then restores."""
    for name in ("PIXMILL_PLUGINS_DIR", "PIXMILL_TRACE_PLUGINS", "PIXMILL_LOAD_PLUGINS"):
        # setenv first: monkeypatch only restores (here: removes) a variable it has recorded,
        # and `delenv` of an absent one records nothing.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def report(registry: Registry, name: str) -> Any:
    [match] = [info for info in registry.plugins if info.name == name]
    return match


# --- the plugin API version ----------------------------------------------------------------


def test_the_plugin_api_version_is_public_and_an_integer() -> None:
    assert isinstance(pixmill.PLUGIN_API_VERSION, int) and pixmill.PLUGIN_API_VERSION >= 1
    assert "PLUGIN_API_VERSION" in pixmill.__all__


def test_a_plugin_for_a_newer_api_is_refused_whole_and_its_hooks_never_run(
    plugins_dir: Path,
) -> None:
    registry = load_registry(entry_points=False, plugins_dir=plugins_dir)
    future = report(registry, "future")
    assert not future.loaded and future.api_version == 2
    assert future.hooks == [] and future.tools == []
    [error] = future.errors
    assert error.startswith(
        f"targets plugin API 2, this pixmill provides {pixmill.PLUGIN_API_VERSION}: "
        "upgrade pixmill (pip install -U pixmill) or install a release of future for API 1"
    )
    assert "from-the-future" not in registry.tools
    module = sys.modules["_pixmill_plugins_dir.future"]
    assert module.CALLED == []  # refused before any hook was called


def test_a_plugin_for_an_older_api_is_told_to_upgrade_the_plugin() -> None:
    class OldPlugin:
        PIXMILL_PLUGIN_API = 0

        @pixmill.hookimpl
        def pixmill_tools(self) -> list[Any]:
            raise AssertionError("an incompatible plugin's hook was called")

    registry = load_registry(entry_points=False, extra_plugins=[OldPlugin()])
    [error] = report(registry, "OldPlugin").errors
    assert "targets plugin API 0, this pixmill provides 1: install a release of" in error
    assert "for API 1" in error


def test_an_api_declaration_that_is_not_an_integer_is_refused(plugins_dir: Path) -> None:
    registry = load_registry(entry_points=False, plugins_dir=plugins_dir)
    [error] = report(registry, "not_a_version").errors
    assert error == (
        "PIXMILL_PLUGIN_API = 'one' is not a plugin API version: set it to an integer, "
        "1 for this pixmill"
    )


def test_an_undeclared_api_is_taken_as_the_current_one(plugins_dir: Path) -> None:
    registry = load_registry(plugins_dir=plugins_dir)
    flipper = report(registry, "flipper")  # declares nothing
    assert flipper.loaded and flipper.errors == [] and flipper.api_version is None
    assert report(registry, "good_invert").api_version == 1
    assert report(registry, "good_invert").to_dict()["pluginApi"] == 1


# --- --plugins-dir -------------------------------------------------------------------------


def test_a_plugins_dir_loads_modules_and_packages_and_reports_each_problem(
    plugins_dir: Path,
) -> None:
    registry = load_registry(plugins_dir=plugins_dir)
    from_dir = [info for info in registry.plugins if info.package == PLUGINS_DIR_PACKAGE]
    assert sorted(info.name for info in from_dir) == [
        "flipper",
        "future",
        "good_invert",
        "half_written",
        "impostor",
        "not_a_version",
    ]
    assert report(registry, "good_invert").tools == ["dir-invert"]
    assert report(registry, "flipper").tools == ["dir-flip"]
    [broken] = report(registry, "half_written").errors
    assert broken.startswith(f"failed to import {plugins_dir / 'half_written.py'}: RuntimeError")
    assert "Fix it, or move it out of the plugins dir" in broken
    [duplicate] = report(registry, "impostor").errors
    assert "tool 'resize' skipped: the id is already provided by plugin 'essentials'" in duplicate
    # Built-ins load first and keep their ids.
    assert registry.tools["resize"].name != "Impostor"
    assert registry.owner(registry.tools["resize"]) == "essentials"


def test_a_plugins_dir_tool_runs_through_the_server_beside_the_others(
    plugins_dir: Path, tmp_path: Path
) -> None:
    app = create_app(Config(data_dir=tmp_path / "data", plugins_dir=plugins_dir))
    client = app.test_client()
    body = client.get("/api/v1/plugins").get_json()
    by_name = {plugin["name"]: plugin for plugin in body["plugins"]}
    assert by_name["good_invert"]["package"] == PLUGINS_DIR_PACKAGE
    assert by_name["good_invert"]["pluginApi"] == 1 and by_name["good_invert"]["loaded"]
    assert by_name["future"]["pluginApi"] == 2 and not by_name["future"]["loaded"]
    assert {"plugin": "future", "error": by_name["future"]["errors"][0]} in body["errors"]
    assert by_name["essentials"]["errors"] == []

    ids = {tool["id"] for tool in client.get("/api/v1/tools").get_json()["tools"]}
    assert {"dir-invert", "dir-flip", "resize"} <= ids
    assert "from-the-future" not in ids

    source = images.png(16, 8, alpha=False)
    response = client.post(
        "/api/v1/tools/image/dir-invert", data={"file": (io.BytesIO(source), "a.png")}
    )
    assert response.status_code == 200, response.get_json()
    result = Image.open(io.BytesIO(client.get(response.get_json()["downloadUrl"]).data))
    original_pixel = Image.open(io.BytesIO(source)).convert("RGB").getpixel((3, 2))
    assert isinstance(original_pixel, tuple)
    inverted = tuple(255 - channel for channel in original_pixel)
    assert result.convert("RGB").getpixel((3, 2)) == inverted
    missing = client.post(
        "/api/v1/tools/image/from-the-future", data={"file": (io.BytesIO(source), "a.png")}
    )
    assert missing.status_code == 404
    assert missing.get_json()["code"] == "TOOL_NOT_FOUND"


def test_the_plugins_dir_reaches_child_processes_and_queue_workers(
    plugins_dir: Path, tmp_path: Path
) -> None:
    config = Config(data_dir=tmp_path / "data", plugins_dir=plugins_dir)
    env = child_environment(config, base={})
    assert env["PIXMILL_PLUGINS_DIR"] == str(plugins_dir.absolute())
    rebuilt = Config.from_env(env)
    assert rebuilt.plugins_dir == plugins_dir
    state = build_state(rebuilt, extra_plugins=[])
    try:
        assert "dir-invert" in state.registry.tools and "dir-flip" in state.registry.tools
    finally:
        assert state.database is not None
        state.database.dispose()


def test_a_bad_plugins_dir_setting_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"PIXMILL_PLUGINS_DIR .*missing is not a directory"):
        Config.from_env({"PIXMILL_PLUGINS_DIR": str(tmp_path / "missing")})
    assert Config.from_env({"PIXMILL_PLUGINS_DIR": ""}).plugins_dir is None


def test_cli_commands_take_plugins_dir(plugins_dir: Path, tmp_path: Path, clean_env: None) -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["tools", "--plugins-dir", str(plugins_dir)])
    assert listed.exit_code == 0, listed.output
    assert "dir-invert" in listed.stdout and "dir-flip" in listed.stdout
    assert "warning: plugin half_written: failed to import" in listed.stderr
    assert "warning: plugin future: targets plugin API 2" in listed.stderr

    plugins = runner.invoke(main, ["plugins", "--json", "--plugins-dir", str(plugins_dir)])
    assert plugins.exit_code == 0
    reports = {entry["name"]: entry for entry in json.loads(plugins.stdout)}
    assert reports["flipper"]["tools"] == ["dir-flip"]

    source = tmp_path / "in.png"
    source.write_bytes(images.png(12, 10))
    out = tmp_path / "out.png"
    ran = runner.invoke(
        main, ["run", "dir-flip", str(source), "-o", str(out), "--plugins-dir", str(plugins_dir)]
    )
    assert ran.exit_code == 0, ran.output
    assert Image.open(out).size == (12, 10)

    missing = runner.invoke(main, ["tools", "--plugins-dir", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "'--plugins-dir': Directory" in missing.stderr and "does not exist" in missing.stderr


# --- tracing ---------------------------------------------------------------------------------


def test_trace_prints_each_hook_call_and_plugin_run_with_timing(
    plugins_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(images.png(12, 10))
    command = [sys.executable, "-m", "pixmill", "run", "dir-invert", str(source)]
    command += ["-o", str(tmp_path / "out.png"), "--plugins-dir", str(plugins_dir)]
    env = {**os.environ, "PIXMILL_TRACE_PLUGINS": "1"}
    env.pop("PIXMILL_LOAD_PLUGINS", None)
    traced = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=SUBPROCESS_TIMEOUT_S
    )
    assert traced.returncode == 0, traced.stderr
    trace = [line for line in traced.stderr.splitlines() if line.startswith("pixmill trace: ")]
    assert any(
        line.startswith("pixmill trace: pixmill_tools() of plugin essentials took ")
        and line.endswith(" ms")
        for line in trace
    ), trace
    assert any("pixmill_tools() of plugin good_invert took" in line for line in trace)
    assert any(line.startswith("pixmill trace: run of dir-invert took ") for line in trace)
    # The refused plugin's hook is never called, so never traced.
    assert not any("of plugin future" in line for line in trace)

    env["PIXMILL_TRACE_PLUGINS"] = "0"
    quiet = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=SUBPROCESS_TIMEOUT_S
    )
    assert quiet.returncode == 0 and "pixmill trace:" not in quiet.stderr


def test_trace_follows_hooks_called_through_pluggy_and_failures(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Raising:
        @pixmill.hookimpl
        def pixmill_sources(self) -> list[Any]:
            raise RuntimeError("boom")

    monkeypatch.setenv("PIXMILL_TRACE_PLUGINS", "1")
    pm = get_plugin_manager()
    pm.register(Raising(), name="raising")
    with pytest.raises(RuntimeError):
        pm.hook.pixmill_sources()
    registry = load_registry(entry_points=False, extra_plugins=[Raising()])
    assert "pixmill_sources() raised RuntimeError: boom" in registry.errors[0][1]
    err = capsys.readouterr().err
    assert "pixmill trace: calling pixmill_sources() on raising" in err
    assert "pixmill trace: pixmill_sources raised" in err
    assert "pixmill trace: pixmill_sources() of plugin Raising raised RuntimeError after" in err


# --- install and uninstall, for real, in a throwaway virtual environment ----------------------

PLUGIN_SETUP_CFG = """
[metadata]
name = pixmill-hello-test
version = {version}

[options]
py_modules = pixmill_hello_test

[options.entry_points]
pixmill =
    hello = pixmill_hello_test
"""

PLUGIN_MODULE = """
from PIL import ImageOps
from pixmill import ImageResult, Settings, Tool, hookimpl

PIXMILL_PLUGIN_API = {api}

@hookimpl
def pixmill_tools():
    return [Tool(id="hello-mirror", name="Hello mirror", description="Mirrors the image.",
                 settings=Settings,
                 run=lambda ctx, inputs, settings: ImageResult(
                     ImageOps.mirror(inputs.file.open())))]
"""


def make_plugin_package(root: Path, version: str, api: int = 1) -> Path:
    package = root / f"pixmill-hello-test-{version}-api{api}"
    package.mkdir()
    (package / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    (package / "setup.cfg").write_text(PLUGIN_SETUP_CFG.format(version=version))
    (package / "pixmill_hello_test.py").write_text(PLUGIN_MODULE.format(api=api))
    return package


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment that also sees this one's packages (pixmill among them)
    after its own, so whatever pip installs there stays there."""
    return overlay_venv(tmp_path_factory.mktemp("venv"), timeout=SUBPROCESS_TIMEOUT_S)


def pixmill_in(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXMILL_")}
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(
        [str(python), "-m", "pixmill", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def tool_ids(python: Path) -> set[str]:
    listed = pixmill_in(python, "tools", "--json")
    assert listed.returncode == 0, listed.stderr
    return {entry["id"] for entry in json.loads(listed.stdout)}


def test_install_upgrade_and_uninstall_a_plugin_package(venv_python: Path, tmp_path: Path) -> None:
    first = make_plugin_package(tmp_path, "0.3.1")
    installed = pixmill_in(venv_python, "install", *PIP_OFFLINE, str(first))
    assert installed.returncode == 0, installed.stderr
    lines = installed.stdout.splitlines()
    assert lines[0] == "added plugin hello (pixmill-hello-test 0.3.1): tools hello-mirror"
    assert "restart it to pick up the change" in lines[-1]
    assert "Successfully installed pixmill-hello-test-0.3.1" in installed.stderr
    assert "hello-mirror" in tool_ids(venv_python)
    # The shared dev environment never sees it.
    assert "hello-mirror" not in load_registry().tools

    second = make_plugin_package(tmp_path, "0.4.0")
    upgraded = pixmill_in(venv_python, "install", "-U", *PIP_OFFLINE, str(second))
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.splitlines()[0] == (
        "changed plugin hello (pixmill-hello-test 0.3.1 -> pixmill-hello-test 0.4.0): "
        "tools hello-mirror"
    )

    image = tmp_path / "in.png"
    image.write_bytes(images.png(10, 6))
    ran = pixmill_in(venv_python, "run", "hello-mirror", str(image), "-o", str(tmp_path / "o.png"))
    assert ran.returncode == 0, ran.stderr
    assert Image.open(tmp_path / "o.png").size == (10, 6)

    # By plugin name: pixmill finds the package that provides it.
    removed = pixmill_in(venv_python, "uninstall", "hello")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines()[0] == (
        "removed plugin hello (pixmill-hello-test 0.4.0): tools hello-mirror"
    )
    assert "hello-mirror" not in tool_ids(venv_python)


def test_installing_a_plugin_for_another_api_says_so_and_the_rest_still_works(
    venv_python: Path, tmp_path: Path
) -> None:
    package = make_plugin_package(tmp_path, "9.0.0", api=2)
    installed = pixmill_in(venv_python, "install", *PIP_OFFLINE, str(package))
    try:
        assert installed.returncode == 0, installed.stderr
        added, error = installed.stdout.splitlines()[:2]
        assert added == "added plugin hello (pixmill-hello-test 9.0.0): nothing"
        assert error.startswith(
            "  ERROR hello: targets plugin API 2, this pixmill provides 1: upgrade pixmill"
        )
        listed = pixmill_in(venv_python, "plugins")
        assert listed.returncode == 0
        assert "ERROR hello: targets plugin API 2" in listed.stdout
        assert {"resize", "crop"} <= tool_ids(venv_python)
    finally:
        pixmill_in(venv_python, "uninstall", "pixmill-hello-test")
    assert "hello" not in {
        p["name"] for p in json.loads(pixmill_in(venv_python, "plugins", "--json").stdout)
    }


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["install"], 2, "name at least one package, path or wheel to install"),
        (["install", "--no-deps"], 2, "name at least one package, path or wheel to install"),
        (["uninstall"], 2, "name at least one plugin package to uninstall"),
        (["uninstall", "pixmill"], 2, "pixmill will not uninstall itself"),
        (["uninstall", "Pixmill"], 2, "pixmill will not uninstall itself"),
        (["uninstall", "essentials"], 2, "essentials is a built-in plugin of pixmill"),
        (["uninstall", "click"], 2, "click provides no pixmill plugin"),
        (["uninstall", "no-such-plugin"], 2, "no-such-plugin is not installed"),
    ],
)
def test_install_and_uninstall_refuse_bad_requests(
    args: list[str], exit_code: int, message: str, clean_env: None
) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == exit_code, result.output
    assert message in result.stderr


def test_a_pip_failure_is_exit_1_with_pips_message(venv_python: Path, tmp_path: Path) -> None:
    failed = pixmill_in(venv_python, "install", *PIP_OFFLINE, str(tmp_path / "not-a-package"))
    assert failed.returncode == 1
    assert "ERROR:" in failed.stderr  # pip's own message, passed through
    assert "error: pip install failed (exit 1); its message is above" in failed.stderr
    assert failed.stdout == ""
