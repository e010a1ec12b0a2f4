"""`pixmill plugin new`: names, refusals, and a generated package that installs and passes its
own tests in a throwaway virtual environment (never the project's .venv, so nothing leaks
into the other tests)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pixmill.cli import main
from pixmill.scaffold import create_plugin, names_for
from pixmill.testing.venvs import overlay_venv

STEP_TIMEOUT_S = 300


def new(*args: str) -> object:
    return CliRunner().invoke(main, ["plugin", "new", *args])


@pytest.mark.parametrize(
    ("name", "module", "plugin_name", "tool_id"),
    [
        ("pixmill-sepia", "pixmill_sepia", "sepia", "sepia"),
        ("pixmill-soft-glow", "pixmill_soft_glow", "soft_glow", "soft-glow"),
        ("vignette", "vignette", "vignette", "vignette"),
    ],
)
def test_names_derive_from_the_distribution_name(
    name: str, module: str, plugin_name: str, tool_id: str
) -> None:
    names = names_for(name)
    assert (names.module, names.plugin_name, names.tool_id) == (module, plugin_name, tool_id)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Pixmill_Sepia", "lowercase kebab-case"),
        ("pixmill--x", "lowercase kebab-case"),
        ("9lives", "starting with a letter"),
        ("pixmill", "pixmill itself"),
        ("class", "Python keyword"),
    ],
)
def test_bad_names_are_refused_with_the_rules(tmp_path: Path, name: str, why: str) -> None:
    result = new(name, "--directory", str(tmp_path / "out"))
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert why in result.output  # type: ignore[attr-defined]
    assert not (tmp_path / "out").exists()


def test_a_non_empty_directory_is_never_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "pixmill-sepia"
    target.mkdir()
    (target / "setup.cfg").write_text("mine")
    result = new("pixmill-sepia", "--directory", str(target))
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert "never overwrites" in result.output  # type: ignore[attr-defined]
    assert (target / "setup.cfg").read_text() == "mine"
    assert sorted(path.name for path in target.iterdir()) == ["setup.cfg"]


def test_an_empty_directory_is_filled(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    names, written = create_plugin("pixmill-sepia", target)
    relative = sorted(str(path.relative_to(target)) for path in written)
    assert relative == [
        "README.md",
        "pixmill_sepia/__init__.py",
        "pyproject.toml",
        "setup.cfg",
        "tests/test_pixmill_sepia.py",
    ]
    assert names.tool_id == "sepia"
    text = "".join(path.read_text() for path in written)
    assert "{{" not in text and "sepia = pixmill_sepia" in text


def _throwaway_venv(root: Path) -> Path:
    """A venv with its own pip whose interpreter also sees this environment's packages."""
    return overlay_venv(root, with_pip=True, timeout=STEP_TIMEOUT_S)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


CATALOGUE_CALL = """
import io, json, sys, tempfile
from pixmill.core.config import Config
from pixmill.server.app import create_app
from pixmill.testing import images
client = create_app(Config(data_dir=tempfile.mkdtemp())).test_client()
ids = [tool["id"] for tool in client.get("/api/v1/tools").get_json()["tools"]]
assert "sepia" in ids, ids
response = client.post(
    "/api/v1/tools/image/sepia",
    data={"file": (io.BytesIO(images.jpeg(64, 48)), "p.jpg"), "settings": '{"strength": 1}'},
    headers={"Accept": "image/jpeg"},
)
assert response.status_code == 200, response.get_data(as_text=True)
print("REST", response.status_code, response.mimetype, images.decode(response.data).size)
"""


def test_the_generated_package_installs_passes_its_tests_and_is_served(tmp_path: Path) -> None:
    python = _throwaway_venv(tmp_path / "venv")
    pixmill = [str(python), "-m", "pixmill"]
    started = time.monotonic()
    # The three commands of the tutorial: new, pip install -e, then a REST call.
    _run([*pixmill, "plugin", "new", "pixmill-sepia"], cwd=tmp_path)
    package = tmp_path / "pixmill-sepia"
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(package)], tmp_path)
    served = _run([str(python), "-c", CATALOGUE_CALL], cwd=tmp_path)
    elapsed = time.monotonic() - started
    print(f"pixmill plugin new -> REST answer: {elapsed:.1f}s ({served.stdout.strip()})")
    assert "REST 200 image/jpeg (64, 48)" in served.stdout
    assert elapsed < 120

    tests = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package)
    assert " passed" in tests.stdout and "failed" not in tests.stdout, tests.stdout
    listed = _run([*pixmill, "tools"], cwd=tmp_path)
    assert "sepia" in listed.stdout
    checked = _run([*pixmill, "plugin", "check", "pixmill-sepia"], cwd=tmp_path)
    assert "PASSED" in checked.stdout
