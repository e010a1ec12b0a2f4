"""Batch calls: `POST /api/v1/tools/<section>/<toolId>/batch` and `pixmill.core.batch`.

Every test runs on SQLite and on PostgreSQL (a throwaway database per module, see
tests/test_db.py). Apps without Redis run the members on their in-process `LocalRunner`;
the tests marked "on RQ" use a private `redis-server` for this module and real RQ workers,
in this process (burst mode) or as `pixmill worker` subprocesses. Every wait is bounded.

The throwaway tools below join the real plugins (`resize`, ...) through
`load_registry(extra_plugins=[PLUGIN])` here and `PIXMILL_EXTRA_PLUGINS=test_batch:PLUGIN`
in worker subprocesses; they record their runs in marker files under
`PIXMILL_TEST_BATCH_DIR`.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import test_db  # the database helpers, shared with tests/test_db.py
from flask import Flask
from flask.testing import FlaskClient
from marshmallow import fields, validate
from PIL import Image
from rq import Queue
from sqlalchemy import text
from test_dispatch import kill_group, work  # an in-process burst worker, a process killer

from pixmill import FileInput, FileResult, Settings, Tool, hookimpl
from pixmill.core import batch as batch_module
from pixmill.core.batch import BatchMember, is_waiting, submit_batch, submit_members
from pixmill.core.blobs import BlobKey
from pixmill.core.config import Config
from pixmill.core.contracts import Context, Extractor, InputFile, Inputs
from pixmill.core.dispatch import Dispatcher, Reconciler
from pixmill.core.errors import PixmillError
from pixmill.core.jobstore import JobStore
from pixmill.core.models import Job, JobKind, JobStatus
from pixmill.core.plugin_host import Registry, load_registry
from pixmill.core.redis_server import PrivateRedis
from pixmill.core.worker import WorkerState, install_state, run_job_with
from pixmill.server.app import create_app
from pixmill.server.state import AppState
from pixmill.testing import images

MARKERS_ENV = "PIXMILL_TEST_BATCH_DIR"
TESTS_DIR = Path(__file__).resolve().parent
WAIT_S = 30.0


# ----- throwaway tools --------------------------------------------------------------------------


def _marker(name: str) -> Path:
    return Path(os.environ[MARKERS_ENV]) / name


def _record(name: str) -> None:
    with open(_marker(name), "a", encoding="ascii") as handle:
        handle.write(f"{os.getpid()}\n")


class EchoSettings(Settings):
    level = fields.Integer(load_default=1, validate=validate.Range(min=1, max=10))


def _echo(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    _record("echo")
    return FileResult(inputs.file.data, inputs.file.format.name)


def _picky(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    """Raises on an image 13 pixels wide: a plugin failing on one file of a batch."""
    if inputs.file.header.width == 13:
        raise ValueError("13 pixels wide is unlucky")
    return FileResult(inputs.file.data, inputs.file.format.name)


def _slow(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    _record("slow")
    for _ in range(400):  # 10 s at most
        if _marker("release").exists():
            break
        ctx.check_cancelled()
        time.sleep(0.025)
    return FileResult(inputs.file.data, inputs.file.format.name)


def _stamp(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    """Answers with the shared `stamp` file: proof that every member received it."""
    stamp: InputFile = inputs["stamp"]
    return FileResult(stamp.data, stamp.format.name)


def _measure(ctx: Context, image: InputFile, settings: dict[str, Any]) -> dict[str, Any]:
    header = image.header
    return {"width": header.width, "height": header.height}


def _tool(tool_id: str, run: Any, **extra: Any) -> Tool:
    return Tool(id=tool_id, name=tool_id, description=tool_id, settings=Settings, run=run, **extra)


TOOLS = [
    Tool(id="batch-echo", name="echo", description="echo", settings=EchoSettings, run=_echo),
    _tool("batch-picky", _picky, max_attempts=1),
    _tool("batch-slow", _slow),
    _tool(
        "batch-stamp",
        _stamp,
        inputs=(FileInput(), FileInput(name="stamp", description="shared by every file")),
    ),
]
MEASURE = Extractor(
    id="batch-measure", name="measure", description="measure", settings=Settings, extract=_measure
)


class _BatchTestTools:
    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        return TOOLS

    @hookimpl
    def pixmill_extractors(self) -> list[Extractor]:
        return [MEASURE]


PLUGIN = _BatchTestTools()


# ----- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The installed plugins (real tools such as resize) and the throwaway ones."""
    return load_registry(extra_plugins=[PLUGIN])


