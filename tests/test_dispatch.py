"""Dispatch on RQ: submit, workers, progress events, cancel, retries, timeouts, the result
cache, warm state and the reconciler, against a real Redis and real databases.

Redis is a private `redis-server` started for this module in a temporary folder (no TCP
port, no persistence), flushed before and after each test. Every test runs on SQLite and on
PostgreSQL (a throwaway database, see tests/test_db.py). Workers run in this process (the
`PixmillWorker` in burst mode) or, where the process boundary is the point (warm state
across jobs, SIGKILL mid-job), as real `pixmill.core.worker` subprocesses configured only
through the environment. Every wait is bounded.

The throwaway tools below are registered through `load_registry(extra_plugins=[PLUGIN])`
in this process and through `PIXMILL_EXTRA_PLUGINS=test_dispatch:PLUGIN` in subprocesses.
They record each run in marker files under `PIXMILL_TEST_DISPATCH_DIR`.
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import test_db  # the database fixtures (SQLite and a throwaway PostgreSQL database)
from marshmallow import fields, validate
from PIL import Image
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from rq.registry import ScheduledJobRegistry

from pixmill import FileResult, Settings, Tool, hookimpl
from pixmill.core import defaults, dispatch
from pixmill.core.blobs import BlobKey, LocalBlobStore
from pixmill.core.config import Config
from pixmill.core.contracts import Context, Extractor, InputFile, Inputs
from pixmill.core.db import Database
from pixmill.core.dispatch import (
    Dispatcher,
    Reconciler,
    event_channel,
    retry_backoff,
)
from pixmill.core.errors import BadRequestError, NotFoundError, PixmillError
from pixmill.core.jobstore import JobStore
from pixmill.core.models import Job, JobKind, JobStatus, utcnow
from pixmill.core.plugin_host import load_registry
from pixmill.core.redis_server import PrivateRedis
from pixmill.core.worker import (
    WorkerState,
    extra_plugins_from_env,
    install_state,
    make_worker,
)

migrated_database = test_db.migrated_database
database = test_db.database

MARKERS_ENV = "PIXMILL_TEST_DISPATCH_DIR"
TESTS_DIR = Path(__file__).resolve().parent
FINAL = {"completed", "failed", "cancelled"}
QUEUES = ("default", "ai")


# ----- throwaway tools ------------------------------------------------------------------------


def _marker(name: str) -> Path:
    return Path(os.environ[MARKERS_ENV]) / name


def _record(name: str) -> None:
    with open(_marker(name), "a", encoding="ascii") as handle:
        handle.write(f"{os.getpid()}\n")


def _echo_result(inputs: Inputs) -> FileResult:
    file = inputs.file
    return FileResult(file.data, file.format.name)


class EchoSettings(Settings):
    tag = fields.String(load_default="x")
    level = fields.Integer(load_default=1, validate=validate.Range(min=1, max=10))


def _echo(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    _record("echo")
    ctx.progress(0.5, "half way")
    return _echo_result(inputs)


def _slow(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    _record("slow")
    for step in range(400):  # 10 s at most
        if _marker("slow.release").exists():
            break
        ctx.check_cancelled()
        ctx.progress(step / 400, f"step {step}")
        time.sleep(0.025)
    return _echo_result(inputs)


def _boom(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    _record("boom")
    raise ValueError("the plugin exploded")


def _refuse(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    _record("refuse")
    raise BadRequestError("this input is refused", code="REFUSED")


def _flaky(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    _record("flaky")
    first = _marker("flaky.failed-once")
    if not first.exists():
        first.touch()
        raise RuntimeError("transient glitch")
    return _echo_result(inputs)


def _hang(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    _record("hang")
    for _ in range(300):  # 30 s, never checking for cancellation
        time.sleep(0.1)
    return _echo_result(inputs)


def _load_model() -> object:
    _record("warm-load")
    return object()


def _warm(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    ctx.load_model("dispatch-test-model", _load_model)
    _record("warm-run")
    return _echo_result(inputs)


def _measure(ctx: Context, image: InputFile, settings: dict[str, Any]) -> dict[str, Any]:
    _record("measure")
    header = image.header
    return {"width": header.width, "height": header.height, "format": image.format.name}


def _tool(tool_id: str, run: Any, **extra: Any) -> Tool:
    return Tool(id=tool_id, name=tool_id, description=tool_id, settings=Settings, run=run, **extra)


TOOLS: list[Tool] = [
    Tool(id="echo", name="echo", description="echo", settings=EchoSettings, run=_echo),
    _tool("slow", _slow, queue="ai"),
    _tool("boom", _boom),
    _tool("refuse", _refuse),
    _tool("flaky", _flaky),
    _tool("warm", _warm),
    _tool("hang", _hang, timeout=1.0, max_attempts=2),
]
MEASURE = Extractor(
    id="measure", name="measure", description="measure", settings=Settings, extract=_measure
)


class _DispatchTestTools:
    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        return TOOLS

    @hookimpl
    def pixmill_extractors(self) -> list[Extractor]:
        return [MEASURE]


PLUGIN = _DispatchTestTools()


# ----- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    with server:
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


@dataclass
class Env:
    config: Config
    database_url: str
    redis_url: str
    markers: Path
    state: WorkerState
    dispatcher: Dispatcher

    @property
    def jobstore(self) -> JobStore:
        return self.state.jobstore

    @property
    def blobs(self) -> LocalBlobStore:
        blobs = self.state.blobs
        assert isinstance(blobs, LocalBlobStore)
        return blobs

    def runs(self, name: str) -> list[str]:
        path = self.markers / name
        return path.read_text().split() if path.exists() else []

    def tool(self, tool_id: str) -> Tool | Extractor:
        return self.state.registry.catalogue_entry(tool_id)

    def submit(
        self,
        tool_id: str,
        data: bytes | None = None,
        filename: str = "photo.png",
        settings: dict[str, Any] | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> Job:
        files = {"file": [(data if data is not None else png(), filename)]}
        return (dispatcher or self.dispatcher).submit_tool_job(
            self.tool(tool_id), files, settings or {}
        )


@pytest.fixture
def env(
    database: Database,
    conn: redis.Redis,
    private_redis: PrivateRedis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Env]:
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(MARKERS_ENV, str(markers))
    database_url = database.engine.url.render_as_string(hide_password=False)
    config = Config(
        data_dir=tmp_path / "data",
        load_plugins=(),
        database_url=database_url,
        redis_url=private_redis.url,
    )
    jobstore = JobStore(database.sessions)
    blobs = LocalBlobStore(config.blobs_dir)
    state = WorkerState(
        config=config,
        registry=load_registry((), [PLUGIN], entry_points=False),
        jobstore=jobstore,
        blobs=blobs,
        redis=conn,
        retry_backoff=0,  # immediate retries unless a test asks for backoff
    )
    assert sorted(state.registry.tools) == sorted(tool.id for tool in TOOLS)
    install_state(state)
    dispatcher = Dispatcher(jobstore, blobs, private_redis.url, config=config, connection=conn)
    try:
        yield Env(config, database_url, private_redis.url, markers, state, dispatcher)
    finally:
        install_state(None)


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def work(
    conn: redis.Redis,
    queues: Sequence[str] = QUEUES,
    *,
    until: Callable[[], bool] | None = None,
    timeout: float = 30.0,
) -> None:
    """Run an in-process worker in burst mode (again, until `until()` holds, bounded)."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    deadline = time.monotonic() + timeout
    try:
        while True:
            worker = make_worker("", list(queues), connection=conn, preload=False)
            worker.work(burst=True, logging_level="WARNING")
            if until is None or until():
                return
            assert time.monotonic() < deadline, "the jobs did not finish in time"
            time.sleep(0.2)
    finally:
        for sig, handler in saved.items():  # RQ installs its own; give pytest its back
            signal.signal(sig, handler)


