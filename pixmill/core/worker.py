"""The worker's side of RQ: `run_job(job_id)`, the one function RQ runs, and the worker class.

`run_job` claims the job row (`JobStore.claim`, leased), reads the uploads from the blob
store, runs the tool through `execution.execute` (the same path as an inline call), writes
the result under `BlobKey.result(job_id, attempt, filename)`, completes the row, promotes
that attempt's blobs, and publishes a final event carrying the full result. It never raises
for a job's sake:

- a `PixmillError` below 500 (bad input, unsupported format, bad settings, a missing tool)
  fails the job with its code and message at once: bad input stays bad;
- anything else (a plugin exception, a 5xx `PixmillError`, a timeout, a database hiccup)
  requeues the row (`JobStore.requeue`) and returns `rq.Retry` so that RQ runs the same job
  id again after an exponential backoff (`dispatch.retry_backoff`, through RQ's scheduler);
  the last allowed attempt fails it with the error's code;
- a cancel request stops the plugin at its next `ctx.check_cancelled()` and ends the job
  cancelled (`confirm_cancel`); a job that cannot be claimed (cancelled while queued, taken
  by another worker, finished, deleted) is skipped quietly;
- a worker that lost its lease (the reconciler gave the job to another worker) stops and
  writes nothing: `LEASE_LOST` from the store and `StaleAttemptError` from the blob store
  guarantee that no duplicate output is ever recorded.

Batches (`pixmill.core.batch`): a batch job is not claimed while one of its members is
unfinished (`run_job` returns at once, the row stays queued, no attempt is spent); the worker
that ends a member tells its batch (`member_finished`), and the last one enqueues it, on the
same Redis or, in-process, through `run_next`. Claimed, a batch builds its ZIP (`assemble`)
under the same lease, cancel and retry rules as a tool.

While the plugin runs, a heartbeat thread extends the lease every third of it, so a plugin
that reports no progress is not mistaken for a dead worker. It stops renewing once the
tool's time limit plus `JOB_TIMEOUT_GRACE_S` has passed: a job stuck where no signal reaches
it is then taken back by the reconciler. Progress (`ctx.progress`) is written to the row and
published on `pixmill:job:<id>` at most every `JOB_PROGRESS_INTERVAL_S`; the cancel flag
is polled at most as often.

Time limits: a tool's `timeout` attribute (else `JOB_TIMEOUT_S`). In the main thread a
SIGALRM timer interrupts the plugin (`JobTimeout`, a `BaseException`, so a plugin's
`except Exception` cannot swallow it and `execute` does not turn it into a tool error);
elsewhere the limit is cooperative, through `ctx.check_cancelled()`.

Why `PixmillWorker` is an `rq.SimpleWorker` (no fork per job). RQ's default `Worker` forks
a work-horse for every job and lets it exit afterwards: whatever a job loaded (an ONNX
session, fonts, the plugin registry) dies with the horse, so every job would pay the model
load again; and native thread pools (ONNX Runtime's among them) are not safe to inherit
across a fork, so the state could not simply be preloaded in the parent either. A SimpleWorker
runs jobs in its own process, so `WorkerState.models` stays warm from one job to the next.
What the fork bought, isolation from a crash, is provided by the job rows instead: a worker
killed mid-job (SIGKILL, out of memory, a segfault in native code) stops heartbeating, its
lease expires, and the reconciler requeues the job (or fails it after `max_attempts`);
nothing is lost. The process running the worker (`pixmill serve`, systemd, ...) restarts it.

Process state. Everything a job needs that is expensive to build lives in one
`WorkerState`, built lazily once per process by `process_state()` from the usual factories
(`Config.from_env`, `load_registry`, `Database.from_config`, `LocalBlobStore`), and kept in
the module's only global, `_process`. A process may `install_state()` its own instead
(tests do, to share their database and plugins with an in-process worker). Plugins that
are not installed as entry points can be named in `PIXMILL_EXTRA_PLUGINS` (comma-separated
`module` or `module:attribute`), the worker-side counterpart of
`load_registry(extra_plugins=...)`.

This module imports nothing from `pixmill.server`, `pixmill.cli` or `pixmill.plugins`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import redis
import rq
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.timeouts import BaseDeathPenalty
from rq.worker import DequeueStrategy

from pixmill.core.batch import assemble, is_waiting, member_finished
from pixmill.core.blobs import (
    BlobKey,
    BlobStore,
    LocalBlobStore,
    StaleAttemptError,
    safe_filename,
)
from pixmill.core.config import Config
from pixmill.core.contracts import Extractor, ModelCache, OutputKind, Tool
from pixmill.core.db import Database
from pixmill.core.defaults import (
    FEATURE_JOB_TIMEOUT_S,
    JOB_LEASE_S,
    JOB_PROGRESS_INTERVAL_S,
    JOB_RETRY_BACKOFF_S,
    JOB_TIMEOUT_GRACE_S,
    JOB_TIMEOUT_S,
)
from pixmill.core.dispatch import (
    connect,
    copy_cached_outputs,
    enqueue,
    job_event,
    main_input_filename,
    publish,
    retry_backoff,
    tool_timeout,
    upload_part,
)
from pixmill.core.errors import (
    PLUGIN_CONTRACT_VIOLATION,
    BadRequestError,
    CancelledError,
    ConflictError,
    NotFoundError,
    PixmillError,
    ToolFailedError,
)
from pixmill.core.execution import Outcome, UploadedFile, execute
from pixmill.core.jobstore import JobStore
from pixmill.core.models import Job, JobKind, JobStatus
from pixmill.core.pipelines import PipelineStep, run_pipeline, steps_of_job
from pixmill.core.plugin_host import Registry, load_registry
from pixmill.features.bundles import run_feature_job

log = logging.getLogger(__name__)

EXTRA_PLUGINS_ENV = "PIXMILL_EXTRA_PLUGINS"
# RQ's own retry counter is only a backstop: the row's `max_attempts` decides.
RQ_RETRY_MAX = 1000
# Codes of the job store meaning "this attempt is no longer the job's": stop, write nothing.
_LOST_CODES = frozenset({"LEASE_LOST", "JOB_FINISHED", "JOB_NOT_RUNNING", "JOB_NOT_FOUND"})
_RUNNABLE_KINDS = frozenset({JobKind.TOOL, JobKind.EXTRACT})


# ----- process state -------------------------------------------------------------------------


@dataclass
class WorkerState:
    """What a worker process keeps from one job to the next."""

    config: Config
    registry: Registry
    jobstore: JobStore
    blobs: BlobStore
    models: ModelCache = field(default_factory=ModelCache)
    # For events when run_job runs outside RQ; inside RQ the job's own connection is used.
    redis: redis.Redis | None = None
    database: Database | None = None
    lease_seconds: float = JOB_LEASE_S
    progress_interval: float = JOB_PROGRESS_INTERVAL_S
    retry_backoff: float = JOB_RETRY_BACKOFF_S


def extra_plugins_from_env(environ: Mapping[str, str] | None = None) -> list[object]:
    """The plugins named in `PIXMILL_EXTRA_PLUGINS` (`module` or `module:attribute`)."""
    raw = (os.environ if environ is None else environ).get(EXTRA_PLUGINS_ENV, "")
    plugins: list[object] = []
    for name in (part.strip() for part in raw.split(",")):
        if not name:
            continue
        module_name, _, attribute = name.partition(":")
        module = importlib.import_module(module_name)
        plugins.append(getattr(module, attribute) if attribute else module)
    return plugins


def build_state(
    config: Config | None = None, *, extra_plugins: Iterable[object] | None = None
) -> WorkerState:
    """A worker's state from the configuration (`Config.from_env()` by default)."""
    config = config if config is not None else Config.from_env()
    plugins = list(extra_plugins) if extra_plugins is not None else extra_plugins_from_env()
    registry = load_registry(config.load_plugins, plugins, plugins_dir=config.plugins_dir)
    database = Database.from_config(config)
    return WorkerState(
        config=config,
        registry=registry,
        jobstore=JobStore(database.sessions),
        blobs=LocalBlobStore(config.blobs_dir),
        redis=connect(config.redis_url) if config.redis_url else None,
        database=database,
        lease_seconds=config.job_lease_s,
        retry_backoff=config.job_retry_backoff_s,
    )


