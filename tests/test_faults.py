"""Faults at scale: workers killed mid-job again and again, Redis restarted with hundreds of
jobs in flight, plugins that raise or hang, warm and cold shutdowns; real processes, real
services, no mocks.

What RELIABILITY.md promises, and what every test here checks at its end
(`check_outcomes`): every job reaches a final state (none is lost); a completed job has
exactly one set of outputs, the winning attempt's, byte for byte its own input's result, with
no other attempt's folder left in the blob store; each attempt is one claim and every attempt
but the last ended in a requeue; the attempts lost to faults are no more than the faults
caused; a plugin that raises or hangs fails its job after its attempts, with its message,
and does not take its worker down.

One gap is tolerated, and counted: a worker killed after committing a job's completion and
before promoting its blobs (`LocalBlobStore.promote` writes and fsyncs a marker) leaves the
job completed with its one correct output but without the promotion marker, and maybe a
`.tmp-` file of it, until the reconciler's next pass after its grace promotes it (tested in
test_dispatch.py; these runs end before that pass). About one kill in thirty lands there.

The set-up is a small production deployment:

- workers are real `pixmill worker` processes, configured only through the environment, each
  in its own session, so that a test can kill the worker alone or its whole process group
  (the worker and RQ's scheduler child). Most tests start them as `python -m pixmill worker`;
  the tests that need many of them fork them from a parent that has imported pixmill once
  (`ZYGOTE_SCRIPT`), which then runs the same command;
- Redis is a `PrivateRedis` per test (unix socket, no persistence) that a test stops and
  starts again: a restart loses every RQ queue, schedule and registry;
- the job rows live in SQLite and in PostgreSQL (the `database` fixture of tests/test_db.py
  runs each test on both);
- the test loop plays `pixmill serve`'s supervisor: it restarts workers that exited, runs
  `Reconciler.run_once()` a few times a second, and stops the workers at the end with SIGTERM
  first (RQ's warm shutdown), as `pixmill serve` does.

Short timings let faults recover in seconds: `PIXMILL_JOB_LEASE_S` (a killed worker's job is
taken back once its lease lapses), `PIXMILL_JOB_RETRY_BACKOFF_S`, and the reconciler's
`grace_seconds`.

pixmill's worker is an `rq.SimpleWorker` (no work-horse is forked per job, see
`pixmill.core.worker`), so "kill the work-horse" and "kill the whole worker" are both a
SIGKILL of the `pixmill worker` process mid-job: the first kills that process alone, as the
kernel's out-of-memory killer would (RQ's scheduler child, if it had one, lives on as an
orphan), the second its whole process group.

Scale (RELIABILITY.md: "kill ... at random moments, 100 times: 0 lost"; "restart Redis with
several hundred jobs in flight: all finish"): `KILLS` (100) SIGKILLs per database backend,
and `REDIS_RESTART_JOBS` (200) jobs across a Redis restart. `PIXMILL_TEST_FAULT_KILLS` sets
another number of kills. Every wait is bounded.

The throwaway tools below reach the workers through
`PIXMILL_EXTRA_PLUGINS=test_faults:PLUGIN`; each run leaves a marker file
`<event>.<tag>.<pid>.<random>` in `PIXMILL_TEST_FAULTS_DIR`, so a test can tell which process
ran which job, and how often.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import test_db  # the database fixtures (SQLite and a throwaway PostgreSQL database)
from click.testing import CliRunner
from marshmallow import fields, validate
from PIL import Image
from rq import Queue

from pixmill import FileResult, Settings, Tool, hookimpl
from pixmill.cli import main
from pixmill.core import defaults
from pixmill.core.blobs import BlobKey, LocalBlobStore
from pixmill.core.config import Config
from pixmill.core.contracts import Context, Inputs
from pixmill.core.db import Database
from pixmill.core.dispatch import Dispatcher, Reconciler, connect, tool_timeout
from pixmill.core.jobstore import JobStore
from pixmill.core.models import UNFINISHED_STATUSES, Job, JobStatus
from pixmill.core.plugin_host import Registry, load_registry
from pixmill.core.redis_server import PrivateRedis
from pixmill.core.worker import build_state

migrated_database = test_db.migrated_database
database = test_db.database

MARKERS_ENV = "PIXMILL_TEST_FAULTS_DIR"
TESTS_DIR = Path(__file__).resolve().parent
KILLS = int(os.environ.get("PIXMILL_TEST_FAULT_KILLS", "100"))
REDIS_RESTART_JOBS = 200
KILLED_WORKERS = 3
# Long enough that a live worker's heartbeat (every third of it) never misses it on a
# loaded two-core machine; short enough that a killed worker's job comes back in seconds.
LEASE_S = 3.0
STEP_S = 0.02
RECONCILE_EVERY_S = 0.25


# ----- throwaway tools ------------------------------------------------------------------------


def _record(event: str, tag: str) -> None:
    """One marker file per event: concurrent processes never write to the same file."""
    directory = Path(os.environ[MARKERS_ENV])
    (directory / f"{event}.{tag}.{os.getpid()}.{uuid.uuid4().hex[:12]}").touch()


class FaultSettings(Settings):
    tag = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9-]{1,40}$"))
    millis = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10_000))


def _echo(inputs: Inputs) -> FileResult:
    return FileResult(inputs.file.data, inputs.file.format.name)


def _work(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    """Works `millis` ms in small steps (reporting progress), then echoes its input."""
    _record("start", settings["tag"])
    steps = round(settings["millis"] / 1000 / STEP_S)
    for step in range(steps):
        ctx.progress(step / steps)
        time.sleep(STEP_S)
    _record("done", settings["tag"])
    return _echo(inputs)


def _flaky(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    """Fails its first run (a transient error: retried after a backoff), then echoes."""
    _record("start", settings["tag"])
    first = Path(os.environ[MARKERS_ENV]) / f"flaky-failed.{settings['tag']}"
    try:
        first.touch(exist_ok=False)
    except FileExistsError:
        _record("done", settings["tag"])
        return _echo(inputs)
    raise RuntimeError(f"transient glitch of {settings['tag']}")


def _boom(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    _record("start", settings["tag"])
    raise ValueError(f"the plugin exploded on purpose ({settings['tag']})")


def _hang(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    _record("start", settings["tag"])
    for _ in range(600):  # 30 s, never checking for cancellation: only SIGALRM stops it
        time.sleep(0.05)
    _record("done", settings["tag"])
    return _echo(inputs)


def _tool(tool_id: str, run: Any, **policy: Any) -> Tool:
    # Not cacheable: every job must really run, so that runs can be counted per job.
    return Tool(
        id=f"fault-{tool_id}",
        name=tool_id,
        description=tool_id,
        settings=FaultSettings,
        run=run,
        cacheable=False,
        example={"tag": "example"},
        **policy,
    )


WORK = _tool("work", _work, max_attempts=4)
FLAKY = _tool("flaky", _flaky, max_attempts=3)
BOOM = _tool("boom", _boom, max_attempts=3)
HANG = _tool("hang", _hang, timeout=1.0, max_attempts=2)


class _FaultTools:
    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        return [WORK, FLAKY, BOOM, HANG]


PLUGIN = _FaultTools()


# ----- the deployment -------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    job_id: str
    tool_id: str
    tag: str
    filename: str
    data: bytes


@dataclass
class Deployment:
    """A database, a private Redis, a data dir, and the web side's Dispatcher on them."""

    tmp: Path
    config: Config
    database_url: str
    redis_server: PrivateRedis
    client: redis.Redis
    registry: Registry
    jobstore: JobStore
    blobs: LocalBlobStore
    dispatcher: Dispatcher
    markers: Path
    lease_s: float = LEASE_S
    retry_backoff_s: float = 1.0
    submitted: dict[str, Submitted] = field(default_factory=dict)

    def submit(self, tool: Tool, tag: str, millis: int = 0) -> Submitted:
        data = _png_for(tag)
        filename = f"{tag}.png"
        job = self.dispatcher.submit_tool_job(
            tool, {"file": [(data, filename)]}, {"tag": tag, "millis": millis}
        )
        entry = Submitted(job.id, tool.id, tag, filename, data)
        self.submitted[job.id] = entry
        return entry

    def reconciler(self) -> Reconciler:
        # A short grace: rows this test left queued for a second are due for a check.
        return Reconciler(
            self.jobstore,
            self.client,
            grace_seconds=1.0,
            timeout_for=lambda job: tool_timeout(self.registry.catalogue_entry(job.tool_id or "")),
        )

    def unfinished(self) -> int:
        return self.jobstore.list(status=list(UNFINISHED_STATUSES), limit=1).total

    def queued(self) -> int:
        return self.jobstore.list(status=JobStatus.QUEUED, limit=1).total

    def marker_pids(self, event: str, tag: str | None = None) -> list[int]:
        pattern = f"{event}.{tag or '*'}.*"
        return [int(path.name.split(".")[2]) for path in self.markers.glob(pattern)]

    def worker_environment(self) -> dict[str, str]:
        """Everything a `pixmill worker` needs, through the environment only."""
        variables = {k: v for k, v in os.environ.items() if not k.startswith("PIXMILL_")}
        variables.update(
            {
                "PIXMILL_DATA_DIR": str(self.config.data_dir),
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_server.url,
                "PIXMILL_LOAD_PLUGINS": "",
                "PIXMILL_EXTRA_PLUGINS": "test_faults:PLUGIN",
                "PIXMILL_JOB_LEASE_S": str(self.lease_s),
                "PIXMILL_JOB_RETRY_BACKOFF_S": str(self.retry_backoff_s),
                MARKERS_ENV: str(self.markers),
                "PYTHONPATH": os.pathsep.join(
                    [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
                ),
            }
        )
        return variables

    def status_summary(self) -> str:
        counts = Counter(str(self.jobstore.get(job_id).status) for job_id in self.submitted)
        return ", ".join(f"{status}: {count}" for status, count in sorted(counts.items()))


def _png_for(tag: str) -> bytes:
    """A small PNG whose bytes differ per tag, so every output can be traced to its job."""
    digest = hashlib.sha256(tag.encode()).digest()
    buffer = io.BytesIO()
    Image.frombytes("RGB", (4, 2), digest[:24]).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def deployment(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(MARKERS_ENV, str(markers))
    database_url = database.engine.url.render_as_string(hide_password=False)
    with PrivateRedis(tmp_path / "redis") as redis_server:
        config = Config(
            data_dir=tmp_path / "data",
            load_plugins=(),
            database_url=database_url,
            redis_url=redis_server.url,
        )
        registry = load_registry((), [PLUGIN], entry_points=False)
        assert sorted(registry.tools) == sorted(tool.id for tool in (WORK, FLAKY, BOOM, HANG))
        jobstore = JobStore(database.sessions)
        blobs = LocalBlobStore(config.blobs_dir)
        client = connect(redis_server.url)  # as the web process connects
        dispatcher = Dispatcher(jobstore, blobs, redis_server.url, config=config, connection=client)
        try:
            yield Deployment(
                tmp_path,
                config,
                database_url,
                redis_server,
                client,
                registry,
                jobstore,
                blobs,
                dispatcher,
                markers,
            )
        finally:
            client.close()


# ----- the workers ----------------------------------------------------------------------------


# A parent that has imported pixmill once, then forks each worker on request (one JSON line
# on stdin each; it answers with the pid) to run the real `pixmill worker` command, much as a
# preloading supervisor would. A worker's start then costs a fork and its own set-up
# (database, plugins, RQ registration), not a cold interpreter's imports: about one second
# of CPU, which a hundred kills on two cores could not afford.
ZYGOTE_SCRIPT = r"""
import json, os, signal, sys
from pixmill.cli import main
import pixmill.core.worker, test_faults  # every import a worker needs, before any fork
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers that end
print("ready", flush=True)
for line in sys.stdin:
    log = json.loads(line)["log"]
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()  # its own process group, as `start_new_session` gives the others
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            main(["worker", "--queue", "default"], prog_name="pixmill")
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        finally:
            os._exit(code)
    print(pid, flush=True)
"""


@dataclass
class WorkerProcess:
    """One `pixmill worker`: a subprocess of the test, or a child of the zygote."""

    pid: int
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def wait_dead(self, timeout: float) -> None:
        if self.popen is not None:
            self.popen.wait(timeout=timeout)
            return
        deadline = time.monotonic() + timeout
        while self.alive():
            assert time.monotonic() < deadline, f"worker {self.pid} did not die"
            time.sleep(0.01)


class WorkerPool:
    """`size` `pixmill worker` processes, restarted when they exit (as `pixmill serve` does).

    `forked`: workers are forked by a zygote (see ZYGOTE_SCRIPT) instead of started as
    `python -m pixmill worker`. Every process ever started is remembered, so that `stop()`
    can kill each one's whole process group: the RQ scheduler child of a worker that was
    killed alone is still running there.
    """

    def __init__(self, deployment: Deployment, size: int, *, forked: bool = False) -> None:
        self.deployment = deployment
        self.logs = deployment.tmp / "worker-logs"
        self.logs.mkdir(exist_ok=True)
        self.zygote: subprocess.Popen[str] | None = None
        self.slots: list[WorkerProcess] = []
        self.started: list[WorkerProcess] = []
        try:
            if forked:
                self.zygote = subprocess.Popen(
                    [sys.executable, "-c", ZYGOTE_SCRIPT],
                    env=deployment.worker_environment(),
                    cwd=TESTS_DIR.parent,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
                assert self._zygote_says() == "ready", "the worker zygote did not start"
            for _ in range(size):
                self.slots.append(self._spawn())
        except BaseException:
            self.stop()
            raise

    def _zygote_says(self) -> str:
        assert self.zygote is not None and self.zygote.stdout is not None
        ready, _, _ = select.select([self.zygote.stdout], [], [], 60)
        assert ready, "the worker zygote did not answer"
        return self.zygote.stdout.readline().strip()

    def _spawn(self) -> WorkerProcess:
        log = self.logs / f"worker-{len(self.started)}.log"
        if self.zygote is not None:
            assert self.zygote.stdin is not None
            self.zygote.stdin.write(json.dumps({"log": str(log)}) + "\n")
            self.zygote.stdin.flush()
            worker = WorkerProcess(int(self._zygote_says()))
        else:
            with open(log, "wb") as handle:
                popen = subprocess.Popen(
                    [sys.executable, "-m", "pixmill", "worker", "--queue", "default"],
                    env=self.deployment.worker_environment(),
                    cwd=TESTS_DIR.parent,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            worker = WorkerProcess(popen.pid, popen)
        self.started.append(worker)
        return worker

    def replace(self, slot: int) -> WorkerProcess:
        self.slots[slot] = self._spawn()
        return self.slots[slot]

    def restart_exited(self) -> int:
        exited = [slot for slot, worker in enumerate(self.slots) if not worker.alive()]
        for slot in exited:
            self.replace(slot)
        return len(exited)

    def kill(self, slot: int, *, whole_group: bool) -> None:
        worker = self.slots[slot]
        with contextlib.suppress(ProcessLookupError):
            if whole_group:
                os.killpg(worker.pid, signal.SIGKILL)
            else:
                os.kill(worker.pid, signal.SIGKILL)
        worker.wait_dead(timeout=10)

    def stop(self) -> None:
        """Stop as `pixmill serve` does: SIGTERM (RQ finishes the job in hand, promotion
        included), then SIGKILL whatever is left, RQ scheduler orphans too."""
        for worker in self.slots:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        for worker in self.slots:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                worker.wait_dead(timeout=15)
        for worker in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
        for worker in self.started:
            worker.wait_dead(timeout=10)
        if self.zygote is not None:
            assert self.zygote.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.zygote.stdin.close()  # its end of input: it exits
            try:
                self.zygote.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.zygote.kill()
                self.zygote.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        newest = self.logs / f"worker-{len(self.started) - 1}.log"
        text = newest.read_text(errors="replace") if newest.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def worker_pool(deployment: Deployment, size: int, *, forked: bool = False) -> Iterator[WorkerPool]:
    pool = WorkerPool(deployment, size, forked=forked)
    try:
        yield pool
    finally:
        pool.stop()


def reconcile(reconciler: Reconciler) -> None:
    """One reconciler pass; Redis being down (restarting) is the supervisor's normal life."""
    with contextlib.suppress(redis.RedisError):
        reconciler.run_once()


def supervise_until(
    deployment: Deployment,
    pool: WorkerPool | None,
    condition: Callable[[], bool],
    timeout: float,
    what: str,
) -> None:
    """Restart exited workers and reconcile, until `condition()` holds (bounded)."""
    reconciler = deployment.reconciler()
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = pool.log_tail() if pool is not None else ""
            pytest.fail(
                f"timed out after {timeout:g} s waiting for {what} "
                f"({deployment.status_summary()}); newest worker log:\n{tail}"
            )
        if pool is not None:
            pool.restart_exited()
        reconcile(reconciler)
        time.sleep(0.1)


def all_final(deployment: Deployment) -> Callable[[], bool]:
    return lambda: deployment.unfinished() == 0


# ----- the accounting -------------------------------------------------------------------------


# Why an attempt was given back: a fault (the worker was killed or shut down) or the job's
# own transient error (the plugin raised, or ran past its time limit).
FAULT_REASONS = ("lease expired", "the worker shut down during the job")


@dataclass
class Outcomes:
    statuses: Counter[str]
    lost_attempts: int  # attempts that faults took from their job
    # Completed jobs whose worker was killed after the commit, before promoting its blobs.
    unpromoted: int


def check_outcomes(deployment: Deployment, *, faults: int) -> Outcomes:
    """Check every submitted job's row, events, runs and blobs; see the module docstring.

    `faults` bounds the attempts lost to faults: a killed worker loses at most the one
    attempt it was running, and a Redis restart makes no attempt lose its lease.
    """
    statuses: Counter[str] = Counter()
    lost = unpromoted = 0
    for job_id, sent in deployment.submitted.items():
        job = deployment.jobstore.get(job_id)
        where = f"job {job_id} ({sent.tool_id} {sent.tag}, attempt {job.attempt})"
        assert job.is_final, f"{where} is {job.status}"
        statuses[str(job.status)] += 1
        events = deployment.jobstore.events(job_id)
        types = [event.type for event in events]
        assert types.count("claimed") == job.attempt, f"{where}: {types}"
        requeues = [event.message or "" for event in events if event.type == "requeued"]
        assert len(requeues) == job.attempt - 1, f"{where}: {types}"
        by_fault = [r for r in requeues if any(fault in r for fault in FAULT_REASONS)]
        own_errors = len(requeues) - len(by_fault)
        assert own_errors <= _transient_errors_allowed(sent), f"{where}: {requeues}"
        lost += len(by_fault)
        runs = deployment.marker_pids("start", sent.tag)
        assert len(runs) <= job.attempt, f"{where} ran {len(runs)} times"
        assert 1 <= job.attempt <= job.max_attempts, where
        if job.status is JobStatus.COMPLETED:
            assert sent.tool_id in (WORK.id, FLAKY.id), f"{where} completed"
            unpromoted += not _check_single_output(deployment, job, sent)
            assert deployment.marker_pids("done", sent.tag), f"{where}: no run finished"
        else:
            assert job.status is JobStatus.FAILED, f"{where} is {job.status}"
            assert job.outputs == [], where
            lost += _check_failure(job, sent, where)
    assert lost <= faults, f"{lost} attempts lost to {faults} faults: {statuses}"
    # Only a kill can stop a worker between its commit and the promotion that follows it.
    assert unpromoted <= faults, f"{unpromoted} completed jobs were never promoted"
    return Outcomes(statuses, lost, unpromoted)


def _transient_errors_allowed(sent: Submitted) -> int:
    """How many attempts a job may give back for its own errors (not for faults)."""
    if sent.tool_id in (BOOM.id, HANG.id):
        return max(BOOM.max_attempts or 0, HANG.max_attempts or 0)
    if sent.tool_id == FLAKY.id:
        return 1
    return 0


def _check_single_output(deployment: Deployment, job: Job, sent: Submitted) -> bool:
    """One output, the winner's, and no other attempt's folder on disk. Returns whether the
    attempt was promoted: False only when its worker was killed after committing the row
    and before promotion finished (then a `.tmp-` file of the promotion marker, and an
    earlier attempt's folder, may be left).
    """
    where = f"job {job.id} (attempt {job.attempt})"
    key = BlobKey.result(job.id, job.attempt, sent.filename)
    assert [ref["key"] for ref in job.outputs] == [key.relative_path], where
    with deployment.blobs.open(key) as stream:
        assert stream.read() == sent.data, f"{where}: not its own input's result"
    results = deployment.config.blobs_dir / "results" / job.id
    assert os.listdir(results / str(job.attempt)) == [sent.filename], where
    promoted = deployment.blobs.promoted_attempt(job.id)
    leftovers = sorted(os.listdir(results))
    if promoted is not None:
        assert promoted == job.attempt, where
        assert leftovers == sorted([".promoted", str(job.attempt)]), f"{where}: {leftovers}"
        return True
    # Unpromoted (the known gap, see the docstring): besides the winner's folder, an earlier
    # attempt's folder may remain, since removing losers is promotion's job. The row never
    # refers to it, downloads never serve it, and retention removes it.
    others = [name for name in leftovers if not name.startswith(".tmp-")]
    assert str(job.attempt) in others, f"{where}: unpromoted, with {leftovers}"
    assert all(
        name.isdigit() and int(name) < job.attempt for name in others if name != str(job.attempt)
    ), f"{where}: unpromoted, with {leftovers}"
    return False


def _check_failure(job: Job, sent: Submitted, where: str) -> int:
    """The failure a job of this tool may end with; returns the attempts it lost to a fault
    at the very end (the last attempt's lease lapsed: no requeue event for that one)."""
    message = job.error_message or ""
    if job.error_code == "ATTEMPTS_EXHAUSTED":  # the last attempt was killed
        assert job.attempt == job.max_attempts, where
        assert "lease expired" in message, f"{where}: {message}"
        return 1
    assert job.attempt == job.max_attempts, f"{where}: {job.error_code} {message}"
    assert f"(attempt {job.max_attempts} of {job.max_attempts})" in message, where
    if sent.tool_id == BOOM.id:
        assert job.error_code == "TOOL_FAILED", where
        assert f"the plugin exploded on purpose ({sent.tag})" in message, where
    elif sent.tool_id == HANG.id:
        assert job.error_code == "JOB_TIMEOUT", where
        assert "ran longer than its 1 s time limit" in message, where
    else:
        pytest.fail(f"{where} failed: {job.error_code} {message}")
    return 0


# ----- the workers' job timings ---------------------------------------------------------------


def test_a_worker_takes_its_job_timings_from_the_environment(tmp_path: Path) -> None:
    environment = {
        "PIXMILL_DATA_DIR": str(tmp_path),
        "PIXMILL_JOB_LEASE_S": "2.5",
        "PIXMILL_JOB_RETRY_BACKOFF_S": "0",
    }
    state = build_state(Config.from_env(environment, load_plugins=()), extra_plugins=[])
    try:
        assert (state.lease_seconds, state.retry_backoff) == (2.5, 0)
    finally:
        assert state.database is not None
        state.database.dispose()
    assert (Config().job_lease_s, Config().job_retry_backoff_s) == (
        defaults.JOB_LEASE_S,
        defaults.JOB_RETRY_BACKOFF_S,
    )


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("PIXMILL_JOB_LEASE_S", "0", "must be a positive number of seconds, not 0.0"),
        ("PIXMILL_JOB_LEASE_S", "-5", "must be a positive number of seconds, not -5.0"),
        ("PIXMILL_JOB_LEASE_S", "nan", "must be a positive number of seconds, not nan"),
        ("PIXMILL_JOB_LEASE_S", "inf", "must be a positive number of seconds, not inf"),
        ("PIXMILL_JOB_LEASE_S", "soon", "='soon' is not a number"),
        ("PIXMILL_JOB_RETRY_BACKOFF_S", "-1", "must be 0 or a positive number of seconds"),
        ("PIXMILL_JOB_RETRY_BACKOFF_S", "", "='' is not a number"),
    ],
)
def test_a_worker_refuses_bad_job_timings_before_it_starts(
    variable: str, value: str, complaint: str
) -> None:
    # A lease of 0 would make every claim fail, and the job be retried forever.
    result = CliRunner().invoke(
        main, ["worker", "--burst"], env={"REDIS_URL": "unix:///nowhere.sock", variable: value}
    )
    assert result.exit_code == 2, result.output
    assert variable in result.output and complaint in result.output


# ----- plugins that raise or hang -------------------------------------------------------------


def test_a_worker_outlives_plugins_that_raise_or_hang_and_serves_the_next_job(
    deployment: Deployment,
) -> None:
    boom = deployment.submit(BOOM, "boom")
    hang = deployment.submit(HANG, "hang")
    flaky = deployment.submit(FLAKY, "flaky")
    before = deployment.submit(WORK, "before", millis=100)
    with worker_pool(deployment, 1) as pool:
        worker = pool.slots[0]
        supervise_until(deployment, None, all_final(deployment), 60, "the first jobs")
        after = deployment.submit(WORK, "after", millis=100)  # served by the same process
        supervise_until(deployment, None, all_final(deployment), 30, "the last job")
        assert worker.alive(), "the worker died"
        assert pool.started == [worker]
    assert set(deployment.marker_pids("start")) == {worker.pid}

    outcomes = check_outcomes(deployment, faults=0)
    assert outcomes.statuses == Counter(completed=3, failed=2)
    assert deployment.jobstore.get(boom.job_id).attempt == BOOM.max_attempts
    assert len(deployment.marker_pids("start", boom.tag)) == BOOM.max_attempts
    timed_out = deployment.jobstore.get(hang.job_id)
    assert timed_out.attempt == HANG.max_attempts
    assert deployment.marker_pids("done", hang.tag) == []  # stopped, not left to finish
    assert deployment.jobstore.get(flaky.job_id).attempt == 2
    for sent in (before, after):
        assert deployment.jobstore.get(sent.job_id).attempt == 1


# ----- shutdowns ------------------------------------------------------------------------------


def _wait_for_start(deployment: Deployment, tag: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not deployment.marker_pids("start", tag):
        assert time.monotonic() < deadline, f"job {tag} did not start"
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_mid_job_finishes_the_job_then_exits(deployment: Deployment) -> None:
    running = deployment.submit(WORK, "running", millis=1500)
    with worker_pool(deployment, 1) as pool:
        worker = pool.slots[0].popen
        assert worker is not None
        _wait_for_start(deployment, running.tag, 30)
        waiting = deployment.submit(WORK, "waiting", millis=0)
        worker.send_signal(signal.SIGTERM)  # RQ's warm shutdown
        assert worker.wait(timeout=20) == 0
        # Its RQ scheduler child is gone too: nothing of the worker is left running.
        deadline = time.monotonic() + 10
        while _group_alive(worker.pid):
            assert time.monotonic() < deadline, "the worker left processes behind"
            time.sleep(0.05)
        done = deployment.jobstore.get(running.job_id)
        assert done.status is JobStatus.COMPLETED and done.attempt == 1
        # The job queued meanwhile was left for another worker, untouched.
        untouched = deployment.jobstore.get(waiting.job_id)
        assert untouched.status is JobStatus.QUEUED and untouched.attempt == 0
        pool.replace(0)
        supervise_until(deployment, pool, all_final(deployment), 30, "the waiting job")
    check_outcomes(deployment, faults=0)


def test_a_second_sigterm_gives_the_running_job_back_at_once(deployment: Deployment) -> None:
    deployment.lease_s = 300  # far away: the job must come back without the lease lapsing
    running = deployment.submit(WORK, "running", millis=3000)
    with worker_pool(deployment, 1) as pool:
        worker = pool.slots[0].popen
        assert worker is not None
        _wait_for_start(deployment, running.tag, 30)
        worker.send_signal(signal.SIGTERM)
        time.sleep(1.2)  # RQ ignores a second signal within a second of the first
        worker.send_signal(signal.SIGTERM)  # cold shutdown: SystemExit inside the plugin
        worker.wait(timeout=20)
        back = deployment.jobstore.get(running.job_id)
        assert back.status is JobStatus.QUEUED and back.attempt == 1
        assert back.message == "the worker shut down during the job"
        assert deployment.marker_pids("done", running.tag) == []
        # Back on Redis too: the next worker starts it without waiting for the reconciler.
        assert running.job_id in Queue(back.queue, connection=deployment.client).get_job_ids()
        pool.replace(0)
        supervise_until(deployment, pool, all_final(deployment), 40, "the job's second attempt")
    outcomes = check_outcomes(deployment, faults=1)
    assert outcomes.statuses == Counter(completed=1) and outcomes.lost_attempts == 1


# ----- SIGKILL, again and again ---------------------------------------------------------------


def test_workers_killed_at_random_moments_lose_no_job_and_duplicate_no_output(
    deployment: Deployment,
) -> None:
    """KILLS SIGKILLs of KILLED_WORKERS workers serving a steady stream of 300 ms jobs. Each
    worker is killed at a random moment after it started its first job (in the plugin,
    storing the result, completing the row, claiming the next one, ...), either alone or with
    its whole process group, and replaced at once."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    job_ms = 300
    backlog = 2 * KILLED_WORKERS
    kills: Counter[str] = Counter()
    kill_at: dict[int, float] = {}  # by slot
    reconciler = deployment.reconciler()
    next_pass = time.monotonic()
    deadline = time.monotonic() + 60 + 2 * KILLS
    with worker_pool(deployment, KILLED_WORKERS, forked=True) as pool:
        while sum(kills.values()) < KILLS:
            assert time.monotonic() < deadline, (
                f"only {kills} kills in time (seed {seed}): {deployment.status_summary()}"
            )
            while deployment.queued() < backlog:  # killed workers' jobs wait for their lease
                deployment.submit(WORK, f"job-{len(deployment.submitted)}", millis=job_ms)
            started_jobs = set(deployment.marker_pids("start"))
            for slot, worker in enumerate(pool.slots):
                now = time.monotonic()
                if not worker.alive():  # exited on its own: unexpected, but replace it
                    pool.replace(slot)
                    kill_at.pop(slot, None)
                elif slot not in kill_at:
                    if worker.pid in started_jobs:
                        kill_at[slot] = now + rng.uniform(0, 2 * job_ms / 1000)
                elif now >= kill_at[slot]:
                    del kill_at[slot]
                    whole_group = rng.random() < 0.5
                    pool.kill(slot, whole_group=whole_group)
                    kills["process group" if whole_group else "worker alone"] += 1
                    pool.replace(slot)
            if time.monotonic() >= next_pass:
                reconcile(reconciler)
                next_pass = time.monotonic() + RECONCILE_EVERY_S
            time.sleep(0.02)
        supervise_until(deployment, pool, all_final(deployment), 90, "every job to finish")
    outcomes = check_outcomes(deployment, faults=sum(kills.values()))
    # The kills did hit jobs mid-way: attempts were lost, and their jobs still finished.
    assert outcomes.lost_attempts > 0, f"no kill landed mid-job (seed {seed})"
    assert outcomes.statuses["completed"] > 0


# ----- Redis restarted ------------------------------------------------------------------------


def test_a_redis_restart_with_hundreds_of_jobs_in_flight_loses_none(
    deployment: Deployment,
) -> None:
    """REDIS_RESTART_JOBS jobs queued, running, or waiting for a retry when Redis restarts
    (losing its queues and the retry schedule), and a few more submitted while it is down:
    all of them finish, each run once (the flaky ones twice)."""
    deployment.lease_s = 30  # no worker is killed here: no lease may lapse either
    # Retries far ahead: when Redis restarts they are still in RQ's schedule, which it loses.
    deployment.retry_backoff_s = 60
    flaky = [deployment.submit(FLAKY, f"flaky-{n}") for n in range(10)]
    for n in range(REDIS_RESTART_JOBS - len(flaky)):
        deployment.submit(WORK, f"job-{n}", millis=0 if n % 10 else 200)
    total = len(deployment.submitted)

    def waiting_for_retry(sent: Submitted) -> bool:
        job = deployment.jobstore.get(sent.job_id)
        return job.status is JobStatus.QUEUED and job.attempt == 1

    with worker_pool(deployment, 2, forked=True) as pool:
        supervise_until(
            deployment,
            pool,
            lambda: (
                total - deployment.unfinished() >= total // 4
                and all(waiting_for_retry(sent) for sent in flaky)
            ),
            90,
            "a quarter of the jobs done and the flaky ones failed once",
        )
        deployment.redis_server.stop()
        late = [deployment.submit(WORK, f"late-{n}", millis=0) for n in range(5)]
        time.sleep(1.0)
        deployment.redis_server.start()
        restarted = time.monotonic()
        assert deployment.unfinished() > total // 2  # most of the work was still to do
        supervise_until(deployment, pool, all_final(deployment), 120, "every job to finish")
        # The reconciler enqueued the lost retries; nothing waited for their 60 s backoff.
        assert time.monotonic() - restarted < deployment.retry_backoff_s
    outcomes = check_outcomes(deployment, faults=0)
    assert outcomes.statuses == Counter(completed=total + len(late))
    for job_id, sent in deployment.submitted.items():
        attempts = 2 if sent.tool_id == FLAKY.id else 1
        assert deployment.jobstore.get(job_id).attempt == attempts, sent.tag
        assert len(deployment.marker_pids("start", sent.tag)) == attempts, sent.tag


def test_kills_and_a_redis_restart_together_with_failing_plugins(
    deployment: Deployment,
) -> None:
    """The mix: two workers over a stream of work, raising, hanging and flaky jobs; workers
    killed now and then, and Redis restarted in the middle."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    tools = [WORK] * 6 + [FLAKY, BOOM, HANG]
    for n in range(40):
        tool = rng.choice(tools)
        deployment.submit(tool, f"{tool.name}-{n}", millis=rng.choice([0, 100, 300]))
    kills = 0
    with worker_pool(deployment, 2, forked=True) as pool:
        for round_ in range(6):
            time.sleep(rng.uniform(0.5, 1.5))
            if round_ == 3:
                deployment.redis_server.stop()
                time.sleep(0.5)
                deployment.redis_server.start()
            else:
                slot = rng.randrange(len(pool.slots))
                pool.kill(slot, whole_group=rng.random() < 0.5)
                kills += 1
            pool.restart_exited()
            reconcile(deployment.reconciler())
        supervise_until(deployment, pool, all_final(deployment), 120, "every job to finish")
    outcomes = check_outcomes(deployment, faults=kills)
    expected_failures = sum(
        1 for sent in deployment.submitted.values() if sent.tool_id in (BOOM.id, HANG.id)
    )
    assert outcomes.statuses["failed"] >= expected_failures, f"seed {seed}"