def final(env: Env, *job_ids: str) -> Callable[[], bool]:
    return lambda: all(env.jobstore.get(job_id).is_final for job_id in job_ids)


def subscribe(conn: redis.Redis, job_id: str) -> Any:
    pubsub = conn.pubsub()
    pubsub.subscribe(event_channel(job_id))
    confirmation = pubsub.get_message(timeout=2)
    assert confirmation is not None and confirmation["type"] == "subscribe"
    return pubsub


def events(pubsub: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every event received, up to and including the first final one (bounded)."""
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is None:
            continue
        # Published as flask-sse messages: `{"data": <event>, "id": ...}`.
        received.append(json.loads(message["data"])["data"])
        if received[-1]["status"] in FINAL:
            break
    pubsub.close()
    return received


def queued_ids(conn: redis.Redis, queue: str = "default") -> list[str]:
    return Queue(queue, connection=conn).get_job_ids()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def raises(status: int, code: str) -> Any:
    return pytest.raises(PixmillError, check=lambda e: (e.status, e.code) == (status, code))


def event_types(env: Env, job_id: str) -> list[str]:
    return [event.type for event in env.jobstore.events(job_id)]


def later(seconds: float) -> Any:
    return utcnow() + timedelta(seconds=seconds)


def worker_env(env: Env) -> dict[str, str]:
    """The environment of a worker subprocess: configuration through variables only."""
    variables = dict(os.environ)
    variables.update(
        {
            "PIXMILL_DATA_DIR": str(env.config.data_dir),
            "DATABASE_URL": env.database_url,
            "REDIS_URL": env.redis_url,
            "PIXMILL_LOAD_PLUGINS": "",
            "PIXMILL_EXTRA_PLUGINS": "test_dispatch:PLUGIN",
            MARKERS_ENV: str(env.markers),
            "PYTHONPATH": os.pathsep.join(
                [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
    )
    return variables


WORKER_SCRIPT = (
    "import os, sys\n"
    "from pixmill.core.worker import make_worker\n"
    "make_worker(os.environ['REDIS_URL'], sys.argv[1].split(','))"
    ".work(burst=sys.argv[2] == 'burst', logging_level='WARNING')\n"
)


def start_worker(env: Env, queues: str, mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, queues, mode],
        env=worker_env(env),
        cwd=TESTS_DIR.parent,
        start_new_session=True,  # its own process group: the worker and RQ's scheduler
    )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


# ----- submit and run -------------------------------------------------------------------------


def test_submit_then_worker_completes_the_row_with_a_downloadable_result(
    env: Env, conn: redis.Redis
) -> None:
    data = png()
    job = env.submit("echo", data, settings={"tag": "a"})
    assert job.status is JobStatus.QUEUED and job.kind is JobKind.TOOL
    assert job.settings == {"tag": "a", "level": 1}  # normalized, wire names
    assert job.queue == "default" and job.input_size == len(data)
    assert queued_ids(conn) == [job.id]  # the RQ id is the SQL id
    rq_job = Queue("default", connection=conn).fetch_job(job.id)
    assert rq_job is not None and rq_job.func_name == dispatch.WORKER_FUNCTION
    assert rq_job.args == (job.id,)
    upload = BlobKey.parse(job.inputs[0]["key"])
    assert env.blobs.open(upload).read() == data
    pubsub = subscribe(conn, job.id)

    work(conn)

    done = env.jobstore.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.attempt == 1
    assert [ref["filename"] for ref in done.outputs] == ["photo.png"]
    key = BlobKey.result(job.id, 1, "photo.png")
    assert done.outputs[0]["key"] == key.relative_path and done.output_size == len(data)
    assert env.blobs.open(key).read() == data
    assert env.blobs.promoted_attempt(job.id) == 1
    assert len(env.runs("echo")) == 1
    assert queued_ids(conn) == []

    received = events(pubsub)
    assert {"jobId": job.id, "status": "processing", "progress": 50, "message": "half way"} in (
        received
    )
    last = received[-1]
    assert last["status"] == "completed" and last["progress"] == 100
    assert last["downloadUrl"] == f"/api/v1/download/{job.id}/photo.png"
    assert last["originalSize"] == len(data) and last["processedSize"] == len(data)
    assert event_types(env, job.id) == ["created", "claimed", "completed"]


def test_an_extractor_job_stores_its_json_in_the_row_and_the_final_event(
    env: Env, conn: redis.Redis
) -> None:
    job = env.submit("measure", png(size=(12, 7)))
    assert job.kind is JobKind.EXTRACT
    pubsub = subscribe(conn, job.id)
    work(conn)
    done = env.jobstore.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.outputs == []
    assert done.result == {"width": 12, "height": 7, "format": "png"}
    assert events(pubsub)[-1]["result"] == done.result


def test_tools_go_to_the_queue_they_declare(env: Env, conn: redis.Redis) -> None:
    job = env.submit("slow")
    assert job.queue == "ai"
    assert queued_ids(conn, "ai") == [job.id] and queued_ids(conn, "default") == []
    _marker("slow.release").touch()
    work(conn, ["default"])  # a worker of another queue leaves it alone
    assert env.jobstore.get(job.id).status is JobStatus.QUEUED
    work(conn, ["ai"])
    assert env.jobstore.get(job.id).status is JobStatus.COMPLETED


@pytest.mark.parametrize(
    ("files", "settings", "status", "code"),
    [
        ({"file": [(b"png", "a.png")]}, {"level": 99}, 400, "VALIDATION_ERROR"),
        ({"file": [(b"png", "a.png")]}, {"unknown": 1}, 400, "VALIDATION_ERROR"),
        ({}, {}, 400, "MISSING_FILE"),
        ({"file": [(b"png", "a.png")], "mask": [(b"png", "m.png")]}, {}, 400, "UNEXPECTED_FILE"),
        ({"file": [(b"png", "a.png"), (b"png", "b.png")]}, {}, 400, "TOO_MANY_FILES"),
        ({"file": [(b"this is not an image", "a.png")]}, {}, 415, "UNSUPPORTED_FORMAT"),
    ],
)
def test_bad_requests_fail_before_anything_is_stored_or_queued(
    env: Env,
    conn: redis.Redis,
    files: dict[str, Any],
    settings: dict[str, Any],
    status: int,
    code: str,
) -> None:
    files = {
        name: [(png() if data == b"png" else data, filename) for data, filename in parts]
        for name, parts in files.items()
    }
    with raises(status, code):
        env.dispatcher.submit_tool_job(env.tool("echo"), files, settings)
    assert env.jobstore.list().total == 0
    assert conn.keys("rq:queue:*") == []
    assert not (env.config.blobs_dir / "uploads").exists() or not any(
        (env.config.blobs_dir / "uploads").iterdir()
    )


# ----- cancel ---------------------------------------------------------------------------------


def test_cancel_of_a_queued_job_takes_it_off_redis_and_it_never_runs(
    env: Env, conn: redis.Redis
) -> None:
    job = env.submit("echo")
    pubsub = subscribe(conn, job.id)
    cancelled = env.dispatcher.cancel(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert queued_ids(conn) == []
    assert events(pubsub)[-1]["status"] == "cancelled"
    work(conn)
    assert env.runs("echo") == []
    assert env.jobstore.get(job.id).status is JobStatus.CANCELLED
    with raises(409, "JOB_FINISHED"):
        env.dispatcher.cancel(job.id)
    with raises(404, "JOB_NOT_FOUND"):
        env.dispatcher.cancel("0" * 32)


def test_a_cancelled_row_still_in_redis_is_never_run(env: Env, conn: redis.Redis) -> None:
    job = env.submit("echo")
    env.jobstore.cancel(job.id)  # the row only: Redis still holds the work
    assert queued_ids(conn) == [job.id]
    work(conn)
    assert env.runs("echo") == []
    assert env.jobstore.get(job.id).status is JobStatus.CANCELLED


def test_cancel_of_a_running_job_stops_the_plugin_cooperatively(
    env: Env, conn: redis.Redis
) -> None:
    job = env.submit("slow")
    pubsub = subscribe(conn, job.id)
    seen: list[Job] = []

    def cancel_when_running() -> None:
        # Cancel once progress reached the row: the plugin is well inside its loop.
        wait_for(lambda: env.jobstore.get(job.id).progress > 0, 10, "progress of the slow tool")
        seen.append(env.dispatcher.cancel(job.id))

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    started = time.monotonic()
    try:
        work(conn, ["ai"])
    finally:
        canceller.join(timeout=15)
    assert time.monotonic() - started < 8  # stopped well before its 10 s of work
    assert seen and seen[0].status is JobStatus.PROCESSING and seen[0].cancel_requested
    done = env.jobstore.get(job.id)
    assert done.status is JobStatus.CANCELLED and done.outputs == []
    assert env.blobs.list_job(job.id) == [BlobKey.parse(job.inputs[0]["key"])]
    received = events(pubsub)
    assert any(e["status"] == "processing" and e["progress"] > 0 for e in received)
    assert received[-1]["status"] == "cancelled"


# ----- failures, retries, timeouts --------------------------------------------------------------


def test_a_raising_plugin_is_retried_then_fails_with_its_message_and_the_worker_survives(
    env: Env, conn: redis.Redis
) -> None:
    broken = env.submit("boom")
    healthy = env.submit("echo")
    pubsub = subscribe(conn, broken.id)
    work(conn, until=final(env, broken.id, healthy.id))
    failed = env.jobstore.get(broken.id)
    assert failed.status is JobStatus.FAILED and failed.error_code == "TOOL_FAILED"
    assert failed.error_message is not None
    assert "ValueError: the plugin exploded" in failed.error_message
    assert "attempt 3 of 3" in failed.error_message
    assert len(env.runs("boom")) == 3 and failed.attempt == 3
    assert event_types(env, broken.id).count("requeued") == 2
    assert env.jobstore.get(healthy.id).status is JobStatus.COMPLETED
    last = events(pubsub, timeout=2)[-1]
    assert last["status"] == "failed" and last["error"]["code"] == "TOOL_FAILED"


def test_bad_input_reported_by_a_plugin_fails_at_once(env: Env, conn: redis.Redis) -> None:
    job = env.submit("refuse")
    work(conn)
    done = env.jobstore.get(job.id)
    assert (done.status, done.error_code, done.attempt) == (JobStatus.FAILED, "REFUSED", 1)
    assert done.error_message == "this input is refused"
    assert len(env.runs("refuse")) == 1


def test_a_transient_failure_is_retried_after_a_backoff_then_completes(
    env: Env, conn: redis.Redis
) -> None:
    env.state.retry_backoff = 1
    job = env.submit("flaky")
    work(conn)  # one pass: attempt 1 fails and is scheduled for later, not run again now
    waiting = env.jobstore.get(job.id)
    assert waiting.status is JobStatus.QUEUED and waiting.attempt == 1
    assert waiting.message is not None and "transient glitch" in waiting.message
    assert job.id in ScheduledJobRegistry("default", connection=conn).get_job_ids()
    assert queued_ids(conn) == []

    work(conn, until=final(env, job.id), timeout=15)
    done = env.jobstore.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.attempt == 2
    assert len(env.runs("flaky")) == 2
    assert done.outputs[0]["key"] == BlobKey.result(job.id, 2, "photo.png").relative_path
    assert env.blobs.promoted_attempt(job.id) == 2
    assert [k for k in env.blobs.list_job(job.id) if k.area == "results"] == [
        BlobKey.result(job.id, 2, "photo.png")
    ]


def test_a_tool_past_its_time_limit_is_retried_then_fails_and_the_worker_goes_on(
    env: Env, conn: redis.Redis
) -> None:
    job = env.submit("hang")
    assert job.max_attempts == 2  # the tool's own declaration
    after = env.submit("echo")
    started = time.monotonic()
    work(conn, until=final(env, job.id, after.id))
    assert time.monotonic() - started < 15  # two 1 s limits, not 2 x 30 s of sleeping
    done = env.jobstore.get(job.id)
    assert done.status is JobStatus.FAILED and done.error_code == "JOB_TIMEOUT"
    assert done.error_message is not None and "1 s time limit (attempt 2 of 2)" in (
        done.error_message
    )
    assert len(env.runs("hang")) == 2
    assert env.jobstore.get(after.id).status is JobStatus.COMPLETED
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no alarm left behind


# ----- the result cache -----------------------------------------------------------------------


def test_an_identical_submit_completes_from_the_cache_without_running(
    env: Env, conn: redis.Redis
) -> None:
    data = png((1, 2, 3))
    first = env.submit("echo", data, "a.png", {"tag": "t"})
    work(conn)
    assert env.jobstore.get(first.id).status is JobStatus.COMPLETED

    # Same bytes, another name, equal settings once normalized: no new run.
    second = env.submit("echo", data, "b.png", {"tag": "t", "level": 1})
    assert second.status is JobStatus.COMPLETED and second.cache_key == first.cache_key
    assert second.message == f"reused the result of job {first.id}"
    assert [ref["filename"] for ref in second.outputs] == ["b.png"]
    copied = BlobKey.result(second.id, 1, "b.png")
    assert env.blobs.open(copied).read() == data  # a copy, owned by the new job
    assert env.blobs.promoted_attempt(second.id) == 1
    assert queued_ids(conn) == []
    assert len(env.runs("echo")) == 1

    other = env.submit("echo", data, "a.png", {"tag": "u"})  # other settings: computed
    assert other.status is JobStatus.QUEUED and other.cache_key != first.cache_key
    other_bytes = env.submit("echo", png((3, 2, 1)), "a.png", {"tag": "t"})
    assert other_bytes.status is JobStatus.QUEUED

    # Once the stored results are gone, the cache no longer answers.
    env.blobs.delete_job(first.id)
    env.blobs.delete_job(second.id)
    third = env.submit("echo", data, "a.png", {"tag": "t"})
    assert third.status is JobStatus.QUEUED


def test_twins_queued_together_run_once_the_second_reuses_on_the_worker(
    env: Env, conn: redis.Redis
) -> None:
    data = png((9, 9, 9))
    one = env.submit("echo", data, "one.png")
    two = env.submit("echo", data, "two.png")
    assert one.status is two.status is JobStatus.QUEUED
    work(conn)
    assert len(env.runs("echo")) == 1
    done = env.jobstore.get(two.id)
    assert (
        done.status is JobStatus.COMPLETED and done.message == f"reused the result of job {one.id}"
    )
    assert env.blobs.open(BlobKey.result(two.id, 1, "two.png")).read() == data


# ----- warm state -----------------------------------------------------------------------------


def test_the_second_job_in_a_worker_does_not_load_the_model_again(
    env: Env, conn: redis.Redis
) -> None:
    env.submit("warm", png((1, 1, 1)))
    env.submit("warm", png((2, 2, 2)))
    work(conn)
    assert len(env.runs("warm-run")) == 2
    assert len(env.runs("warm-load")) == 1


def test_a_worker_process_keeps_its_state_warm_across_jobs(env: Env, conn: redis.Redis) -> None:
    jobs = [env.submit("warm", png((n, n, n))) for n in (1, 2, 3)]
    process = start_worker(env, "default", "burst")
    try:
        assert process.wait(timeout=60) == 0
    finally:
        kill_group(process)
    for job in jobs:
        assert env.jobstore.get(job.id).status is JobStatus.COMPLETED
    runs, loads = env.runs("warm-run"), env.runs("warm-load")
    assert len(runs) == 3 and len(set(runs)) == 1  # three jobs, one process ...
    assert loads == runs[:1]  # ... which loaded the model once
    assert runs[0] != str(os.getpid())


# ----- the reconciler -------------------------------------------------------------------------


def test_queued_rows_lost_by_redis_are_enqueued_again(env: Env, conn: redis.Redis) -> None:
    jobs = [env.submit("echo", png((n, 0, 0))) for n in range(3)]
    conn.flushdb()  # Redis restarted without persistence
    work(conn)
    assert env.runs("echo") == []
    reconciler = Reconciler(env.jobstore, conn)
    assert reconciler.run_once().reenqueued == []  # too fresh: their enqueue may be under way
    report = reconciler.run_once(later(defaults.RECONCILE_GRACE_S + 1))
    assert sorted(report.reenqueued) == sorted(job.id for job in jobs)
    assert reconciler.run_once(later(defaults.RECONCILE_GRACE_S + 1)).reenqueued == []
    work(conn)
    assert all(env.jobstore.get(job.id).status is JobStatus.COMPLETED for job in jobs)
    assert len(env.runs("echo")) == 3


def test_a_completed_job_whose_promotion_never_happened_is_promoted(
    env: Env, conn: redis.Redis
) -> None:
    job = env.submit("echo", png((9, 9, 9)))
    work(conn)
    done = env.jobstore.get(job.id)
    assert done.status is JobStatus.COMPLETED
    # What a worker killed between its commit and the promotion leaves: no marker, and the
    # files of an earlier attempt next to the winner's.
    results = env.config.blobs_dir / "results" / job.id
    (results / ".promoted").unlink()
    env.blobs.put(BlobKey.result(job.id, done.attempt + 1, "stale.png"), b"not the winner")
    (results / ".tmp-cut-short").write_bytes(b"1")  # the marker's temp file, never renamed
    assert env.blobs.promoted_attempt(job.id) is None

    reconciler = Reconciler(env.jobstore, conn, blobs=env.blobs)
    assert reconciler.run_once().promoted == []  # within the grace: its worker may be at it
    report = reconciler.run_once(later(defaults.RECONCILE_GRACE_S + 1))
    assert report.promoted == [job.id]
    assert env.blobs.promoted_attempt(job.id) == done.attempt
    assert sorted(os.listdir(results)) == sorted([".promoted", str(done.attempt)])
    assert reconciler.run_once(later(defaults.RECONCILE_GRACE_S + 2)).promoted == []
    # Without a blob store the reconciler leaves blobs alone (as before).
    assert Reconciler(env.jobstore, conn).run_once(later(60)).promoted == []


def test_the_reconciler_sees_a_backlog_larger_than_one_page(
    env: Env, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "RECONCILE_BATCH", 2)  # 5 rows: three pages
    jobs = [env.submit("echo", png((n, 1, 0))) for n in range(5)]
    conn.flushdb()
    report = Reconciler(env.jobstore, conn).run_once(later(defaults.RECONCILE_GRACE_S + 1))
    assert sorted(report.reenqueued) == sorted(job.id for job in jobs)
    work(conn)
    assert all(env.jobstore.get(job.id).status is JobStatus.COMPLETED for job in jobs)


def test_a_submit_while_redis_is_down_is_queued_by_the_reconciler(
    env: Env, conn: redis.Redis, tmp_path: Path
) -> None:
    nowhere = redis.Redis(
        unix_socket_path=str(tmp_path / "no-redis.sock"),
        socket_timeout=1,
        retry=Retry(NoBackoff(), 0),  # fail at once instead of redis-py's backoff
    )
    offline = Dispatcher(env.jobstore, env.blobs, "", config=env.config, connection=nowhere)
    job = env.submit("echo", dispatcher=offline)
    assert job.status is JobStatus.QUEUED
    report = Reconciler(env.jobstore, conn).run_once(later(defaults.RECONCILE_GRACE_S + 1))
    assert report.reenqueued == [job.id]
    work(conn)
    assert env.jobstore.get(job.id).status is JobStatus.COMPLETED


def test_a_retry_scheduled_with_no_scheduler_running_is_enqueued_once_overdue(
    env: Env, conn: redis.Redis
) -> None:
    env.state.retry_backoff = 100
    job = env.submit("flaky")
    work(conn)  # attempt 1 fails; the retry is scheduled 100 s ahead
    assert job.id in ScheduledJobRegistry("default", connection=conn).get_job_ids()
    reconciler = Reconciler(env.jobstore, conn)
    assert reconciler.run_once(later(defaults.RECONCILE_GRACE_S + 1)).reenqueued == []
    overdue = later(100 + defaults.RECONCILE_GRACE_S + 5)  # and no scheduler moved it
    assert reconciler.run_once(overdue).reenqueued == [job.id]
    work(conn)
    done = env.jobstore.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.attempt == 2


def test_a_processing_row_whose_lease_expired_is_requeued_and_completes(
    env: Env, conn: redis.Redis
) -> None:
    job = env.submit("echo")
    # A worker claimed it and died: the row is processing, nobody heartbeats.
    assert env.jobstore.claim(job.id, 30) is not None
    work(conn)  # another worker dequeues the RQ job but cannot claim the row
    assert env.runs("echo") == []
    assert env.jobstore.get(job.id).status is JobStatus.PROCESSING

    reconciler = Reconciler(env.jobstore, conn)
    assert reconciler.run_once().requeued == []  # the lease still runs
    report = reconciler.run_once(later(31))
    assert report.requeued == [job.id]
    requeued = env.jobstore.get(job.id)
    assert requeued.status is JobStatus.QUEUED and requeued.message is not None
    assert "lease expired" in requeued.message
    work(conn)
    done = env.jobstore.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.attempt == 2
    assert done.outputs[0]["key"] == BlobKey.result(job.id, 2, "photo.png").relative_path
    assert len(env.runs("echo")) == 1


def test_a_job_whose_workers_keep_dying_fails_after_its_attempts(
    env: Env, conn: redis.Redis
) -> None:
    two_attempts = Dispatcher(
        env.jobstore, env.blobs, "", config=env.config, connection=conn, max_attempts=2
    )
    job = env.submit("echo", dispatcher=two_attempts)
    reconciler = Reconciler(env.jobstore, conn)
    assert env.jobstore.claim(job.id, 30) is not None
    assert reconciler.run_once(later(31)).requeued == [job.id]
    assert env.jobstore.claim(job.id, 30) is not None
    pubsub = subscribe(conn, job.id)
    report = reconciler.run_once(later(31))
    assert report.finished == [job.id] and report.requeued == []
    done = env.jobstore.get(job.id)
    assert done.status is JobStatus.FAILED and done.error_code == "ATTEMPTS_EXHAUSTED"
    assert events(pubsub)[-1]["error"]["code"] == "ATTEMPTS_EXHAUSTED"
    work(conn)
    assert env.runs("echo") == []


def test_concurrent_reconcilers_and_duplicate_enqueues_run_each_job_once(
    env: Env, conn: redis.Redis
) -> None:
    jobs = [env.submit("echo", png((0, n, 0))) for n in range(4)]
    conn.flushdb()
    reports: list[Any] = []
    at = later(defaults.RECONCILE_GRACE_S + 1)
    threads = [
        threading.Thread(target=lambda: reports.append(Reconciler(env.jobstore, conn).run_once(at)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(reports) == 3
    enqueued = [job_id for report in reports for job_id in report.reenqueued]
    assert sorted(set(enqueued)) == sorted(job.id for job in jobs)
    for job in jobs:  # and, whatever the reconcilers did, a duplicate on top
        env.dispatcher.enqueue(job)
    work(conn)
    assert all(env.jobstore.get(job.id).status is JobStatus.COMPLETED for job in jobs)
    assert len(env.runs("echo")) == len(jobs)


def test_a_sigkilled_worker_loses_nothing(env: Env, conn: redis.Redis) -> None:
    job = env.submit("slow")
    process = start_worker(env, "ai", "forever")
    try:
        wait_for(lambda: _marker("slow").exists(), 30, "the worker to start the job")
        running = env.jobstore.get(job.id)
        assert running.status is JobStatus.PROCESSING and running.attempt == 1
    finally:
        kill_group(process)  # SIGKILL mid-job: no cleanup of any kind
    assert env.jobstore.get(job.id).status is JobStatus.PROCESSING

    report = Reconciler(env.jobstore, conn).run_once(later(defaults.JOB_LEASE_S + 1))
    assert report.requeued == [job.id]
    _marker("slow.release").touch()
    work(conn, ["ai"])
    done = env.jobstore.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.attempt == 2
    assert [k for k in env.blobs.list_job(job.id) if k.area == "results"] == [
        BlobKey.result(job.id, 2, "photo.png")
    ]
    assert len(env.runs("slow")) == 2


def test_a_worker_whose_lease_was_taken_back_writes_no_duplicate_output(
    env: Env, conn: redis.Redis
) -> None:
    job = env.submit("slow")
    process = start_worker(env, "ai", "forever")
    try:
        wait_for(lambda: env.jobstore.get(job.id).progress > 0, 30, "the job to make progress")
        # The reconciler wrongly believes the (slow, alive) worker dead and takes the job
        # back; then the plugin finishes its work anyway, as a zombie attempt would.
        report = Reconciler(env.jobstore, conn).run_once(later(defaults.JOB_LEASE_S + 1))
        assert report.requeued == [job.id]
        _marker("slow.release").touch()
        # Promotion (which removes the zombie's files) follows the commit: wait for both.
        winner = BlobKey.result(job.id, 2, "photo.png")
        wait_for(
            lambda: (
                env.jobstore.get(job.id).is_final
                and [k for k in env.blobs.list_job(job.id) if k.area == "results"] == [winner]
            ),
            30,
            "the job to finish with only the winning attempt's output",
        )
    finally:
        kill_group(process)
    done = env.jobstore.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.attempt == 2
    assert [ref["key"] for ref in done.outputs] == [winner.relative_path]
    assert [k for k in env.blobs.list_job(job.id) if k.area == "results"] == [winner]
    assert env.blobs.promoted_attempt(job.id) == 2
    assert event_types(env, job.id) == ["created", "claimed", "requeued", "claimed", "completed"]


# ----- small pieces ---------------------------------------------------------------------------


def test_retry_backoff_doubles_up_to_its_cap() -> None:
    assert [retry_backoff(n, 5) for n in (1, 2, 3)] == [5, 10, 20]
    assert retry_backoff(30, 5) == defaults.JOB_RETRY_BACKOFF_MAX_S
    assert retry_backoff(3, 0) == 0


@pytest.mark.parametrize(
    "key",
    ["", "uploads", "../etc/passwd", f"uploads/{'a' * 32}/../x", f"results/{'a' * 32}/x/out.png"],
)
def test_bad_blob_keys_are_refused(key: str) -> None:
    with pytest.raises(NotFoundError):
        BlobKey.parse(key)


def test_blob_keys_round_trip() -> None:
    for key in (BlobKey.upload("a" * 32, "000-file"), BlobKey.result("b" * 32, 3, "x.png")):
        assert BlobKey.parse(key.relative_path) == key


def test_extra_plugins_are_named_by_module_or_attribute() -> None:
    assert extra_plugins_from_env({"PIXMILL_EXTRA_PLUGINS": "test_dispatch:PLUGIN"}) == [PLUGIN]
    assert extra_plugins_from_env({"PIXMILL_EXTRA_PLUGINS": " json , "})[0] is json
    assert extra_plugins_from_env({}) == []
    with pytest.raises(ModuleNotFoundError):
        extra_plugins_from_env({"PIXMILL_EXTRA_PLUGINS": "no_such_module_here"})
