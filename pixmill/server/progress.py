"""Live progress of a job: `GET /api/v1/jobs/<jobId>/progress`, a Server-Sent Events stream.

What a client gets (seed 003's "Progress Tracking"):

- `data:{...}` events in flask-sse's wire format (`flask_sse.Message`), no event type, so an
  EventSource delivers them to `onmessage`. The data is `dispatch.job_event`: `jobId`,
  `status`, `progress` (0-100) and `message`; a final event (completed, failed, cancelled)
  also carries everything a client needs without a second request: `downloadUrl`, `files`,
  `originalSize` and `processedSize`, the extracted `result`, or the `error`.
- The first event is always the job's current state, read from its row *after* subscribing
  to the job's Redis channel: whatever happens between the read and the subscription is
  either in the row or on the channel, so no final event is ever missed, however late a
  client connects or reconnects. The stream ends right after a final event.
- Every event has an `id`. A final event's id is its status: an EventSource that reconnects
  after the end sends it back as `Last-Event-ID`, and gets 204, which tells it to stop (the
  spec's way to end reconnection). Any other `Last-Event-ID` changes nothing: the stream
  starts again from the current state, which is all a client needs.
- While waiting: a `: keep-alive` comment after `stream_keepalive_s` of silence (proxies keep
  the connection, and writing to a client that left is what lets the server notice and free
  the thread), the row re-read every `ROW_REREAD_S` without events (publishing is best effort:
  an event Redis dropped is found in the row), and an end after `stream_max_s` (the first
  event carried `retry:`, so an EventSource reconnects and gets the current state again).
- Without Redis (jobs run in this process, `state.redis` None), or when subscribing fails, the
  stream polls the row every `ROW_POLL_S` instead: the same events, a little later.

Why the stream holds a thread, and why that must not starve ordinary requests. `pixmill serve`
runs gunicorn's threaded workers (`gthread`): a request holds one of the worker's `THREADS`
threads until its response ends, and an open stream is a response that lasts minutes. An
event-loop worker (gevent, eventlet) would hold streams almost for free, but pixmill's
ordinary requests are CPU-bound Pillow work that never yields to the loop: one resize would
freeze every stream and request of that process, which is worse. So streams keep real
threads, and each process caps them: at most `THREADS - STREAM_RESERVED_THREADS` streams are
open at once (`StreamSlots`), so the reserved threads are always free for ordinary requests.
A stream over the cap gets 503 `TOO_MANY_STREAMS` with `Retry-After` at once, from one of the
reserved threads, instead of queueing behind the streams; clients can poll
`GET /api/v1/jobs/<id>` instead. The cap is counted per process because a thread pool is per
process; a stream refused by a full worker may find room on another at its retry.

`end_open_streams(app)` ends every open stream of the app at its next wake-up (within
`WAKE_S`) and refuses new ones, for a server shutting down: a stream otherwise holds its
thread until `stream_max_s`, longer than gunicorn's graceful timeout.

This module imports nothing from `pixmill.cli` or `pixmill.plugins`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from flask_sse import Message
from sqlalchemy.exc import SQLAlchemyError

from pixmill.core.dispatch import event_channel, event_id, job_event
from pixmill.core.errors import NotFoundError
from pixmill.core.jobstore import JobStore
from pixmill.core.models import FINAL_STATUSES, Job
from pixmill.server.errors import error_response
from pixmill.server.state import EXTENSION_KEY, AppState, get_state

log = logging.getLogger(__name__)

bp = Blueprint("progress", __name__, url_prefix="/api/v1/jobs")

SLOTS_KEY = "pixmill.progress_streams"
# How long an EventSource waits before reconnecting after a stream ended without a final event.
RECONNECT_MS = 2000
# What a client refused for the cap is told to wait before trying again.
RETRY_AFTER_S = 5
# With Redis, the row is re-read after this long without events, in case one was dropped.
ROW_REREAD_S = 5.0
# Without Redis the row is all there is; the worker writes progress at most every
# JOB_PROGRESS_INTERVAL_S (0.5 s), so reading it more often would find nothing new.
ROW_POLL_S = 0.5
# The longest an idle stream sleeps before checking its deadline and the shutdown switch.
WAKE_S = 1.0
SUBSCRIBE_TIMEOUT_S = 2.0
KEEP_ALIVE = ": keep-alive\n\n"
STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx would otherwise buffer the stream and deliver events in bursts.
    "X-Accel-Buffering": "no",
}
_FINAL_STATUS_VALUES = frozenset(status.value for status in FINAL_STATUSES)


class StreamSlots:
    """The open progress streams of one process, counted against its cap (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 0)
        self.open = 0
        self.closing = threading.Event()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """One more stream, if it fits under the cap (and the server is not stopping)."""
        with self._lock:
            if self.open >= self.limit or self.closing.is_set():
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.open = max(self.open - 1, 0)


