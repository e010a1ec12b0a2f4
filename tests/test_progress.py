"""Live progress over Server-Sent Events: `GET /api/v1/jobs/<id>/progress`.

Two set-ups, as in tests/test_async_api.py: apps on a real private redis-server (events arrive
by pub/sub; jobs are run by `run_job_with`, the function the RQ worker calls, on a thread of
this process) and apps with no Redis (jobs run on the in-process `LocalRunner`; the stream
polls the row). Streams are read through Flask's test client without buffering, chunk by
chunk as a client would receive them; each stream ends by itself (a final event, or the app's
`stream_max_s`), so every read is bounded.

The last tests start real `pixmill serve` processes (gunicorn gthread workers) to prove that
open streams never take the threads ordinary requests need.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import test_db  # the database helpers (SQLite and a throwaway PostgreSQL database)
from flask import Flask
from flask.testing import FlaskClient
from flask_sse import Message
from marshmallow import fields
from test_jobs_api import assert_error, conforms, post_tool, state_of
from test_server_live import free_port

from pixmill import FileResult, Settings, Tool, hookimpl
from pixmill.core.config import Config
from pixmill.core.contracts import Context, Extractor, InputFile, Inputs
from pixmill.core.db import Database
from pixmill.core.dispatch import event_channel, event_id, job_event, publish
from pixmill.core.errors import BadRequestError
from pixmill.core.jobstore import JobStore
from pixmill.core.models import Job, JobKind
from pixmill.core.plugin_host import Registry, load_registry
from pixmill.core.redis_server import PrivateRedis
from pixmill.core.worker import WorkerState, run_job_with
from pixmill.server import progress
from pixmill.server.app import create_app
from pixmill.server.state import AppState
from pixmill.testing import images

# The longest any stream of these apps may stay open: the bound of every read below.
STREAM_MAX_S = 20.0
WAIT_S = 30.0
FINAL = {"completed", "failed", "cancelled"}

# ----- throwaway tools ----------------------------------------------------------------------

# Closed by a test that must open its stream before the job starts (jobs of an app without
# Redis start as soon as they are submitted); open otherwise.
START_GATE = threading.Event()


class StepsSettings(Settings):
    steps = fields.Integer(load_default=8)
    pause = fields.Float(load_default=0.05)


def _steps(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    START_GATE.wait(timeout=WAIT_S)
    total = settings["steps"]
    for step in range(total):
        ctx.check_cancelled()
        ctx.progress(step / total, f"step {step + 1} of {total}")
        time.sleep(settings["pause"])
    return FileResult(inputs.file.data, inputs.file.format.name)


def _refuse(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    raise BadRequestError("this input is refused", code="REFUSED")


def _measure(ctx: Context, image: InputFile, settings: dict[str, Any]) -> dict[str, Any]:
    header = image.header
    return {"width": header.width, "height": header.height}


STEPS = Tool(
    id="test-steps",
    name="Steps",
    description="reports its progress step by step",
    settings=StepsSettings,
    run=_steps,
)
REFUSE = Tool(
    id="test-refuse", name="Refuse", description="refuses", settings=Settings, run=_refuse
)
MEASURE = Extractor(
    id="test-measure", name="Measure", description="size", settings=Settings, extract=_measure
)


class ProgressTestPlugin:
    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        return [STEPS, REFUSE]

    @hookimpl
    def pixmill_extractors(self) -> list[Extractor]:
        return [MEASURE]


# ----- fixtures -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def open_gate() -> Iterator[None]:
    START_GATE.set()
    yield
    START_GATE.set()  # never leave a job of a failed test waiting


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry((), [ProgressTestPlugin()], entry_points=False)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module", params=test_db.BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with test_db.empty_database_url(request.param, tmp_path_factory.mktemp("db")) as url:
        yield url


def make_app(registry: Registry, tmp_path: Path, **overrides: Any) -> Flask:
    overrides.setdefault("stream_max_s", STREAM_MAX_S)
    return create_app(Config(data_dir=tmp_path / "data"), registry=registry, **overrides)


@pytest.fixture
def redis_app(registry: Registry, tmp_path: Path, private_redis: PrivateRedis) -> Flask:
    app = make_app(registry, tmp_path, redis_url=private_redis.url)
    connection = state_of(app).redis
    assert connection is not None
    connection.flushdb()
    return app


@pytest.fixture
def local_app(registry: Registry, tmp_path: Path) -> Flask:
    """An app with no Redis: jobs run on its in-process LocalRunner."""
    app = make_app(registry, tmp_path)
    assert state_of(app).redis is None
    return app


# ----- helpers ------------------------------------------------------------------------------


@dataclass
class Frame:
    """One block of an event stream: an event (data, id, retry) or a comment."""

    data: dict[str, Any] | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None


def parse_frames(text: str) -> list[Frame]:
    """Split an event stream into its blocks, as an EventSource would read them."""
    frames = []
    for block in text.split("\n\n"):
        if not block:
            continue
        frame = Frame()
        data_lines = []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                frame.comment = value
            elif field == "data":
                data_lines.append(value)
            elif field == "id":
                frame.id = value
            elif field == "retry":
                frame.retry = int(value)
            else:
                raise AssertionError(f"unexpected line in the stream: {line!r}")
        if data_lines:
            frame.data = json.loads("\n".join(data_lines))
        frames.append(frame)
    return frames


def events_of(frames: Iterable[Frame]) -> list[dict[str, Any]]:
    return [frame.data for frame in frames if frame.data is not None]


def read_stream(response: Any) -> list[Frame]:
    """Everything a test-client stream sends until it ends (it always does: see the module)."""
    try:
        text = b"".join(response.response).decode()
    finally:
        response.close()
    assert text == "" or text.endswith("\n\n"), text  # never cut inside an event
    return parse_frames(text)


def open_stream(client: FlaskClient, job_id: str, **headers: str) -> Any:
    response = client.get(f"/api/v1/jobs/{job_id}/progress", buffered=False, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def next_frame(response: Any) -> Frame:
    """Read the stream up to its next block (each chunk the app yields is one block)."""
    (frame,) = parse_frames(next(iter(response.response)).decode())
    return frame


def worker_state(state: AppState, **overrides: Any) -> WorkerState:
    """What an RQ worker would have, sharing the app's database, plugins and blobs."""
    values: dict[str, Any] = {"progress_interval": 0.01, "retry_backoff": 0} | overrides
    return WorkerState(
        config=state.config,
        registry=state.registry,
        jobstore=state.jobs,
        blobs=state.blobs,
        redis=state.redis,
        **values,
    )