class _ProcessState:
    """Holder of this process's `WorkerState`, built on first use (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: WorkerState | None = None


# The one module-level state: the worker process's warm state (see the module docstring).
_process = _ProcessState()


def process_state() -> WorkerState:
    """This process's state, built from the environment the first time it is asked for."""
    with _process.lock:
        if _process.state is None:
            _process.state = build_state()
        return _process.state


def install_state(state: WorkerState | None) -> None:
    """Use `state` for the jobs of this process (None: build from the environment again)."""
    with _process.lock:
        _process.state = state


# ----- the job -------------------------------------------------------------------------------


class JobTimeout(BaseException):
    """The tool ran past its time limit (raised by SIGALRM into the running plugin)."""


class _LeaseLost(Exception):
    """This attempt is no longer the job's: stop and write nothing."""


def run_job(job_id: str) -> rq.Retry | None:
    """Run one queued job to a final state (or back to the queue). RQ calls this by name.

    Returns `rq.Retry` when the job was requeued for another attempt, None otherwise.
    """
    try:
        state = process_state()
    except Exception:
        # No database or plugins yet: the row is untouched (still queued); try again later.
        log.exception("worker cannot take job %s now; it will be retried", job_id)
        return rq.Retry(max=RQ_RETRY_MAX, interval=retry_backoff(1))
    return run_job_with(state, job_id)


