"""Sending work to the RQ workers: submitting tool jobs, cancelling them, and the reconciler.

The SQL job row (`JobStore`) is the truth about a job; Redis only carries the work. So:

- `Dispatcher.submit_tool_job` validates settings and inputs exactly as an inline call does
  (a bad request fails with the same 400/415 before anything is stored or queued), stores
  the uploads in the `BlobStore`, commits the job row, and only then enqueues it, with the
  SQL id as the RQ job id. RQ carries one importable function, `WORKER_FUNCTION`
  (`pixmill.core.worker.run_job(job_id)`), never a plugin object: the worker reloads the
  plugins through the same factory and looks the tool up by id.
- Queues follow the kind of work: the tool's `queue` attribute (`default`, `ai`, ...).
- Results are content-addressed: `cache_key()` hashes the input bytes of every part (in
  order), the tool id and version and the normalized settings. When a completed job with
  the same key still has its result blobs, the new job completes at once from a copy of
  them and is never enqueued (see `copy_cached_outputs` for why a copy).
- An enqueue that fails after the commit (Redis down) is not an error for the client: the
  row stays queued and the `Reconciler` enqueues it once Redis answers again.
- `Reconciler.run_once` gives back to the queue what the queue lost: processing rows whose
  lease expired (their worker was SIGKILLed; `JobStore.requeue` fails them once attempts are
  exhausted) and queued rows that Redis does not hold (restarted without persistence).
  Enqueuing a job twice is harmless by design: `JobStore.claim` lets exactly one run it.

The run policy a tool or extractor declares (`pixmill.core.contracts`): `heavy` (always
queued), `queue`, `timeout` (seconds), `max_attempts`, `cacheable` (False for tools whose
output is not a function of their inputs and settings, e.g. random or time-dependent).

Progress and final events go to Redis pub/sub on `event_channel(job_id)` in flask-sse's
message format (`publish`; `job_event` builds the payload from a row, so the SSE endpoint,
`pixmill.server.progress`, can send the current state first and never miss a final event).

The job timings (JOB_TIMEOUT_S, JOB_LEASE_S, …) are documented in `pixmill/core/defaults.py`.

This module imports nothing from `pixmill.server`, `pixmill.cli` or `pixmill.plugins`, and
not `pixmill.core.worker` either (RQ refers to the worker function by its import path).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from rq import Queue
from rq.registry import ScheduledJobRegistry

from pixmill.core.blobs import BlobKey, BlobStore, safe_filename
from pixmill.core.config import Config
from pixmill.core.contracts import Extractor, InputFile, Inputs, Tool
from pixmill.core.defaults import (
    JOB_LEASE_S,
    JOB_RETRY_BACKOFF_MAX_S,
    JOB_RETRY_BACKOFF_S,
    JOB_TIMEOUT_GRACE_S,
    JOB_TIMEOUT_S,
    RECONCILE_GRACE_S,
)
from pixmill.core.errors import BadRequestError, ConflictError, NotFoundError
from pixmill.core.execution import UploadedFile, build_inputs, safe_stem
from pixmill.core.jobstore import RECONCILE_BATCH, JobStore
from pixmill.core.models import FINAL_STATUSES, Job, JobKind, JobStatus, new_id, utcnow
from pixmill.core.settings import normalized_settings, validate_settings

log = logging.getLogger(__name__)


WORKER_FUNCTION = "pixmill.core.worker.run_job"
EVENT_CHANNEL_PREFIX = "pixmill:job:"
DOWNLOAD_PATH = "/api/v1/download/{job_id}/{filename}"
DEFAULT_QUEUE = "default"
# How long RQ keeps a finished RQ job's hash. pixmill needs nothing from it (the row holds
# the outcome), but it must not be 0: an RQ job id is the SQL id, so the same id can be
# enqueued again (by the reconciler) while an earlier run of it is still finishing on a
# worker whose lease was taken back, and with 0 RQ would delete the hash of the new enqueue
# when the old run ends, leaving its queue entry to be skipped.
_RQ_RESULT_TTL_S = 3600
# A failed RQ job is kept a day for an operator's `rq info`.
_RQ_FAILURE_TTL_S = 24 * 3600
# How far back the first reconciler pass of a process looks for unpromoted completed jobs.
PROMOTION_LOOKBACK_S = 3600.0
_RECONCILER_LOCK = "pixmill:reconciler:lock"
_CACHE_KEY_VERSION = 1
# Upload blobs are named `<index>-<part>` so that the worker can rebuild the parts in order.
_UPLOAD_NAME = re.compile(r"^(\d{3,})-([A-Za-z0-9][A-Za-z0-9_-]*)$")
_PART_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,150}$")
_FINAL_STATUS_VALUES = frozenset(status.value for status in FINAL_STATUSES)


# ----- small shared helpers (the worker uses them too) ---------------------------------------


def event_channel(job_id: str) -> str:
    """The Redis pub/sub channel carrying a job's progress and final events."""
    return f"{EVENT_CHANNEL_PREFIX}{job_id}"