@contextmanager
def running(state: AppState, job_id: str) -> Iterator[None]:
    """Run the job as a worker would, on a thread, while the test reads the stream."""
    thread = threading.Thread(target=run_job_with, args=(worker_state(state), job_id))
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=WAIT_S)
        assert not thread.is_alive(), "the job did not finish"


def submit(client: FlaskClient, tool: str, data: bytes, settings: Any = None) -> str:
    response = post_tool(client, f"{tool}?async=true", data, settings)
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert body["progressUrl"] == f"/api/v1/jobs/{body['jobId']}/progress"
    return str(body["jobId"])


def queued_job(state: AppState, queue: str = "default") -> Job:
    return state.jobs.create(JobKind.TOOL, tool_id=STEPS.id, queue=queue)


def complete(jobs: JobStore, job_id: str) -> Job:
    claimed = jobs.claim(job_id, 60)
    assert claimed is not None
    return jobs.complete(job_id, [])


def slots(app: Flask) -> progress.StreamSlots:
    return progress.stream_slots(app)


PROGRESS_PATH = "/api/v1/jobs/{jobId}/progress"


def openapi(client: FlaskClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/api/v1/openapi.json").get_json()
    return document


def step_messages(total: int) -> list[str]:
    return [f"step {step + 1} of {total}" for step in range(total)]


# ----- the event format ---------------------------------------------------------------------


def test_published_events_are_flask_sse_messages(private_redis: PrivateRedis) -> None:
    connection = redis.Redis.from_url(private_redis.url)
    subscription = connection.pubsub()
    subscription.subscribe(event_channel("a" * 32))
    confirmation = subscription.get_message(timeout=5)
    assert confirmation is not None and confirmation["type"] == "subscribe"
    running_event = {"jobId": "a" * 32, "status": "processing", "progress": 40, "message": "m"}
    final_event = {"jobId": "a" * 32, "status": "failed", "progress": 40, "message": None}
    before = time.time()
    publish(connection, "a" * 32, running_event)
    publish(connection, "a" * 32, final_event)
    received = []
    for _ in range(2):
        reply = subscription.get_message(timeout=5)
        assert reply is not None
        received.append(json.loads(reply["data"]))
    subscription.close()
    connection.close()

    # What flask-sse's own publisher sends: `Message(...).to_dict()`; a flask-sse consumer
    # rebuilds the Message from it.
    assert received[0]["data"] == running_event and set(received[0]) == {"data", "id"}
    assert before * 1000 - 1 <= int(received[0]["id"]) <= time.time() * 1000 + 1
    assert received[1] == Message(final_event, id="failed").to_dict()
    assert str(Message(**received[1])).startswith("data:")


def test_event_ids_are_the_final_status_or_the_time_of_the_state() -> None:
    assert event_id({"status": "completed"}) == "completed"
    assert event_id({"status": "cancelled"}) == "cancelled"
    moment = datetime(2024, 1, 25, 10, 30, tzinfo=UTC)
    assert event_id({"status": "queued"}, moment) == str(int(moment.timestamp() * 1000))


# ----- end to end with Redis ----------------------------------------------------------------


def test_an_async_call_streams_its_progress_then_the_full_result(
    registry: Registry, tmp_path: Path, private_redis: PrivateRedis, database_url: str
) -> None:
    app = make_app(registry, tmp_path, redis_url=private_redis.url, database_url=database_url)
    client = app.test_client()
    upload = images.encode(images.photo(40, 30), "PNG")
    total = 6
    job_id = submit(client, STEPS.id, upload, {"steps": total, "pause": 0.05})

    response = open_stream(client, job_id)
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    documented = openapi(client)["paths"][PROGRESS_PATH]["get"]["responses"]["200"]
    assert response.mimetype in documented["content"]
    with running(state_of(app), job_id):
        frames = read_stream(response)

    events = events_of(frames)
    assert all(frame.id for frame in frames if frame.data is not None)
    assert frames[0].retry == progress.RECONNECT_MS
    assert events[0] == {"jobId": job_id, "status": "queued", "progress": 0, "message": None}
    running_events = [event for event in events if event["status"] == "processing"]
    # Every step the tool reported, in order, with its percentage (published, not sampled).
    reported = [event for event in running_events if event["message"]]
    assert [event["message"] for event in reported] == step_messages(total)
    assert [event["progress"] for event in reported] == [
        round(step / total * 100) for step in range(total)
    ]
    final = events[-1]
    assert [event["status"] in FINAL for event in events].count(True) == 1
    assert frames[-1].id == "completed"

    # The final event is the whole result: the same as /results, no second request needed.
    results = client.get(f"/api/v1/jobs/{job_id}/results").get_json()
    (output,) = results["files"]
    assert final["status"] == "completed" and final["progress"] == 100
    assert final["downloadUrl"] == output["downloadUrl"]
    assert final["originalSize"] == len(upload) == results["summary"]["inputBytes"]
    assert final["processedSize"] == output["size"] == results["summary"]["totalBytes"]
    assert final["files"] == [
        {key: output[key] for key in ("filename", "size", "format", "downloadUrl")}
    ]
    download = client.get(final["downloadUrl"])
    assert download.status_code == 200 and len(download.data) == final["processedSize"]
    assert slots(app).open == 0


def test_an_extractor_job_ends_with_its_json(redis_app: Flask) -> None:
    client = redis_app.test_client()
    job_id = submit(client, MEASURE.id, images.encode(images.photo(21, 13), "PNG"))
    response = open_stream(client, job_id)
    with running(state_of(redis_app), job_id):
        final = events_of(read_stream(response))[-1]
    assert final["status"] == "completed"
    assert final["result"] == {"width": 21, "height": 13}
    assert final["result"] == client.get(f"/api/v1/jobs/{job_id}/results").get_json()["result"]
    assert "downloadUrl" not in final


def test_a_failed_job_ends_with_its_error(redis_app: Flask) -> None:
    client = redis_app.test_client()
    job_id = submit(client, REFUSE.id, images.tiny("PNG"))
    response = open_stream(client, job_id)
    with running(state_of(redis_app), job_id):
        frames = read_stream(response)
    final = events_of(frames)[-1]
    assert final["status"] == "failed"
    assert final["error"] == {"code": "REFUSED", "message": "this input is refused"}
    assert frames[-1].id == "failed"


def test_cancelling_a_queued_job_ends_its_stream(redis_app: Flask) -> None:
    client = redis_app.test_client()
    job_id = submit(client, STEPS.id, images.tiny("PNG"))
    response = open_stream(client, job_id)
    assert next_frame(response).data == job_event(state_of(redis_app).jobs.get(job_id))
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    events = events_of(read_stream(response))
    assert [event["status"] for event in events] == ["cancelled"]


def test_a_late_client_gets_exactly_the_final_event(redis_app: Flask) -> None:
    client = redis_app.test_client()
    job_id = submit(client, STEPS.id, images.tiny("PNG"), {"steps": 2, "pause": 0.0})
    run_job_with(worker_state(state_of(redis_app)), job_id)

    started = time.monotonic()
    frames = read_stream(open_stream(client, job_id))
    assert time.monotonic() - started < 5  # ended at once, no waiting for events
    (frame,) = frames
    assert frame.data == job_event(state_of(redis_app).jobs.get(job_id))
    assert frame.data["status"] == "completed" and frame.data["downloadUrl"]
    assert frame.id == "completed" and frame.retry == progress.RECONNECT_MS
    assert slots(redis_app).open == 0


def test_a_reconnect_after_the_end_is_told_to_stop(redis_app: Flask) -> None:
    client = redis_app.test_client()
    state = state_of(redis_app)
    done = complete(state.jobs, queued_job(state).id)
    url = f"/api/v1/jobs/{done.id}/progress"

    stop = client.get(url, headers={"Last-Event-ID": "completed"})
    assert stop.status_code == 204 and stop.data == b""
    assert "204" in openapi(client)["paths"][PROGRESS_PATH]["get"]["responses"]
    # Any other id (an earlier event's, another final status) changes nothing.
    for last_seen in ("1706178600000", "failed", ""):
        (frame,) = read_stream(open_stream(client, done.id, **{"Last-Event-ID": last_seen}))
        assert frame.data is not None and frame.data["status"] == "completed"
    # An unfinished job is streamed whatever the client claims to have seen.
    waiting = queued_job(state)
    response = open_stream(client, waiting.id, **{"Last-Event-ID": "completed"})
    assert next_frame(response).data == job_event(waiting)
    response.close()
    assert slots(redis_app).open == 0


def test_an_event_redis_dropped_is_found_in_the_row(redis_app: Flask) -> None:
    state = state_of(redis_app)
    job = queued_job(state)
    response = open_stream(redis_app.test_client(), job.id)
    assert next_frame(response).data == job_event(job)
    done = complete(state.jobs, job.id)  # nothing published: as if Redis had lost it

    started = time.monotonic()
    events = events_of(read_stream(response))
    assert events == [job_event(done)]
    assert time.monotonic() - started < progress.ROW_REREAD_S + 3


def test_junk_on_the_channel_is_skipped(redis_app: Flask) -> None:
    state = state_of(redis_app)
    job = queued_job(state)
    response = open_stream(redis_app.test_client(), job.id)
    next_frame(response)
    assert state.redis is not None
    for junk in (b"not json", b"[1, 2]", b'{"no": "data"}'):
        state.redis.publish(event_channel(job.id), junk)
    publish(state.redis, job.id, job_event(complete(state.jobs, job.id)))

    started = time.monotonic()
    events = events_of(read_stream(response))
    assert [event["status"] for event in events] == ["completed"]
    assert time.monotonic() - started < progress.ROW_REREAD_S  # by pub/sub, not the re-read


def test_without_a_reachable_redis_the_stream_polls_the_row(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = f"unix://{tmp_path / 'no-redis.sock'}"
    app = make_app(registry, tmp_path, redis_url=nowhere)
    state = state_of(app)
    job = queued_job(state)
    response = open_stream(app.test_client(), job.id)
    assert next_frame(response).data == job_event(job)
    assert "polling" in caplog.text
    done = complete(state.jobs, job.id)
    assert events_of(read_stream(response)) == [job_event(done)]


# ----- without Redis ------------------------------------------------------------------------


def test_without_redis_the_stream_polls_the_row(
    registry: Registry, tmp_path: Path, database_url: str
) -> None:
    app = make_app(registry, tmp_path, database_url=database_url)
    assert state_of(app).redis is None
    client = app.test_client()
    START_GATE.clear()  # the LocalRunner starts the job at once: hold it until we listen
    total = 6
    job_id = submit(client, STEPS.id, images.tiny("PNG"), {"steps": total, "pause": 0.4})
    response = open_stream(client, job_id)
    START_GATE.set()
    frames = read_stream(response)

    events = events_of(frames)
    assert events[0]["status"] in {"queued", "processing"} and frames[0].retry
    assert events[-1]["status"] == "completed" and events[-1]["downloadUrl"]
    assert events[-1] == job_event(state_of(app).jobs.get(job_id))
    # The row is written at most every JOB_PROGRESS_INTERVAL_S, and sampled by the poll:
    # some steps are seen, in order, never going back.
    sampled = [event for event in events[:-1] if event["message"]]
    assert sampled, events
    assert all(event["message"] in step_messages(total) for event in sampled)
    percentages = [event["progress"] for event in events]
    assert percentages == sorted(percentages)
    assert all(frame.id for frame in frames if frame.data is not None)


# ----- bad requests and the stream's limits --------------------------------------------------


@pytest.mark.parametrize("job_id", ["0" * 32, "f" * 31, "not-a-job", "A" * 32])
def test_unknown_and_malformed_ids_are_404(redis_app: Flask, job_id: str) -> None:
    client = redis_app.test_client()
    response = client.get(f"/api/v1/jobs/{job_id}/progress")
    body = assert_error(response, 404, "JOB_NOT_FOUND")
    assert body["details"] == {"jobId": job_id}
    assert conforms(openapi(client), response, PROGRESS_PATH) == body
    assert slots(redis_app).open == 0  # the slot it took was given back


def test_a_quiet_stream_sends_keep_alives_and_ends_after_its_maximum(
    registry: Registry, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    app = make_app(
        registry,
        tmp_path,
        redis_url=private_redis.url,
        stream_keepalive_s=0.2,
        stream_max_s=1.5,
    )
    job = queued_job(state_of(app))  # never runs
    started = time.monotonic()
    frames = read_stream(open_stream(app.test_client(), job.id))
    took = time.monotonic() - started

    assert 1.5 <= took < 1.5 + progress.WAKE_S + 2
    assert frames[0].data == job_event(job) and frames[0].retry == progress.RECONNECT_MS
    assert events_of(frames) == [job_event(job)]  # nothing happened: no further events
    keep_alives = [frame for frame in frames if frame.comment == "keep-alive"]
    assert len(keep_alives) >= 3
    assert slots(app).open == 0


def test_streams_over_the_cap_get_503_and_a_closed_stream_frees_its_slot(
    registry: Registry, tmp_path: Path
) -> None:
    app = make_app(registry, tmp_path, threads=3, stream_reserved_threads=1)
    assert slots(app).limit == 2
    client = app.test_client()
    job = queued_job(state_of(app), queue="nobody")
    first, second = open_stream(client, job.id), open_stream(client, job.id)
    for response in (first, second):
        next_frame(response)
    assert slots(app).open == 2

    refused = client.get(f"/api/v1/jobs/{job.id}/progress")
    body = assert_error(refused, 503, "TOO_MANY_STREAMS")
    assert refused.headers["Retry-After"] == str(progress.RETRY_AFTER_S)
    assert body["details"] == {"limit": 2, "retryAfter": progress.RETRY_AFTER_S}
    assert conforms(openapi(client), refused, PROGRESS_PATH) == body
    assert client.get("/api/v1/health").status_code == 200

    first.close()  # the client went away
    assert slots(app).open == 1
    third = open_stream(client, job.id)
    assert next_frame(third).data == job_event(job)
    # A HEAD request never reads the body: its slot is given back all the same.
    head = f"/api/v1/jobs/{job.id}/progress"
    assert client.head(head, buffered=True).status_code == 503
    second.close()
    assert client.head(head, buffered=True).status_code == 200
    assert slots(app).open == 1
    third.close()
    assert slots(app).open == 0


def test_no_thread_beyond_the_reserve_turns_streams_off(registry: Registry, tmp_path: Path) -> None:
    app = make_app(registry, tmp_path, threads=2, stream_reserved_threads=2)
    job = queued_job(state_of(app))
    body = assert_error(
        app.test_client().get(f"/api/v1/jobs/{job.id}/progress"), 503, "TOO_MANY_STREAMS"
    )
    assert "STREAM_RESERVED_THREADS" in body["error"] and body["details"]["limit"] == 0


def test_ending_open_streams_for_a_shutdown(registry: Registry, tmp_path: Path) -> None:
    app = make_app(registry, tmp_path)
    client = app.test_client()
    job = queued_job(state_of(app))
    response = open_stream(client, job.id)
    next_frame(response)
    timer = threading.Timer(0.3, progress.end_open_streams, args=(app,))
    timer.start()
    started = time.monotonic()
    assert events_of(read_stream(response)) == []  # ended without a final event
    assert time.monotonic() - started < progress.WAKE_S + 2
    timer.join()
    body = assert_error(client.get(f"/api/v1/jobs/{job.id}/progress"), 503, "TOO_MANY_STREAMS")
    assert "stopping" in body["error"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STREAM_RESERVED_THREADS", "-1"),
        ("STREAM_KEEPALIVE_S", "0"),
        ("STREAM_MAX_S", "-5"),
        ("STREAM_MAX_S", "inf"),
    ],
)
def test_bad_stream_settings_are_refused_at_start(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"PIXMILL_{variable}"):
        Config.from_env({f"PIXMILL_{variable}": value})


# ----- a real server: streams never starve ordinary requests ---------------------------------


@dataclass
class LiveServer:
    url: str
    jobs: JobStore
    redis: redis.Redis


@contextmanager
def live_server(
    tmp_path: Path, redis_url: str, *, workers: int, threads: int, reserved: int
) -> Iterator[LiveServer]:
    """`pixmill serve` in a subprocess on 127.0.0.1, with its job database open here too."""
    port = free_port()
    data_dir = tmp_path / f"serve-{port}"
    database_url = f"sqlite:///{tmp_path / f'serve-{port}.db'}"
    log = tmp_path / f"serve-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXMILL_")}
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        PIXMILL_STREAM_RESERVED_THREADS=str(reserved),
        PIXMILL_STREAM_KEEPALIVE_S="1",
        PIXMILL_QUEUE_WORKERS="0",  # jobs stay queued: their streams stay open
    )
    command = [sys.executable, "-m", "pixmill", "serve", "--port", str(port)]
    command += ["--workers", str(workers), "--threads", str(threads)]
    command += ["--data-dir", str(data_dir)]
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    database = Database.from_url(database_url)
    connection = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"pixmill serve exited:\n{log.read_text()}"
            try:
                if requests.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"pixmill serve is not up:\n{log.read_text()}"
            time.sleep(0.2)
        yield LiveServer(url, JobStore(database.sessions), connection)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        database.dispose()
        connection.close()


