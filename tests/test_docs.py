"""Docs cannot rot: examples in the docs are the tested files, every hook is documented.

Every Python block in the plugin pages below is the whole text of a file in docs/examples/,
and every such file is loaded and run here, with the behaviour its page describes checked.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import json
import logging
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps
from werkzeug.routing import MapAdapter

import pixmill.cli as cli
import pixmill.cli.common as cli_common
from pixmill import PLUGIN_API_VERSION
from pixmill.core import defaults, hookspecs
from pixmill.core.config import Config
from pixmill.core.contracts import ModelCache
from pixmill.core.errors import CancelledError, SettingsError
from pixmill.core.execution import execute
from pixmill.core.imageio import ImageLimits
from pixmill.core.plugin_host import Registry, load_registry
from pixmill.core.settings import to_json_schema, validate_settings
from pixmill.server.app import create_app
from pixmill.testing import images
from pixmill.testing.conformance import check_plugin

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PLUGIN_DOCS = DOCS / "plugins"
EXAMPLES = DOCS / "examples"
EXAMPLE_PACKAGE = REPO / "examples" / "pixmill-example"
SCAFFOLD_TEMPLATE = REPO / "pixmill" / "scaffold" / "template"
# Every page of docs/plugins/: a new page's code blocks are checked from the day it is added.
PLUGIN_PAGES = sorted(page.name for page in PLUGIN_DOCS.glob("*.md"))
# Every example file and the page that shows it; each one is run by a test below.
EXAMPLE_PAGES = {
    "invert_plugin.py": "index.md",
    "glow_plugin.py": "context.md",
    "levels_plugin.py": "settings.md",
    "test_sepia.py": "testing.md",
    "test_sepia_conforms.py": "testing.md",
    "api_version_plugin.py": "versioning.md",
}
# Blocks showing output (JSON, text, a file tree), by page and first line, and the test that
# compares each with what pixmill really prints: a block missing here fails
# test_code_blocks_are_tested_files, so a new one cannot go unchecked.
TREE = "pixmill-sepia/"
CONFORMANCE_FAILURE = (
    "pixmill conformance check of pixmill_sepia: 1 tool(s), 0 extractor(s), 0 source(s)"
)
INSTALLED = "added plugin hello (pixmill-hello 0.3.1): tools hello-mirror"
REPORT = '{"name": "hello", "package": "pixmill-hello", "version": "0.3.1", "builtin": false,'
TABLE = "NAME        PACKAGE          VERSION  API  STATUS  HOOKS   PROVIDES"
TRACE = "$ PIXMILL_TRACE_PLUGINS=1 pixmill run hello-mirror photo.jpg"
API_MISMATCH = (
    "targets plugin API 2, this pixmill provides 1: upgrade pixmill (pip install -U pixmill) or"
)
SETTINGS_ERROR = (
    '{"error": "invalid settings: blackPoint: must be below whitePoint", '
    '"code": "VALIDATION_ERROR",'
)
OUTPUT_BLOCKS = {
    ("settings.md", SETTINGS_ERROR): (
        "test_levels_over_rest_answers_the_documented_error_and_is_in_openapi"
    ),
    ("tutorial.md", TREE): "test_the_tutorials_file_tree_is_what_plugin_new_writes",
    ("testing.md", CONFORMANCE_FAILURE): (
        "test_the_documented_conformance_failure_is_the_real_report"
    ),
    ("installing.md", INSTALLED): "test_install_prints_the_documented_lines",
    ("installing.md", REPORT): "test_the_documented_plugin_report_is_the_real_one",
    ("installing.md", TABLE): "test_the_plugins_table_is_what_pixmill_plugins_prints",
    ("installing.md", TRACE): "test_the_trace_shown_is_the_real_trace",
    ("versioning.md", API_MISMATCH): "test_the_documented_api_mismatch_is_the_real_refusal",
}
# Programs other than pixmill that shell blocks may run (pip, pytest, the build tools).
OTHER_PROGRAMS = {"pip", "pytest", "python", "twine"}
LIMITS = ImageLimits(max_pixels=50_000_000, max_frames=100)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def load_example(filename: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(Path(filename).stem, EXAMPLES / filename)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_registry(filename: str) -> Registry:
    registry = load_registry(extra_plugins=[load_example(filename)], entry_points=False)
    assert registry.errors == []
    return registry


def code_blocks(page: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer((PLUGIN_DOCS / page).read_text())]


# --- the pages -------------------------------------------------------------------------------


def test_every_hook_is_documented() -> None:
    text = (PLUGIN_DOCS / "reference.md").read_text()
    hooks = [
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("pixmill_")
    ]
    assert hooks
    for name in hooks:
        assert f"| `{name}` |" in text, f"hook {name} is not in docs/plugins/reference.md"


def test_the_old_single_page_is_gone_and_nothing_links_to_it() -> None:
    assert not (DOCS / "plugins.md").exists()
    pages = [REPO / "README.md", *DOCS.glob("*.md"), *PLUGIN_DOCS.glob("*.md")]
    stale = [str(p.relative_to(REPO)) for p in pages if "plugins.md" in p.read_text()]
    assert stale == [], "docs/plugins.md moved to docs/plugins/index.md"


@pytest.mark.parametrize("page", PLUGIN_PAGES)
def test_relative_links_resolve(page: str) -> None:
    text = (PLUGIN_DOCS / page).read_text()
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
    missing = [t for t in targets if not (PLUGIN_DOCS / t).exists()]
    assert missing == [], f"docs/plugins/{page} links to missing {missing}"


def test_the_index_links_every_plugin_page() -> None:
    index = (PLUGIN_DOCS / "index.md").read_text()
    for page in sorted(PLUGIN_DOCS.glob("*.md")):
        if page.name != "index.md":
            assert f"]({page.name})" in index, f"docs/plugins/index.md does not link {page.name}"


def output_block(page: str, first_line: str) -> str:
    """The output block of `page` starting with `first_line` (a key of OUTPUT_BLOCKS)."""
    assert (page, first_line) in OUTPUT_BLOCKS
    [body] = [body for _, body in code_blocks(page) if body.splitlines()[0] == first_line]
    return body


def shell_commands(body: str) -> Iterator[list[str]]:
    """Each command of a shell block as words: continuations joined, comments, a `$ ` prompt,
    leading VAR=value assignments and a trailing `&` dropped."""
    for line in body.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["$"]:
            words = words[1:]
        while words and re.match(r"^[A-Z_]+=", words[0]):
            words = words[1:]
        if words[-1:] == ["&"]:
            words = words[:-1]
        if words:
            yield words


def parse_pixmill(args: list[str]) -> dict[str, Any]:
    """Let click's parser read `pixmill ARGS` down to the subcommand and return its options:
    an unknown command or option raises. Only parsing: no value is converted nor callback run,
    so the files a command names need not exist and no option has side effects."""
    command: click.Command = cli.main
    ctx: click.Context | None = None
    name = "pixmill"
    while True:
        ctx = click.Context(command, info_name=name, parent=ctx, **command.context_settings)
        options, rest, _ = command.make_parser(ctx).parse_args(args=list(args))
        if not isinstance(command, click.Group) or not rest:
            return options
        # A group stops at its first positional word: the subcommand, then its own words.
        subcommand = command.get_command(ctx, rest[0])
        assert subcommand is not None, f"`pixmill {' '.join(args)}`: no command {rest[0]!r}"
        command, name, args = subcommand, rest[0], rest[1:]


def check_pixmill_command(words: list[str]) -> dict[str, Any]:
    assert words[0] == "pixmill", words
    try:
        return parse_pixmill(words[1:])
    except click.UsageError as exc:
        raise AssertionError(f"`{shlex.join(words)}`: {exc.format_message()}") from exc


def check_curl_command(words: list[str], routes: MapAdapter) -> None:
    """The URL is one the server answers, on the default address, for the method used."""
    [url] = [word for word in words if word.startswith("http")]
    match = re.fullmatch(r"http://([^/:]+):(\d+)(/[^?]*)(?:\?.*)?", url)
    assert match, url
    assert (match[1], int(match[2])) == (defaults.HOST, defaults.PORT), url
    method = "POST" if {"-F", "--form", "-d", "--data"} & set(words) else "GET"
    try:
        routes.match(match[3], method=method)
    except Exception as exc:
        raise AssertionError(f"{method} {match[3]} is not a route of pixmill: {exc!r}") from exc


def check_shell_block(body: str, routes: MapAdapter) -> None:
    for words in shell_commands(body):
        if words[0] == "pixmill":
            check_pixmill_command(words)
        elif words[0] == "curl":
            check_curl_command(words, routes)
        else:
            assert words[0] in OTHER_PROGRAMS, f"unchecked command {shlex.join(words)}"


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> MapAdapter:
    """The URL map of a pixmill app (the routes do not depend on the plugins loaded)."""
    app = create_app(Config(data_dir=tmp_path_factory.mktemp("data")), registry=Registry())
    return app.url_map.bind("localhost")


@pytest.mark.parametrize("page", PLUGIN_PAGES)
def test_code_blocks_are_tested_files(page: str, routes: MapAdapter) -> None:
    """A Python block is a whole file in docs/examples/ that a test here runs; a TOML or INI
    block is part of the real file it shows (the example package, the scaffold's templates);
    a shell block names only commands, options and routes that exist; an output block is
    compared with the real output by the test OUTPUT_BLOCKS names."""
    configs = [
        (EXAMPLE_PACKAGE / "pyproject.toml").read_text(),
        *(path.read_text() for path in SCAFFOLD_TEMPLATE.glob("*.tmpl")),
    ]
    shown = {name: (EXAMPLES / name).read_text() for name in EXAMPLE_PAGES}
    for language, body in code_blocks(page):
        if language == "python":
            matches = [name for name, text in shown.items() if text == body]
            assert matches, f"a Python block in {page} is not a file of docs/examples/"
            assert EXAMPLE_PAGES[matches[0]] == page, f"{matches[0]} belongs to another page"
        elif language in ("toml", "ini", "cfg"):
            assert any(body in text for text in configs), f"a {language} block in {page}"
        elif language == "sh":
            check_shell_block(body, routes)
        else:
            key = (page, body.splitlines()[0])
            assert key in OUTPUT_BLOCKS, f"{page} has an unchecked {language or 'plain'} block"
            assert OUTPUT_BLOCKS[key] in globals(), OUTPUT_BLOCKS[key]


def test_the_shell_check_refuses_what_does_not_exist(routes: MapAdapter) -> None:
    with pytest.raises(AssertionError, match="no command 'fly'"):
        check_shell_block("pixmill fly away", routes)
    with pytest.raises(AssertionError, match="--colour"):
        check_shell_block("pixmill run sepia photo.jpg --colour red", routes)
    with pytest.raises(AssertionError, match="not a route"):
        check_shell_block("curl http://127.0.0.1:8731/api/v1/tool/sepia", routes)
    with pytest.raises(AssertionError, match="not a route"):
        check_shell_block("curl -F file=@a.jpg http://127.0.0.1:8731/api/v1/plugins", routes)
    with pytest.raises(AssertionError, match="unchecked command"):
        check_shell_block("rm -rf /", routes)
    check_shell_block("PIXMILL_PLUGINS_DIR=./x pixmill serve --port 1 &  # a comment", routes)


def test_every_example_file_is_shown_and_tested() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(EXAMPLE_PAGES)
    for name, page in EXAMPLE_PAGES.items():
        source = (EXAMPLES / name).read_text()
        assert f"```python\n{source}```" in (PLUGIN_DOCS / page).read_text(), name


# --- invert_plugin.py (index.md) -------------------------------------------------------------


def test_invert_example_runs() -> None:
    registry = example_registry("invert_plugin.py")
    white = images.tiny("PNG")
    outcome = execute(
        registry.tool("invert"),
        {"file": [(white, "red.png")]},
        {"strength": 100},
        limits=LIMITS,
    )
    assert outcome.filename == "red.png"
    assert outcome.data is not None
    assert Image.open(io.BytesIO(outcome.data)).convert("RGB").getpixel((0, 0)) == (0, 255, 255)


def test_the_registration_snippet_is_the_example_packages_entry_point() -> None:
    [(_, snippet)] = [b for b in code_blocks("index.md") if b[0] == "toml"]
    assert "[project.entry-points.pixmill]" in snippet
    assert 'example = "pixmill_example"' in snippet


# --- glow_plugin.py (context.md) -------------------------------------------------------------


def run_glow(
    passes: int = 3,
    models: ModelCache | None = None,
    progress: list[tuple[float, str | None]] | None = None,
    cancel_after: int | None = None,
) -> Any:
    tool = example_registry("glow_plugin.py").tool("glow")
    seen = progress if progress is not None else []

    def on_progress(fraction: float, message: str | None) -> None:
        seen.append((fraction, message))

    def is_cancelled() -> bool:
        return cancel_after is not None and len(seen) >= cancel_after

    return execute(
        tool,
        {"file": [(images.jpeg(96, 64), "photo.jpg")]},
        {"passes": passes},
        limits=LIMITS,
        models=models,
        on_progress=on_progress,
        is_cancelled=is_cancelled,
    )


def test_glow_reports_progress_per_pass_and_brightens() -> None:
    progress: list[tuple[float, str | None]] = []
    outcome = run_glow(passes=4, progress=progress)
    assert [fraction for fraction, _ in progress] == [0.25, 0.5, 0.75, 1.0]
    assert progress[-1][1] == "blur pass 4 of 4"
    before = images.decode(images.jpeg(96, 64)).convert("L")
    after = images.decode(outcome).convert("L")
    assert after.size == before.size
    assert after.histogram() != before.histogram()
    assert sum(after.tobytes()) > sum(before.tobytes())  # screening only ever lightens


def test_glow_stops_between_passes_when_cancelled() -> None:
    progress: list[tuple[float, str | None]] = []
    with pytest.raises(CancelledError) as raised:
        run_glow(passes=5, progress=progress, cancel_after=2)
    assert raised.value.code == "CANCELLED"
    assert len(progress) == 2


def test_glow_loads_its_filter_once_per_process() -> None:
    models = ModelCache()
    run_glow(models=models)
    assert "glow-filter" in models
    cached = models.get("glow-filter", lambda: pytest.fail("loaded a second time"))
    run_glow(models=models)
    assert models.get("glow-filter", lambda: pytest.fail("loaded a second time")) is cached


def test_glow_temp_dir_is_removed_after_the_call(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="pixmill.plugin.glow"):
        run_glow(passes=1)
    [record] = [r for r in caplog.records if r.name == "pixmill.plugin.glow"]
    scratch = Path(str(record.args[0] if isinstance(record.args, tuple) else ""))
    assert scratch.name == "halo.png"
    assert not scratch.parent.exists()


# --- levels_plugin.py (settings.md) ----------------------------------------------------------


def levels_schema() -> Any:
    return example_registry("levels_plugin.py").tool("levels").settings


def test_levels_schema_becomes_the_documented_json_schema() -> None:
    schema = to_json_schema(levels_schema())
    props = schema["properties"]
    assert schema["additionalProperties"] is False
    assert list(props) == ["blackPoint", "whitePoint", "channel", "tint"]
    assert (props["blackPoint"]["minimum"], props["blackPoint"]["maximum"]) == (0, 254)
    assert props["blackPoint"]["default"] == 0 and props["whitePoint"]["default"] == 255
    assert props["channel"]["enum"] == ["all", "red", "green", "blue"]
    assert props["tint"]["type"] == ["string", "null"] and "pattern" in props["tint"]
    table = (PLUGIN_DOCS / "settings.md").read_text()
    for name in props:
        assert f"| `{name}` |" in table


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"blackPoint": 200, "whitePoint": 100}, "blackPoint"),  # the cross-field rule
        ({"blackPoint": 2.5}, "blackPoint"),  # strict integers
        ({"whitePoint": "200"}, "whitePoint"),
        ({"channel": "alpha"}, "channel"),
        ({"tint": "#ff000080"}, "tint"),  # Color(alpha=False)
        ({"tint": "orange"}, "tint"),
        ({"black_point": 3}, "black_point"),  # snake_case is not a wire name
    ],
)
def test_levels_bad_settings_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as raised:
        validate_settings(levels_schema(), raw)
    assert raised.value.code == "VALIDATION_ERROR"
    assert list(raised.value.details["fields"]) == [field]


def test_levels_runs_with_defaults_and_with_settings() -> None:
    tool = example_registry("levels_plugin.py").tool("levels")
    gray = images.encode(Image.new("RGB", (4, 4), (100, 150, 200)))
    same = execute(tool, {"file": [(gray, "g.png")]}, {}, limits=LIMITS)
    assert images.decode(same).convert("RGB").getpixel((0, 0)) == (100, 150, 200)
    settings = {"blackPoint": 100, "whitePoint": 200, "channel": "red", "tint": "#f00"}
    done = execute(tool, {"file": [(gray, "g.png")]}, settings, limits=LIMITS)
    assert images.decode(done).convert("RGB").getpixel((0, 0)) == (0, 0, 0)


def test_levels_cli_accepts_wire_and_python_names_and_refuses_bad_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = levels_schema()
    raw = cli.parse_settings(schema, ["black_point=10", "whitePoint=200", "tint=#f80"])
    assert raw == {"blackPoint": 10, "whitePoint": 200, "tint": "#f80"}
    module = load_example("levels_plugin.py")
    monkeypatch.setattr(
        cli_common,
        "load_registry",
        lambda *_, **__: load_registry(extra_plugins=[module], entry_points=False),
    )
    monkeypatch.chdir(tmp_path)
    photo = tmp_path / "photo.png"
    photo.write_bytes(images.png(16, 12, alpha=False))
    ok = CliRunner().invoke(cli.main, ["run", "levels", str(photo), "--set", "black_point=10"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "photo-levels.png").exists()
    bad = ["run", "levels", str(tmp_path / "absent.png"), "--set", "blackPoint=200"]
    refused = CliRunner().invoke(cli.main, [*bad, "--set", "whitePoint=100"])
    assert refused.exit_code == 1
    assert "  blackPoint: must be below whitePoint" in refused.stderr.splitlines()
    assert "absent.png" not in refused.stderr  # settings are checked before any input is read


def test_levels_over_rest_answers_the_documented_error_and_is_in_openapi(
    tmp_path: Path,
) -> None:
    registry = example_registry("levels_plugin.py")
    client = create_app(Config(data_dir=tmp_path / "data"), registry=registry).test_client()
    settings = json.dumps({"blackPoint": 200, "whitePoint": 100})
    form = {"file": (io.BytesIO(images.tiny("PNG")), "t.png"), "settings": settings}
    response = client.post("/api/v1/tools/image/levels", data=form)
    assert response.status_code == 400
    [(_, documented)] = [b for b in code_blocks("settings.md") if b[0] == "json"]
    expected = json.loads(documented)
    body = response.get_json()
    assert body["requestId"].startswith("req_")
    assert {**body, "requestId": expected["requestId"]} == expected

    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["components"]["schemas"]["LevelsSettings"] == to_json_schema(
        registry.tool("levels").settings
    )
    assert "/api/v1/tools/image/levels" in spec["paths"]


# --- docs/tools.md ---------------------------------------------------------------------------


def test_tool_reference_is_up_to_date() -> None:
    """Generated from the built-in plugins only: installed third-party plugins (the example
    package under CI) must not change it."""
    spec = importlib.util.spec_from_file_location(
        "gen_tool_docs", REPO / "scripts" / "gen_tool_docs.py"
    )
    assert spec and spec.loader
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    expected = generator.render(load_registry())
    assert (DOCS / "tools.md").read_text() == expected, (
        "docs/tools.md is stale: run .venv/bin/python scripts/gen_tool_docs.py"
    )


# --- tutorial.md and testing.md: the scaffold and the harness examples -----------------------


@pytest.fixture(scope="module")
def sepia_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package `pixmill plugin new pixmill-sepia` writes, as the tutorial runs it."""
    target = tmp_path_factory.mktemp("scaffold") / "pixmill-sepia"
    result = CliRunner().invoke(
        cli.main, ["plugin", "new", "pixmill-sepia", "--directory", str(target)]
    )
    assert result.exit_code == 0, result.output
    return target


@pytest.fixture
def sepia_module(sepia_package: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(sepia_package))
    sys.modules.pop("pixmill_sepia", None)
    yield importlib.import_module("pixmill_sepia")
    sys.modules.pop("pixmill_sepia", None)


def test_the_tutorials_file_tree_is_what_plugin_new_writes(sepia_package: Path) -> None:
    tree = output_block("tutorial.md", "pixmill-sepia/")
    shown = {line.split("#")[0].strip() for line in tree.splitlines()[1:]}
    written = {
        str(path.relative_to(sepia_package)) for path in sepia_package.rglob("*") if path.is_file()
    }
    assert shown == written
    assert "sepia = pixmill_sepia" in tree
    assert "\n    sepia = pixmill_sepia" in (sepia_package / "setup.cfg").read_text()


def test_the_tutorials_settings_are_the_generated_tools(sepia_module: ModuleType) -> None:
    """`--set` values and `settings=` JSON in the tutorial's commands load into the schema."""
    schema = load_registry(extra_plugins=[sepia_module], entry_points=False).tool("sepia").settings
    checked = 0
    for _, body in code_blocks("tutorial.md"):
        for words in shell_commands(body):
            for option, value in zip(words, words[1:], strict=False):  # noqa: RUF007
                if option == "--set":
                    validate_settings(schema, cli.parse_settings(schema, [value]))
                    checked += 1
                elif option == "-F" and value.startswith("settings="):
                    validate_settings(schema, json.loads(value.removeprefix("settings=")))
                    checked += 1
    assert checked >= 2


def test_the_harness_examples_pass_against_the_generated_package(
    sepia_package: Path, tmp_path: Path
) -> None:
    """testing.md's test modules, run by pytest in a subprocess (pixmill's pytest11 plugin
    provides the fixtures), next to a golden image made without the plugin: the photo
    sample in the tool's default colour, which full strength must look like."""
    tests = tmp_path / "tests"
    (tests / "golden").mkdir(parents=True)
    for name in ("test_sepia.py", "test_sepia_conforms.py"):
        (tests / name).write_text((EXAMPLES / name).read_text())
    photo = images.decode(images.sample_images()["photo-jpeg"]).convert("RGB")
    toned = ImageOps.colorize(ImageOps.grayscale(photo), black=(0, 0, 0), white="#704214")
    (tests / "golden" / "sepia-full.png").write_bytes(images.encode(toned, "PNG"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(sepia_package), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout, result.stdout


def test_the_documented_conformance_failure_is_the_real_report(
    sepia_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generated tool made random (a blend by a random fraction) fails exactly as shown."""
    module_dir = tmp_path / "pixmill_sepia"
    source = (sepia_package / "pixmill_sepia" / "__init__.py").read_text()
    blend = 'Image.blend(rgb, toned, settings["strength"])'
    assert blend in source
    source = source.replace(blend, blend.replace('settings["strength"]', "random.random()"))
    module_dir.mkdir()
    future = "from __future__ import annotations\n"
    source = source.replace(future, future + "import random\n")
    (module_dir / "__init__.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("pixmill_sepia", None)
    try:
        report = check_plugin(importlib.import_module("pixmill_sepia"))
    finally:
        sys.modules.pop("pixmill_sepia", None)
    shown = output_block("testing.md", CONFORMANCE_FAILURE)
    assert report.text(verbose=False) == shown.rstrip("\n")


# --- versioning.md: api_version_plugin.py ----------------------------------------------------


def test_the_api_version_example_declares_the_current_api_and_runs() -> None:
    registry = example_registry("api_version_plugin.py")
    [info] = registry.plugins
    assert info.api_version == PLUGIN_API_VERSION
    assert f"currently **{PLUGIN_API_VERSION}**" in (PLUGIN_DOCS / "versioning.md").read_text()
    strip = images.encode(Image.new("RGB", (2, 1)))
    left_red = Image.open(io.BytesIO(strip))
    left_red.putpixel((0, 0), (255, 0, 0))
    outcome = execute(
        registry.tool("mirror"), {"file": [(images.encode(left_red), "s.png")]}, {}, limits=LIMITS
    )
    mirrored = images.decode(outcome).convert("RGB")
    assert [mirrored.getpixel((x, 0)) for x in (0, 1)] == [(0, 0, 0), (255, 0, 0)]


# --- installing.md: a plugin installed for real ----------------------------------------------

HELLO = "pixmill_docs_hello"
FUTURE = "pixmill_docs_future"


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """pixmill-hello 0.3.1 (the API example's tool as `hello-mirror`) and pixmill-future 2.0.0
    (the same targeting API 2) as installed distributions with `pixmill` entry points."""
    site = tmp_path / "site-packages"
    site.mkdir()
    example = (EXAMPLES / "api_version_plugin.py").read_text()
    hello = example.replace('id="mirror"', 'id="hello-mirror"')
    future = hello.replace(
        "PIXMILL_PLUGIN_API = 1", f"PIXMILL_PLUGIN_API = {PLUGIN_API_VERSION + 1}"
    )
    for module, source, dist, version, name in [
        (HELLO, hello, "pixmill-hello", "0.3.1", "hello"),
        (FUTURE, future, "pixmill-future", "2.0.0", "future"),
    ]:
        (site / f"{module}.py").write_text(source)
        dist_info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        )
        (dist_info / "entry_points.txt").write_text(f"[pixmill]\n{name} = {module}\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield
    for module in (HELLO, FUTURE):
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


def hello_report() -> dict[str, Any]:
    [info] = load_registry(load_plugins=["hello"]).plugins
    return info.to_dict()


def test_install_prints_the_documented_lines(installed: None) -> None:
    after = {"hello": hello_report()}
    lines = [*cli.plugin_changes({}, after), cli._RESTART_NOTE]
    assert output_block("installing.md", lines[0]) == "\n".join(lines) + "\n"


def test_the_documented_plugin_report_is_the_real_one(installed: None) -> None:
    shown = output_block("installing.md", REPORT)
    assert json.loads(shown) == hello_report()


def test_the_plugins_table_is_what_pixmill_plugins_prints(
    installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row shown is a real row, the future plugin's error included (the essentials
    row may stop its list of ids early)."""
    monkeypatch.setenv("PIXMILL_LOAD_PLUGINS", "essentials,hello,future")
    result = CliRunner().invoke(cli.main, ["plugins"])
    assert result.exit_code == 0, result.output
    real = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    real_errors = [line for line in result.output.splitlines() if line.startswith("  ERROR")]
    table = output_block("installing.md", TABLE)
    for line in table.splitlines():
        if line.startswith("  ERROR"):
            assert line in real_errors
            continue
        words = line.split()
        if words[0] == "essentials":
            assert real["essentials"][:6] == words[:6]
            assert " ".join(real["essentials"][6:]).startswith(" ".join(words[6:]))
        else:
            assert real[words[0]] == words, line


def test_the_trace_shown_is_the_real_trace(
    installed: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = output_block("installing.md", TRACE)
    [command] = list(shell_commands(shown.splitlines()[0]))
    check_pixmill_command(command)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.jpg").write_bytes(images.jpeg(32, 24))
    monkeypatch.setenv("PIXMILL_TRACE_PLUGINS", "1")
    monkeypatch.setenv("PIXMILL_LOAD_PLUGINS", "essentials,hello")
    monkeypatch.setenv("PIXMILL_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(cli.main, command[1:])
    assert result.exit_code == 0, result.output
    real = [line for line in result.stderr.splitlines() if line.startswith("pixmill trace:")]
    expected = [line for line in shown.splitlines()[1:] if line != "..."]
    patterns = [re.sub(r"\d+\\\.\d+", r"\\d+\\.\\d", re.escape(line)) for line in expected]
    position = 0
    for pattern in patterns:
        later = enumerate(real[position:], position)
        found = [i for i, line in later if re.fullmatch(pattern, line)]
        assert found, f"no trace line like {pattern!r} after line {position} of {real}"
        position = found[0] + 1


def test_the_documented_api_mismatch_is_the_real_refusal(installed: None) -> None:
    """versioning.md wraps the message over lines; the words are pixmill's, for pixmill-hello
    declaring API 2 (the installed pixmill-future's message with its name swapped)."""
    [info] = load_registry(load_plugins=["future"]).plugins
    [error] = info.errors
    shown = " ".join(output_block("versioning.md", API_MISMATCH).split())
    assert shown == error.replace("pixmill-future", "pixmill-hello")
    assert not info.loaded and info.tools == []
