"""The `pixmill` command line, through click's runner on real files, plus real subprocesses."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from marshmallow import fields, validate
from PIL import Image

import pixmill.cli as cli
import pixmill.cli.common as cli_common
from pixmill import Context, ImageResult, Inputs, Settings, Tool, __version__, hookimpl
from pixmill.core.config import Config
from pixmill.core.contracts import FileInput
from pixmill.core.plugin_host import Registry, load_registry
from pixmill.core.settings import to_json_schema
from pixmill.testing import images

REPO = Path(__file__).resolve().parent.parent


def invoke(*args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.main, list(args), input=input, env=env)


def messages(result: Result) -> list[str]:
    """stderr without plugin warnings (a plugin being broken elsewhere is not this test's
    subject)."""
    return [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]


def decoded(path: Path | bytes) -> Image.Image:
    data = path.read_bytes() if isinstance(path, Path) else path
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch directory that is also the working directory (default outputs land here)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIXMILL_LOAD_PLUGINS", raising=False)
    return tmp_path


@pytest.fixture
def photo(work: Path) -> Path:
    path = work / "photo.jpg"
    path.write_bytes(images.jpeg(320, 240))
    return path


def has_plugin(kind: str, ident: str) -> bool:
    registry = load_registry()
    return ident in {"tool": registry.tools, "extractor": registry.extractors}.get(
        kind, registry.sources
    )


# --- version, tools, plugins -----------------------------------------------------------------


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_tools_table_lists_each_tool_with_its_kind_and_output(work: Path) -> None:
    result = invoke("tools")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "SECTION", "KIND", "OUTPUT", "NAME"]
    by_id = {row.split()[0]: row.split() for row in rows}
    assert by_id["resize"][:4] == ["resize", "image", "tool", "image"]
    assert by_id["info"][:4] == ["info", "image", "extractor", "json"]
    assert by_id["generate"][:4] == ["generate", "-", "source", "images"]


def test_tools_json_describes_every_catalogue_entry(work: Path, registry: Registry) -> None:
    result = invoke("tools", "--json")
    assert result.exit_code == 0
    listed = {item["id"]: item for item in json.loads(result.stdout)}
    expected = {*registry.tools, *registry.extractors, *registry.sources}
    assert set(listed) == expected
    assert listed["resize"]["settingsSchema"] == to_json_schema(registry.tools["resize"].settings)
    assert listed["resize"]["output"] == "image"


def test_tools_show_renders_settings_with_types_bounds_enums_and_defaults(work: Path) -> None:
    result = invoke("tools", "show", "resize")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    width_row = next(line.split() for line in lines if line.strip().startswith("width "))
    assert width_row == ["width", "integer", "1", "to", "16384", "none"]
    fit_row = next(line for line in lines if line.strip().startswith("fit "))
    assert "cover, contain, fill, inside, outside" in fit_row
    assert fit_row.split()[-1] == "cover"
    assert "target width in pixels" in result.stdout
    assert "pixmill run resize photo.jpg --set width=800" in result.stdout


def test_tools_show_json_is_the_settings_json_schema(work: Path, registry: Registry) -> None:
    result = invoke("tools", "show", "resize", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == to_json_schema(registry.tools["resize"].settings)


def test_tools_show_unknown_id_suggests_close_matches_and_exits_2(work: Path) -> None:
    result = invoke("tools", "show", "resise")
    assert result.exit_code == 2
    assert "no plugin id 'resise'" in result.stderr
    assert "did you mean resize" in result.stderr


class BrokenPlugin:
    """A third-party plugin whose hook raises: it must be reported, never crash the CLI."""

    __name__ = "broken_plugin"

    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        raise RuntimeError("cannot find libfoo.so")


@pytest.fixture
def with_broken_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(load_plugins: Any = None, **options: Any) -> Registry:
        return load_registry(load_plugins, extra_plugins=[BrokenPlugin()], **options)

    monkeypatch.setattr(cli_common, "load_registry", load)


def test_plugins_lists_builtins_and_marks_a_broken_plugin(
    work: Path, with_broken_plugin: None
) -> None:
    result = invoke("plugins")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert rows["essentials"].split()[1:5] == ["pixmill", __version__, "-", "ok"]
    assert "resize" in rows["essentials"]
    assert rows["broken_plugin"].split()[4] == "ERROR"
    assert "ERROR broken_plugin: pixmill_tools() raised RuntimeError: cannot find libfoo.so" in (
        result.stdout
    )
    assert "with errors" in result.stdout.splitlines()[-1]


def test_plugins_json(work: Path, with_broken_plugin: None) -> None:
    result = invoke("plugins", "--json")
    assert result.exit_code == 0
    reports = {item["name"]: item for item in json.loads(result.stdout)}
    assert "resize" in reports["essentials"]["tools"]
    assert reports["essentials"]["errors"] == []
    assert reports["broken_plugin"]["errors"]


def test_a_broken_plugin_is_a_warning_for_run(
    work: Path, photo: Path, with_broken_plugin: None
) -> None:
    result = invoke("run", "resize", str(photo), "--set", "width=32", "-o", "small.jpg")
    assert result.exit_code == 0, result.output
    assert "warning: plugin broken_plugin: pixmill_tools() raised" in result.stderr
    assert decoded(work / "small.jpg").width == 32


def test_load_plugins_restricts_what_is_listed(work: Path) -> None:
    result = invoke("tools", "--json", env={"PIXMILL_LOAD_PLUGINS": "essentials"})
    assert result.exit_code == 0
    listed = {item["id"] for item in json.loads(result.stdout)}
    assert "resize" in listed
    assert listed <= set(load_registry(["essentials"]).tools)


# --- run: one input --------------------------------------------------------------------------


def test_run_one_file_writes_next_to_the_working_directory_by_default(
    work: Path, photo: Path
) -> None:
    result = invoke("run", "resize", str(photo), "--set", "width=100")
    assert result.exit_code == 0, result.output
    out = work / "photo-resize.jpg"
    img = decoded(out)
    assert (img.format, img.size) == ("JPEG", (100, 75))
    assert "photo-resize.jpg" in result.stderr
    assert photo.read_bytes() == images.jpeg(320, 240)  # the input is untouched


def test_run_to_an_explicit_file_and_into_an_existing_directory(work: Path, photo: Path) -> None:
    assert invoke("run", "resize", str(photo), "--set", "height=60", "-o", "a/b.jpg").exit_code == 0
    assert decoded(work / "a" / "b.jpg").size == (80, 60)
    (work / "outdir").mkdir()
    assert invoke("run", "resize", str(photo), "--set", "height=30", "-o", "outdir").exit_code == 0
    assert decoded(work / "outdir" / "photo.jpg").size == (40, 30)


def test_run_stdin_to_stdout_is_a_binary_round_trip(work: Path) -> None:
    png = images.png(120, 80)
    result = invoke("run", "resize", "-", "--set", "width=60", "-o", "-", input=png)
    assert result.exit_code == 0, result.stderr
    img = decoded(result.stdout_bytes)
    assert (img.format, img.size, img.mode) == ("PNG", (60, 40), "RGBA")
    # The ellipse mask survives: transparent corner, opaque centre.
    assert img.getpixel((0, 0))[3] == 0
    assert img.getpixel((30, 20))[3] == 255


def test_run_refuses_to_overwrite_its_input(work: Path, photo: Path) -> None:
    before = photo.read_bytes()
    result = invoke("run", "resize", str(photo), "--set", "width=10", "-o", str(photo))
    assert result.exit_code == 2
    assert "refusing to overwrite" in result.stderr
    assert photo.read_bytes() == before


def test_set_values_are_typed_by_the_schema(work: Path, photo: Path) -> None:
    # int
    assert invoke("run", "resize", str(photo), "--set", "width=64", "-o", "int.jpg").exit_code == 0
    assert decoded(work / "int.jpg").size == (64, 48)
    # float
    assert (
        invoke("run", "resize", str(photo), "--set", "percentage=12.5", "-o", "f.jpg").exit_code
        == 0
    )
    assert decoded(work / "f.jpg").size == (40, 30)
    # bool (and a snake_case key for its camelCase wire name)
    for key in ("withoutEnlargement", "without_enlargement"):
        result = invoke(
            "run", "resize", str(photo), "--set", "width=1000", "--set", f"{key}=true",
            "-o", "b.jpg",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert decoded(work / "b.jpg").size == (320, 240)
    # JSON settings, with --set taking precedence
    result = invoke(
        "run", "resize", str(photo), "--settings-json", '{"width": 500, "fit": "fill"}',
        "--set", "width=50", "--set", "height=10", "-o", "j.jpg",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert decoded(work / "j.jpg").size == (50, 10)


class ListSettings(Settings):
    sizes = fields.List(fields.Integer(), load_default=list)
    label = fields.String(load_default="")
    options = fields.Dict(load_default=dict)
    max_count = fields.Integer(load_default=1, validate=validate.Range(1, 5))


def test_parse_settings_json_values_and_strings() -> None:
    raw = cli.parse_settings(
        ListSettings,
        ["sizes=[16, 32]", "label=[draft]", 'options={"a": 1}', "max_count=3", "label2={x"],
    )
    assert raw == {
        "sizes": [16, 32],
        "label": "[draft]",  # a string field keeps brackets as text
        "options": {"a": 1},
        "maxCount": 3,  # integers are typed here: the schema takes them strictly
        "label2": "{x",  # unknown keys go through to be refused by validation
    }


def test_parse_settings_bad_syntax_and_bad_json() -> None:
    with pytest.raises(click.BadParameter, match="expected key=value"):
        cli.parse_settings(ListSettings, ["sizes"])
    with pytest.raises(click.BadParameter, match="not valid JSON"):
        cli.parse_settings(ListSettings, ["sizes=[1,"])
    with pytest.raises(click.BadParameter, match="JSON object"):
        cli.parse_settings(ListSettings, [], "[1, 2]")


def test_bad_set_syntax_is_a_usage_error(work: Path, photo: Path) -> None:
    result = invoke("run", "resize", str(photo), "--set", "width")
    assert result.exit_code == 2
    assert "expected key=value" in result.stderr
    assert not (work / "photo-resize.jpg").exists()


def test_validation_errors_list_each_field(work: Path, photo: Path) -> None:
    result = invoke(
        "run", "resize", str(photo), "--set", "width=0", "--set", "fit=squash", "--set", "widht=5"
    )
    assert result.exit_code == 1
    lines = messages(result)
    assert lines[0] == "error: invalid settings for resize"
    assert any(line.startswith("  width: Must be greater than or equal to 1") for line in lines)
    assert any(line.startswith("  fit: Must be one of: cover") for line in lines)
    assert "  widht: unknown field (did you mean width?)" in lines
    assert not (work / "photo-resize.jpg").exists()


def test_unknown_tool_exits_2_with_suggestions(work: Path, photo: Path) -> None:
    result = invoke("run", "resiz", str(photo))
    assert result.exit_code == 2
    assert "no tool 'resiz'; did you mean resize?" in result.stderr


def test_a_source_given_to_run_points_to_fetch(work: Path, photo: Path) -> None:
    if not has_plugin("source", "generate"):
        pytest.fail("the generate source is not registered")
    result = invoke("run", "generate", str(photo))
    assert result.exit_code == 2
    assert "use `pixmill fetch generate" in result.stderr


def test_missing_input_is_a_usage_error(work: Path) -> None:
    for args in (["nope.jpg"], ["*.nothing"], ["."]):
        result = invoke("run", "resize", *args, "--set", "width=5")
        assert result.exit_code == 2, args
        assert "INPUT" in result.stderr


def test_a_corrupt_single_input_is_an_error_with_exit_1(work: Path) -> None:
    (work / "bad.png").write_bytes(images.png(40, 40)[:200])
    result = invoke("run", "resize", "bad.png", "--set", "width=5")
    assert result.exit_code == 1
    (line,) = messages(result)
    assert line.startswith("error: ") and "truncated" in line
    assert not list(work.glob("bad-resize*"))


# --- run: many inputs ------------------------------------------------------------------------


def test_many_inputs_one_corrupt_others_succeed_in_parallel(work: Path) -> None:
    for i in range(4):
        (work / f"img{i}.jpg").write_bytes(images.jpeg(200 + 20 * i, 100))
    (work / "corrupt.jpg").write_bytes(images.jpeg(200, 100)[:300])
    inputs = [str(p) for p in sorted(work.glob("*.jpg"))]
    result = invoke("run", "resize", *inputs, "--set", "height=50", "-o", "out", "--jobs", "2")
    assert result.exit_code == 1
    assert f"error: {work / 'corrupt.jpg'}:" in result.stderr
    assert "4 written to out, 1 failed (5 files" in result.stderr
    for i in range(4):
        img = decoded(work / "out" / f"img{i}.jpg")
        assert (img.format, img.size) == ("JPEG", (100 + 10 * i, 50))
    assert not (work / "out" / "corrupt.jpg").exists()


def test_glob_is_expanded_and_same_stems_are_deduplicated(work: Path) -> None:
    for folder, color in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        (work / folder).mkdir()
        Image.new("RGB", (40, 20), color).save(work / folder / "pic.png")
    (work / "a" / "notes.txt").write_text("not matched by the glob")
    result = invoke("run", "resize", "*/*.png", "--set", "width=20", "-o", "out", "-j", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (work / "out").iterdir()) == ["pic-2.png", "pic.png"]
    assert decoded(work / "out" / "pic.png").getpixel((10, 5)) == (255, 0, 0)
    assert decoded(work / "out" / "pic-2.png").getpixel((10, 5)) == (0, 0, 255)
    assert decoded(work / "out" / "pic.png").size == (20, 10)


def test_a_glob_matching_one_file_still_writes_into_a_directory(work: Path, photo: Path) -> None:
    result = invoke("run", "resize", "*.jpg", "--set", "width=16", "-o", "thumbs")
    assert result.exit_code == 0, result.output
    assert decoded(work / "thumbs" / "photo.jpg").width == 16


def test_batch_into_the_inputs_own_directory_never_overwrites_them(work: Path) -> None:
    originals = {}
    for name in ("x.png", "y.png"):
        Image.new("RGB", (30, 30), (10, 200, 10)).save(work / name)
        originals[name] = (work / name).read_bytes()
    result = invoke("run", "resize", "x.png", "y.png", "--set", "width=10", "-o", ".")
    assert result.exit_code == 0, result.output
    for name, data in originals.items():
        assert (work / name).read_bytes() == data
    assert decoded(work / "x-resize.png").size == (10, 10)
    assert decoded(work / "y-resize.png").size == (10, 10)


def test_several_inputs_need_an_output_directory(work: Path, photo: Path) -> None:
    (work / "other.jpg").write_bytes(images.jpeg(50, 50))
    result = invoke("run", "resize", str(photo), "other.jpg", "--set", "width=5")
    assert result.exit_code == 2
    assert "-o DIR" in result.stderr


def run_crash(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    if inputs.file.filename == "die.png":
        os._exit(3)  # a native crash or the OOM killer, as far as the parent can tell
    return ImageResult(inputs.file.open())


class CrashPlugin:
    __name__ = "crash_plugin"

    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        return [
            Tool(id="crash", name="Crash", description="Dies.", settings=Settings, run=run_crash)
        ]


def test_a_dying_worker_process_fails_files_not_the_command(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        cli_common,
        "load_registry",
        lambda load_plugins=None, **_: load_registry(extra_plugins=[CrashPlugin()]),
    )
    for name in ("a.png", "die.png", "z.png"):
        Image.new("RGB", (8, 8), (1, 2, 3)).save(work / name)
    result = invoke("run", "crash", "a.png", "die.png", "z.png", "-o", "out", "-j", "2")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # reported, not a traceback
    assert "error: die.png: worker failed" in result.stderr


# --- extra file inputs -----------------------------------------------------------------------


class StampSettings(Settings):
    opacity = fields.Float(load_default=1.0, validate=validate.Range(0, 1))


def run_stamp(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    base = inputs.file.open().convert("RGB")
    base.paste(inputs["mark"].open().convert("RGB"), (0, 0))
    return ImageResult(base)


class StampPlugin:
    __name__ = "stamp_plugin"

    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        return [
            Tool(
                id="stamp",
                name="Stamp",
                description="Paste a mark at the top-left corner.",
                settings=StampSettings,
                run=run_stamp,
                inputs=(FileInput(), FileInput("mark", "the mark to paste")),
            )
        ]


def test_extra_named_file_input(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        cli_common,
        "load_registry",
        lambda load_plugins=None, **_: load_registry(extra_plugins=[StampPlugin()]),
    )
    Image.new("RGB", (50, 40), (255, 255, 255)).save(work / "base.png")
    Image.new("RGB", (10, 10), (0, 0, 255)).save(work / "mark.png")
    result = invoke("run", "stamp", "base.png", "--file", "mark=mark.png", "-o", "out.png")
    assert result.exit_code == 0, result.output
    out = decoded(work / "out.png")
    assert out.getpixel((5, 5)) == (0, 0, 255)
    assert out.getpixel((30, 30)) == (255, 255, 255)
    missing = invoke("run", "stamp", "base.png", "-o", "out2.png")
    assert missing.exit_code == 1
    assert "missing file part 'mark'" in missing.stderr
    wrong = invoke("run", "stamp", "base.png", "--file", "logo=mark.png")
    assert wrong.exit_code == 2
    assert "takes mark" in wrong.stderr


def test_resize_takes_no_extra_files(work: Path, photo: Path) -> None:
    result = invoke("run", "resize", str(photo), "--file", "mark=photo.jpg", "--set", "width=5")
    assert result.exit_code == 2
    assert "no file input 'mark'" in result.stderr


# --- extract ---------------------------------------------------------------------------------


@pytest.fixture
def info_extractor() -> None:
    if not has_plugin("extractor", "info"):
        pytest.fail("the info extractor is not registered")


def test_extract_one_input_prints_its_object(work: Path, photo: Path, info_extractor: None) -> None:
    result = invoke("extract", "info", str(photo))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["width"], data["height"], data["format"]) == (320, 240, "jpg")
    assert data["fileSize"] == photo.stat().st_size


def test_extract_many_inputs_keyed_by_path_with_failures(
    work: Path, photo: Path, info_extractor: None
) -> None:
    (work / "small.png").write_bytes(images.png(30, 20))
    (work / "fake.png").write_bytes(b"%PDF-1.7 not an image")
    result = invoke("extract", "info", "photo.jpg", "small.png", "fake.png", "-j", "2")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert list(data) == ["photo.jpg", "small.png", "fake.png"]
    assert (data["small.png"]["width"], data["small.png"]["hasAlpha"]) == (30, True)
    assert data["fake.png"]["code"] == "UNSUPPORTED_FORMAT"
    assert "error: fake.png:" in result.stderr


def test_extract_jsonl(work: Path, photo: Path, info_extractor: None) -> None:
    (work / "small.png").write_bytes(images.png(30, 20))
    result = invoke("extract", "info", "*.*", "--jsonl", "-j", "1")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    widths = {line["input"]: line["result"]["width"] for line in lines}
    assert widths == {"photo.jpg": 320, "small.png": 30}


def test_run_with_an_extractor_prints_json(work: Path, photo: Path, info_extractor: None) -> None:
    result = invoke("run", "info", "-", input=photo.read_bytes())
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["height"] == 240


def test_extract_refuses_a_tool(work: Path, photo: Path) -> None:
    result = invoke("extract", "resize", str(photo))
    assert result.exit_code == 2
    assert "resize is a tool: use `pixmill run resize" in result.stderr


# --- fetch -----------------------------------------------------------------------------------


@pytest.fixture
def generate_source() -> None:
    if not has_plugin("source", "generate"):
        pytest.fail("the generate source is not registered")


def test_fetch_writes_images_and_prints_provenance(work: Path, generate_source: None) -> None:
    args = ["fetch", "generate", "--set", "width=24", "--set", "height=16", "-o", "gen"]
    result = invoke(*args, "--set", "color=#ff0000")
    assert result.exit_code == 0, result.output
    written = sorted((work / "gen").iterdir())
    assert len(written) == 1
    img = decoded(written[0])
    assert img.size == (24, 16)
    assert img.convert("RGB").getpixel((5, 5)) == (255, 0, 0)
    assert result.stdout.startswith(str(Path("gen") / written[0].name))
    # A second fetch keeps the first file and picks a free name.
    again = invoke(*args, "--json")
    assert again.exit_code == 0, again.output
    (entry,) = json.loads(again.stdout)
    assert entry["path"] != str(Path("gen") / written[0].name)
    assert Path(entry["path"]).exists() and written[0].exists()
    assert entry["format"] == img.format.lower()


def test_fetch_bad_settings_and_unknown_source(work: Path, generate_source: None) -> None:
    bad = invoke("fetch", "generate", "--set", "width=0", "-o", "gen")
    assert bad.exit_code == 1
    assert "error: invalid settings for generate" in bad.stderr
    assert "  width: " in bad.stderr
    unknown = invoke("fetch", "generat", "-o", "gen")
    assert unknown.exit_code == 2
    assert "did you mean generate" in unknown.stderr


# --- serve -----------------------------------------------------------------------------------


def test_serve_builds_its_config_from_env_and_flags(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pixmill.server.serve as serve_module

    seen: list[Config] = []
    monkeypatch.setattr(serve_module, "run_server", lambda config, **_: seen.append(config))
    env = {"PIXMILL_HOST": "0.0.0.0", "PIXMILL_WORKERS": "3", "PIXMILL_PORT": "9000"}
    result = invoke("serve", "--port", "9100", "--data-dir", "d", env=env)
    assert result.exit_code == 0, result.output
    (config,) = seen
    assert (config.host, config.port, config.workers, config.data_dir) == (
        "0.0.0.0",
        9100,
        3,
        Path("d"),
    )
    bad = invoke("serve", env={"PIXMILL_PORT": "eighty"})
    assert bad.exit_code == 2
    assert "PIXMILL_PORT='eighty' is not a number" in bad.stderr


def test_gunicorn_options() -> None:
    from pixmill.server.serve import gunicorn_options, is_loopback

    options = gunicorn_options(Config(host="::1", port=8080, workers=2, threads=8))
    assert options["bind"] == ["[::1]:8080"]
    assert (options["workers"], options["threads"]) == (2, 8)
    assert (options["worker_class"], options["preload_app"]) == ("gthread", True)
    assert options["accesslog"] is None
    assert gunicorn_options(Config(), access_log=True)["accesslog"] == "-"
    assert [
        is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "example.com")
    ] == [
        True,
        True,
        True,
        False,
        False,
    ]


def _read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            break
    return ""


@pytest.fixture
def pixmill_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXMILL_")}
    env["PIXMILL_DATA_DIR"] = str(tmp_path / "data")
    yield env


def _multipart(data: bytes, settings: dict[str, Any]) -> tuple[bytes, str]:
    boundary = "pixmilltestboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="settings"\r\n\r\n'.encode()
        + json.dumps(settings).encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + data,
    ]
    body = b"\r\n".join(parts) + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _read_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.server
def test_serve_answers_and_stops_gracefully_on_sigint(
    tmp_path: Path, pixmill_env: dict[str, str]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixmill", "serve", "--port", "0", "--workers", "1",
         "--threads", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=pixmill_env,
        cwd=tmp_path,
        start_new_session=True,  # its own process group, as a terminal would give it
    )  # fmt: skip
    try:
        line = _read_line(proc, time.monotonic() + 30)
        assert line.startswith("pixmill serving on http://127.0.0.1:"), line
        assert line.rstrip().endswith("(1 worker)")
        url = line.split()[3]
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5):
            pass
        with urllib.request.urlopen(f"{url}/api/v1/health", timeout=10) as response:
            assert response.status == 200
            assert json.load(response)["status"] == "healthy"
        # Ctrl-C reaches the whole process group; a request in flight is still answered.
        body, content_type = _multipart(images.jpeg(300, 200), {"width": 30})
        with socket.create_connection((host, int(port)), timeout=20) as conn:
            conn.sendall(
                b"POST /api/v1/tools/image/resize HTTP/1.1\r\n"
                + f"Host: {host}\r\nContent-Type: {content_type}\r\n".encode()
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body[:100]
            )
            time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(1.0)
            conn.sendall(body[100:])
            answer = _read_all(conn)
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 200 OK", answer[:300]
        assert json.loads(rest.partition(b"\r\n\r\n")[2])["processedSize"] > 0
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# --- a real process --------------------------------------------------------------------------


def test_real_subprocess_run(tmp_path: Path, pixmill_env: dict[str, str]) -> None:
    src = tmp_path / "in.jpg"
    src.write_bytes(images.jpeg(400, 300))
    (tmp_path / "in2.jpg").write_bytes(images.jpeg(200, 300))
    script = Path(sys.executable).parent / "pixmill"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pixmill"]
    done = subprocess.run(
        [*command, "run", "resize", str(src), "--set", "width=100", "-o", str(tmp_path / "o.jpg")],
        capture_output=True,
        env=pixmill_env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert decoded(tmp_path / "o.jpg").size == (100, 75)
    # `python -m pixmill`, a batch over real worker processes
    batch = subprocess.run(
        [sys.executable, "-m", "pixmill", "run", "resize", str(tmp_path / "in*.jpg"),
         "--set", "height=30", "-o", str(tmp_path / "out"), "-j", "2"],
        capture_output=True,
        env=pixmill_env,
        timeout=120,
    )  # fmt: skip
    assert batch.returncode == 0, batch.stderr
    assert decoded(tmp_path / "out" / "in.jpg").size == (40, 30)
    assert decoded(tmp_path / "out" / "in2.jpg").size == (20, 30)


def test_run_server_warns_on_a_non_loopback_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pixmill.server.serve as serve_module

    started: list[dict[str, Any]] = []
    monkeypatch.setattr(
        serve_module.PixmillServer, "run", lambda self: started.append(self.options)
    )
    serve_module.run_server(Config(host="0.0.0.0", port=8000, data_dir=tmp_path / "d"))
    assert "warning: binding 0.0.0.0 makes pixmill reachable" in capsys.readouterr().err
    assert started[0]["bind"] == ["0.0.0.0:8000"]
    assert (tmp_path / "d").is_dir()
    serve_module.run_server(Config(host="127.0.0.1", data_dir=tmp_path / "d"))
    assert capsys.readouterr().err == ""


def test_a_tool_that_takes_no_file_runs_from_settings_alone(work: Path) -> None:
    result = invoke("run", "qr-generate", "--set", "data=pixmill", "--set", "size=84")
    assert result.exit_code == 0, result.output
    made = Image.open(work / "qr-generate.png")
    assert made.size == (84, 84)

    result = invoke("run", "qr-generate", "--set", "size=42", "-o", "codes/")
    assert result.exit_code == 0, result.output
    assert Image.open(work / "codes" / "qr-generate.png").size == (42, 42)

    (work / "photo.jpg").write_bytes(images.encode(images.photo(16, 12), "JPEG"))
    refused = invoke("run", "qr-generate", "photo.jpg")
    assert refused.exit_code == 2 and "takes no input files" in refused.output
    assert invoke("run", "resize", "--set", "width=8").exit_code == 2  # needs its input

    # Its optional file parts come with --file.
    (work / "logo.png").write_bytes(images.encode(Image.new("RGB", (20, 20), (250, 0, 0))))
    with_logo = invoke(
        "run", "qr-generate", "--set", "size=200", "--set", "errorCorrectionLevel=H",
        "--file", "logo=logo.png", "-o", "logo-code.png",
    )  # fmt: skip
    assert with_logo.exit_code == 0, with_logo.output
    assert Image.open(work / "logo-code.png").convert("RGB").getpixel((100, 100)) == (250, 0, 0)
