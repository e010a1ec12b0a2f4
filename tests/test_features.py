"""Feature bundles: the catalogue, statuses, the admin gate, install/uninstall jobs, models.

Statuses run in this process against throwaway distributions (a `.dist-info` on a temporary
sys.path entry, as `tests/test_plugin_host.py` does). Nothing here installs into the shared
`.venv`: the in-process install jobs fail on their model file before pip would run, and the
real install and uninstall run in a throwaway virtual environment, by a server process started
with that environment's python (the interpreter whose environment pip changes), restarted to
show that the new plugin is loaded. pip runs offline (`PIP_NO_INDEX`, ...); model files come
from `file://` URLs under tmp_path.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib
import json
import os
import selectors
import subprocess
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_db  # the database fixtures (SQLite and a throwaway PostgreSQL)
from flask import Flask
from flask.testing import FlaskClient

from pixmill.core.config import Config
from pixmill.core.db import Database
from pixmill.core.jobstore import JobStore
from pixmill.core.models import JobKind
from pixmill.core.plugin_host import load_registry
from pixmill.features.catalogue import CatalogueError, load_catalogue
from pixmill.server.app import create_app
from pixmill.testing.venvs import overlay_venv

migrated_database = test_db.migrated_database
database = test_db.database

REPO = Path(__file__).resolve().parent.parent
SUBPROCESS_TIMEOUT_S = 180
JOB_TIMEOUT_S = 120
ADMIN_ROUTES = [
    ("post", "/api/v1/admin/features/example/install"),
    ("post", "/api/v1/admin/features/example/uninstall"),
    ("get", "/api/v1/admin/features/disk-usage"),
]


def bundle(bundle_id: str, **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": bundle_id,
        "name": f"Bundle {bundle_id}",
        "description": f"The {bundle_id} bundle.",
        "package": f"pixmill-feat-{bundle_id}",
        "plugins": [f"feat{bundle_id.replace('-', '')}"],
        "models": [],
        "sizeEstimate": 1000,
    }
    entry.update(fields)
    return entry


def write_catalogue(path: Path, bundles: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"version": 1, "bundles": bundles}))
    return path


def model_entry(path: Path, name: str, *, sha256: str | None = None) -> dict[str, Any]:
    data = path.read_bytes()
    return {
        "name": name,
        "url": path.as_uri(),
        "sha256": sha256 or hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def wait_for_job(client: FlaskClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").get_json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {JOB_TIMEOUT_S} s")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary site dir on sys.path where `fake_install` puts distributions."""
    directory = tmp_path / "site-packages"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    yield directory
    importlib.invalidate_caches()


def fake_install(site: Path, package: str, plugin: str, module_source: str) -> None:
    """An installed distribution `package` whose `pixmill` entry point `plugin` is a module."""
    module = f"{package.replace('-', '_')}_mod"
    (site / f"{module}.py").write_text(module_source)
    dist_info = site / f"{package.replace('-', '_')}-2.5.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 2.5\n")
    (dist_info / "entry_points.txt").write_text(f"[pixmill]\n{plugin} = {module}\n")
    importlib.invalidate_caches()


GOOD_PLUGIN = "from pixmill import hookimpl\n\n@hookimpl\ndef pixmill_tools():\n    return []\n"
BROKEN_PLUGIN = "raise ImportError('this plugin needs a library that is missing')\n"


def make_app(tmp_path: Path, catalogue: Path | None, **overrides: Any) -> Flask:
    config = Config(data_dir=tmp_path / "data", features_catalogue=catalogue, **overrides)
    return create_app(config, registry=load_registry())


# --- the catalogue ----------------------------------------------------------------------------