def run_job_with(
    state: WorkerState, job_id: str, *, run_next: Callable[[str], None] | None = None
) -> rq.Retry | None:
    """`run_job` with an explicit state (the in-process runner and tests use it).

    `run_next` takes follow-up work (a batch whose last member this job was) when there is
    no RQ queue to put it on: the `LocalRunner` passes itself.
    """
    try:
        if is_waiting(state.jobstore, job_id):
            # A batch with members still running: left queued, no attempt spent; the worker
            # ending its last member enqueues it again (see pixmill.core.batch).
            return None
        job = state.jobstore.claim(job_id, state.lease_seconds)
    except Exception:
        log.exception("worker cannot take job %s now; it will be retried", job_id)
        return rq.Retry(max=RQ_RETRY_MAX, interval=retry_backoff(1))
    if job is None:
        log.info("job %s not claimable (cancelled, finished, deleted or taken): skipped", job_id)
        return None
    return _Attempt(state, job, _events_connection(state), run_next).run()


class LocalRunner:
    """Runs jobs on a few threads of this process: the queue of an app with no Redis.

    Used by `create_app` when no `REDIS_URL` is configured (embedding, tests; `pixmill serve`
    always has a Redis, its own if none is given). Retries wait their backoff on the same
    thread. A job of a process that dies stays queued in SQL: with no Redis there is no
    reconciler, so it is picked up only once the app runs with a queue again.
    Time limits are cooperative here (`ctx.check_cancelled()`): SIGALRM only reaches the
    main thread.
    """

    def __init__(self, state: WorkerState, threads: int = 2) -> None:
        self.state = state
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pixmill-job")

    def __call__(self, job_id: str) -> None:
        self.pool.submit(self._run, job_id)

    def _run(self, job_id: str) -> None:
        for _ in range(RQ_RETRY_MAX):
            retry = run_job_with(self.state, job_id, run_next=self)
            if retry is None:
                return
            time.sleep(retry.intervals[0] if retry.intervals else 0)

    def shutdown(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=not wait)


def _events_connection(state: WorkerState) -> Any:
    current = rq.get_current_job()
    if current is not None:
        return current.connection
    return state.redis


