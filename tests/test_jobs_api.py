"""The Jobs API and history through Flask's test client, on SQLite and on PostgreSQL.

Every test that takes `app` runs once per backend: a SQLite file, and a throwaway PostgreSQL
database created for this module and dropped after it (the helpers of tests/test_db.py).
Jobs come from real inline tool calls, or are put in the state a test needs through the
app's own `JobStore`. Every answer is also checked against the OpenAPI document's schema.
"""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import test_db  # the database helpers, shared with tests/test_db.py
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import text

from pixmill.core.blobs import BlobKey
from pixmill.core.config import Config
from pixmill.core.db import Database, current_revision, head_revision
from pixmill.core.jobstore import JobStore
from pixmill.core.models import Job, JobKind, JobStatus, new_id
from pixmill.core.plugin_host import Registry
from pixmill.core.settings import normalized_settings, validate_settings
from pixmill.server.app import create_app
from pixmill.server.state import AppState
from pixmill.testing import images

# ----- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=test_db.BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with test_db.empty_database_url(request.param, tmp_path_factory.mktemp("jobs-db")) as url:
        yield url


@pytest.fixture
def app(config: Config, database_url: str) -> Flask:
    app = create_app(config, database_url=database_url)
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


def state_of(app: Flask) -> AppState:
    state: AppState = app.extensions["pixmill"]
    return state


def store_at(app: Flask, when: datetime) -> JobStore:
    """A JobStore on the app's database whose clock stands still at `when`."""
    return JobStore(state_of(app).db.sessions, clock=lambda: when)


# ----- helpers ------------------------------------------------------------------------------