def test_the_shipped_catalogue_describes_the_example_plugin_as_it_is_packaged() -> None:
    bundles = load_catalogue()
    example = bundles["example"]
    project = tomllib.loads((REPO / "examples/pixmill-example/pyproject.toml").read_text())
    assert example.distribution == project["project"]["name"]
    assert set(example.plugins) == set(project["project"]["entry-points"]["pixmill"])
    assert example.models == ()


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        (bundle("Bad_Id"), "id"),
        (bundle("a", sizeEstimate=-1), "sizeEstimate"),
        (bundle("a", package="./some/path"), "distribution"),
        (bundle("a", package="pixmill"), "distribution"),
        (bundle("a", models=[{"name": "m.bin", "sha256": "0" * 64, "size": 1}]), "models"),
        (
            bundle(
                "a",
                models=[{"name": "m", "url": "ftp://x/m", "sha256": "0" * 64, "size": 1}],
            ),
            "models",
        ),
        (
            bundle(
                "a",
                models=[{"name": "../m", "url": "https://x/m", "sha256": "0" * 64, "size": 1}],
            ),
            "models",
        ),
        (
            bundle(
                "a",
                models=[{"name": "m", "url": "https://x/m", "sha256": "not-hex", "size": 1}],
            ),
            "models",
        ),
    ],
)
def test_an_invalid_bundle_is_refused_naming_the_field(
    tmp_path: Path, entry: dict[str, Any], field: str
) -> None:
    path = write_catalogue(tmp_path / "catalogue.json", [entry])
    with pytest.raises(CatalogueError) as refused:
        load_catalogue(path)
    assert refused.value.details["file"] == str(path)
    assert field in refused.value.details["fields"]["bundles"][0]


def test_a_catalogue_with_duplicate_ids_or_no_json_is_refused(tmp_path: Path) -> None:
    duplicate = write_catalogue(tmp_path / "dup.json", [bundle("a"), bundle("a")])
    with pytest.raises(CatalogueError) as refused:
        load_catalogue(duplicate)
    assert "bundle ids used twice: a" in str(refused.value.details["fields"])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CatalogueError, match="cannot read the feature catalogue"):
        load_catalogue(broken)
    with pytest.raises(CatalogueError, match="cannot read the feature catalogue"):
        load_catalogue(tmp_path / "missing.json")


def test_a_bad_catalogue_is_a_clear_500_not_a_crash(tmp_path: Path) -> None:
    path = write_catalogue(tmp_path / "catalogue.json", [bundle("a", plugins="not-a-list")])
    client = make_app(tmp_path, path).test_client()
    response = client.get("/api/v1/features")
    assert response.status_code == 500
    body = response.get_json()
    assert body["code"] == "FEATURES_CATALOGUE_INVALID"
    assert "plugins" in body["details"]["fields"]["bundles"]["0"]


# --- statuses ---------------------------------------------------------------------------------


def test_statuses_installed_broken_available_and_restart_required(
    tmp_path: Path, site: Path
) -> None:
    model_file = tmp_path / "weights.bin"
    model_file.write_bytes(b"w" * 300)
    catalogue = write_catalogue(
        tmp_path / "catalogue.json",
        [
            bundle("good"),
            bundle("broken"),
            bundle("nomodel", models=[model_entry(model_file, "weights.bin")]),
            bundle("absent"),
            bundle("late"),
        ],
    )
    fake_install(site, "pixmill-feat-good", "featgood", GOOD_PLUGIN)
    fake_install(site, "pixmill-feat-broken", "featbroken", BROKEN_PLUGIN)
    fake_install(site, "pixmill-feat-nomodel", "featnomodel", GOOD_PLUGIN)
    client = make_app(tmp_path, catalogue).test_client()
    # Installed after the server loaded its plugins: a restart is needed to load it.
    fake_install(site, "pixmill-feat-late", "featlate", GOOD_PLUGIN)

    body = client.get("/api/v1/features").get_json()
    assert body["total"] == 5
    by_id = {entry["id"]: entry for entry in body["features"]}
    good = by_id["good"]
    assert (good["status"], good["version"], good["problems"]) == ("installed", "2.5", [])
    assert not good["restartRequired"] and good["jobId"] is None

    broken = by_id["broken"]
    assert broken["status"] == "broken" and broken["version"] == "2.5"
    [problem] = broken["problems"]
    assert problem.startswith("plugin featbroken: ") and "needs a library" in problem

    nomodel = by_id["nomodel"]
    assert nomodel["status"] == "broken"
    assert nomodel["models"] == [
        {
            "name": "weights.bin",
            "size": 300,
            "sha256": hashlib.sha256(b"w" * 300).hexdigest(),
            "present": False,
        }
    ]
    assert "model file weights.bin is missing" in nomodel["problems"][0]

    absent = by_id["absent"]
    assert (absent["status"], absent["version"], absent["restartRequired"]) == (
        "available",
        None,
        False,
    )
    late = by_id["late"]
    assert late["status"] == "installed" and late["restartRequired"]