def download_url(job_id: str, filename: str) -> str:
    return DOWNLOAD_PATH.format(job_id=job_id, filename=filename)


def tool_timeout(definition: Tool | Extractor | None) -> float:
    """The run time limit of a tool: its `timeout`, else `JOB_TIMEOUT_S`."""
    if definition is not None and definition.timeout is not None:
        return float(definition.timeout)
    return JOB_TIMEOUT_S


def retry_backoff(attempt: int, base: float = JOB_RETRY_BACKOFF_S) -> int:
    """Whole seconds to wait before running `attempt + 1` (RQ schedules in seconds)."""
    if base <= 0:
        return 0
    return int(min(base * 2 ** max(attempt - 1, 0), JOB_RETRY_BACKOFF_MAX_S))


def upload_part(key: BlobKey) -> str:
    """The form part an upload blob belongs to (`file`, `watermark`, ...)."""
    match = _UPLOAD_NAME.match(key.filename)
    if key.area != "uploads" or match is None:
        raise ValueError(f"{key.relative_path} is not an upload of a dispatched job")
    return match.group(2)


def event_id(event: Mapping[str, Any], at: datetime | None = None) -> str:
    """The SSE `id` of a job event.

    A final event's id is its status (`completed`, `failed`, `cancelled`): stable, so that
    an EventSource reconnecting after the end (it sends it back as `Last-Event-ID`) can be
    told to stop. Any other event's id is the time of the state in milliseconds (`at`, else
    now), so ids grow along a stream.
    """
    status = event.get("status")
    if status in _FINAL_STATUS_VALUES:
        return str(status)
    moment = at.timestamp() if at is not None else time.time()
    return str(int(moment * 1000))


def publish(connection: Any, job_id: str, event: Mapping[str, Any]) -> None:
    """Send a job event on `event_channel(job_id)` as flask-sse publishes its messages
    (`json.dumps(Message(data, id=...).to_dict())`), so that any flask-sse consumer can
    subscribe to a job too. No event type: seed 003's stream is plain `data:` lines, which
    an EventSource delivers to `onmessage`.

    Best effort: progress is a courtesy, the row is the truth, so Redis trouble is logged.
    """
    if connection is None:
        return
    # Imported here: flask_sse imports Flask, which the core and the CLI otherwise never load.
    from flask_sse import Message

    message = Message(dict(event), id=event_id(event))
    try:
        connection.publish(
            event_channel(job_id), json.dumps(message.to_dict(), separators=(",", ":"))
        )
    except redis.RedisError as error:
        log.warning("could not publish an event of job %s: %s", job_id, error)


def job_event(job: Job) -> dict[str, Any]:
    """A job's state as a progress event: `{jobId, status, progress (0-100), message}`, and
    when it has finished everything a client needs without a second request: the download
    URL and sizes (seed 003's tool response), the extracted JSON, or the error."""
    event: dict[str, Any] = {
        "jobId": job.id,
        "status": str(job.status),
        "progress": round(job.progress * 100),
        "message": job.message,
    }
    if job.status is JobStatus.COMPLETED:
        event["progress"] = 100
        files = [
            {
                "filename": ref["filename"],
                "size": ref["size"],
                "format": ref.get("format"),
                "downloadUrl": download_url(job.id, ref["filename"]),
            }
            for ref in job.outputs
        ]
        if files:
            event["downloadUrl"] = files[0]["downloadUrl"]
            event["originalSize"] = job.input_size
            event["processedSize"] = job.output_size
            event["files"] = files
        if job.result is not None:
            event["result"] = job.result
    elif job.status is JobStatus.FAILED:
        event["error"] = {"code": job.error_code, "message": job.error_message}
    return event