@bp.record_once
def _install_slots(setup: BlueprintSetupState) -> None:
    state: AppState = setup.app.extensions[EXTENSION_KEY]
    limit = state.config.threads - state.config.stream_reserved_threads
    if limit <= 0:
        log.warning(
            "progress streams are off: THREADS=%d leaves no thread beyond "
            "STREAM_RESERVED_THREADS=%d",
            state.config.threads,
            state.config.stream_reserved_threads,
        )
    setup.app.extensions[SLOTS_KEY] = StreamSlots(limit)


def stream_slots(app: Flask) -> StreamSlots:
    slots: StreamSlots = app.extensions[SLOTS_KEY]
    return slots


def end_open_streams(app: Flask) -> None:
    """End the app's open streams within `WAKE_S` and refuse new ones (server shutdown)."""
    stream_slots(app).closing.set()


# ----- the route ----------------------------------------------------------------------------


@bp.get("/<job_id>/progress")
def job_progress(job_id: str) -> Response:
    state = get_state()
    slots = stream_slots(current_app)
    if not slots.take():
        return _too_many_streams(slots, state)
    stream = JobStream(state, job_id, slots)
    try:
        stream.subscribe(state.redis)
        job = state.jobs.get(job_id)  # after subscribing: see the module docstring
        first = job_event(job)
        if job.is_final and request.headers.get("Last-Event-ID") == event_id(first):
            # This EventSource already has the final event: 204 tells it not to reconnect.
            stream.close()
            return Response(status=204, headers=STREAM_HEADERS)
    except BaseException:
        stream.close()
        raise
    response = Response(stream.events(job), mimetype="text/event-stream", headers=STREAM_HEADERS)
    # Also when the body is never iterated (a HEAD request, a client gone before the first
    # byte): the generator's own cleanup would then never run.
    response.call_on_close(stream.close)
    return response