class LiveStream:
    """An open stream of a real server, read as its events arrive."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.chunks = response.iter_content(chunk_size=None)
        self.text = ""

    def next_event(self) -> dict[str, Any]:
        """The next event (comments skipped); what follows it stays for `rest`."""
        while True:
            blocks, _, partial = self.text.rpartition("\n\n")
            for index, frame in enumerate(parse_frames(blocks)):
                if frame.data is not None:
                    later = blocks.split("\n\n")[index + 1 :]
                    self.text = "".join(block + "\n\n" for block in later) + partial
                    return frame.data
            self.text += next(self.chunks).decode()

    def rest(self) -> list[Frame]:
        text = self.text + "".join(chunk.decode() for chunk in self.chunks)
        return parse_frames(text)

    def close(self) -> None:
        self.response.close()


def open_live_streams(
    server: LiveServer, job_id: str, count: int, status: str = "queued"
) -> list[LiveStream]:
    """`count` open streams, however the kernel spreads them over the workers: a stream that
    reached a worker already at its cap is refused (503) and tried again."""
    streams: list[LiveStream] = []
    url = f"{server.url}/api/v1/jobs/{job_id}/progress"
    for _ in range(20 * count):
        if len(streams) == count:
            break
        response = requests.get(url, stream=True, timeout=(5, 15))
        if response.status_code == 503:
            response.close()
            continue
        assert response.status_code == 200, response.text
        stream = LiveStream(response)
        assert stream.next_event()["status"] == status
        streams.append(stream)
    assert len(streams) == count, f"only {len(streams)} of {count} streams opened"
    return streams


def finish_and_publish(server: LiveServer, job_id: str) -> None:
    done = complete(server.jobs, job_id)
    publish(server.redis, job_id, job_event(done))


@pytest.mark.server
def test_open_streams_never_starve_ordinary_requests(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    workers, threads, reserved = 2, 3, 1
    cap = workers * (threads - reserved)
    with live_server(
        tmp_path, private_redis.url, workers=workers, threads=threads, reserved=reserved
    ) as server:
        job = server.jobs.create(JobKind.TOOL, tool_id="resize", queue="nobody")
        streams = open_live_streams(server, job.id, cap)

        # Every worker holds its cap of streams; the reserved threads still answer at once.
        for _ in range(10):
            started = time.monotonic()
            assert requests.get(f"{server.url}/api/v1/health", timeout=3).status_code == 200
            assert time.monotonic() - started < 3
        resized = requests.post(
            f"{server.url}/api/v1/tools/image/resize",
            files={"file": ("photo.jpg", images.jpeg(800, 600), "image/jpeg")},
            data={"settings": '{"width": 200}'},
            timeout=20,
        )
        assert resized.status_code == 200, resized.text
        assert requests.get(server.url + resized.json()["downloadUrl"], timeout=5).ok

        # One more stream is refused at once, whichever worker takes it.
        for _ in range(4):
            refused = requests.get(f"{server.url}/api/v1/jobs/{job.id}/progress", timeout=3)
            assert refused.status_code == 503
            assert refused.json()["code"] == "TOO_MANY_STREAMS"
            assert refused.headers["Retry-After"] == str(progress.RETRY_AFTER_S)

        finish_and_publish(server, job.id)
        for stream in streams:
            assert [event["status"] for event in events_of(stream.rest())] == ["completed"]
        # Their slots are free again: a late client gets the final event.
        (late,) = open_live_streams(server, job.id, 1, status="completed")
        assert events_of(late.rest()) == []  # and nothing after it: the stream ended
        for stream in [*streams, late]:
            stream.close()


@pytest.mark.server
def test_without_a_reserve_streams_would_starve_ordinary_requests(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    """The counter-proof: with no reserved thread, streams take every thread and a health
    check waits. This is what the reserve of the test above prevents."""
    with live_server(tmp_path, private_redis.url, workers=1, threads=2, reserved=0) as server:
        job = server.jobs.create(JobKind.TOOL, tool_id="resize", queue="nobody")
        streams = open_live_streams(server, job.id, 2)
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(f"{server.url}/api/v1/health", timeout=(3, 2))
        finish_and_publish(server, job.id)
        for stream in streams:
            assert events_of(stream.rest())[-1]["status"] == "completed"
            stream.close()
        assert requests.get(f"{server.url}/api/v1/health", timeout=5).status_code == 200