def cache_key(
    definition: Tool | Extractor,
    normalized: Mapping[str, Any],
    inputs: Sequence[tuple[str, str, int]],
) -> str:
    """SHA-256 of the tool id and version, the normalized settings and each input's
    `(part, sha256, size)` in order. File names are left out on purpose: the same bytes
    under another name give the same result (renamed on reuse)."""
    document = {
        "v": _CACHE_KEY_VERSION,
        "tool": definition.id,
        "version": str(definition.version),
        "settings": normalized,
        "inputs": [list(item) for item in inputs],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def copy_cached_outputs(
    jobstore: JobStore,
    blobs: BlobStore,
    key: str,
    job_id: str,
    attempt: int,
    main_filename: str | None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, Job] | None:
    """Copy the outputs of the newest completed job with `key` into `job_id`'s results.

    Returns `(output refs, result JSON, source job)`, or None when there is no such job or
    one of its blobs is gone (purged, deleted): the caller then computes.

    A copy rather than a reference: the download route, retention and `DELETE` all address
    results by their own job id, and a reference would break as soon as the other job is
    deleted or expires (and deleting this one would take the other's files). Copying costs
    disk I/O, not computation, which is what the cache saves. A single image output is
    renamed after this job's input, as a fresh run would have named it.
    """
    source = jobstore.find_completed_by_cache_key(key)
    if source is None or source.id == job_id:
        return None
    try:
        keys = [BlobKey.parse(ref["key"]) for ref in source.outputs]
    except NotFoundError:
        return None
    if not all(blobs.exists(k) for k in keys):
        return None
    refs: list[dict[str, Any]] = []
    try:
        for ref, src in zip(source.outputs, keys, strict=True):
            name = ref["filename"]
            if len(source.outputs) == 1 and main_filename is not None:
                extension = name.rsplit(".", 1)[-1] if "." in name else ""
                stem = safe_stem(main_filename)
                name = f"{stem}.{extension}" if extension else stem
            name = safe_filename(name, fallback=safe_filename(ref["filename"], "result"))
            with blobs.open(src) as stream:
                stored = blobs.put(BlobKey.result(job_id, attempt, name), stream)
            refs.append(
                {
                    "key": stored.key.relative_path,
                    "filename": name,
                    "size": stored.size,
                    "format": ref.get("format"),
                }
            )
    except NotFoundError:  # purged between the check and the copy
        for ref in refs:
            with contextlib.suppress(Exception):
                blobs.delete(BlobKey.parse(ref["key"]))
        return None
    return refs, source.result, source


def main_input_filename(job: Job) -> str | None:
    """The client's name of the job's first `file` part (results are named after it)."""
    for ref in job.inputs:
        try:
            if upload_part(BlobKey.parse(ref["key"])) == "file":
                return str(ref["filename"])
        except (NotFoundError, ValueError):
            continue
    return None


def connect(redis_url: str) -> redis.Redis:
    """A Redis client for `redis://...` or `unix://...` URLs (RQ needs bytes replies)."""
    return redis.Redis.from_url(redis_url)


def enqueue(
    connection: redis.Redis, job: Job, *, timeout_s: float = JOB_TIMEOUT_S, at_front: bool = False
) -> None:
    """Put `job` on its RQ queue, RQ id = SQL id, running `WORKER_FUNCTION(job.id)`.

    `timeout_s + JOB_TIMEOUT_GRACE_S` becomes the RQ job timeout: pixmill's worker enforces
    the tool's own limit itself, RQ's is the outer bound for any other RQ worker class.
    """
    Queue(job.queue, connection=connection).enqueue(
        WORKER_FUNCTION,
        job.id,
        job_id=job.id,
        job_timeout=int(timeout_s + JOB_TIMEOUT_GRACE_S),
        result_ttl=_RQ_RESULT_TTL_S,
        failure_ttl=_RQ_FAILURE_TTL_S,
        description=f"pixmill {job.kind} {job.tool_id or job.pipeline_id or ''}".strip(),
        at_front=at_front,
    )


def remove_from_redis(connection: redis.Redis, job: Job) -> None:
    """Take a job off its queue and out of the retry schedule, so it never runs."""
    queue = Queue(job.queue, connection=connection)
    queue.remove(job.id)
    ScheduledJobRegistry(queue=queue).remove(job.id)


# ----- submitting and cancelling -------------------------------------------------------------


class Dispatcher:
    """Creates job rows and queues their work (the web process's side of RQ)."""

    def __init__(
        self,
        jobstore: JobStore,
        blobs: BlobStore,
        redis_url: str | None,
        *,
        config: Config,
        max_attempts: int | None = None,
        lease_seconds: float = JOB_LEASE_S,
        connection: redis.Redis | None = None,
        local_runner: Callable[[str], None] | None = None,
    ) -> None:
        """`redis_url` None (and no `connection`): there is no queue, and `local_runner`
        (which takes a job id) runs the work in this process instead; see `has_queue`."""
        self.jobstore = jobstore
        self.blobs = blobs
        self.config = config
        self.max_attempts = max_attempts or config.job_max_attempts
        self.lease_seconds = lease_seconds
        self.redis: redis.Redis | None = connection
        if connection is None and redis_url:
            self.redis = connect(redis_url)
        if self.redis is None and local_runner is None:
            raise ValueError("a Dispatcher needs a Redis URL or a local runner")
        self.local_runner = local_runner

    @property
    def has_queue(self) -> bool:
        """True when work goes to RQ workers; False when it runs in this process."""
        return self.redis is not None

    def submit_tool_job(
        self,
        definition: Tool | Extractor,
        files: Mapping[str, Sequence[UploadedFile]],
        raw_settings: Mapping[str, Any] | None,
        *,
        owner_id: str | None = None,
    ) -> Job:
        """Validate, store the uploads, commit the row, then enqueue (or complete it at once
        from the result cache). Bad settings (400), parts (400) or formats (415) raise before
        anything is written."""
        normalized = checked_settings(definition, raw_settings)
        inputs = build_inputs(definition, files, self.config.limits)
        job = self.create_tool_job(definition, inputs, normalized, owner_id=owner_id)
        if job.status is JobStatus.QUEUED:
            self.enqueue(job, timeout_s=tool_timeout(definition))
        return job

    def create_tool_job(
        self,
        definition: Tool | Extractor,
        inputs: Inputs,
        normalized: Mapping[str, Any],
        *,
        owner_id: str | None = None,
        parent_id: str | None = None,
        job_id: str | None = None,
    ) -> Job:
        """Store checked inputs (`build_inputs`) and commit the row, without enqueuing it:
        the caller decides when (a batch enqueues its members once all rows exist). A job
        whose result is cached comes back completed from a copy of it."""
        job_id = job_id or new_id()
        try:
            refs, digests = self._store_uploads(job_id, inputs)
            key = cache_key(definition, normalized, digests)
            main = inputs.get("file")
            main_file = main[0] if isinstance(main, list) else main
            main_name = main_file.filename if isinstance(main_file, InputFile) else None
            cached = None
            if definition.cacheable:
                cached = copy_cached_outputs(self.jobstore, self.blobs, key, job_id, 1, main_name)
            job = self.jobstore.create(
                JobKind.TOOL if isinstance(definition, Tool) else JobKind.EXTRACT,
                tool_id=definition.id,
                owner_id=owner_id,
                settings=normalized,
                inputs=refs,
                queue=definition.queue or DEFAULT_QUEUE,
                max_attempts=definition.max_attempts or self.max_attempts,
                cache_key=key,
                parent_id=parent_id,
                job_id=job_id,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.blobs.delete_job(job_id)
            raise

        if cached is not None:
            return self._complete_from_cache(job, *cached)
        return job

    def submit_job(
        self,
        kind: JobKind,
        inputs: Inputs,
        *,
        settings: Mapping[str, Any],
        queue: str = DEFAULT_QUEUE,
        timeout_s: float = JOB_TIMEOUT_S,
        max_attempts: int | None = None,
        pipeline_id: str | None = None,
        parent_id: str | None = None,
        owner_id: str | None = None,
        progress_total: int | None = None,
        job_id: str | None = None,
        enqueue: bool = True,
    ) -> Job:
        """Queue work that has no result cache of its own (a pipeline: its steps have one).

        `inputs` were checked by the caller (`build_inputs`); they are stored under the job's
        id (a new one unless given) and the row is committed, then enqueued (unless `enqueue`
        is False: a batch enqueues its members once all rows exist). A row that cannot be
        written leaves no uploads behind.
        """
        job_id = job_id or new_id()
        try:
            refs, _ = self._store_uploads(job_id, inputs)
            job = self.jobstore.create(
                kind,
                pipeline_id=pipeline_id,
                parent_id=parent_id,
                owner_id=owner_id,
                settings=settings,
                inputs=refs,
                queue=queue or DEFAULT_QUEUE,
                max_attempts=max_attempts or self.max_attempts,
                progress_total=progress_total,
                job_id=job_id,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.blobs.delete_job(job_id)
            raise
        if enqueue:
            self.enqueue(job, timeout_s=timeout_s)
        return job

    def _store_uploads(
        self, job_id: str, inputs: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], list[tuple[str, str, int]]]:
        refs: list[dict[str, Any]] = []
        digests: list[tuple[str, str, int]] = []
        for part in inputs:
            if not _PART_NAME.match(part):  # a plugin's odd declaration, refused before writing
                raise BadRequestError(
                    f"file part {part!r} cannot be stored for a queued job",
                    code="UNSUPPORTED_PART_NAME",
                    details={"field": part},
                )
        for part, value in inputs.items():
            for item in value if isinstance(value, list) else [value]:
                key = BlobKey.upload(job_id, f"{len(refs):03d}-{part}")
                stored = self.blobs.put(key, item.data)
                refs.append(
                    {
                        "key": key.relative_path,
                        "filename": item.filename,
                        "size": stored.size,
                        "format": item.format.name,
                    }
                )
                digests.append((part, stored.sha256, stored.size))
        return refs, digests

    def _complete_from_cache(
        self,
        job: Job,
        outputs: list[dict[str, Any]],
        result: dict[str, Any] | None,
        source: Job,
    ) -> Job:
        claimed = self.jobstore.claim(job.id, self.lease_seconds)
        if claimed is None:  # cancelled in the meantime: nothing to finish
            return self.jobstore.get(job.id)
        done = self.jobstore.complete(
            job.id,
            outputs,
            result=result,
            message=f"reused the result of job {source.id}",
            attempt=claimed.attempt,
        )
        try:
            self.blobs.promote(job.id, claimed.attempt)
        except Exception:  # the row is the truth; promotion only guards against zombies
            log.exception("job %s: could not promote attempt %d", job.id, claimed.attempt)
        publish(self.redis, job.id, job_event(done))
        return done

    def enqueue(self, job: Job, *, timeout_s: float = JOB_TIMEOUT_S) -> None:
        """Send a committed row to its queue (or to the local runner when there is none).

        Never raises for Redis trouble: committed is committed, and the reconciler enqueues
        the row once Redis answers again.
        """
        if self.redis is None:
            assert self.local_runner is not None
            self.local_runner(job.id)
            return
        try:
            enqueue(self.redis, job, timeout_s=timeout_s)
        except redis.RedisError as error:
            log.warning("job %s stays queued until Redis answers: %s", job.id, error)

    def cancel(self, job_id: str) -> Job:
        """Queued: cancelled now and taken off Redis, so it never runs. Processing: the cancel
        flag is set and the worker stops at the plugin's next `ctx.check_cancelled()`.
        Finished: 409 `JOB_FINISHED`; unknown: 404 `JOB_NOT_FOUND`.

        A batch takes its unfinished members with it. A member cancelled here wakes its
        batch, which may have been waiting for this one last member (`pixmill.core.batch`).
        """
        job = self.jobstore.cancel(job_id)
        if job.status is JobStatus.CANCELLED and self.redis is not None:
            try:
                remove_from_redis(self.redis, job)
            except redis.RedisError as error:
                # Harmless: a worker that dequeues it anyway cannot claim a cancelled row.
                log.warning("could not take cancelled job %s off Redis: %s", job_id, error)
            publish(self.redis, job.id, job_event(job))
        if job.kind is JobKind.BATCH:
            for member in self.jobstore.children(job.id):
                if not member.is_final:
                    with contextlib.suppress(ConflictError, NotFoundError):  # ended meanwhile
                        self.cancel(member.id)
        elif job.status is JobStatus.CANCELLED and job.parent_id is not None:
            self.wake_parent(job.parent_id)
        return job

    def wake_parent(self, parent_id: str) -> None:
        """Enqueue a waiting batch so that it looks at its members again; a batch with
        members still unfinished returns at once, so a spare wake-up costs one no-op run."""
        try:
            parent = self.jobstore.get(parent_id)
        except NotFoundError:
            return
        if parent.status is JobStatus.QUEUED:
            self.enqueue(parent)


def checked_settings(
    definition: Tool | Extractor, raw_settings: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Settings validated by the definition's schema (400 VALIDATION_ERROR) and normalized
    as a job row records them and the cache key hashes them: defaults filled in, plain JSON."""
    settings = validate_settings(definition.settings, raw_settings)
    return _json_clean(normalized_settings(definition.settings, settings))


def _json_clean(value: dict[str, Any]) -> dict[str, Any]:
    """Settings as JSON gives them back (tuples become lists), for the row and the key."""
    cleaned: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False, default=str))
    return cleaned


# ----- the reconciler ------------------------------------------------------------------------


@dataclass
class ReconcileReport:
    """What one reconciler pass did, by job id."""

    requeued: list[str] = field(default_factory=list)  # lease expired, back on the queue
    finished: list[str] = field(default_factory=list)  # lease expired, no attempts left
    reenqueued: list[str] = field(default_factory=list)  # queued in SQL, lost by Redis
    promoted: list[str] = field(default_factory=list)  # completed, its promotion never done
    skipped: bool = False  # another reconciler held the lock


class Reconciler:
    """Brings Redis back in line with the job rows; run at start and periodically.

    Idempotent and safe to run concurrently: a Redis lock keeps simultaneous passes from
    doing the same work twice, and even without it the worst case is a job enqueued twice,
    which `JobStore.claim` makes harmless.
    """

    def __init__(
        self,
        jobstore: JobStore,
        redis_connection: redis.Redis,
        queues: Iterable[str] | None = None,
        *,
        grace_seconds: float = RECONCILE_GRACE_S,
        timeout_for: Callable[[Job], float] | None = None,
        lock_seconds: float = 60.0,
        blobs: BlobStore | None = None,
    ) -> None:
        self.jobstore = jobstore
        self.redis = redis_connection
        self.queues = frozenset(queues) if queues is not None else None
        self.grace = timedelta(seconds=grace_seconds)
        self.timeout_for = timeout_for or (lambda job: JOB_TIMEOUT_S)
        self.lock_seconds = lock_seconds
        # With the blob store, completed jobs whose promotion never happened are promoted.
        self.blobs = blobs
        self._promoted_through: datetime | None = None

    def _mine(self, job: Job) -> bool:
        return self.queues is None or job.queue in self.queues

    def run_once(self, now: datetime | None = None) -> ReconcileReport:
        report = ReconcileReport()
        lock = self.redis.lock(_RECONCILER_LOCK, timeout=self.lock_seconds, blocking=False)
        if not lock.acquire(blocking=False):
            report.skipped = True
            return report
        try:
            at = now or utcnow()
            self._take_back_expired(at, report)
            self._enqueue_lost(at, report)
            if self.blobs is not None:
                self._promote_completed(at, self.blobs, report)
        finally:
            with contextlib.suppress(redis.RedisError):
                lock.release()
        return report

    def _take_back_expired(self, now: datetime, report: ReconcileReport) -> None:
        seen: set[str] = set()
        while True:
            batch = [
                job
                for job in self.jobstore.unfinished_with_expired_lease(now)
                if job.id not in seen
            ]
            if not batch:
                return
            for job in batch:
                seen.add(job.id)
                if not self._mine(job):
                    continue
                try:
                    after = self.jobstore.requeue(
                        job.id,
                        "the worker stopped heartbeating (lease expired)",
                        attempt=job.attempt,
                    )
                except (ConflictError, NotFoundError):
                    continue  # finished, re-claimed or deleted since we looked
                if after.status is JobStatus.QUEUED:
                    self._enqueue(after)
                    report.requeued.append(after.id)
                else:
                    publish(self.redis, after.id, job_event(after))
                    report.finished.append(after.id)

    def _enqueue_lost(self, now: datetime, report: ReconcileReport) -> None:
        # Every unfinished row, page by page (keyset, so rows changing meanwhile are neither
        # skipped nor seen twice). Redis's view of each queue is read once per pass: a job a
        # worker re-enqueues meanwhile may be enqueued twice, which `claim` makes harmless.
        present: dict[str, set[str]] = {}
        after: tuple[datetime, str] | None = None
        while True:
            page = self.jobstore.unfinished(now - self.grace, limit=RECONCILE_BATCH, after=after)
            for job in page:
                if job.status is not JobStatus.QUEUED or not self._mine(job):
                    continue
                if job.queue not in present:
                    present[job.queue] = self._held_by_redis(job.queue, now)
                if job.id not in present[job.queue]:
                    self._enqueue(job)
                    report.reenqueued.append(job.id)
            if len(page) < RECONCILE_BATCH:
                return
            after = (page[-1].updated_at, page[-1].id)

    def _promote_completed(self, now: datetime, blobs: BlobStore, report: ReconcileReport) -> None:
        """Promote the winning attempt of jobs completed since the last pass that have no
        promotion marker: their worker was killed between the commit and the promotion, and
        other attempts' files would otherwise stay until the retention sweep.

        A job completed within the grace may still be promoting in its live worker; it is
        looked at on the next pass. The first pass looks back PROMOTION_LOOKBACK_S.
        """
        end = now - self.grace
        start = self._promoted_through or end - timedelta(seconds=PROMOTION_LOOKBACK_S)
        after: tuple[datetime, str] | None = None
        while True:
            page = self.jobstore.completed_between(start, end, limit=RECONCILE_BATCH, after=after)
            for job in page:
                if not job.outputs or not self._mine(job):
                    continue
                try:
                    if blobs.promoted_attempt(job.id) is None:
                        blobs.promote(job.id, job.attempt)
                        report.promoted.append(job.id)
                except Exception:  # one job's files must not stop the pass
                    log.exception("reconciler could not promote job %s", job.id)
            if len(page) < RECONCILE_BATCH:
                break
            last = page[-1]
            assert last.finished_at is not None
            after = (last.finished_at, last.id)
        self._promoted_through = end

    def _held_by_redis(self, queue_name: str, now: datetime) -> set[str]:
        """Ids Redis will run on this queue: waiting in the list, or scheduled for a retry
        and not overdue by more than the grace (an overdue one means no RQ scheduler runs:
        it is enqueued again, and a duplicate is harmless)."""
        queue = Queue(queue_name, connection=self.redis)
        ids = set(queue.get_job_ids())
        registry = ScheduledJobRegistry(queue=queue)
        since = int((now - self.grace).timestamp())
        ids.update(
            member.decode() if isinstance(member, bytes) else str(member)
            for member in self.redis.zrangebyscore(registry.key, since, "+inf")
        )
        return ids

    def _enqueue(self, job: Job) -> None:
        try:
            enqueue(self.redis, job, timeout_s=self.timeout_for(job))
        except redis.RedisError as error:
            log.warning("reconciler could not enqueue job %s: %s", job.id, error)