def _too_many_streams(slots: StreamSlots, state: AppState) -> Response:
    if slots.closing.is_set():
        message = "the server is stopping; reconnect in a moment"
    elif slots.limit == 0:
        message = (
            f"progress streams are turned off on this server: THREADS "
            f"({state.config.threads}) leaves no thread beyond STREAM_RESERVED_THREADS "
            f"({state.config.stream_reserved_threads}); poll GET /api/v1/jobs/<id> instead"
        )
    else:
        message = (
            f"this server process already serves its {slots.limit} progress streams; retry "
            f"in {RETRY_AFTER_S} s or poll GET /api/v1/jobs/<id> meanwhile"
        )
    response = error_response(
        503,
        "TOO_MANY_STREAMS",
        message,
        {"limit": slots.limit, "retryAfter": RETRY_AFTER_S},
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


# ----- one stream ---------------------------------------------------------------------------


class JobStream:
    """One client's stream of one job: its Redis subscription, its slot, its events."""

    def __init__(self, state: AppState, job_id: str, slots: StreamSlots) -> None:
        self.jobs: JobStore = state.jobs
        self.job_id = job_id
        self.slots = slots
        self.keepalive_s = state.config.stream_keepalive_s
        self.max_s = state.config.stream_max_s
        self.subscription: Any = None  # a redis PubSub, or None: poll the row
        self._closed = False
        self._close_lock = threading.Lock()

    def subscribe(self, connection: redis.Redis | None) -> None:
        """Subscribe to the job's channel and wait for Redis to confirm it: only then is an
        event published afterwards certain to reach us. Redis trouble means polling."""
        if connection is None:
            return
        pubsub = connection.pubsub()
        try:
            pubsub.subscribe(event_channel(self.job_id))
            deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
            while (left := deadline - time.monotonic()) > 0:
                reply = pubsub.get_message(timeout=left)
                if reply is not None and reply["type"] == "subscribe":
                    self.subscription = pubsub
                    return
            log.warning("job %s: Redis did not confirm the subscription; polling", self.job_id)
        except (redis.RedisError, OSError) as error:
            log.warning("job %s: cannot subscribe to its events (%s); polling", self.job_id, error)
        _close_quietly(pubsub)

    def close(self) -> None:
        """Free the subscription and the slot; safe to call more than once."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self.subscription is not None:
            _close_quietly(self.subscription)
            self.subscription = None
        self.slots.give_back()

    def events(self, job: Job) -> Iterator[str]:
        """The stream's text: the current state of `job`, then what happens to it."""
        try:
            first = job_event(job)
            yield _frame(first, event_id(first, job.updated_at), retry=RECONNECT_MS)
            if job.is_final:
                return
            yield from self._follow(first)
        finally:
            self.close()

    def _follow(self, last: Mapping[str, Any]) -> Iterator[str]:
        started = time.monotonic()
        deadline = started + self.max_s
        last_sent = started
        next_read = started + self._reread_interval()
        while not self.slots.closing.is_set():
            now = time.monotonic()
            if now >= deadline:
                return  # the EventSource reconnects after RECONNECT_MS
            wake = min(deadline, next_read, last_sent + self.keepalive_s)
            published = self._receive(min(max(wake - now, 0.0), WAKE_S))
            now = time.monotonic()
            if published is not None:
                yield published.frame
                last, last_sent, next_read = published.data, now, now + self._reread_interval()
                if _is_final(published.data):
                    return
                continue
            if now >= next_read:
                job = self._read()
                next_read = now + self._reread_interval()
                if job is _GONE:
                    return  # deleted: a reconnect gets 404, which stops an EventSource
                if isinstance(job, Job):
                    event = job_event(job)
                    if event != last or job.is_final:
                        yield _frame(event, event_id(event, job.updated_at))
                        last, last_sent = event, now
                    if job.is_final:
                        return
            if now - last_sent >= self.keepalive_s:
                yield KEEP_ALIVE
                last_sent = now

    def _reread_interval(self) -> float:
        return ROW_REREAD_S if self.subscription is not None else ROW_POLL_S

    def _receive(self, timeout: float) -> _Published | None:
        """The next event published on the job's channel, or None after `timeout`."""
        if self.subscription is None:
            time.sleep(timeout)
            return None
        try:
            reply = self.subscription.get_message(ignore_subscribe_messages=True, timeout=timeout)
        except (redis.RedisError, OSError) as error:
            log.warning("job %s: lost its event subscription (%s); polling", self.job_id, error)
            _close_quietly(self.subscription)
            self.subscription = None
            return None
        if reply is None or reply.get("type") != "message":
            return None
        return _parse_message(self.job_id, reply["data"])

    def _read(self) -> Job | object | None:
        """The row now; `_GONE` if the job was deleted, None if the database failed (the
        next interval tries again)."""
        try:
            return self.jobs.get(self.job_id)
        except NotFoundError:
            return _GONE
        except SQLAlchemyError as error:
            log.warning("job %s: cannot re-read the row for its stream: %s", self.job_id, error)
            return None


_GONE = object()


@dataclass(frozen=True)
class _Published:
    """An event received from the job's channel: its data, and its frame for the client."""

    data: Any
    frame: str


def _frame(
    data: Any, identifier: str, *, type_: str | None = None, retry: int | None = None
) -> str:
    """One event in flask-sse's wire format, its JSON compact (one `data:` line)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), default=str)
    return str(Message(text, type=type_, id=identifier, retry=retry))


def _is_final(data: Any) -> bool:
    return isinstance(data, Mapping) and data.get("status") in _FINAL_STATUS_VALUES


def _parse_message(job_id: str, raw: bytes | str) -> _Published | None:
    """A message as `dispatch.publish` (or any flask-sse publisher) sends it:
    `{"data": ..., "id"?: ..., "type"?: ...}`. Anything else on the channel is skipped."""
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    if not isinstance(payload, dict) or "data" not in payload:
        log.warning("job %s: skipped a malformed event on its channel", job_id)
        return None
    data = payload["data"]
    identifier = payload.get("id") or event_id(data if isinstance(data, Mapping) else {})
    return _Published(data, _frame(data, str(identifier), type_=payload.get("type")))


def _close_quietly(pubsub: Any) -> None:
    try:
        pubsub.close()
    except (redis.RedisError, OSError) as error:
        log.debug("closing a progress subscription: %s", error)


__all__ = ["JobStream", "StreamSlots", "bp", "end_open_streams", "stream_slots"]