@pytest.fixture(scope="module", params=test_db.BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with test_db.empty_database_url(request.param, tmp_path_factory.mktemp("batch-db")) as url:
        yield url


@pytest.fixture
def markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "markers"
    directory.mkdir()
    monkeypatch.setenv(MARKERS_ENV, str(directory))
    return directory


@pytest.fixture
def make_app(
    tmp_path: Path, database_url: str, registry: Registry, markers: Path
) -> Callable[..., Flask]:
    """An app on the module's database (emptied first); keyword arguments are Config fields."""

    def make(**overrides: Any) -> Flask:
        config = Config(data_dir=tmp_path / "data", load_plugins=None)
        app = create_app(config, registry, database_url=database_url, **overrides)
        with state_of(app).db.sessions.begin() as session:
            for table in ("job_events", "jobs", "pipelines"):
                session.execute(text(f"DELETE FROM {table}"))
        return app

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def state_of(app: Flask) -> AppState:
    state: AppState = app.extensions["pixmill"]
    return state


def post_batch(
    client: FlaskClient,
    tool: str,
    files: list[tuple[bytes, str]],
    settings: Any = None,
    *,
    query: str = "",
    part: str = "files",
    extra: dict[str, Any] | None = None,
) -> Any:
    form: dict[str, Any] = {part: [(io.BytesIO(data), name) for data, name in files]}
    if settings is not None:
        form["settings"] = settings if isinstance(settings, str) else json.dumps(settings)
    form.update(extra or {})
    return client.post(f"/api/v1/tools/image/{tool}/batch{query}", data=form)


def archive_of(response: Any) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    """The ZIP of a 200 answer and its manifest, after checking the answer's headers."""
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/zip"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert archive.testzip() is None
    manifest: dict[str, Any] = json.loads(archive.read(batch_module.MANIFEST_NAME))
    assert manifest["jobId"] == response.headers["X-Job-Id"]
    return archive, manifest


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    assert set(body) == {"error", "code", "details", "requestId"}
    assert body["code"] == code, body
    return body


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def runs(markers: Path, name: str) -> int:
    path = markers / name
    return len(path.read_text().split()) if path.exists() else 0


def stored_files(app: Flask) -> list[Path]:
    root = state_of(app).config.blobs_dir
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def only_the_entries(archive: zipfile.ZipFile) -> list[str]:
    return [name for name in archive.namelist() if name != batch_module.MANIFEST_NAME]


# ----- the ZIP ----------------------------------------------------------------------------------


def test_a_batch_answers_a_zip_of_every_result_in_input_order_with_a_manifest(
    app: Flask, client: FlaskClient
) -> None:
    sources = [
        (images.jpeg(200, 100), "wide.jpg"),
        (images.png(100, 100), "square.png"),
        (images.jpeg(100, 200), "tall.jpeg"),
    ]
    response = post_batch(client, "resize", sources, {"width": 50})
    archive, manifest = archive_of(response)
    assert response.headers["Content-Disposition"] == 'attachment; filename="resize-batch.zip"'

    assert only_the_entries(archive) == ["wide.jpg", "square.png", "tall.jpg"]
    assert archive.namelist()[-1] == batch_module.MANIFEST_NAME
    for (data, _), name in zip(sources, only_the_entries(archive), strict=True):
        width, height = size_of(data)
        assert size_of(archive.read(name)) == (50, round(height * 50 / width))

    assert manifest["counts"] == {"total": 3, "completed": 3, "failed": 0, "cancelled": 0}
    assert [entry["filename"] for entry in manifest["files"]] == [n for _, n in sources]
    for index, entry in enumerate(manifest["files"]):
        assert entry["index"] == index and entry["status"] == "completed"
        assert entry["originalSize"] == len(sources[index][0])
        assert entry["processedSize"] == archive.getinfo(entry["output"]).file_size
        assert entry["error"] is None

    # The batch is a job of its own, its members jobs of theirs.
    batch_id = response.headers["X-Job-Id"]
    shown = client.get(f"/api/v1/jobs/{batch_id}").get_json()
    assert shown["kind"] == "batch" and shown["status"] == "completed"
    assert shown["toolId"] == "resize" and shown["settings"]["width"] == 50
    assert shown["progress"] == {"current": 3, "total": 3, "percent": 100}
    assert shown["inputs"]["count"] == 3
    members = state_of(app).jobs.children(batch_id)
    assert {m.id for m in members} == {entry["jobId"] for entry in manifest["files"]}
    assert all(m.parent_id == batch_id and m.kind is JobKind.TOOL for m in members)

    # ...whose result is the manifest and whose output is the same ZIP, downloadable later.
    results = client.get(f"/api/v1/jobs/{batch_id}/results").get_json()
    assert results["result"] == manifest
    [stored] = results["files"]
    assert stored["filename"] == "resize-batch.zip" and stored["format"] == "zip"
    download = client.get(stored["downloadUrl"])
    assert download.status_code == 200 and download.data == response.data


def test_names_are_made_unique_without_regard_to_case(client: FlaskClient) -> None:
    names = ["photo.jpg", "photo.jpg", "PHOTO.jpg", "photo-2.jpg", "manifest.jpg"]
    sources = [(images.jpeg(40 + i, 30), name) for i, name in enumerate(names)]
    archive, manifest = archive_of(post_batch(client, "batch-echo", sources))
    entries = only_the_entries(archive)
    assert entries == ["photo.jpg", "photo-2.jpg", "PHOTO-3.jpg", "photo-2-2.jpg", "manifest.jpg"]
    assert len({name.lower() for name in archive.namelist()}) == len(archive.namelist())
    assert [entry["output"] for entry in manifest["files"]] == entries
    # Each entry holds its own file, whatever it was renamed to.
    for (data, _), name in zip(sources, entries, strict=True):
        assert archive.read(name) == data


def test_a_failing_file_does_not_sink_the_batch(app: Flask, client: FlaskClient) -> None:
    good = images.jpeg(120, 80)
    archive_bytes = io.BytesIO()
    with zipfile.ZipFile(archive_bytes, "w") as inner:
        inner.writestr("../../evil.jpg", good)  # a zip-slip name: never unpacked at all
    sources = [
        (good, "first.jpg"),
        (good[: len(good) // 3], "truncated.jpg"),  # claims JPEG, cannot be decoded
        (archive_bytes.getvalue(), "photos.zip"),  # batches do not unpack archives
        (b"", "empty.png"),
        (images.png(60, 60), "last.png"),
    ]
    archive, manifest = archive_of(post_batch(client, "resize", sources, {"width": 30}))
    assert only_the_entries(archive) == ["first.jpg", "last.png"]
    assert manifest["counts"] == {"total": 5, "completed": 2, "failed": 3, "cancelled": 0}
    outcomes = [(e["status"], e["error"] and e["error"]["code"]) for e in manifest["files"]]
    assert outcomes == [
        ("completed", None),
        ("failed", "INVALID_IMAGE"),
        ("failed", "UNSUPPORTED_FORMAT"),
        ("failed", "EMPTY_FILE"),
        ("completed", None),
    ]
    assert all(e["error"]["message"] for e in manifest["files"] if e["error"])
    # The refused files were never stored nor run: their members failed at submission.
    members = {job.id: job for job in state_of(app).jobs.children(manifest["jobId"])}
    for entry in manifest["files"][2:4]:
        refused = members[entry["jobId"]]
        assert refused.attempt == 0 and refused.status is JobStatus.FAILED
        with pytest.raises(PixmillError):
            state_of(app).blobs.open(BlobKey.parse(refused.inputs[0]["key"]))


def test_a_member_whose_plugin_raises_is_reported_and_the_others_complete(
    client: FlaskClient,
) -> None:
    sources = [
        (images.png(12, 9), "a.png"),
        (images.png(13, 9), "b.png"),
        (images.png(14, 9), "c.png"),
    ]
    archive, manifest = archive_of(post_batch(client, "batch-picky", sources))
    assert only_the_entries(archive) == ["a.png", "c.png"]
    failed = manifest["files"][1]
    assert failed["status"] == "failed" and failed["output"] is None
    assert failed["error"]["code"] == "TOOL_FAILED"
    assert "13 pixels wide is unlucky" in failed["error"]["message"]


def test_extractors_give_one_json_entry_per_file(client: FlaskClient) -> None:
    sources = [(images.png(31, 17), "manifest.png"), (images.jpeg(20, 40), "b.jpg")]
    archive, manifest = archive_of(post_batch(client, "batch-measure", sources))
    # `manifest.json` is the manifest's: the first file's entry steps aside.
    assert only_the_entries(archive) == ["manifest-2.json", "b.json"]
    for (data, _), name in zip(sources, only_the_entries(archive), strict=True):
        width, height = size_of(data)
        assert json.loads(archive.read(name)) == {"width": width, "height": height}
    assert [entry["output"] for entry in manifest["files"]] == only_the_entries(archive)


def test_the_tools_other_parts_are_shared_by_every_file(client: FlaskClient) -> None:
    stamp = images.png(7, 5)
    sources = [(images.jpeg(30, 20), "a.jpg"), (images.jpeg(40, 20), "b.jpg")]
    response = post_batch(
        client, "batch-stamp", sources, extra={"stamp": (io.BytesIO(stamp), "stamp.png")}
    )
    archive, manifest = archive_of(response)
    assert manifest["counts"]["completed"] == 2
    assert [archive.read(name) for name in only_the_entries(archive)] == [stamp, stamp]


def test_the_files_may_come_as_file_parts_too(client: FlaskClient) -> None:
    sources = [(images.png(10, 10), "one.png"), (images.png(11, 10), "two.png")]
    archive, _ = archive_of(post_batch(client, "batch-echo", sources, part="file"))
    assert only_the_entries(archive) == ["one.png", "two.png"]


# ----- bad requests -----------------------------------------------------------------------------


def _mixed(client: FlaskClient) -> Any:
    form = {
        "files": (io.BytesIO(images.png(8, 8)), "a.png"),
        "file": (io.BytesIO(images.png(8, 8)), "b.png"),
    }
    return client.post("/api/v1/tools/image/batch-echo/batch", data=form)


def _bad_shared_format(client: FlaskClient) -> Any:
    extra = {"stamp": (io.BytesIO(b"%PDF-1.4 not an image"), "stamp.png")}
    return post_batch(client, "batch-stamp", [(images.png(8, 8), "a.png")], extra=extra)


BAD_BATCHES: dict[str, tuple[Callable[[FlaskClient], Any], int, str]] = {
    "no files": (lambda c: post_batch(c, "batch-echo", [], {"level": 2}), 400, "MISSING_FILE"),
    "over MAX_BATCH_SIZE": (
        lambda c: post_batch(c, "batch-echo", [(images.png(8, 8), f"{i}.png") for i in range(4)]),
        400,
        "TOO_MANY_FILES",
    ),
    "bad settings": (
        lambda c: post_batch(c, "batch-echo", [(images.png(8, 8), "a.png")], {"level": 11}),
        400,
        "VALIDATION_ERROR",
    ),
    "unknown setting": (
        lambda c: post_batch(c, "batch-echo", [(images.png(8, 8), "a.png")], {"size": 1}),
        400,
        "VALIDATION_ERROR",
    ),
    "settings not JSON": (
        lambda c: post_batch(c, "batch-echo", [(images.png(8, 8), "a.png")], "{level"),
        400,
        "VALIDATION_ERROR",
    ),
    "unknown tool": (
        lambda c: post_batch(c, "no-such-tool", [(images.png(8, 8), "a.png")]),
        404,
        "TOOL_NOT_FOUND",
    ),
    "wrong section": (
        lambda c: c.post(
            "/api/v1/tools/video/batch-echo/batch",
            data={"files": (io.BytesIO(images.png(8, 8)), "a.png")},
        ),
        404,
        "TOOL_NOT_FOUND",
    ),
    "file and files together": (_mixed, 400, "MIXED_FILE_PARTS"),
    "a part the tool does not take": (
        lambda c: post_batch(
            c,
            "batch-echo",
            [(images.png(8, 8), "a.png")],
            extra={"watermark": (io.BytesIO(images.png(8, 8)), "w.png")},
        ),
        400,
        "UNEXPECTED_FILE",
    ),
    "a shared part that is not an image": (_bad_shared_format, 415, "UNSUPPORTED_FORMAT"),
    "an unexpected form field": (
        lambda c: post_batch(c, "batch-echo", [(images.png(8, 8), "a.png")], extra={"x": "1"}),
        400,
        "UNEXPECTED_FIELD",
    ),
    "async neither true nor false": (
        lambda c: post_batch(c, "batch-echo", [(images.png(8, 8), "a.png")], query="?async=maybe"),
        400,
        "VALIDATION_ERROR",
    ),
    "not a form": (
        lambda c: c.post(
            "/api/v1/tools/image/batch-echo/batch", data=b"raw", content_type="text/plain"
        ),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_bad_batches_are_refused_before_anything_is_stored(
    make_app: Callable[..., Flask], markers: Path, case: str
) -> None:
    app = make_app(max_batch_size=3)
    call, status, code = BAD_BATCHES[case]
    assert_error(call(app.test_client()), status, code)
    assert state_of(app).jobs.list().total == 0
    assert stored_files(app) == []
    assert runs(markers, "echo") == 0


def test_get_on_the_batch_route_is_405(client: FlaskClient) -> None:
    body = assert_error(client.get("/api/v1/tools/image/resize/batch"), 405, "METHOD_NOT_ALLOWED")
    assert body["details"]["allowed"] == ["OPTIONS", "POST"]


# ----- the 202 form, cancelling -----------------------------------------------------------------


def test_async_true_answers_202_and_the_zip_downloads_once_finished(
    app: Flask, client: FlaskClient
) -> None:
    sources = [(images.png(10, 10), "a.png"), (images.png(12, 10), "b.png")]
    response = post_batch(client, "batch-echo", sources, query="?async=true")
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    batch_id = body["jobId"]
    assert body["async"] is True and body["status"] == "queued"
    assert body["statusUrl"] == f"/api/v1/jobs/{batch_id}" == response.headers["Location"]
    assert response.headers["X-Job-Id"] == batch_id

    done = state_of(app).jobs.wait_until_final(batch_id, WAIT_S)
    assert done.status is JobStatus.COMPLETED
    [stored] = client.get(f"/api/v1/jobs/{batch_id}/results").get_json()["files"]
    download = client.get(stored["downloadUrl"])
    archive = zipfile.ZipFile(io.BytesIO(download.data))
    assert only_the_entries(archive) == ["a.png", "b.png"]
    assert [archive.read(name) for name in only_the_entries(archive)] == [d for d, _ in sources]


def test_a_batch_still_running_after_the_wait_timeout_answers_202(
    make_app: Callable[..., Flask], markers: Path
) -> None:
    app = make_app(wait_timeout_s=0.3)
    response = post_batch(app.test_client(), "batch-slow", [(images.png(8, 8), "a.png")])
    assert response.status_code == 202, response.get_data(as_text=True)
    batch_id = response.get_json()["jobId"]
    assert state_of(app).jobs.get(batch_id).status is JobStatus.QUEUED
    (markers / "release").touch()
    assert state_of(app).jobs.wait_until_final(batch_id, WAIT_S).status is JobStatus.COMPLETED


def test_cancelling_a_batch_cancels_its_unfinished_members(
    app: Flask, client: FlaskClient, markers: Path
) -> None:
    sources = [(images.png(8 + i, 8), f"{i}.png") for i in range(3)]
    answers: list[Any] = []
    # The synchronous call waits in another thread; the LocalRunner's two threads take two
    # members, the third waits its turn.
    caller = threading.Thread(
        target=lambda: answers.append(post_batch(app.test_client(), "batch-slow", sources))
    )
    caller.start()
    try:
        wait_for(lambda: runs(markers, "slow") == 2, "two members running")
        [batch] = state_of(app).jobs.list(kind="batch").items
        cancel = client.post(f"/api/v1/jobs/{batch.id}/cancel")
        assert cancel.status_code == 200 and cancel.get_json()["job"]["status"] == "cancelled"
    finally:
        caller.join(WAIT_S)
    assert not caller.is_alive()
    [answer] = answers
    body = assert_error(answer, 409, "JOB_CANCELLED")
    assert body["details"]["jobId"] == batch.id == answer.headers["X-Job-Id"]

    store = state_of(app).jobs
    members = store.children(batch.id)
    wait_for(lambda: all(store.get(m.id).is_final for m in members), "members to stop")
    assert {store.get(m.id).status for m in members} == {JobStatus.CANCELLED}
    assert runs(markers, "slow") == 2  # the third never started
    final = store.get(batch.id)
    assert final.status is JobStatus.CANCELLED and final.outputs == []


# ----- the batch job on the worker side ---------------------------------------------------------


@dataclass
class Manual:
    """A dispatcher that only records what it enqueues, and a worker state to run it by hand."""

    dispatcher: Dispatcher
    state: WorkerState
    enqueued: list[str]

    @property
    def store(self) -> JobStore:
        return self.state.jobstore

    def run(self, job_id: str, woken: list[str] | None = None) -> None:
        run_job_with(self.state, job_id, run_next=woken.append if woken is not None else None)


@pytest.fixture
def manual(app: Flask) -> Manual:
    app_state = state_of(app)
    enqueued: list[str] = []
    dispatcher = Dispatcher(
        app_state.jobs,
        app_state.blobs,
        None,
        config=app_state.config,
        local_runner=enqueued.append,
    )
    state = WorkerState(
        config=app_state.config,
        registry=app_state.registry,
        jobstore=app_state.jobs,
        blobs=app_state.blobs,
    )
    return Manual(dispatcher, state, enqueued)


def test_members_are_enqueued_before_their_batch_and_the_last_one_wakes_it(
    manual: Manual,
) -> None:
    definition = manual.state.registry.catalogue_entry("batch-echo")
    files = [(images.png(9 + i, 9), f"{i}.png") for i in range(3)]
    batch = submit_batch(manual.dispatcher, definition, files, {})
    member_ids = [BlobKey.parse(ref["key"]).job_id for ref in batch.inputs]
    assert manual.enqueued == [*member_ids, batch.id]

    # Run early, the batch stays queued and spends no attempt.
    manual.run(batch.id)
    assert is_waiting(manual.store, batch.id)
    waiting = manual.store.get(batch.id)
    assert waiting.status is JobStatus.QUEUED and waiting.attempt == 0

    woken: list[str] = []
    for done_count, member_id in enumerate(member_ids, start=1):
        manual.run(member_id, woken)
        waiting = manual.store.get(batch.id)
        assert (waiting.progress_current, waiting.progress_total) == (done_count, 3)
        assert waiting.message == f"{done_count} of 3 files done"
    assert woken == [batch.id]  # by the last member only
    progress = [
        event.data for event in manual.store.events(batch.id) if event.type == "member_finished"
    ]
    assert [item["current"] for item in progress if item] == [1, 2, 3]

    manual.run(batch.id)
    manual.run(batch.id)  # enqueued twice (a wake-up and the reconciler): harmless
    done = manual.store.get(batch.id)
    assert done.status is JobStatus.COMPLETED and done.attempt == 1
    types = [event.type for event in manual.store.events(batch.id)]
    assert types.count("claimed") == 1 and types.count("completed") == 1


def test_a_deleted_member_is_reported_missing_once_the_grace_has_passed(
    manual: Manual, monkeypatch: pytest.MonkeyPatch
) -> None:
    definition = manual.state.registry.catalogue_entry("batch-echo")
    files = [(images.png(9, 9), "kept.png"), (images.png(10, 9), "deleted.png")]
    batch = submit_batch(manual.dispatcher, definition, files, {})
    kept, deleted = (BlobKey.parse(ref["key"]).job_id for ref in batch.inputs)
    manual.run(kept)
    manual.store.delete(deleted)
    # It might still be on its way (a batch being submitted): the batch waits...
    assert is_waiting(manual.store, batch.id)
    # ...until SUBMIT_GRACE_S after its creation, then reports it.
    monkeypatch.setattr(batch_module, "SUBMIT_GRACE_S", 0.0)
    manual.run(batch.id)
    done = manual.store.get(batch.id)
    assert done.status is JobStatus.COMPLETED
    assert done.result is not None
    outcomes = [(e["status"], e["error"] and e["error"]["code"]) for e in done.result["files"]]
    assert outcomes == [("completed", None), ("failed", "MEMBER_MISSING")]


def test_a_member_result_gone_before_the_zip_is_reported(manual: Manual) -> None:
    definition = manual.state.registry.catalogue_entry("batch-echo")
    files = [(images.png(9, 9), "a.png"), (images.png(10, 9), "b.png")]
    batch = submit_batch(manual.dispatcher, definition, files, {})
    first, second = (BlobKey.parse(ref["key"]).job_id for ref in batch.inputs)
    manual.run(first)
    manual.run(second)
    manual.state.blobs.delete_job(second)  # expired, say
    manual.run(batch.id)
    done = manual.store.get(batch.id)
    assert done.result is not None
    assert [e["error"] and e["error"]["code"] for e in done.result["files"]] == [
        None,
        "RESULT_MISSING",
    ]
    [ref] = done.outputs
    with manual.state.blobs.open(BlobKey.parse(ref["key"])) as stream:
        archive = zipfile.ZipFile(io.BytesIO(stream.read()))
    assert only_the_entries(archive) == ["a.png"]


def test_a_submission_failing_half_way_leaves_no_job_and_no_file(
    manual: Manual, app: Flask
) -> None:
    """`submit_members` with members of any kind (here: one made by hand, one that fails)."""
    definition = manual.state.registry.catalogue_entry("batch-echo")
    made: list[str] = []

    def create_first(batch_id: str, member_id: str) -> Job:
        made.append(member_id)
        inputs = Inputs({"file": InputFile(images.png(8, 8), "a.png", manual.state.config.limits)})
        return manual.dispatcher.create_tool_job(
            definition, inputs, {"level": 1}, parent_id=batch_id, job_id=member_id
        )

    def create_second(batch_id: str, member_id: str) -> Job:
        raise OSError("disk full")

    members = [
        BatchMember("a.png", 10, "png", create=create_first),
        BatchMember("b.png", 10, "png", create=create_second),
    ]
    with pytest.raises(OSError, match="disk full"):
        submit_members(
            manual.dispatcher, members, member_kind=JobKind.TOOL, settings={}, tool_id="batch-echo"
        )
    assert made and manual.store.list().total == 0
    assert stored_files(app) == []
    assert manual.enqueued == []


def test_a_member_is_either_created_or_refused() -> None:
    with pytest.raises(ValueError, match="either"):
        BatchMember("a.png", 1, "png")
    with pytest.raises(ValueError, match="either"):
        BatchMember(
            "a.png",
            1,
            "png",
            create=lambda batch_id, member_id: pytest.fail("never called"),
            refusal=PixmillError("no"),
        )


# ----- on RQ ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def conn(private_redis: PrivateRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(private_redis.url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def rq_app(
    make_app: Callable[..., Flask], private_redis: PrivateRedis, conn: redis.Redis
) -> Iterator[Flask]:
    """An app queueing on RQ, and this process's worker state on the same database."""
    app = make_app(redis_url=private_redis.url)
    app_state = state_of(app)
    install_state(
        WorkerState(
            config=app_state.config,
            registry=app_state.registry,
            jobstore=app_state.jobs,
            blobs=app_state.blobs,
            redis=conn,
        )
    )
    try:
        yield app
    finally:
        install_state(None)


def queued_ids(conn: redis.Redis) -> list[str]:
    return Queue("default", connection=conn).get_job_ids()


def test_on_rq_each_file_is_a_job_of_its_own_and_the_last_wakes_the_batch(
    rq_app: Flask, conn: redis.Redis
) -> None:
    client = rq_app.test_client()
    sources = [(images.png(10 + i, 10), f"{i}.png") for i in range(4)]
    response = post_batch(client, "batch-echo", sources, query="?async=true")
    assert response.status_code == 202
    batch_id = response.get_json()["jobId"]
    batch = state_of(rq_app).jobs.get(batch_id)
    member_ids = [BlobKey.parse(ref["key"]).job_id for ref in batch.inputs]
    assert queued_ids(conn) == [*member_ids, batch_id]  # one RQ job per file, the batch last

    store = state_of(rq_app).jobs
    work(conn, ["default"], until=lambda: store.get(batch_id).is_final, timeout=WAIT_S)

    done = store.get(batch_id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    [stored] = client.get(f"/api/v1/jobs/{batch_id}/results").get_json()["files"]
    archive = zipfile.ZipFile(io.BytesIO(client.get(stored["downloadUrl"]).data))
    assert only_the_entries(archive) == [name for _, name in sources]


def test_on_rq_cancelling_a_batch_takes_its_members_off_the_queue(
    rq_app: Flask, conn: redis.Redis, markers: Path
) -> None:
    client = rq_app.test_client()
    sources = [(images.png(10 + i, 10), f"{i}.png") for i in range(3)]
    batch_id = post_batch(client, "batch-echo", sources, query="?async=true").get_json()["jobId"]
    assert client.post(f"/api/v1/jobs/{batch_id}/cancel").status_code == 200
    assert queued_ids(conn) == []
    store = state_of(rq_app).jobs
    assert {job.status for job in store.children(batch_id)} == {JobStatus.CANCELLED}
    work(conn, ["default"])
    assert runs(markers, "echo") == 0
    assert store.get(batch_id).status is JobStatus.CANCELLED


def test_on_rq_a_lost_wake_up_is_made_good_by_the_reconciler(
    rq_app: Flask, conn: redis.Redis
) -> None:
    client = rq_app.test_client()
    sources = [(images.png(10, 10), "a.png"), (images.png(11, 10), "b.png")]
    batch_id = post_batch(client, "batch-echo", sources, query="?async=true").get_json()["jobId"]
    store = state_of(rq_app).jobs
    # The members run somewhere that cannot wake the batch, and Redis lost the batch.
    deaf = WorkerState(
        config=state_of(rq_app).config,
        registry=state_of(rq_app).registry,
        jobstore=store,
        blobs=state_of(rq_app).blobs,
    )
    for member in store.children(batch_id):
        run_job_with(deaf, member.id)
    conn.delete(Queue("default", connection=conn).key)
    assert store.get(batch_id).status is JobStatus.QUEUED

    report = Reconciler(store, conn, grace_seconds=0).run_once()
    assert report.reenqueued == [batch_id]
    work(conn, ["default"], until=lambda: store.get(batch_id).is_final, timeout=WAIT_S)
    assert store.get(batch_id).status is JobStatus.COMPLETED


def test_on_rq_a_synchronous_batch_is_answered_by_worker_processes(
    rq_app: Flask, private_redis: PrivateRedis, database_url: str, markers: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXMILL_")}
    env.update(
        REDIS_URL=private_redis.url,
        DATABASE_URL=database_url,
        PIXMILL_DATA_DIR=str(state_of(rq_app).config.data_dir),
        PIXMILL_EXTRA_PLUGINS="test_batch:PLUGIN",
        PYTHONPATH=os.pathsep.join([str(TESTS_DIR), *filter(None, [env.get("PYTHONPATH")])]),
        **{MARKERS_ENV: str(markers)},
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "pixmill", "worker", "--queue", "default"],
            env=env,
            cwd=TESTS_DIR.parent,
            start_new_session=True,  # its own process group: the worker and RQ's scheduler
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        sources = [(images.jpeg(60 + 10 * i, 40), f"{i}.jpg") for i in range(6)]
        response = post_batch(rq_app.test_client(), "resize", sources, {"width": 20})
        archive, manifest = archive_of(response)
        assert manifest["counts"]["completed"] == 6
        assert only_the_entries(archive) == [name for _, name in sources]
        assert all(size_of(archive.read(name))[0] == 20 for name in only_the_entries(archive))
    finally:
        for process in workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in workers:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_group(process)
