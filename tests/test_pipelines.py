"""Pipelines (seed 003's `/api/v1/pipeline/*`): checking, running, per-step reuse, failures,
saved pipelines, on SQLite and PostgreSQL.

Most tests use an app without Redis, whose jobs run on the in-process `LocalRunner`: the
same `pixmill.core.worker` code a real worker runs, on threads. One test runs a real
`pixmill worker` process on a private Redis. Every answer is checked against the app's own
OpenAPI document; every wait is bounded.

The throwaway tools below are registered with `load_registry(extra_plugins=[PLUGIN])`, and
in the worker subprocess through `PIXMILL_EXTRA_PLUGINS=test_pipelines:PLUGIN`. They record
each run in marker files under `PIXMILL_TEST_PIPELINES_DIR`, so a test can tell a computed
step from a reused one.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_db  # the database helpers (SQLite and a throwaway PostgreSQL database)
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from test_jobs_api import assert_error, conforms

from pixmill import FileResult, Settings, Tool, hookimpl
from pixmill.core.blobs import BlobKey
from pixmill.core.config import Config
from pixmill.core.contracts import Context, FileInput, Inputs, OutputKind
from pixmill.core.errors import BadRequestError
from pixmill.core.models import JobKind, JobStatus
from pixmill.core.pipelines import read_definition, submit_pipeline
from pixmill.core.plugin_host import load_registry
from pixmill.core.redis_server import PrivateRedis
from pixmill.core.worker import WorkerState, run_job_with
from pixmill.server.app import create_app
from pixmill.server.state import AppState
from pixmill.testing import images

MARKERS_ENV = "PIXMILL_TEST_PIPELINES_DIR"
TESTS_DIR = Path(__file__).resolve().parent
WAIT_S = 30.0
MAX_STEPS = 4


# ----- throwaway tools ------------------------------------------------------------------------


def _marker(name: str) -> Path:
    return Path(os.environ[MARKERS_ENV]) / name


def _record(name: str) -> None:
    with open(_marker(name), "a", encoding="ascii") as handle:
        handle.write(f"{os.getpid()}\n")


def _same_bytes(inputs: Inputs) -> FileResult:
    return FileResult(inputs.file.data, inputs.file.format.name)


def _tally(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    _record("tally")
    return _same_bytes(inputs)


def _hold(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    """Runs until released, deaf to cancellation: only the check between steps stops it."""
    _record("hold")
    for _ in range(400):  # 10 s at most
        if _marker("hold.release").exists():
            break
        time.sleep(0.025)
    return _same_bytes(inputs)


def _explode(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    _record("explode")
    raise ValueError("the plugin exploded")


def _refuse(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    raise BadRequestError("this input is refused", code="REFUSED")


def _refuse_small(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    if inputs.file.header.width < 100:
        raise BadRequestError("too small for this tool", code="TOO_SMALL")
    return _same_bytes(inputs)


def _stats(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> dict[str, Any]:
    return {"bytes": inputs.file.size}


def _tool(tool_id: str, run: Any, **extra: Any) -> Tool:
    return Tool(id=tool_id, name=tool_id, description=tool_id, settings=Settings, run=run, **extra)


TOOLS = [
    _tool("tally", _tally),
    _tool("hold", _hold),
    _tool("explode", _explode, max_attempts=1),
    _tool("refuse", _refuse),
    _tool("refuse-small", _refuse_small),
    _tool("heavy-echo", _tally, heavy=True, queue="ai"),
    _tool("byte-stats", _stats, output=OutputKind.JSON),
    _tool("needs-mask", _tally, inputs=(FileInput(), FileInput("mask", "a mask"))),
]


class _PipelineTestTools:
    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        return TOOLS


PLUGIN = _PipelineTestTools()


# ----- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=test_db.BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with test_db.empty_database_url(request.param, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture
def markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    monkeypatch.setenv(MARKERS_ENV, str(path))
    return path


def make_config(tmp_path: Path, database_url: str, **extra: Any) -> Config:
    return Config(
        data_dir=tmp_path / "data",
        database_url=database_url,
        max_pipeline_steps=MAX_STEPS,
        wait_timeout_s=WAIT_S,
        **extra,
    )


@pytest.fixture
def app(tmp_path: Path, database_url: str, markers: Path) -> Flask:
    app = create_app(make_config(tmp_path, database_url), registry=load_registry(None, [PLUGIN]))
    # The module's database is shared by its tests: each starts from empty tables.
    with state_of(app).db.sessions.begin() as session:
        for table in ("job_events", "jobs", "pipelines"):
            session.execute(text(f"DELETE FROM {table}"))
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def spec(client: FlaskClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/api/v1/openapi.json").get_json()
    return document


# ----- helpers --------------------------------------------------------------------------------


def state_of(app: Flask) -> AppState:
    state: AppState = app.extensions["pixmill"]
    return state


def step(tool_id: str, **settings: Any) -> dict[str, Any]:
    return {"toolId": tool_id, "settings": settings}


def execute(
    client: FlaskClient,
    pipeline: Any,
    data: bytes | None = None,
    filename: str = "photo.jpg",
    query: str = "",
    form: dict[str, Any] | None = None,
) -> Any:
    """POST /pipeline/execute; `pipeline` is the steps list, a whole object, or raw text."""
    body: dict[str, Any] = {"file": (io.BytesIO(data or images.jpeg(400, 300)), filename)}
    if pipeline is not None:
        if isinstance(pipeline, list):
            pipeline = {"steps": pipeline}
        body["pipeline"] = pipeline if isinstance(pipeline, str) else json.dumps(pipeline)
    body.update(form or {})
    return client.post(f"/api/v1/pipeline/execute{query}", data=body)


def runs(markers: Path, name: str) -> list[str]:
    path = markers / name
    return path.read_text().split() if path.exists() else []


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def nothing_stored(app: Flask) -> bool:
    state = state_of(app)
    uploads = state.config.blobs_dir / "uploads"
    no_uploads = not uploads.exists() or not any(uploads.iterdir())
    return state.jobs.list().total == 0 and no_uploads


RESIZE_ROTATE_WEBP = [step("resize", width=100), step("rotate", angle=90), step("convert")]


# ----- running --------------------------------------------------------------------------------


def test_three_steps_feed_each_other_and_the_result_has_the_last_format(
    app: Flask, client: FlaskClient, spec: dict[str, Any]
) -> None:
    upload = images.jpeg(400, 300)
    response = execute(client, RESIZE_ROTATE_WEBP, upload, "holiday.jpg")
    answer = conforms(spec, response, "/api/v1/pipeline/execute", "post")
    assert response.status_code == 200
    assert response.headers["X-Job-Id"] == answer["jobId"]
    assert answer["downloadUrl"] == f"/api/v1/download/{answer['jobId']}/holiday.webp"

    downloaded = client.get(answer["downloadUrl"])
    assert downloaded.status_code == 200
    result = images.decode(downloaded.data)
    # resize to 100 wide keeps the aspect ratio; the quarter turn then swaps the sides.
    resized = (100, round(300 * 100 / 400))
    assert (result.format, result.size) == ("WEBP", (resized[1], resized[0]))

    steps = answer["steps"]
    assert answer["stepsCompleted"] == len(steps) == 3
    assert [(s["step"], s["toolId"]) for s in steps] == [
        (1, "resize"),
        (2, "rotate"),
        (3, "convert"),
    ]
    assert [s["format"] for s in steps] == ["jpg", "jpg", "webp"]
    assert not any(s["cached"] for s in steps)
    assert steps[0]["inputSize"] == answer["originalSize"] == len(upload)
    for before, after in itertools.pairwise(steps):
        assert before["outputSize"] == after["inputSize"]
    assert steps[-1]["outputSize"] == answer["processedSize"] == len(downloaded.data)

    job = conforms(spec, client.get(f"/api/v1/jobs/{answer['jobId']}"), "/api/v1/jobs/{jobId}")
    assert (job["kind"], job["status"], job["toolId"]) == ("pipeline", "completed", None)
    assert job["progress"] == {"current": 3, "total": 3, "percent": 100}
    assert job["result"] == {"stepsCompleted": 3, "steps": steps}
    # The job records the settings each step ran with: defaults filled in, wire names.
    recorded = job["settings"]["steps"]
    assert [s["toolId"] for s in recorded] == ["resize", "rotate", "convert"]
    assert recorded[0]["settings"]["width"] == 100 and recorded[0]["settings"]["fit"] == "cover"
    assert recorded[2]["settings"]["format"] == "webp"

    # Each computed step is a completed child job holding its output.
    children = state_of(app).jobs.children(answer["jobId"])
    assert [(c.kind, c.tool_id, c.status) for c in children] == [
        (JobKind.TOOL, tool, JobStatus.COMPLETED) for tool in ("resize", "rotate", "convert")
    ]
    assert [c.output_size for c in children] == [s["outputSize"] for s in steps]
    assert all(c.cache_key for c in children)


def test_a_repeated_pipeline_reuses_every_step_without_running_a_plugin(
    client: FlaskClient, markers: Path
) -> None:
    upload = images.jpeg(200, 100)
    first = execute(client, [step("tally"), step("resize", width=50)], upload).get_json()
    assert runs(markers, "tally") == [str(os.getpid())]
    assert [s["cached"] for s in first["steps"]] == [False, False]

    second = execute(client, [step("tally"), step("resize", width=50)], upload, "other.jpg")
    assert second.status_code == 200
    answer = second.get_json()
    assert [s["cached"] for s in answer["steps"]] == [True, True]
    assert len(runs(markers, "tally")) == 1  # the plugin did not run again
    assert answer["jobId"] != first["jobId"]
    assert answer["downloadUrl"].endswith("/other.jpg")  # named after this upload
    assert client.get(answer["downloadUrl"]).data == client.get(first["downloadUrl"]).data

    # A shared first step is reused; a different second one is computed.
    third = execute(client, [step("tally"), step("resize", width=60)], upload).get_json()
    assert [s["cached"] for s in third["steps"]] == [True, False]
    assert images.decode(client.get(third["downloadUrl"]).data).width == 60
    # Other bytes are another input: computed.
    fourth = execute(client, [step("tally")], images.jpeg(201, 100)).get_json()
    assert [s["cached"] for s in fourth["steps"]] == [False]
    assert len(runs(markers, "tally")) == 2


def test_a_queued_tool_call_reuses_a_pipeline_step_with_the_same_input_and_settings(
    app: Flask, client: FlaskClient
) -> None:
    upload = images.jpeg(300, 200)
    pipeline = execute(client, [step("resize", width=50), step("rotate", angle=90)], upload)
    [resize_step, _] = state_of(app).jobs.children(pipeline.get_json()["jobId"])
    queued = client.post(
        "/api/v1/tools/image/resize?async=true",
        data={"file": (io.BytesIO(upload), "again.jpg"), "settings": json.dumps({"width": 50})},
    )
    assert queued.status_code == 202
    job = state_of(app).jobs.wait_until_final(queued.get_json()["jobId"], WAIT_S)
    assert job.status is JobStatus.COMPLETED
    assert job.message == f"reused the result of job {resize_step.id}"
    assert job.output_size == resize_step.output_size


def test_a_step_that_raises_fails_the_job_naming_the_step(
    app: Flask, client: FlaskClient, spec: dict[str, Any], markers: Path
) -> None:
    response = execute(client, [step("resize", width=40), step("explode"), step("tally")])
    body = assert_error(response, 500, "TOOL_FAILED")
    conforms(spec, response, "/api/v1/pipeline/execute", "post")
    assert body["error"].startswith("step 2 (explode): ")
    assert "the plugin exploded" in body["error"]
    job_id = response.headers["X-Job-Id"]
    assert body["details"] | {"jobId": job_id} == body["details"]
    assert (body["details"]["step"], body["details"]["toolId"]) == (2, "explode")
    assert body["details"]["stepsCompleted"] == 1
    assert len(runs(markers, "explode")) == 1  # max_attempts=1: not retried
    assert runs(markers, "tally") == []  # nothing after the failed step ran

    job = state_of(app).jobs.get(job_id)
    assert job.status is JobStatus.FAILED and job.error_code == "TOOL_FAILED"
    assert job.error_message is not None and "step 2 (explode)" in job.error_message
    assert job.outputs == []


def test_a_step_refusing_its_input_answers_with_its_own_status(client: FlaskClient) -> None:
    response = execute(client, [step("tally"), step("refuse")])
    body = assert_error(response, 400, "REFUSED")
    assert body["error"] == "step 2 (refuse): this input is refused"
    assert (body["details"]["step"], body["details"]["toolId"]) == (2, "refuse")


def test_a_heavy_step_answers_202_and_runs_on_its_queue(
    app: Flask, client: FlaskClient, spec: dict[str, Any]
) -> None:
    response = execute(client, [step("resize", width=30), step("heavy-echo")])
    accepted = conforms(spec, response, "/api/v1/pipeline/execute", "post")
    assert response.status_code == 202 and accepted["async"] is True
    assert response.headers["X-Job-Id"] == accepted["jobId"]
    assert response.headers["Location"] == accepted["statusUrl"]
    jobs = state_of(app).jobs
    assert jobs.get(accepted["jobId"]).queue == "ai"  # the heavy step's queue
    done = jobs.wait_until_final(accepted["jobId"], WAIT_S)
    assert done.status is JobStatus.COMPLETED
    assert done.result is not None and done.result["stepsCompleted"] == 2


def test_async_true_answers_202_then_the_job_completes_with_the_result(
    client: FlaskClient, spec: dict[str, Any]
) -> None:
    response = execute(client, RESIZE_ROTATE_WEBP, query="?async=true")
    accepted = conforms(spec, response, "/api/v1/pipeline/execute", "post")
    assert response.status_code == 202
    job_id = accepted["jobId"]

    def finished() -> bool:
        return client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] in ("completed", "failed")

    wait_for(finished, "the pipeline job")
    job = conforms(spec, client.get(f"/api/v1/jobs/{job_id}"), "/api/v1/jobs/{jobId}")
    assert job["status"] == "completed" and job["result"]["stepsCompleted"] == 3
    results = conforms(
        spec, client.get(f"/api/v1/jobs/{job_id}/results"), "/api/v1/jobs/{jobId}/results"
    )
    [file] = results["files"]
    assert file["filename"] == "photo.webp" and file["available"] is True
    assert images.decode(client.get(file["downloadUrl"]).data).format == "WEBP"


def test_async_with_a_bad_value_is_400(client: FlaskClient, app: Flask) -> None:
    assert_error(execute(client, RESIZE_ROTATE_WEBP, query="?async=maybe"), 400, "VALIDATION_ERROR")
    assert nothing_stored(app)


def test_a_cancel_stops_the_pipeline_between_steps(
    app: Flask, client: FlaskClient, markers: Path
) -> None:
    response = execute(client, [step("hold"), step("tally")], query="?async=true")
    job_id = response.get_json()["jobId"]
    wait_for(lambda: bool(runs(markers, "hold")), "the first step to start")
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    (markers / "hold.release").touch()
    job = state_of(app).jobs.wait_until_final(job_id, WAIT_S)
    assert job.status is JobStatus.CANCELLED
    assert runs(markers, "tally") == []  # the second step never ran


def test_deleting_the_pipeline_job_deletes_its_steps_and_their_files(
    app: Flask, client: FlaskClient
) -> None:
    answer = execute(client, RESIZE_ROTATE_WEBP).get_json()
    state = state_of(app)
    children = state.jobs.children(answer["jobId"])
    step_files = [BlobKey.parse(c.outputs[0]["key"]) for c in children]
    assert all(state.blobs.exists(key) for key in step_files)
    assert client.delete(f"/api/v1/jobs/{answer['jobId']}").status_code == 200
    assert state.jobs.list().total == 0
    assert not any(state.blobs.exists(key) for key in step_files)


# ----- checked before any work ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pipeline", "position", "tool_id", "field"),
    [
        ([step("resize", width=10), step("no-such-tool")], 2, "no-such-tool", "toolId"),
        (
            [step("resize", width=10), step("resize", width=10), step("rotate", angle=999)],
            3,
            "rotate",
            "angle",
        ),
        ([step("resize", widht=10)], 1, "resize", "widht"),
        ([step("tally"), {"toolId": "rotate", "settings": "fast"}], 2, "rotate", "_schema"),
        ([step("info")], 1, "info", "toolId"),  # an extractor
        ([step("tally"), step("byte-stats")], 2, "byte-stats", "toolId"),  # JSON output
        ([step("needs-mask")], 1, "needs-mask", "toolId"),  # needs a part it cannot get
        ([step("tally"), "resize"], 2, None, "_schema"),
        ([{"settings": {}}], 1, None, "toolId"),
        ([{"toolId": "resize", "setting": {}}], 1, None, "toolId"),
    ],
)
def test_a_bad_step_is_400_naming_it_and_nothing_runs(
    app: Flask,
    client: FlaskClient,
    markers: Path,
    pipeline: list[Any],
    position: int,
    tool_id: str | None,
    field: str,
) -> None:
    body = assert_error(execute(client, pipeline), 400, "VALIDATION_ERROR")
    assert body["error"].startswith(f"step {position}" + (f" ({tool_id})" if tool_id else ""))
    assert (body["details"]["step"], body["details"]["toolId"]) == (position, tool_id)
    assert field in body["details"]["fields"]
    assert runs(markers, "tally") == []
    assert nothing_stored(app)


@pytest.mark.parametrize(
    ("pipeline", "field"),
    [
        ({"steps": []}, "steps"),
        ({}, "steps"),
        ({"steps": {"toolId": "resize"}}, "steps"),
        ({"steps": [step("resize", width=10)], "name": "x"}, "name"),
        ([step("resize", width=10)], "pipeline"),  # a bare list, sent as JSON text below
        ('{"steps": [', "pipeline"),
        ("", "pipeline"),
        (None, "pipeline"),
    ],
)
def test_a_bad_pipeline_is_400_before_anything_is_stored(
    app: Flask, client: FlaskClient, pipeline: Any, field: str
) -> None:
    if isinstance(pipeline, list):
        pipeline = json.dumps(pipeline)
    body = assert_error(execute(client, pipeline), 400, "VALIDATION_ERROR")
    assert field in body["details"]["fields"]
    assert nothing_stored(app)


def test_more_steps_than_max_pipeline_steps_is_400(app: Flask, client: FlaskClient) -> None:
    too_many = [step("rotate", angle=90)] * (MAX_STEPS + 1)
    body = assert_error(execute(client, too_many), 400, "VALIDATION_ERROR")
    assert body["details"]["maxSteps"] == MAX_STEPS
    assert body["details"]["steps"] == MAX_STEPS + 1
    assert "MAX_PIPELINE_STEPS" in body["error"]
    assert nothing_stored(app)
    assert execute(client, [step("rotate", angle=90)] * MAX_STEPS).status_code == 200


@pytest.mark.parametrize(
    ("files", "form", "status", "code"),
    [
        ({}, {}, 400, "MISSING_FILE"),
        ({"file": [b"jpg", b"jpg"]}, {}, 400, "TOO_MANY_FILES"),
        ({"file": [b"jpg"], "mask": [b"jpg"]}, {}, 400, "UNEXPECTED_FILE"),
        ({"file": [b"%PDF-1.7\n"]}, {}, 415, "UNSUPPORTED_FORMAT"),
        ({"file": [b""]}, {}, 400, "EMPTY_FILE"),
        ({"file": [b"jpg"]}, {"settings": "{}"}, 400, "UNEXPECTED_FIELD"),
        ({"file": [b"jpg"]}, {"pipelineId": "0" * 32}, 400, "VALIDATION_ERROR"),
    ],
)
def test_bad_request_parts_are_refused_before_anything_is_stored(
    app: Flask,
    client: FlaskClient,
    files: dict[str, list[bytes]],
    form: dict[str, str],
    status: int,
    code: str,
) -> None:
    body: dict[str, Any] = {"pipeline": json.dumps({"steps": [step("resize", width=10)]}), **form}
    for part, contents in files.items():
        body[part] = [
            (io.BytesIO(images.jpeg(40, 30) if data == b"jpg" else data), f"{part}.jpg")
            for data in contents
        ]
    response = client.post("/api/v1/pipeline/execute", data=body)
    assert_error(response, status, code)
    assert nothing_stored(app)


def test_a_json_body_is_415(client: FlaskClient) -> None:
    response = client.post("/api/v1/pipeline/execute", json={"steps": [step("resize", width=10)]})
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_the_worker_checks_the_steps_again_with_its_own_plugins(app: Flask) -> None:
    state = state_of(app)
    steps = read_definition({"steps": [step("tally")]}, state.registry, MAX_STEPS)
    files = {"file": [(images.jpeg(40, 30), "a.jpg")]}
    job = submit_pipeline(state.dispatcher, steps, files, enqueue=False)
    assert job.kind is JobKind.PIPELINE and job.status is JobStatus.QUEUED
    without_the_tool = WorkerState(
        config=state.config,
        registry=load_registry(),  # the built-in plugins only: no `tally` here
        jobstore=state.jobs,
        blobs=state.blobs,
    )
    assert run_job_with(without_the_tool, job.id) is None
    failed = state.jobs.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.error_code == "VALIDATION_ERROR"
    assert failed.error_message is not None and failed.error_message.startswith("step 1 (tally)")


# ----- batches -------------------------------------------------------------------------------


def post_batch(
    client: FlaskClient,
    pipeline: Any,
    files: list[tuple[bytes, str]],
    query: str = "",
    part: str = "files",
    form: dict[str, Any] | None = None,
) -> Any:
    body: dict[str, Any] = {part: [(io.BytesIO(data), name) for data, name in files]}
    if pipeline is not None:
        body["pipeline"] = json.dumps({"steps": pipeline})
    body.update(form or {})
    return client.post(f"/api/v1/pipeline/batch{query}", data=body)


def unzip(data: bytes) -> tuple[list[str], dict[str, Any]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.namelist(), json.loads(archive.read("manifest.json"))


def test_a_batch_runs_the_pipeline_on_each_file_and_reports_failures_in_order(
    app: Flask, client: FlaskClient, spec: dict[str, Any]
) -> None:
    pipeline = [step("refuse-small"), step("resize", width=50), step("convert", format="png")]
    files = [
        (images.jpeg(400, 300), "big.jpg"),
        (b"%PDF-1.7\n", "document.jpg"),  # not an image: refused when submitted
        (images.jpeg(80, 60), "small.jpg"),  # refused by the first step, on the worker
        (images.jpeg(200, 100), "big.jpg"),
    ]
    response = post_batch(client, pipeline, files)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/zip"
    names, manifest = unzip(response.data)
    assert names == ["big.png", "big-2.png", "manifest.json"]
    assert manifest["jobId"] == response.headers["X-Job-Id"]
    assert manifest["counts"] == {"total": 4, "completed": 2, "failed": 2, "cancelled": 0}
    entries = manifest["files"]
    assert [e["filename"] for e in entries] == [name for _, name in files]
    assert [e["status"] for e in entries] == ["completed", "failed", "failed", "completed"]
    assert entries[1]["error"]["code"] == "UNSUPPORTED_FORMAT"
    assert entries[2]["error"]["code"] == "TOO_SMALL"
    assert entries[2]["error"]["message"].startswith("step 1 (refuse-small): ")
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        sizes = [images.decode(archive.read(name)).size for name in names[:2]]
    assert sizes == [(50, round(300 * 50 / 400)), (50, round(100 * 50 / 200))]

    # Each file ran as a pipeline job of its own, a member of the batch.
    members = state_of(app).jobs.children(manifest["jobId"])
    assert {m.kind for m in members} == {JobKind.PIPELINE}
    completed = [m for m in members if m.status is JobStatus.COMPLETED]
    assert all(m.result is not None and m.result["stepsCompleted"] == 3 for m in completed)


def test_a_batch_of_a_saved_pipeline_can_be_followed_when_async(
    app: Flask, client: FlaskClient, spec: dict[str, Any]
) -> None:
    saved = client.post(
        "/api/v1/pipeline/save", json={"name": "png", "steps": [step("convert", format="png")]}
    ).get_json()
    files = [(images.jpeg(40, 30), "one.jpg"), (images.jpeg(30, 40), "two.jpg")]
    response = post_batch(
        client, None, files, query="?async=true", part="file", form={"pipelineId": saved["id"]}
    )
    accepted = conforms(spec, response, "/api/v1/pipeline/batch", "post")
    assert response.status_code == 202
    batch = state_of(app).jobs.wait_until_final(accepted["jobId"], WAIT_S)
    assert batch.status is JobStatus.COMPLETED and batch.pipeline_id == saved["id"]
    assert batch.result is not None and batch.result["counts"]["completed"] == 2
    [archive] = batch.outputs
    names, _ = unzip(client.get(f"/api/v1/download/{batch.id}/{archive['filename']}").data)
    assert names == ["one.png", "two.png", "manifest.json"]


def test_a_batch_with_a_heavy_step_answers_202(app: Flask, client: FlaskClient) -> None:
    response = post_batch(client, [step("heavy-echo")], [(images.jpeg(40, 30), "a.jpg")])
    assert response.status_code == 202
    batch = state_of(app).jobs.wait_until_final(response.get_json()["jobId"], WAIT_S)
    assert batch.status is JobStatus.COMPLETED


@pytest.mark.parametrize(
    ("pipeline", "files", "part", "status", "code"),
    [
        ([step("rotate", angle=1000)], [(b"jpg", "a.jpg")], "files", 400, "VALIDATION_ERROR"),
        ([], [(b"jpg", "a.jpg")], "files", 400, "VALIDATION_ERROR"),
        ([step("tally")], [], "files", 400, "MISSING_FILE"),
        ([step("tally")], [(b"jpg", "a.jpg")] * 3, "files", 400, "TOO_MANY_FILES"),
        ([step("tally")], [(b"jpg", "a.jpg")], "mask", 400, "UNEXPECTED_FILE"),
    ],
)
def test_a_bad_batch_is_refused_before_anything_is_stored(
    tmp_path: Path,
    database_url: str,
    markers: Path,
    pipeline: list[Any],
    files: list[tuple[bytes, str]],
    part: str,
    status: int,
    code: str,
) -> None:
    config = make_config(tmp_path, database_url, max_batch_size=2)
    app = create_app(config, registry=load_registry(None, [PLUGIN]))
    with state_of(app).db.sessions.begin() as session:
        for table in ("job_events", "jobs", "pipelines"):
            session.execute(text(f"DELETE FROM {table}"))
    uploads = [(images.jpeg(40, 30) if data == b"jpg" else data, name) for data, name in files]
    response = post_batch(app.test_client(), pipeline, uploads, part=part)
    assert_error(response, status, code)
    assert nothing_stored(app)


def test_a_batch_with_both_file_part_names_is_400(client: FlaskClient, app: Flask) -> None:
    body = {
        "files": [(io.BytesIO(images.jpeg(40, 30)), "a.jpg")],
        "file": [(io.BytesIO(images.jpeg(40, 30)), "b.jpg")],
        "pipeline": json.dumps({"steps": [step("tally")]}),
    }
    assert_error(client.post("/api/v1/pipeline/batch", data=body), 400, "MIXED_FILE_PARTS")
    assert nothing_stored(app)


# ----- saved pipelines ------------------------------------------------------------------------


def test_save_list_run_and_delete_a_pipeline(
    app: Flask, client: FlaskClient, spec: dict[str, Any]
) -> None:
    steps = [step("resize", width=64), {"toolId": "convert", "settings": {"format": "png"}}]
    response = client.post(
        "/api/v1/pipeline/save", json={"name": "thumbs", "description": "small", "steps": steps}
    )
    saved = conforms(spec, response, "/api/v1/pipeline/save", "post")
    assert response.status_code == 201
    assert (saved["name"], saved["description"], saved["steps"]) == ("thumbs", "small", steps)

    listing = conforms(spec, client.get("/api/v1/pipeline/list"), "/api/v1/pipeline/list")
    assert listing == {"pipelines": [saved], "total": 1}

    duplicate = client.post("/api/v1/pipeline/save", json={"name": "thumbs", "steps": steps})
    assert_error(duplicate, 409, "PIPELINE_EXISTS")

    run = execute(client, None, images.jpeg(128, 64), form={"pipelineId": saved["id"]})
    answer = conforms(spec, run, "/api/v1/pipeline/execute", "post")
    assert answer["downloadUrl"].endswith("/photo.png")
    assert images.decode(client.get(answer["downloadUrl"]).data).size == (64, 32)
    assert state_of(app).jobs.get(answer["jobId"]).pipeline_id == saved["id"]

    deleted = client.delete(f"/api/v1/pipeline/{saved['id']}")
    body = conforms(spec, deleted, "/api/v1/pipeline/{pipelineId}", "delete")
    assert body == {"success": True, "message": "pipeline deleted", "pipelineId": saved["id"]}
    assert client.get("/api/v1/pipeline/list").get_json() == {"pipelines": [], "total": 0}
    # The job that ran it keeps its record.
    assert state_of(app).jobs.get(answer["jobId"]).pipeline_id is None
    assert_error(client.delete(f"/api/v1/pipeline/{saved['id']}"), 404, "PIPELINE_NOT_FOUND")
    assert_error(client.delete("/api/v1/pipeline/not-an-id"), 404, "PIPELINE_NOT_FOUND")
    missing = execute(client, None, form={"pipelineId": saved["id"]})
    assert_error(missing, 404, "PIPELINE_NOT_FOUND")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "steps": [step("resize", width=10), step("rotate", angle="left")]}, "angle"),
        ({"name": "x", "steps": []}, "steps"),
        ({"name": "x"}, "steps"),
        ({"steps": [step("resize", width=10)]}, "name"),
        ({"name": "   ", "steps": [step("resize", width=10)]}, "name"),
        ({"name": "x" * 201, "steps": [step("resize", width=10)]}, "name"),
        ({"name": "x", "steps": [step("resize", width=10)], "description": 5}, "description"),
        (
            {"name": "x", "steps": [step("resize", width=10)], "description": "d" * 2001},
            "description",
        ),
        ({"name": "x", "steps": [step("resize", width=10)], "owner": "me"}, "owner"),
        (["not", "an", "object"], "_schema"),
    ],
)
def test_saving_a_bad_pipeline_is_400(client: FlaskClient, body: Any, field: str) -> None:
    response = client.post("/api/v1/pipeline/save", json=body)
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert field in error["details"]["fields"]
    assert client.get("/api/v1/pipeline/list").get_json()["total"] == 0


def test_saving_needs_a_json_body(client: FlaskClient) -> None:
    response = client.post("/api/v1/pipeline/save", data={"name": "x"})
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    malformed = client.post(
        "/api/v1/pipeline/save", data="{not json", content_type="application/json"
    )
    assert_error(malformed, 400, "VALIDATION_ERROR")


def test_the_step_tools_are_the_image_to_image_tools(
    app: Flask, client: FlaskClient, spec: dict[str, Any]
) -> None:
    body = conforms(spec, client.get("/api/v1/pipeline/tools"), "/api/v1/pipeline/tools")
    ids = set(body["toolIds"])
    assert {"resize", "rotate", "convert", "tally", "heavy-echo"} <= ids
    assert not ids & {"info", "color-palette", "byte-stats", "needs-mask"}
    assert [tool["id"] for tool in body["tools"]] == body["toolIds"]
    assert body["total"] == len(ids) and body["maxSteps"] == MAX_STEPS
    registry = state_of(app).registry
    assert all(registry.tools[tool_id].output is OutputKind.IMAGE for tool_id in ids)


# ----- on a real worker -----------------------------------------------------------------------


def test_a_real_worker_runs_pipelines_and_reuses_their_steps(tmp_path: Path, markers: Path) -> None:
    """Queued on a private Redis, run by a `pixmill worker` process: first forced async
    (202), then waited for (200) with every step reused from the first run."""
    database_url = f"sqlite:///{tmp_path / 'pixmill.db'}"
    with PrivateRedis(tmp_path / "redis") as redis_server:
        config = make_config(tmp_path, database_url, redis_url=redis_server.url)
        app = create_app(config, registry=load_registry(None, [PLUGIN]))
        client = app.test_client()
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PIXMILL_")}
        environment.update(
            {
                "REDIS_URL": redis_server.url,
                "DATABASE_URL": database_url,
                "PIXMILL_EXTRA_PLUGINS": "test_pipelines:PLUGIN",
                MARKERS_ENV: str(markers),
                "PYTHONPATH": os.pathsep.join(
                    [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
                ),
            }
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "pixmill", "worker", "--data-dir", str(config.data_dir)],
            env=environment,
            cwd=TESTS_DIR.parent,
            start_new_session=True,  # its own process group: the worker and RQ's scheduler
        )
        try:
            pipeline = [step("tally"), step("resize", width=80), step("convert", format="png")]
            upload = images.jpeg(160, 120)
            queued = execute(client, pipeline, upload, query="?async=true")
            assert queued.status_code == 202
            job = state_of(app).jobs.wait_until_final(queued.get_json()["jobId"], 60)
            assert job.status is JobStatus.COMPLETED, job.error_message
            assert job.result is not None and job.result["stepsCompleted"] == 3
            ran_in = runs(markers, "tally")
            assert len(ran_in) == 1 and ran_in[0] != str(os.getpid())  # in the worker

            waited = execute(client, pipeline, upload)
            assert waited.status_code == 200, waited.get_data(as_text=True)
            answer = waited.get_json()
            assert [s["cached"] for s in answer["steps"]] == [True, True, True]
            assert len(runs(markers, "tally")) == 1
            result = images.decode(client.get(answer["downloadUrl"]).data)
            assert (result.format, result.size) == ("PNG", (80, 60))
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