# --- the admin gate and refusals --------------------------------------------------------------


def test_admin_routes_answer_403_unless_enabled(tmp_path: Path) -> None:
    client = make_app(tmp_path, None).test_client()
    for method, url in ADMIN_ROUTES:
        response = getattr(client, method)(url)
        assert response.status_code == 403, url
        body = response.get_json()
        assert body["code"] == "ADMIN_DISABLED" and "PIXMILL_ENABLE_ADMIN=1" in body["error"]
    # Listing is not an admin route.
    assert client.get("/api/v1/features").status_code == 200
    assert not Config().enable_admin


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("0", False)])
def test_the_admin_setting_reads_booleans_from_the_environment(raw: str, expected: bool) -> None:
    assert Config.from_env({"PIXMILL_ENABLE_ADMIN": raw}).enable_admin is expected


def test_an_unclear_admin_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="PIXMILL_ENABLE_ADMIN='maybe' is not a boolean"):
        Config.from_env({"PIXMILL_ENABLE_ADMIN": "maybe"})


def test_unknown_bundle_404_and_state_conflicts_409(tmp_path: Path, site: Path) -> None:
    catalogue = write_catalogue(tmp_path / "catalogue.json", [bundle("good"), bundle("absent")])
    fake_install(site, "pixmill-feat-good", "featgood", GOOD_PLUGIN)
    app = make_app(tmp_path, catalogue, enable_admin=True)
    client = app.test_client()
    for action in ("install", "uninstall"):
        missing = client.post(f"/api/v1/admin/features/nope/{action}")
        assert missing.status_code == 404
        assert missing.get_json()["code"] == "BUNDLE_NOT_FOUND"
    again = client.post("/api/v1/admin/features/good/install")
    assert again.status_code == 409 and again.get_json()["code"] == "BUNDLE_INSTALLED"
    nothing = client.post("/api/v1/admin/features/absent/uninstall")
    assert nothing.status_code == 409 and nothing.get_json()["code"] == "BUNDLE_NOT_INSTALLED"
    assert client.get("/api/v1/admin/features/good").status_code in (404, 405)


def test_a_second_job_of_the_same_bundle_is_refused(tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "catalogue.json", [bundle("absent")])
    app = make_app(tmp_path, catalogue, enable_admin=True)
    client = app.test_client()
    # A job of the bundle that no worker has taken yet (created, never enqueued).
    queued = app.extensions["pixmill"].jobs.create(
        JobKind.FEATURE, tool_id="absent", settings={"action": "install"}, max_attempts=1
    )
    refused = client.post("/api/v1/admin/features/absent/install")
    assert refused.status_code == 409
    body = refused.get_json()
    assert body["code"] == "FEATURE_JOB_RUNNING" and body["details"] == {"jobId": queued.id}
    listed = client.get("/api/v1/features").get_json()["features"][0]
    assert listed["jobId"] == queued.id