class _Attempt:
    """One claimed attempt of one job."""

    def __init__(
        self,
        state: WorkerState,
        job: Job,
        events: Any,
        run_next: Callable[[str], None] | None = None,
    ) -> None:
        self.state = state
        self.store = state.jobstore
        self.job = job
        self.job_id = job.id
        self.attempt = job.attempt
        self.events = events
        self.run_next = run_next
        self.definition: Tool | Extractor | None = None
        self.deadline = math.inf
        self.stop_reason: str | None = None  # "cancel", "timeout" or "lost"
        self._beat_lock = threading.Lock()
        self._last_write = -math.inf
        self._last_poll = time.monotonic()
        self._keeper_stop = threading.Event()

    # -- running ---------------------------------------------------------------------------

    def run(self) -> rq.Retry | None:
        try:
            return self._run()
        except _LeaseLost:
            log.warning("job %s attempt %d lost its lease; stopped", self.job_id, self.attempt)
            return None
        except (SystemExit, KeyboardInterrupt):
            # Cold shutdown of the worker: give the job back now rather than at lease expiry,
            # and put it back on Redis too, so another worker starts it at once instead of
            # after the reconciler's grace.
            after = self._quietly(
                lambda: self.store.requeue(
                    self.job_id, "the worker shut down during the job", attempt=self.attempt
                )
            )
            if after is not None and after.status is JobStatus.QUEUED and self.events is not None:
                self._quietly(
                    lambda: enqueue(self.events, after, timeout_s=tool_timeout(self.definition))
                )
            raise
        except Exception:  # a bug of ours: report it on the job, never crash the worker
            log.exception("job %s attempt %d: unexpected worker error", self.job_id, self.attempt)
            return self._quietly(lambda: self._transient("WORKER_ERROR", "internal worker error"))

    def _run(self) -> rq.Retry | None:
        self._publish(0.0, None)
        try:
            outputs, result, message = self._compute()
        except JobTimeout:
            return self._timed_out()
        except CancelledError as error:
            if self.stop_reason == "timeout":
                return self._timed_out()
            if self.stop_reason == "lost":
                raise _LeaseLost from error
            self._cancelled(error)
            return None
        except StaleAttemptError as error:
            raise _LeaseLost from error
        except PixmillError as error:
            if error.code in _LOST_CODES:
                raise _LeaseLost from error
            if error.status < 500 or error.code == PLUGIN_CONTRACT_VIOLATION:
                # Bad input stays bad, and a plugin bug stays a bug: no retry.
                self._fail(error.code, error.message)
                return None
            return self._transient(error.code, error.message)
        except Exception as error:
            log.exception("job %s attempt %d failed", self.job_id, self.attempt)
            return self._transient("WORKER_ERROR", f"{type(error).__name__}: {error}")
        self._finish(outputs, result, message)
        return None

    def _compute(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str | None]:
        """The outputs, result JSON and message of this attempt (computed or reused)."""
        if self.job.kind is JobKind.PIPELINE:
            return self._compute_pipeline()
        if self.job.kind is JobKind.BATCH:
            return self._compute_batch()
        if self.job.kind is JobKind.FEATURE:
            return self._compute_feature()
        if self.job.kind not in _RUNNABLE_KINDS:
            raise PixmillError(
                f"this worker cannot run {self.job.kind} jobs",
                code="UNSUPPORTED_JOB_KIND",
                status=422,
            )
        definition = self.state.registry.catalogue_entry(self.job.tool_id or "")
        self.definition = definition
        limit = tool_timeout(definition)
        self.deadline = time.monotonic() + limit
        with self._lease_keeper():
            if self.job.cache_key and definition.cacheable:
                reused = copy_cached_outputs(
                    self.store,
                    self.state.blobs,
                    self.job.cache_key,
                    self.job_id,
                    self.attempt,
                    main_input_filename(self.job),
                )
                if reused is not None:
                    outputs, result, source = reused
                    return outputs, result, f"reused the result of job {source.id}"
            files = self._read_inputs()
            with _time_limit(limit, definition.id):
                outcome = execute(
                    definition,
                    files,
                    self.job.settings,
                    limits=self.state.config.limits,
                    config=self.state.config.plugin_config(),
                    models=self.state.models,
                    on_progress=self._on_progress,
                    is_cancelled=self._is_cancelled,
                )
            outputs, result = self._store(outcome)
            return outputs, result, None

    # -- batches: `batch.assemble` builds the ZIP once every member has finished ----------

    def _compute_batch(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str | None]:
        # Copying results into a ZIP has no tool limit of its own: the default one applies,
        # and the lease keeper covers a large archive.
        self.deadline = time.monotonic() + tool_timeout(None)
        with self._lease_keeper():
            return assemble(
                self.store,
                self.state.blobs,
                self.job,
                self.attempt,
                on_progress=self._on_progress,
                is_cancelled=self._is_cancelled,
            )

    # -- feature bundles: `features.bundles.run_feature_job` runs pip and fetches models ----

    def _compute_feature(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str | None]:
        # pip may take minutes: its own limit, far above a tool's.
        self.deadline = time.monotonic() + FEATURE_JOB_TIMEOUT_S
        with self._lease_keeper():
            return run_feature_job(
                self.job,
                self.state.config,
                on_progress=self._on_progress,
                is_cancelled=self._is_cancelled,
            )

    # -- pipelines: `pipelines.run_pipeline` drives the steps, this attempt runs each one ----

    def _compute_pipeline(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str | None]:
        steps = steps_of_job(self.job, self.state.registry)
        # Until the first step starts: reading the upload and the first cache lookup.
        self.deadline = time.monotonic() + tool_timeout(steps[0].definition)
        with self._lease_keeper():
            uploads = self._read_inputs().get("file", [])
            if len(uploads) != 1:
                raise BadRequestError(
                    f"a pipeline job runs on one uploaded file, this one has {len(uploads)}",
                    code="INVALID_JOB_INPUTS",
                )
            return run_pipeline(
                self.job,
                self.attempt,
                steps,
                uploads[0],
                jobstore=self.store,
                blobs=self.state.blobs,
                runner=self,
            )

    def run_step(self, step: PipelineStep, file: UploadedFile, total: int) -> Outcome:
        """One step through `execute`, under its own time limit (the lease keeper and the
        cooperative check follow `self.deadline`, which each step moves)."""
        self.definition = step.definition
        limit = tool_timeout(step.definition)
        self.deadline = time.monotonic() + limit
        done = step.position - 1

        def on_progress(fraction: float, message: str | None) -> None:
            note = f"{step.label} of {total}" + (f": {message}" if message else "")
            self._on_progress((done + fraction) / total, note)

        with _time_limit(limit, step.tool_id):
            return execute(
                step.definition,
                {"file": [file]},
                step.settings,
                limits=self.state.config.limits,
                config=self.state.config.plugin_config(),
                models=self.state.models,
                on_progress=on_progress,
                is_cancelled=self._is_cancelled,
            )

    def step_finished(self, step: PipelineStep, total: int) -> None:
        """Record the step (a heartbeat that also reads the cancel flag), then stop here if
        the job was cancelled or this attempt lost its lease."""
        message = f"{step.label} of {total} done"
        self._beat(step.position / total, message, current=step.position)
        self._publish(step.position / total, message)
        if self.stop_reason is not None:
            raise CancelledError("the job was cancelled")

    def _read_inputs(self) -> dict[str, list[UploadedFile]]:
        files: dict[str, list[UploadedFile]] = {}
        for ref in self.job.inputs:
            try:
                key = BlobKey.parse(ref["key"])
                part = upload_part(key)
                with self.state.blobs.open(key) as stream:
                    data = stream.read()
            except NotFoundError as error:
                raise NotFoundError(
                    f"the uploaded file {ref.get('filename')!r} is gone (expired or deleted)",
                    code="INPUT_MISSING",
                ) from error
            except ValueError as error:
                raise BadRequestError(str(error), code="INVALID_JOB_INPUTS") from error
            files.setdefault(part, []).append((data, str(ref["filename"])))
        return files

    def _store(self, outcome: Outcome) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        if outcome.kind is OutputKind.JSON:
            try:
                result = json.loads(json.dumps(outcome.json, allow_nan=False))
            except (TypeError, ValueError) as error:
                raise ToolFailedError(
                    f"{self.job.tool_id} returned a result that is not JSON: {error}"
                ) from error
            return [], result
        assert outcome.data is not None and outcome.format is not None
        fallback = f"result.{outcome.format.extension}"
        name = safe_filename(outcome.filename or fallback, fallback=fallback)
        stored = self.state.blobs.put(BlobKey.result(self.job_id, self.attempt, name), outcome.data)
        ref = {
            "key": stored.key.relative_path,
            "filename": name,
            "size": stored.size,
            "format": outcome.format.name,
        }
        return [ref], dict(outcome.meta) if outcome.meta else None

    # -- endings ---------------------------------------------------------------------------

    def _finish(
        self, outputs: list[dict[str, Any]], result: dict[str, Any] | None, message: str | None
    ) -> None:
        try:
            done = self.store.complete(
                self.job_id, outputs, result=result, message=message, attempt=self.attempt
            )
        except PixmillError as error:
            if error.code in _LOST_CODES:
                raise _LeaseLost from error
            raise
        try:
            # After the commit: the row decided which attempt won; promotion enforces it.
            self.state.blobs.promote(self.job_id, self.attempt)
        except Exception:
            log.exception("job %s: could not promote attempt %d", self.job_id, self.attempt)
        self._announce(done)

    def _fail(self, code: str, message: str) -> None:
        if self._cancel_requested():
            self._confirm_cancel()
            return
        failed = self._ended(
            lambda: self.store.fail(self.job_id, code, message, attempt=self.attempt)
        )
        if failed is not None:
            self._announce(failed)

    def _transient(self, code: str, message: str) -> rq.Retry | None:
        if self._cancel_requested():
            self._confirm_cancel()
            return None
        if self.attempt >= self.job.max_attempts:
            self._fail(code, f"{message} (attempt {self.attempt} of {self.job.max_attempts})")
            return None
        after = self._ended(
            lambda: self.store.requeue(self.job_id, f"{code}: {message}", attempt=self.attempt)
        )
        if after is None:
            return None
        self._announce(after)
        if after.status is not JobStatus.QUEUED:
            return None
        delay = retry_backoff(self.attempt, self.state.retry_backoff)
        log.info("job %s attempt %d: %s; retrying in %d s", self.job_id, self.attempt, code, delay)
        return rq.Retry(max=RQ_RETRY_MAX, interval=delay)

    def _timed_out(self) -> rq.Retry | None:
        limit = tool_timeout(self.definition)
        name = self.definition.id if self.definition is not None else self.job.tool_id
        return self._transient("JOB_TIMEOUT", f"{name} ran longer than its {limit:g} s time limit")

    def _cancelled(self, error: CancelledError) -> None:
        if self._cancel_requested():
            self._confirm_cancel()
        else:  # the plugin raised CancelledError on its own
            self._fail(error.code, error.message)

    def _confirm_cancel(self) -> None:
        cancelled = self._ended(
            lambda: self.store.confirm_cancel(self.job_id, attempt=self.attempt)
        )
        if cancelled is not None:
            self._announce(cancelled)

    def _announce(self, job: Job) -> None:
        """Publish the job's new state; a batch member that reached its end also tells its
        batch, which the last one wakes (`batch.member_finished`)."""
        publish(self.events, self.job_id, job_event(job))
        if job.is_final and job.parent_id is not None:
            self._quietly(
                lambda: member_finished(self.store, job, events=self.events, wake=self._wake)
            )

    def _wake(self, batch: Job) -> None:
        # Follow-up work goes where this job came from: this RQ queue's Redis, or the
        # in-process runner. With neither (a test calling run_job_with), the reconciler
        # finds the waiting batch on its next pass.
        if self.events is not None:
            enqueue(self.events, batch)
        elif self.run_next is not None:
            self.run_next(batch.id)

    def _ended(self, transition: Any) -> Job | None:
        """Run a final transition; None when the job moved on without us (lease lost,
        deleted): then this attempt has nothing more to say."""
        try:
            job: Job = transition()
        except (ConflictError, NotFoundError) as error:
            log.warning("job %s attempt %d: %s", self.job_id, self.attempt, error.message)
            return None
        return job

    def _quietly(self, action: Any) -> Any:
        try:
            return action()
        except Exception:
            log.exception("job %s: could not record the outcome", self.job_id)
            return None

    def _cancel_requested(self) -> bool:
        if self.stop_reason == "cancel":
            return True
        try:
            return self.store.is_cancel_requested(self.job_id)
        except Exception:
            return False

    # -- while the plugin runs -------------------------------------------------------------

    def _publish(self, fraction: float, message: str | None) -> None:
        event = {
            "jobId": self.job_id,
            "status": str(JobStatus.PROCESSING),
            "progress": round(fraction * 100),
            "message": message,
        }
        publish(self.events, self.job_id, event)

    def _on_progress(self, fraction: float, message: str | None) -> None:
        now = time.monotonic()
        if now - self._last_write < self.state.progress_interval:
            return
        self._last_write = now
        self._beat(fraction, message)
        self._publish(fraction, message)

    def _is_cancelled(self) -> bool:
        if self.stop_reason is not None:
            return True
        now = time.monotonic()
        if now >= self.deadline:
            self.stop_reason = "timeout"
            return True
        if now - self._last_poll >= self.state.progress_interval:
            self._last_poll = now
            try:
                if self.store.is_cancel_requested(self.job_id):
                    self.stop_reason = "cancel"
            except Exception as error:  # a database hiccup is not a cancel
                log.warning("job %s: cancel check failed: %s", self.job_id, error)
        return self.stop_reason is not None

    def _beat(
        self, fraction: float | None = None, message: str | None = None, current: int | None = None
    ) -> None:
        """Extend the lease (and record progress); notice a cancel or a lost lease."""
        with self._beat_lock:
            try:
                job = self.store.heartbeat(
                    self.job_id,
                    self.state.lease_seconds,
                    progress=fraction,
                    current=current,
                    message=message,
                    attempt=self.attempt,
                )
            except (ConflictError, NotFoundError) as error:
                log.warning("job %s attempt %d: %s", self.job_id, self.attempt, error.message)
                self.stop_reason = "lost"
                return
            except Exception as error:
                log.warning("job %s: heartbeat failed: %s", self.job_id, error)
                return
            if job.cancel_requested and self.stop_reason is None:
                self.stop_reason = "cancel"

    @contextlib.contextmanager
    def _lease_keeper(self) -> Iterator[None]:
        thread = threading.Thread(
            target=self._keep_lease, name=f"pixmill-lease-{self.job_id}", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            self._keeper_stop.set()
            thread.join(timeout=5)

    def _keep_lease(self) -> None:
        interval = max(self.state.lease_seconds / 3, 0.05)
        while not self._keeper_stop.wait(interval):
            if time.monotonic() > self.deadline + JOB_TIMEOUT_GRACE_S:
                # Stuck past its limit where no signal reaches it: let the lease run out so
                # that the reconciler takes the job back.
                log.error("job %s is stuck past its time limit; lease left to expire", self.job_id)
                return
            self._beat()


@contextlib.contextmanager
def _time_limit(seconds: float, tool_id: str) -> Iterator[None]:
    """Raise `JobTimeout` in the main thread after `seconds` (no-op in other threads).

    An alarm already set (another RQ worker class's own limit) is suspended meanwhile and
    restored with what was left of it afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise JobTimeout(f"{tool_id} ran longer than its {seconds:g} s time limit")

    previous_handler = signal.signal(signal.SIGALRM, expired)
    previous_delay, _ = signal.setitimer(signal.ITIMER_REAL, 0)
    delay = min(seconds, previous_delay) if previous_delay > 0 else seconds
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, delay)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay > 0:
            left = previous_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


# ----- the worker ----------------------------------------------------------------------------


class _RunJobTimesItself(BaseDeathPenalty):
    """No RQ-side alarm: `run_job` enforces each tool's own limit (see `_time_limit`), and a
    second SIGALRM user would fight it for the one timer."""

    def setup_death_penalty(self) -> None:
        return None

    def cancel_death_penalty(self) -> None:
        return None


class PixmillWorker(rq.SimpleWorker):
    """An RQ worker that runs jobs in its own process, keeping plugin state warm.

    `work()` starts RQ's scheduler by default: retries with backoff are scheduled jobs.
    """

    death_penalty_class = _RunJobTimesItself

    def __init__(self, *args: Any, burst: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.burst_default = burst

    def work(
        self,
        burst: bool | None = None,
        logging_level: str | None = None,
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = True,
        dequeue_strategy: DequeueStrategy = DequeueStrategy.DEFAULT,
    ) -> bool:
        return super().work(
            burst=self.burst_default if burst is None else burst,
            logging_level=logging_level,
            date_format=date_format,
            log_format=log_format,
            max_jobs=max_jobs,
            max_idle_time=max_idle_time,
            with_scheduler=with_scheduler,
            dequeue_strategy=dequeue_strategy,
        )


def make_worker(
    redis_url: str,
    queues: Sequence[str],
    *,
    burst: bool = False,
    connection: redis.Redis | None = None,
    preload: bool = True,
    name: str | None = None,
) -> PixmillWorker:
    """A worker serving `queues` (e.g. `["default"]`, `["ai"]`); call `.work()` to run it.

    `preload` builds the process state now, so a broken configuration (database, plugins)
    fails at start rather than on the first job, and the first job starts warm.
    """
    if not queues:
        raise ValueError("a worker needs at least one queue")
    if preload:
        process_state()
    return PixmillWorker(
        list(queues),
        connection=connection if connection is not None else connect(redis_url),
        burst=burst,
        name=name,
    )


__all__ = [
    "EXTRA_PLUGINS_ENV",
    "JOB_TIMEOUT_S",
    "JobTimeout",
    "LocalRunner",
    "PixmillWorker",
    "WorkerState",
    "build_state",
    "extra_plugins_from_env",
    "install_state",
    "make_worker",
    "process_state",
    "run_job",
    "run_job_with",
]