def conforms(spec: dict[str, Any], response: Any, path: str, method: str = "get") -> Any:
    """The response's JSON, after checking it against the documented schema for its status."""
    body = response.get_json()
    documented = spec["paths"][path][method]["responses"]
    assert str(response.status_code) in documented, (path, method, response.status_code, body)
    schema = documented[str(response.status_code)]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator(
        schema | {"components": spec["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    ).validate(body)
    return body


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    assert set(body) == {"error", "code", "details", "requestId"}
    assert body["code"] == code
    assert body["requestId"] == response.headers["X-Request-ID"]
    return body


def post_tool(
    client: FlaskClient,
    tool: str,
    data: bytes,
    settings: Any = None,
    filename: str = "photo.jpg",
    headers: dict[str, str] | None = None,
) -> Any:
    form: dict[str, Any] = {"file": (io.BytesIO(data), filename)}
    if settings is not None:
        form["settings"] = settings if isinstance(settings, str) else json.dumps(settings)
    return client.post(f"/api/v1/tools/image/{tool}", data=form, headers=headers or {})


def job_ids(client: FlaskClient, query: str = "", resource: str = "jobs") -> list[str]:
    response = client.get(f"/api/v1/{resource}{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [
        item["id"] for item in response.get_json()[resource if resource == "jobs" else "history"]
    ]


def png_ref(job_id: str, name: str, size: int) -> dict[str, Any]:
    return {
        "key": BlobKey.result(job_id, 1, name).relative_path,
        "filename": name,
        "size": size,
        "format": "png",
    }


def finish(store: JobStore, job: Job, outputs: list[dict[str, Any]] | None = None) -> Job:
    claimed = store.claim(job.id, 60)
    assert claimed is not None
    return store.complete(job.id, outputs or [])


# ----- inline calls are recorded ------------------------------------------------------------


def test_an_inline_call_appears_in_jobs_and_history(
    client: FlaskClient, spec: dict[str, Any]
) -> None:
    upload = images.jpeg(320, 240)
    response = post_tool(client, "resize", upload, {"width": 64})
    assert response.status_code == 200
    envelope = response.get_json()
    job_id = envelope["jobId"]
    assert response.headers["X-Job-Id"] == job_id

    listing = conforms(spec, client.get("/api/v1/jobs"), "/api/v1/jobs")
    assert [job["id"] for job in listing["jobs"]] == [job_id]
    job = listing["jobs"][0]
    assert (job["kind"], job["status"], job["toolId"], job["queue"]) == (
        "tool",
        "completed",
        "resize",
        "inline",
    )
    # The settings as they ran: what was sent plus every default, in wire (camelCase) form.
    assert job["settings"]["width"] == 64
    assert job["settings"]["fit"] == "cover"
    assert job["settings"]["withoutEnlargement"] is False
    assert job["progress"]["percent"] == 100
    assert job["inputs"] == {
        "count": 1,
        "totalBytes": len(upload),
        "files": [{"filename": "photo.jpg", "size": len(upload), "format": "jpg"}],
    }
    assert job["results"]["count"] == 1
    assert job["results"]["totalBytes"] == envelope["processedSize"]
    assert job["results"]["files"][0]["filename"] == "photo.jpg"
    timings = job["timings"]
    assert timings["createdAt"] <= timings["startedAt"] <= timings["finishedAt"]
    assert timings["durationMs"] >= 0

    history = conforms(spec, client.get("/api/v1/history"), "/api/v1/history")
    [entry] = history["history"]
    assert entry["id"] == job_id
    assert entry["type"] == "resize"
    assert entry["parameters"] == job["settings"]
    [output] = entry["outputs"]
    assert output["downloadUrl"] == envelope["downloadUrl"]
    assert output["available"] is True
    assert output["size"] == envelope["processedSize"]
    downloaded = client.get(output["downloadUrl"])
    assert Image.open(io.BytesIO(downloaded.data)).size == (64, 48)

    single = conforms(spec, client.get(f"/api/v1/history/{job_id}"), "/api/v1/history/{jobId}")
    assert single == entry


def test_extractor_calls_record_their_json(client: FlaskClient, spec: dict[str, Any]) -> None:
    response = post_tool(client, "info", images.png(40, 30), filename="pic.png")
    assert response.status_code == 200
    job_id = response.headers["X-Job-Id"]
    job = conforms(spec, client.get(f"/api/v1/jobs/{job_id}"), "/api/v1/jobs/{jobId}")
    assert (job["kind"], job["toolId"], job["results"]["count"]) == ("extract", "info", 0)
    assert job["result"] == response.get_json()
    results = conforms(
        spec, client.get(f"/api/v1/jobs/{job_id}/results"), "/api/v1/jobs/{jobId}/results"
    )
    assert results["files"] == []
    assert results["result"]["width"] == 40 and results["result"]["height"] == 30
    assert results["summary"]["inputBytes"] == job["inputs"]["totalBytes"]


def test_image_results_list_downloadable_files(client: FlaskClient, spec: dict[str, Any]) -> None:
    envelope = post_tool(client, "convert", images.jpeg(), {"format": "png"}).get_json()
    results = conforms(
        spec,
        client.get(f"/api/v1/jobs/{envelope['jobId']}/results"),
        "/api/v1/jobs/{jobId}/results",
    )
    assert results["status"] == "completed"
    assert results["result"] is None and results["error"] is None
    [file] = results["files"]
    assert file["filename"].endswith(".png") and file["format"] == "png"
    assert file["size"] == envelope["processedSize"] == results["summary"]["totalBytes"]
    download = client.get(file["downloadUrl"])
    assert download.status_code == 200 and len(download.data) == file["size"]
    assert Image.open(io.BytesIO(download.data)).format == "PNG"


def test_bytes_sent_inline_are_recorded_but_not_stored(
    client: FlaskClient, spec: dict[str, Any]
) -> None:
    response = post_tool(
        client, "resize", images.jpeg(), {"width": 20}, headers={"Accept": "image/*"}
    )
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    job_id = response.headers["X-Job-Id"]
    results = conforms(
        spec, client.get(f"/api/v1/jobs/{job_id}/results"), "/api/v1/jobs/{jobId}/results"
    )
    [file] = results["files"]
    assert file["size"] == len(response.data)
    assert (file["downloadUrl"], file["available"]) == (None, False)


def test_refused_calls_are_not_recorded(client: FlaskClient) -> None:
    assert post_tool(client, "resize", images.jpeg(), {"width": -5}).status_code == 400
    assert post_tool(client, "resize", images.jpeg(), "{not json").status_code == 400
    assert post_tool(client, "resize", b"%PDF-1.7\n", {"width": 5}).status_code == 415
    assert post_tool(client, "resize", images.jpeg()[:200], {"width": 5}).status_code == 422
    assert client.post("/api/v1/tools/image/resize", data={}).status_code == 400
    assert client.get("/api/v1/jobs").get_json()["pagination"]["total"] == 0
    assert post_tool(client, "resize", images.jpeg(), {"width": 5}).status_code == 200
    assert client.get("/api/v1/jobs").get_json()["pagination"]["total"] == 1


def test_settings_normalization_is_stable_for_every_tool(registry: Registry) -> None:
    """Inline calls run with the normalized settings they record: normalizing must not change
    what a tool receives, for any tool's example settings."""
    for definition in registry.catalogue():
        loaded = validate_settings(definition.settings, definition.example)
        normalized = normalized_settings(definition.settings, loaded)
        json.dumps(normalized, allow_nan=False)  # recordable as JSON
        again = validate_settings(definition.settings, normalized)
        assert again == loaded, definition.id
        assert normalized_settings(definition.settings, again) == normalized, definition.id


def test_a_failing_database_costs_the_record_not_the_answer(config: Config, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broken.db'}"
    app = create_app(config, database_url=url)
    with state_of(app).db.engine.begin() as connection:
        connection.execute(text("DROP TABLE job_events"))
    client = app.test_client()
    response = post_tool(client, "resize", images.jpeg(), {"width": 10})
    assert response.status_code == 200
    assert client.get(response.get_json()["downloadUrl"]).status_code == 200
    # One transaction: the job row went back with the failed event insert.
    assert_error(client.get(f"/api/v1/jobs/{response.headers['X-Job-Id']}"), 404, "JOB_NOT_FOUND")


# ----- listing: filters, dates, pagination --------------------------------------------------


def test_filters_by_status_kind_and_tool(app: Flask, client: FlaskClient) -> None:
    store = state_of(app).jobs
    resized = post_tool(client, "resize", images.jpeg(), {"width": 8}).headers["X-Job-Id"]
    info = post_tool(client, "info", images.jpeg()).headers["X-Job-Id"]
    queued = store.create(JobKind.TOOL, tool_id="resize").id
    failed = store.create(JobKind.PIPELINE).id
    store.fail(failed, "STEP_FAILED", "step 2 failed")
    processing = store.create(JobKind.BATCH, tool_id="crop").id
    assert store.claim(processing, 60) is not None

    assert set(job_ids(client)) == {resized, info, queued, failed, processing}
    assert set(job_ids(client, "?status=completed")) == {resized, info}
    assert set(job_ids(client, "?status=queued,processing")) == {queued, processing}
    assert job_ids(client, "?status=failed") == [failed]
    assert job_ids(client, "?kind=extract") == [info]
    assert set(job_ids(client, "?kind=tool,batch")) == {resized, queued, processing}
    assert set(job_ids(client, "?tool=resize")) == {resized, queued}
    assert job_ids(client, "?tool=resize&status=queued") == [queued]
    assert job_ids(client, "?tool=no-such-tool") == []


def test_members_of_a_batch_are_listed_under_their_parent_only(
    app: Flask, client: FlaskClient
) -> None:
    store = state_of(app).jobs
    batch = store.create(JobKind.BATCH, tool_id="resize").id
    members = {store.create(JobKind.TOOL, tool_id="resize", parent_id=batch).id for _ in range(2)}
    alone = store.create(JobKind.TOOL, tool_id="resize").id
    assert set(job_ids(client)) == {batch, alone}
    assert set(job_ids(client, f"?parent={batch}")) == members
    assert set(job_ids(client, f"?parent={batch}&status=queued")) == members
    assert job_ids(client, f"?parent={alone}") == []
    for member in members:
        store.cancel(member)
    store.cancel(batch)
    assert job_ids(client, "?status=cancelled", resource="history") == [batch]
    body = assert_error(client.get("/api/v1/jobs?parent=nope"), 400, "VALIDATION_ERROR")
    assert "parent" in body["details"]["fields"]


def test_date_range(app: Flask, client: FlaskClient) -> None:
    def at(text_: str) -> str:
        when = datetime.fromisoformat(text_)
        return store_at(app, when).create(JobKind.TOOL, tool_id="resize").id

    eve = at("2024-01-24T23:30:00+00:00")
    morning = at("2024-01-25T10:00:00+00:00")
    midnight_minus = at("2024-01-25T23:59:59.500000+00:00")
    next_day = at("2024-01-26T00:00:00+00:00")

    day = set(job_ids(client, "?from=2024-01-25&to=2024-01-25"))
    assert day == {morning, midnight_minus}
    # An offset is honoured: 11:00+01:00 is 10:00Z, and `from` is inclusive.
    later = set(job_ids(client, "?from=2024-01-25T11:00:00%2B01:00"))
    assert later == {morning, midnight_minus, next_day}
    assert job_ids(client, "?to=2024-01-25T09:59:59Z") == [eve]
    # No offset means UTC.
    assert set(job_ids(client, "?from=2024-01-25T10:00:00")) == {morning, midnight_minus, next_day}
    assert job_ids(client, "?from=2024-01-26&to=2030-01-01") == [next_day]
    assert job_ids(client, "?from=2023-01-01&to=2023-12-31") == []


def test_pagination_newest_first_without_overlap(
    app: Flask, client: FlaskClient, spec: dict[str, Any]
) -> None:
    start = datetime(2025, 5, 1, tzinfo=UTC)
    created = [
        store_at(app, start + timedelta(minutes=i)).create(JobKind.TOOL, tool_id="resize").id
        for i in range(25)
    ]
    newest_first = created[::-1]
    seen: list[str] = []
    for page in (1, 2, 3):
        body = conforms(spec, client.get(f"/api/v1/jobs?limit=10&page={page}"), "/api/v1/jobs")
        assert body["pagination"] == {
            "page": page,
            "limit": 10,
            "total": 25,
            "pages": 3,
            "hasMore": page < 3,
        }
        seen += [job["id"] for job in body["jobs"]]
    assert seen == newest_first
    beyond = client.get("/api/v1/jobs?limit=10&page=4").get_json()
    assert beyond["jobs"] == [] and beyond["pagination"]["total"] == 25
    default = client.get("/api/v1/jobs").get_json()
    assert len(default["jobs"]) == 20 and default["pagination"]["limit"] == 20
    assert len(client.get("/api/v1/jobs?limit=100").get_json()["jobs"]) == 25
    assert job_ids(client, "?limit=1") == [created[-1]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=abc", "page"),
        ("page=1.5", "page"),
        ("page=", "page"),
        ("page=1&page=2", "page"),
        ("page=99999999999", "page"),
        ("page=5%0A", "page"),
        ("page=%2B5", "page"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("status=done", "status"),
        ("status=completed,", "status"),
        ("status=", "status"),
        ("kind=image", "kind"),
        ("tool=Resize", "tool"),
        ("tool=", "tool"),
        ("tool=" + "a" * 101, "tool"),
        ("tool=re%00size", "tool"),
        ("tool=resize%0A", "tool"),
        ("from=yesterday", "from"),
        ("from=2024-13-01", "from"),
        ("to=2024-01-32", "to"),
        ("from=0001-01-01T00:00:00%2B05:00", "from"),
        ("from=re%00size", "from"),
        ("from=2024-02-01&to=2024-01-01", "from"),
        ("sort=desc", "sort"),
    ],
)
def test_bad_query_parameters_are_400(
    client: FlaskClient, spec: dict[str, Any], query: str, field: str
) -> None:
    response = client.get(f"/api/v1/jobs?{query}")
    body = assert_error(response, 400, "VALIDATION_ERROR")
    conforms(spec, response, "/api/v1/jobs")
    assert field in body["details"]["fields"]
    assert field in body["error"]


def test_every_bad_parameter_is_named_at_once(client: FlaskClient) -> None:
    body = assert_error(
        client.get("/api/v1/jobs?page=0&limit=500&kind=x&typo=1"), 400, "VALIDATION_ERROR"
    )
    assert set(body["details"]["fields"]) == {"page", "limit", "kind", "typo"}


# ----- one job ------------------------------------------------------------------------------


def test_job_detail_shows_progress_timings_and_summary(
    app: Flask, client: FlaskClient, spec: dict[str, Any]
) -> None:
    store = state_of(app).jobs
    job = store.create(JobKind.BATCH, tool_id="resize", settings={"width": 10}, progress_total=10)
    queued = conforms(spec, client.get(f"/api/v1/jobs/{job.id}"), "/api/v1/jobs/{jobId}")
    assert queued["status"] == "queued"
    assert queued["progress"] == {"current": 0, "total": 10, "percent": 0}
    assert queued["timings"]["startedAt"] is None and queued["timings"]["durationMs"] is None

    assert store.claim(job.id, 60) is not None
    store.heartbeat(job.id, 60, current=3, message="3 of 10")
    running = conforms(spec, client.get(f"/api/v1/jobs/{job.id}"), "/api/v1/jobs/{jobId}")
    assert running["status"] == "processing"
    assert running["progress"] == {"current": 3, "total": 10, "percent": 30}
    assert running["message"] == "3 of 10"
    assert running["timings"]["startedAt"] is not None
    assert running["links"]["cancel"] == f"/api/v1/jobs/{job.id}/cancel"

    store.fail(job.id, "SOURCE_DOWN", "the origin stopped answering")
    failed = conforms(spec, client.get(f"/api/v1/jobs/{job.id}"), "/api/v1/jobs/{jobId}")
    assert failed["error"] == {"code": "SOURCE_DOWN", "message": "the origin stopped answering"}
    results = conforms(
        spec, client.get(f"/api/v1/jobs/{job.id}/results"), "/api/v1/jobs/{jobId}/results"
    )
    assert results["status"] == "failed" and results["error"]["code"] == "SOURCE_DOWN"


def test_results_of_an_unfinished_job_are_409(app: Flask, client: FlaskClient) -> None:
    job = state_of(app).jobs.create(JobKind.TOOL, tool_id="resize")
    body = assert_error(client.get(f"/api/v1/jobs/{job.id}/results"), 409, "JOB_NOT_FINISHED")
    assert body["details"]["status"] == "queued"


# ----- cancel -------------------------------------------------------------------------------


def test_cancel_a_queued_job(app: Flask, client: FlaskClient, spec: dict[str, Any]) -> None:
    store = state_of(app).jobs
    job = store.create(JobKind.TOOL, tool_id="resize")
    response = client.post(f"/api/v1/jobs/{job.id}/cancel")
    assert response.status_code == 200
    body = conforms(spec, response, "/api/v1/jobs/{jobId}/cancel", "post")
    assert body["success"] is True
    assert body["job"]["status"] == "cancelled"
    assert store.get(job.id).status is JobStatus.CANCELLED
    assert store.claim(job.id, 60) is None  # a worker picking it up later must not run it
    again = client.post(f"/api/v1/jobs/{job.id}/cancel")
    assert_error(again, 409, "JOB_FINISHED")
    conforms(spec, again, "/api/v1/jobs/{jobId}/cancel", "post")


def test_cancel_a_processing_job_requests_it(
    app: Flask, client: FlaskClient, spec: dict[str, Any]
) -> None:
    store = state_of(app).jobs
    job = store.create(JobKind.TOOL, tool_id="resize")
    assert store.claim(job.id, 60) is not None
    response = client.post(f"/api/v1/jobs/{job.id}/cancel")
    assert response.status_code == 202
    body = conforms(spec, response, "/api/v1/jobs/{jobId}/cancel", "post")
    assert body["job"]["status"] == "processing"
    assert body["job"]["cancelRequested"] is True
    assert store.is_cancel_requested(job.id)
    assert client.post(f"/api/v1/jobs/{job.id}/cancel").status_code == 202  # idempotent
    store.confirm_cancel(job.id)
    assert client.get(f"/api/v1/jobs/{job.id}").get_json()["status"] == "cancelled"


def test_cancel_a_finished_job_is_409(client: FlaskClient) -> None:
    job_id = post_tool(client, "resize", images.jpeg(), {"width": 9}).headers["X-Job-Id"]
    body = assert_error(client.post(f"/api/v1/jobs/{job_id}/cancel"), 409, "JOB_FINISHED")
    assert body["details"]["status"] == "completed"
    assert client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "completed"


# ----- delete -------------------------------------------------------------------------------


def test_delete_removes_the_record_and_its_files(
    app: Flask, client: FlaskClient, spec: dict[str, Any]
) -> None:
    envelope = post_tool(client, "resize", images.jpeg(), {"width": 12}).get_json()
    job_id = envelope["jobId"]
    kept = post_tool(client, "resize", images.jpeg(), {"width": 13}).get_json()
    assert client.get(envelope["downloadUrl"]).status_code == 200
    blobs_dir = state_of(app).config.blobs_dir / "results" / job_id
    assert blobs_dir.is_dir()

    response = client.delete(f"/api/v1/jobs/{job_id}")
    body = conforms(spec, response, "/api/v1/jobs/{jobId}", "delete")
    assert body == {"success": True, "message": "job deleted", "jobId": job_id}
    assert_error(client.get(f"/api/v1/jobs/{job_id}"), 404, "JOB_NOT_FOUND")
    assert client.get(envelope["downloadUrl"]).status_code == 404
    assert not blobs_dir.exists()
    assert_error(client.delete(f"/api/v1/jobs/{job_id}"), 404, "JOB_NOT_FOUND")
    assert job_ids(client) == [kept["jobId"]]
    assert client.get(kept["downloadUrl"]).status_code == 200


def test_delete_a_queued_job_cancels_it_first(app: Flask, client: FlaskClient) -> None:
    store = state_of(app).jobs
    job = store.create(JobKind.TOOL, tool_id="resize")
    assert client.delete(f"/api/v1/jobs/{job.id}").status_code == 200
    assert store.claim(job.id, 60) is None
    assert job_ids(client) == []


def test_delete_a_processing_job_is_refused_until_it_stopped(
    app: Flask, client: FlaskClient, spec: dict[str, Any]
) -> None:
    store = state_of(app).jobs
    job = store.create(JobKind.TOOL, tool_id="resize")
    assert store.claim(job.id, 60) is not None
    response = client.delete(f"/api/v1/jobs/{job.id}")
    body = assert_error(response, 409, "JOB_RUNNING")
    conforms(spec, response, "/api/v1/jobs/{jobId}", "delete")
    assert body["details"]["cancelRequested"] is True
    assert store.get(job.id).cancel_requested  # the worker is asked to stop
    store.confirm_cancel(job.id)
    assert client.delete(f"/api/v1/jobs/{job.id}").status_code == 200
    assert job_ids(client) == []


def test_delete_a_batch_removes_its_members_files(app: Flask, client: FlaskClient) -> None:
    state = state_of(app)
    store = state.jobs
    batch = store.create(JobKind.BATCH, tool_id="resize")
    member = store.create(JobKind.TOOL, tool_id="resize", parent_id=batch.id)
    state.blobs.put(BlobKey.result(member.id, 1, "a.png"), b"member output")
    state.blobs.put(BlobKey.result(batch.id, 1, "all.zip"), b"zip")
    finish(store, member, [png_ref(member.id, "a.png", 13)])
    finish(store, batch, [png_ref(batch.id, "all.zip", 3)])
    assert client.get(f"/api/v1/download/{member.id}/a.png").status_code == 200

    assert client.delete(f"/api/v1/jobs/{batch.id}").status_code == 200
    assert client.get(f"/api/v1/download/{member.id}/a.png").status_code == 404
    assert client.get(f"/api/v1/download/{batch.id}/all.zip").status_code == 404
    assert state.blobs.list_job(member.id) == [] and state.blobs.list_job(batch.id) == []
    assert job_ids(client) == []


# ----- unknown and malformed ids ------------------------------------------------------------

ROUTES = [
    ("get", "/api/v1/jobs/{}"),
    ("get", "/api/v1/jobs/{}/results"),
    ("post", "/api/v1/jobs/{}/cancel"),
    ("delete", "/api/v1/jobs/{}"),
    ("get", "/api/v1/history/{}"),
    ("delete", "/api/v1/history/{}"),
]
BAD_IDS = [
    new_id(),  # well formed, unknown
    "not-a-job",
    "A" * 32,  # upper case hex is not an id
    "0" * 31,
    "0" * 33,
    "%20" + "0" * 32,
    "0" * 32 + "%0A",
    "x" * 2000,
    "%00",
]


@pytest.mark.parametrize(("method", "route"), ROUTES)
def test_unknown_and_malformed_ids_are_404(
    client: FlaskClient, spec: dict[str, Any], method: str, route: str
) -> None:
    post_tool(client, "resize", images.jpeg(), {"width": 7})  # a real job exists meanwhile
    for job_id in BAD_IDS:
        response = getattr(client, method)(route.format(job_id))
        assert_error(response, 404, "JOB_NOT_FOUND")
        conforms(spec, response, route.format("{jobId}"), method)
    assert len(job_ids(client)) == 1


# ----- history ------------------------------------------------------------------------------


def test_history_lists_only_finished_jobs_filtered_by_type(
    app: Flask, client: FlaskClient, spec: dict[str, Any]
) -> None:
    store = state_of(app).jobs
    resized = post_tool(client, "resize", images.jpeg(), {"width": 8}).headers["X-Job-Id"]
    info = post_tool(client, "info", images.jpeg()).headers["X-Job-Id"]
    queued = store.create(JobKind.TOOL, tool_id="resize")
    running = store.create(JobKind.PIPELINE)
    assert store.claim(running.id, 60) is not None
    cancelled = store.create(JobKind.PIPELINE)
    store.cancel(cancelled.id)

    assert job_ids(client, resource="history") == [cancelled.id, info, resized]
    assert job_ids(client, "?type=resize", "history") == [resized]
    assert job_ids(client, "?type=info", "history") == [info]
    assert job_ids(client, "?type=pipeline", "history") == [cancelled.id]
    assert job_ids(client, "?type=extract", "history") == [info]
    assert job_ids(client, "?status=cancelled", "history") == [cancelled.id]
    assert job_ids(client, "?limit=1&page=2", "history") == [info]

    for unfinished in (queued.id, running.id):
        body = assert_error(client.get(f"/api/v1/history/{unfinished}"), 404, "JOB_NOT_FOUND")
        assert body["details"]["jobId"] == unfinished
        assert_error(client.delete(f"/api/v1/history/{unfinished}"), 404, "JOB_NOT_FOUND")
    assert store.get(queued.id).status is JobStatus.QUEUED  # untouched

    entry = conforms(spec, client.get(f"/api/v1/history/{info}"), "/api/v1/history/{jobId}")
    assert entry["type"] == "info" and entry["result"]["width"] == 640
    assert entry["parameters"] == {"includeExif": True}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("type=Not_A_Tool", "type"),
        ("type=", "type"),
        ("status=queued", "status"),
        ("status=processing", "status"),
        ("limit=0", "limit"),
        ("tool=resize", "tool"),
        ("to=never", "to"),
    ],
)
def test_history_bad_query_parameters_are_400(
    client: FlaskClient, spec: dict[str, Any], query: str, field: str
) -> None:
    response = client.get(f"/api/v1/history?{query}")
    body = assert_error(response, 400, "VALIDATION_ERROR")
    conforms(spec, response, "/api/v1/history")
    assert field in body["details"]["fields"]


def test_delete_a_history_entry(app: Flask, client: FlaskClient, spec: dict[str, Any]) -> None:
    envelope = post_tool(client, "resize", images.jpeg(), {"width": 11}).get_json()
    job_id = envelope["jobId"]
    response = client.delete(f"/api/v1/history/{job_id}")
    body = conforms(spec, response, "/api/v1/history/{jobId}", "delete")
    assert body["success"] is True and body["jobId"] == job_id
    assert job_ids(client, resource="history") == []
    assert_error(client.get(f"/api/v1/jobs/{job_id}"), 404, "JOB_NOT_FOUND")
    assert client.get(envelope["downloadUrl"]).status_code == 404
    assert not (state_of(app).config.blobs_dir / "results" / job_id).exists()


# ----- the OpenAPI document -----------------------------------------------------------------


def test_every_jobs_route_is_documented(app: Flask, spec: dict[str, Any]) -> None:
    documented = {
        (path, method)
        for path, operations in spec["paths"].items()
        for method in operations
        if path.startswith(("/api/v1/jobs", "/api/v1/history"))
    }
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/api/v1/jobs", "/api/v1/history")):
            path = rule.rule.replace("<job_id>", "{jobId}")
            served |= {
                (path, m.lower()) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")
            }
    assert served == documented
    listing = spec["paths"]["/api/v1/jobs"]["get"]
    names = {parameter["name"] for parameter in listing["parameters"]}
    assert names == {"page", "limit", "status", "kind", "tool", "from", "to", "parent"}


# ----- starting up --------------------------------------------------------------------------

_START_SCRIPT = textwrap.dedent(
    """
    import sys
    from pixmill.server.app import create_app
    print("ready", flush=True)
    sys.stdin.readline()
    app = create_app(data_dir=sys.argv[1], database_url=sys.argv[2])
    client = app.test_client()
    assert client.get("/api/v1/jobs").status_code == 200
    print("started", flush=True)
    """
)


@pytest.mark.parametrize("backend", test_db.BACKENDS)
def test_two_processes_can_build_the_app_at_once(tmp_path: Path, backend: str) -> None:
    """Workers started without preload each build the app (and migrate) at the same time."""
    with test_db.empty_database_url(backend, tmp_path) as url:
        results = test_db.run_in_lockstep(_START_SCRIPT, str(tmp_path / "data"), url)
        for returncode, stdout, stderr in results:
            assert returncode == 0, stderr
            assert stdout.strip() == "started"
        database = Database.from_url(url, run_migrations=False)
        try:
            assert current_revision(database.engine) == head_revision()
        finally:
            database.dispose()


def test_the_default_database_is_sqlite_in_the_data_dir(config: Config) -> None:
    app = create_app(config)
    state = state_of(app)
    assert state.db.dialect == "sqlite"
    assert (config.data_dir / "pixmill.db").is_file()
    assert current_revision(state.db.engine) == head_revision()