def test_feature_jobs_are_stored_and_found_without_a_migration(database: Database) -> None:
    # Job kinds are plain VARCHAR (models._str_enum): the new kind needs no schema change.
    store = JobStore(database.sessions)
    job = store.create(
        JobKind.FEATURE, tool_id="mirror", settings={"action": "install"}, max_attempts=1
    )
    found = store.list(kind=JobKind.FEATURE, tool_id="mirror")
    assert [item.id for item in found.items] == [job.id]
    assert store.get(job.id).kind is JobKind.FEATURE


# --- model files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code_reason"),
    [
        (b"tampered model!", "its sha256 is"),  # same size, other bytes
        (b"short", "it has 5 bytes, 15 expected"),
        (b"far too long for the model entry", "larger than the 15 bytes expected"),
    ],
)
def test_a_model_file_that_does_not_match_fails_the_job_and_leaves_nothing(
    tmp_path: Path, content: bytes, code_reason: str
) -> None:
    served = tmp_path / "served.bin"
    served.write_bytes(content)
    expected = b"the real model!"
    entry = {
        "name": "model.bin",
        "url": served.as_uri(),
        "sha256": hashlib.sha256(expected).hexdigest(),
        "size": len(expected),
    }
    catalogue = write_catalogue(
        tmp_path / "catalogue.json",
        # pip would be told to install a path that does not exist: it must never get there.
        [
            bundle(
                "absent",
                package=str(tmp_path / "no-such-package"),
                distribution="x-absent",
                models=[entry],
            )
        ],
    )
    app = make_app(tmp_path, catalogue, enable_admin=True)
    client = app.test_client()
    accepted = client.post("/api/v1/admin/features/absent/install")
    assert accepted.status_code == 202
    started = accepted.get_json()
    assert started["async"] is True and started["status"] == "queued"
    job = wait_for_job(client, started["jobId"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "MODEL_CHECKSUM_MISMATCH"
    assert code_reason in job["error"]["message"]
    models_dir = tmp_path / "data" / "models"
    leftovers = [p.name for p in models_dir.rglob("*") if not p.name.endswith(".lock")]
    assert leftovers == []


def test_an_unreachable_model_url_fails_the_job_clearly(tmp_path: Path) -> None:
    entry = {
        "name": "model.bin",
        "url": (tmp_path / "gone.bin").as_uri(),
        "sha256": "0" * 64,
        "size": 10,
    }
    catalogue = write_catalogue(
        tmp_path / "catalogue.json", [bundle("absent", distribution="x-absent", models=[entry])]
    )
    client = make_app(tmp_path, catalogue, enable_admin=True).test_client()
    job_id = client.post("/api/v1/admin/features/absent/install").get_json()["jobId"]
    job = wait_for_job(client, job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "MODEL_DOWNLOAD_FAILED"
    assert "gone.bin" in job["error"]["message"]


class _Redirecting(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", "http://127.0.0.1:9/elsewhere.bin")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_model_url_that_redirects_is_not_followed(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        entry = {
            "name": "model.bin",
            "url": f"http://127.0.0.1:{server.server_port}/model.bin",
            "sha256": "0" * 64,
            "size": 10,
        }
        catalogue = write_catalogue(
            tmp_path / "catalogue.json",
            [bundle("absent", distribution="x-absent", models=[entry])],
        )
        client = make_app(tmp_path, catalogue, enable_admin=True).test_client()
        job_id = client.post("/api/v1/admin/features/absent/install").get_json()["jobId"]
        job = wait_for_job(client, job_id)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert job["status"] == "failed" and job["error"]["code"] == "MODEL_DOWNLOAD_FAILED"
    assert "302" in job["error"]["message"]
    assert not (tmp_path / "data" / "models" / "absent").exists()


def test_disk_usage_adds_up_the_model_files(tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "catalogue.json", [bundle("one"), bundle("two")])
    app = make_app(tmp_path, catalogue, enable_admin=True)
    models = tmp_path / "data" / "models"
    (models / "one" / "sub").mkdir(parents=True)
    (models / "one" / "a.bin").write_bytes(b"a" * 1234)
    (models / "one" / "sub" / "b.bin").write_bytes(b"b" * 4321)
    (models / "dropped").mkdir()
    (models / "dropped" / "old.bin").write_bytes(b"c" * 77)
    (models / "loose.bin").write_bytes(b"d" * 5)
    usage = app.test_client().get("/api/v1/admin/features/disk-usage").get_json()
    assert usage["modelsDir"] == str(models)
    assert usage["totalBytes"] == 1234 + 4321 + 77 + 5
    assert usage["bundles"] == [
        {"id": "one", "bytes": 1234 + 4321, "inCatalogue": True},
        {"id": "two", "bytes": 0, "inCatalogue": True},
        {"id": "dropped", "bytes": 77, "inCatalogue": False},
    ]


# --- install and uninstall for real, in a throwaway virtual environment ----------------------

PLUGIN_SETUP_CFG = """
[metadata]
name = pixmill-feature-test
version = 0.7.0

[options]
py_modules = pixmill_feature_test

[options.entry_points]
pixmill =
    featuretest = pixmill_feature_test
"""

PLUGIN_MODULE = """
from PIL import ImageOps
from pixmill import ImageResult, Settings, Tool, hookimpl

@hookimpl
def pixmill_tools():
    return [Tool(id="feature-mirror", name="Feature mirror", description="Mirrors the image.",
                 settings=Settings,
                 run=lambda ctx, inputs, settings: ImageResult(
                     ImageOps.mirror(inputs.file.open())))]
"""

SERVER_SCRIPT = """
from werkzeug.serving import make_server
from pixmill.core.config import Config
from pixmill.server.app import create_app

server = make_server("127.0.0.1", 0, create_app(Config.from_env()), threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment that also sees this one's packages (pixmill among them)
    after its own, so whatever pip installs there stays there."""
    return overlay_venv(tmp_path_factory.mktemp("venv"), timeout=SUBPROCESS_TIMEOUT_S)


class Server:
    """`create_app` served by `python` on a free loopback port, in its own process."""

    def __init__(self, python: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [str(python), "-c", SERVER_SCRIPT],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=SUBPROCESS_TIMEOUT_S):
                self.stop()
                raise AssertionError("the server did not start")
        self.base = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def request(self, method: str, path: str) -> tuple[int, Any]:
        call = urllib.request.Request(self.base + path, method=method)
        try:
            with urllib.request.urlopen(call, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def wait_for_job(self, job_id: str) -> tuple[dict[str, Any], list[tuple[str, int, str]]]:
        """The finished job, and the (status, percent, message) seen while it ran."""
        seen: list[tuple[str, int, str]] = []
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            _, job = self.request("GET", f"/api/v1/jobs/{job_id}")
            observed = (job["status"], job["progress"]["percent"], job["message"])
            if observed not in seen:
                seen.append(observed)
            if job["status"] in ("completed", "failed", "cancelled"):
                return job, seen
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish in {JOB_TIMEOUT_S} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def test_install_and_uninstall_a_bundle_with_a_model_through_rest(
    venv_python: Path, tmp_path: Path
) -> None:
    package = tmp_path / "pixmill-feature-test"
    package.mkdir()
    (package / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    (package / "setup.cfg").write_text(PLUGIN_SETUP_CFG)
    (package / "pixmill_feature_test.py").write_text(PLUGIN_MODULE)
    weights = tmp_path / "weights.onnx"
    weights.write_bytes(os.urandom(70_000))
    catalogue = write_catalogue(
        tmp_path / "catalogue.json",
        [
            bundle(
                "mirror",
                package=str(package),
                distribution="pixmill-feature-test",
                plugins=["featuretest"],
                models=[model_entry(weights, "weights.onnx")],
            )
        ],
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIXMILL_", "PIP_")) and k not in ("REDIS_URL", "DATABASE_URL")
    }
    env.update(
        PIXMILL_DATA_DIR=str(tmp_path / "data"),
        PIXMILL_ENABLE_ADMIN="1",
        PIXMILL_FEATURES_CATALOGUE=str(catalogue),
        # Offline: no index, no dependencies, build with the setuptools already there (pip
        # reads "0" for a --no-* flag as "switch it off", hence the odd value).
        PIP_NO_INDEX="1",
        PIP_NO_DEPS="1",
        PIP_NO_BUILD_ISOLATION="0",
    )

    server = Server(venv_python, env)
    try:
        status, listed = server.request("GET", "/api/v1/features")
        assert status == 200 and listed["features"][0]["status"] == "available"
        status, accepted = server.request("POST", "/api/v1/admin/features/mirror/install")
        assert status == 202 and accepted["async"] is True
        job, seen = server.wait_for_job(accepted["jobId"])
        assert job["status"] == "completed", job
        assert job["kind"] == "feature" and job["toolId"] == "mirror"
        assert "restart it to pick up the change" in job["message"]
        status, results = server.request("GET", f"/api/v1/jobs/{accepted['jobId']}/results")
        result = results["result"]
        assert result["version"] == "0.7.0" and result["modelsAdded"] == ["weights.onnx"]
        assert result["restartRequired"] is True
        assert any(
            line.startswith("added plugin featuretest (pixmill-feature-test 0.7.0)")
            for line in result["changes"]
        )
        assert any(line.startswith("fetching model weights.onnx") for line in result["log"])
        assert f"pip install {package}" in result["log"]
        # Progress was visible on the job while it ran, with the steps' messages.
        assert any(status == "processing" and msg in result["log"] for status, _, msg in seen)
        assert seen[-1][:2] == ("completed", 100)

        status, listed = server.request("GET", "/api/v1/features")
        mirror = listed["features"][0]
        assert (mirror["status"], mirror["version"], mirror["restartRequired"]) == (
            "installed",
            "0.7.0",
            True,
        )
        assert mirror["models"][0]["present"] and mirror["modelBytes"] == 70_000
        model_path = tmp_path / "data" / "models" / "mirror" / "weights.onnx"
        assert model_path.read_bytes() == weights.read_bytes()
        status, tools = server.request("GET", "/api/v1/tools")
        assert "feature-mirror" not in {tool["id"] for tool in tools["tools"]}
    finally:
        server.stop()

    server = Server(venv_python, env)  # the restart
    try:
        status, tools = server.request("GET", "/api/v1/tools")
        assert "feature-mirror" in {tool["id"] for tool in tools["tools"]}
        status, listed = server.request("GET", "/api/v1/features")
        assert listed["features"][0]["status"] == "installed"
        assert not listed["features"][0]["restartRequired"]
        status, usage = server.request("GET", "/api/v1/admin/features/disk-usage")
        assert usage["totalBytes"] == 70_000
        assert usage["bundles"] == [{"id": "mirror", "bytes": 70_000, "inCatalogue": True}]
        status, again = server.request("POST", "/api/v1/admin/features/mirror/install")
        assert status == 409 and again["code"] == "BUNDLE_INSTALLED"

        status, accepted = server.request("POST", "/api/v1/admin/features/mirror/uninstall")
        assert status == 202
        job, _ = server.wait_for_job(accepted["jobId"])
        assert job["status"] == "completed", job
        status, results = server.request("GET", f"/api/v1/jobs/{accepted['jobId']}/results")
        assert results["result"]["bytesFreed"] == 70_000
        assert any(
            line.startswith("removed plugin featuretest") for line in results["result"]["changes"]
        )
        assert not model_path.parent.exists()
        status, listed = server.request("GET", "/api/v1/features")
        assert listed["features"][0]["status"] == "available"
        assert listed["features"][0]["restartRequired"]  # still loaded in this process
    finally:
        server.stop()

    server = Server(venv_python, env)
    try:
        status, tools = server.request("GET", "/api/v1/tools")
        assert "feature-mirror" not in {tool["id"] for tool in tools["tools"]}
    finally:
        server.stop()
