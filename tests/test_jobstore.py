"""JobStore on SQLite and PostgreSQL: every operation, every legal and illegal transition.

The store runs on a controllable clock, so leases and date ranges are tested without sleeping.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import test_db  # the database fixtures, shared with tests/test_db.py

from pixmill.core.db import Database
from pixmill.core.errors import PixmillError
from pixmill.core.jobstore import JobStore, event_to_dict, pipeline_to_dict, to_dict
from pixmill.core.models import Job, JobKind, JobStatus, new_id

migrated_database = test_db.migrated_database
database = test_db.database

START = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
LEASE = 30


class Clock:
    """Now, as the store sees it; tests move it forward by hand."""

    def __init__(self) -> None:
        self.now = START
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self.now += timedelta(seconds=seconds)
            return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(database: Database, clock: Clock) -> JobStore:
    return JobStore(database.sessions, clock=clock)


def ref(name: str, size: int, fmt: str | None = "png") -> dict[str, Any]:
    return {"key": f"blobs/{name}", "filename": name, "size": size, "format": fmt}


def raises(status: int, code: str) -> Any:
    """`with raises(409, "JOB_FINISHED"):` the PixmillError with that status and code."""
    return pytest.raises(PixmillError, check=lambda e: (e.status, e.code) == (status, code))


def event_types(store: JobStore, job_id: str) -> list[str]:
    return [event.type for event in store.events(job_id)]


def running(store: JobStore, **create: Any) -> Job:
    job = store.create(create.pop("kind", JobKind.TOOL), tool_id="resize", **create)
    claimed = store.claim(job.id, LEASE)
    assert claimed is not None
    return claimed


# ----- create and get ----------------------------------------------------------------------


def test_create_gives_a_queued_job(store: JobStore) -> None:
    job = store.create(
        "tool",
        tool_id="resize",
        owner_id="user-1",
        settings={"width": 800},
        inputs=[ref("a.jpg", 100, "jpeg"), ref("b.jpg", 50, "jpeg")],
        queue="ai",
        cache_key="c" * 64,
    )
    assert len(job.id) == 32 and int(job.id, 16) >= 0
    assert job.status is JobStatus.QUEUED and job.kind is JobKind.TOOL
    assert (job.attempt, job.max_attempts, job.queue) == (0, 3, "ai")
    assert job.input_size == 150 and job.output_size == 0
    assert job.created_at == job.updated_at == START
    assert job.started_at is job.finished_at is job.lease_expires_at is None

    again = store.get(job.id)
    assert again.settings == {"width": 800}
    assert again.inputs == job.inputs
    assert again.created_at == START and again.created_at.tzinfo is UTC
    assert event_types(store, job.id) == ["created"]


def test_create_with_a_given_id_and_progress_total(store: JobStore) -> None:
    job_id = new_id()
    job = store.create(JobKind.BATCH, job_id=job_id, progress_total=4, input_size=999)
    assert job.id == job_id and job.input_size == 999
    assert (job.progress_current, job.progress_total) == (0, 4)
    with raises(409, "JOB_EXISTS"):
        store.create(JobKind.BATCH, job_id=job_id)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"kind": "painting"}, (400, "VALIDATION_ERROR")),
        ({"kind": "tool", "job_id": "not-a-hex-id"}, (400, "BAD_REQUEST")),
        ({"kind": "tool", "job_id": "A" * 32}, (400, "BAD_REQUEST")),
        ({"kind": "tool", "max_attempts": 0}, (400, "BAD_REQUEST")),
        ({"kind": "tool", "queue": ""}, (400, "BAD_REQUEST")),
        ({"kind": "pipeline", "pipeline_id": "f" * 32}, (404, "PIPELINE_NOT_FOUND")),
        ({"kind": "tool", "parent_id": "f" * 32}, (404, "JOB_NOT_FOUND")),
    ],
)
def test_create_refuses_bad_arguments(
    store: JobStore, kwargs: dict[str, Any], error: tuple[int, str]
) -> None:
    with raises(*error):
        store.create(**kwargs)
    assert store.list().total == 0


@pytest.mark.parametrize(
    "settings",
    [
        {"x": float("nan")},
        {"x": float("inf")},
        {1: "integer key"},
        {"x": (1, 2)},
        {"x": {1, 2}},
        {"x": b"bytes"},
    ],
)
def test_settings_must_be_strict_json(store: JobStore, settings: dict[Any, Any]) -> None:
    with pytest.raises(ValueError, match="settings"):
        store.create("tool", settings=settings)


@pytest.mark.parametrize(
    "bad",
    [
        [{"filename": "a.png", "size": 1, "format": "png"}],  # no key
        [{"key": "k", "size": 1, "format": "png"}],  # no filename
        [{"key": "k", "filename": "a.png", "size": -1, "format": "png"}],
        [{"key": "k", "filename": "a.png", "size": True, "format": "png"}],
        [{"key": "k", "filename": "a.png", "size": 1, "format": 5}],
        ["just a string"],
        "not a list",
    ],
)
def test_blob_refs_are_checked(store: JobStore, bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        store.create("tool", inputs=bad)


@pytest.mark.parametrize("job_id", [new_id(), "nope", "", "../etc/passwd", "F" * 32])
def test_unknown_ids_are_404(store: JobStore, job_id: str) -> None:
    operations: list[Callable[[], Any]] = [
        lambda: store.get(job_id),
        lambda: store.heartbeat(job_id, LEASE),
        lambda: store.complete(job_id),
        lambda: store.fail(job_id, "X", "x"),
        lambda: store.requeue(job_id, "x"),
        lambda: store.cancel(job_id),
        lambda: store.confirm_cancel(job_id),
        lambda: store.delete(job_id),
        lambda: store.events(job_id),
        lambda: store.add_event(job_id, "note"),
    ]
    for operation in operations:
        with raises(404, "JOB_NOT_FOUND"):
            operation()
    # A worker holding a deleted job's id: nothing to run, so stop.
    assert store.claim(job_id, LEASE) is None
    assert store.is_cancel_requested(job_id) is True


# ----- claim -------------------------------------------------------------------------------


def test_claim_takes_a_queued_job(store: JobStore, clock: Clock) -> None:
    job = store.create("tool", tool_id="resize")
    clock.advance(2)
    claimed = store.claim(job.id, LEASE)
    assert claimed is not None
    assert claimed.status is JobStatus.PROCESSING
    assert claimed.attempt == 1
    assert claimed.started_at == START + timedelta(seconds=2)
    assert claimed.lease_expires_at == claimed.started_at + timedelta(seconds=LEASE)
    assert store.claim(job.id, LEASE) is None  # already taken
    assert event_types(store, job.id) == ["created", "claimed"]
    with pytest.raises(ValueError):
        store.claim(job.id, 0)


def race(contenders: int, attempt: Callable[[], Any]) -> list[Any]:
    """Run `attempt` in `contenders` threads released at the same instant; their results."""
    barrier = threading.Barrier(contenders)
    outcomes: list[Any] = []
    lock = threading.Lock()

    def contend() -> None:
        barrier.wait(timeout=10)
        try:
            outcome = attempt()
        except BaseException as error:
            outcome = error
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=contend) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == contenders, "a contender hung"
    return outcomes


def test_concurrent_claims_have_exactly_one_winner(store: JobStore) -> None:
    for _ in range(3):
        job = store.create("tool", tool_id="resize")
        outcomes = race(8, lambda job_id=job.id: store.claim(job_id, LEASE))
        assert not [o for o in outcomes if isinstance(o, BaseException)]
        winners = [o for o in outcomes if o is not None]
        assert len(winners) == 1 and winners[0].attempt == 1
        stored = store.get(job.id)
        assert stored.attempt == 1 and stored.status is JobStatus.PROCESSING
        assert event_types(store, job.id) == ["created", "claimed"]


# ----- heartbeat and progress --------------------------------------------------------------


def test_heartbeat_extends_the_lease_and_records_progress(store: JobStore, clock: Clock) -> None:
    job = running(store)
    now = clock.advance(20)
    beat = store.heartbeat(job.id, 60, progress=0.25, message="resizing", attempt=1)
    assert beat.lease_expires_at == now + timedelta(seconds=60)
    assert (beat.progress, beat.message, beat.cancel_requested) == (0.25, "resizing", False)

    beat = store.heartbeat(job.id, 60, current=3, total=4)
    assert (beat.progress, beat.progress_current, beat.progress_total) == (0.75, 3, 4)
    assert to_dict(beat)["progress"] == {"current": 3, "total": 4, "percent": 75}
    assert event_types(store, job.id) == ["created", "claimed"]  # not a state change


@pytest.mark.parametrize(
    "progress",
    [
        {"progress": 1.5},
        {"progress": -0.1},
        {"progress": float("nan")},
        {"current": 5, "total": 4},
        {"current": -1},
        {"total": -2},
    ],
)
def test_heartbeat_refuses_bad_progress(store: JobStore, progress: dict[str, Any]) -> None:
    job = running(store)
    with raises(400, "VALIDATION_ERROR"):
        store.heartbeat(job.id, LEASE, **progress)
    assert store.get(job.id).progress == 0.0


def test_heartbeat_needs_a_processing_job(store: JobStore) -> None:
    queued = store.create("tool")
    with raises(409, "JOB_NOT_RUNNING"):
        store.heartbeat(queued.id, LEASE)
    done = running(store)
    store.complete(done.id)
    with raises(409, "JOB_FINISHED"):
        store.heartbeat(done.id, LEASE)


# ----- complete, fail ----------------------------------------------------------------------


def test_complete_records_outputs_and_timings(store: JobStore, clock: Clock) -> None:
    job = running(store, inputs=[ref("in.jpg", 1000, "jpeg")], settings={"width": 10})
    clock.advance(1.5)
    outputs = [ref("out-1.png", 300), ref("out-2.png", 200)]
    done = store.complete(job.id, outputs, result={"colors": ["#fff"]}, attempt=1)
    assert done.status is JobStatus.COMPLETED and done.is_final
    assert (done.progress, done.output_size, done.lease_expires_at) == (1.0, 500, None)
    assert done.finished_at == START + timedelta(seconds=1.5)

    shown = to_dict(store.get(job.id))
    json.dumps(shown)  # plain JSON all the way down
    assert shown["status"] == "completed" and shown["toolId"] == "resize"
    assert shown["progress"]["percent"] == 100
    assert shown["timings"] == {
        "createdAt": "2025-03-01T12:00:00.000Z",
        "startedAt": "2025-03-01T12:00:00.000Z",
        "finishedAt": "2025-03-01T12:00:01.500Z",
        "durationMs": 1500,
    }
    assert shown["results"] == {
        "count": 2,
        "totalBytes": 500,
        "files": [
            {"filename": "out-1.png", "size": 300, "format": "png"},
            {"filename": "out-2.png", "size": 200, "format": "png"},
        ],
    }
    assert shown["result"] == {"colors": ["#fff"]}
    assert shown["error"] is None
    assert "key" not in json.dumps(shown["results"])  # storage keys stay internal
    assert event_types(store, job.id) == ["created", "claimed", "completed"]


def test_complete_is_only_for_processing_jobs(store: JobStore) -> None:
    queued = store.create("tool")
    with raises(409, "JOB_NOT_RUNNING"):
        store.complete(queued.id)
    job = running(store)
    store.complete(job.id)
    with raises(409, "JOB_FINISHED"):
        store.complete(job.id)
    with raises(409, "JOB_FINISHED"):
        store.fail(job.id, "X", "too late")


def test_fail_from_processing_and_from_queued(store: JobStore) -> None:
    job = running(store)
    failed = store.fail(job.id, "TOOL_FAILED", "plugin raised ValueError", attempt=1)
    assert failed.status is JobStatus.FAILED and failed.finished_at is not None
    assert to_dict(failed)["error"] == {
        "code": "TOOL_FAILED",
        "message": "plugin raised ValueError",
    }

    queued = store.create("tool")
    failed = store.fail(queued.id, "ENQUEUE_FAILED", "no queue")
    assert failed.status is JobStatus.FAILED and failed.attempt == 0
    assert event_types(store, queued.id) == ["created", "failed"]
    with raises(409, "JOB_FINISHED"):
        store.fail(queued.id, "X", "again")


def test_a_worker_that_lost_its_lease_cannot_write(store: JobStore) -> None:
    job = running(store)
    store.requeue(job.id, "lease expired")
    second = store.claim(job.id, LEASE)
    assert second is not None and second.attempt == 2
    for stale in (
        lambda: store.heartbeat(job.id, LEASE, attempt=1),
        lambda: store.complete(job.id, [ref("stale.png", 1)], attempt=1),
        lambda: store.fail(job.id, "X", "stale", attempt=1),
        lambda: store.requeue(job.id, "stale", attempt=1),
    ):
        with raises(409, "LEASE_LOST"):
            stale()
    assert store.complete(job.id, [ref("fresh.png", 2)], attempt=2).outputs[0]["size"] == 2


# ----- requeue and the reconciler ----------------------------------------------------------


def test_requeue_until_attempts_are_exhausted(store: JobStore) -> None:
    job = store.create("tool", max_attempts=3)
    for attempt in (1, 2):
        claimed = store.claim(job.id, LEASE)
        assert claimed is not None and claimed.attempt == attempt
        store.heartbeat(job.id, LEASE, progress=0.5)
        requeued = store.requeue(job.id, "worker died")
        assert requeued.status is JobStatus.QUEUED
        assert (requeued.progress, requeued.lease_expires_at) == (0.0, None)
        assert requeued.message == "worker died"
    claimed = store.claim(job.id, LEASE)
    assert claimed is not None and claimed.attempt == 3
    final = store.requeue(job.id, "worker died again")
    assert final.status is JobStatus.FAILED
    assert final.error_code == "ATTEMPTS_EXHAUSTED"
    assert final.error_message is not None and "worker died again" in final.error_message
    assert store.claim(job.id, LEASE) is None
    with raises(409, "JOB_FINISHED"):
        store.requeue(job.id, "once more")
    assert event_types(store, job.id) == [
        "created",
        "claimed",
        "requeued",
        "claimed",
        "requeued",
        "claimed",
        "failed",
    ]


def test_requeue_of_a_queued_job_changes_nothing(store: JobStore) -> None:
    job = store.create("tool")
    assert store.requeue(job.id, "lost from redis").status is JobStatus.QUEUED
    assert store.get(job.id).attempt == 0
    assert event_types(store, job.id) == ["created"]


def test_requeue_of_a_job_asked_to_cancel_cancels_it(store: JobStore) -> None:
    job = running(store)
    store.cancel(job.id)
    assert store.requeue(job.id, "worker died").status is JobStatus.CANCELLED


def test_expired_leases_are_listed(store: JobStore, clock: Clock) -> None:
    short = running(store)
    long = store.create("tool")
    assert store.claim(long.id, 300) is not None
    queued = store.create("tool")
    assert store.unfinished_with_expired_lease(clock()) == []

    later = clock.advance(LEASE + 1)
    assert [job.id for job in store.unfinished_with_expired_lease(later)] == [short.id]
    assert [job.id for job in store.unfinished_with_expired_lease()] == [short.id]
    store.heartbeat(short.id, LEASE)  # alive again
    assert store.unfinished_with_expired_lease() == []

    much_later = clock.advance(1000)
    expired = {job.id for job in store.unfinished_with_expired_lease(much_later)}
    assert expired == {short.id, long.id}
    assert queued.id not in expired
    store.complete(short.id)
    assert [j.id for j in store.unfinished_with_expired_lease(much_later)] == [long.id]


def test_unfinished_jobs_older_than_a_cut_off(store: JobStore, clock: Clock) -> None:
    old_running = running(store)
    clock.advance(1)
    old_queued = store.create("tool")
    old_done = running(store)
    store.complete(old_done.id)
    cut_off = clock.advance(10)
    clock.advance(1)
    store.create("tool")  # too recent: its enqueue may still be on its way
    found = store.unfinished(cut_off)
    assert [job.id for job in found] == [old_running.id, old_queued.id]  # oldest first
    assert [job.id for job in store.unfinished(cut_off, limit=1)] == [old_running.id]


def test_unfinished_pages_through_every_row_with_a_cursor(store: JobStore, clock: Clock) -> None:
    same_instant = [store.create("tool") for _ in range(5)]  # ties broken by id
    clock.advance(1)
    later = [store.create("tool") for _ in range(2)]
    cut_off = clock.advance(10)
    seen: list[str] = []
    after = None
    for _ in range(10):  # bounded: 7 rows, pages of 3
        page = store.unfinished(cut_off, limit=3, after=after)
        seen += [job.id for job in page]
        if len(page) < 3:
            break
        after = (page[-1].updated_at, page[-1].id)
    assert seen == sorted(job.id for job in same_instant) + sorted(job.id for job in later)


# ----- cancel ------------------------------------------------------------------------------


def test_cancel_a_queued_job(store: JobStore) -> None:
    job = store.create("tool")
    cancelled = store.cancel(job.id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.finished_at is not None
    assert store.claim(job.id, LEASE) is None  # it never runs
    assert store.is_cancel_requested(job.id) is True
    with raises(409, "JOB_FINISHED"):
        store.cancel(job.id)


def test_cancel_a_processing_job_is_cooperative(store: JobStore) -> None:
    job = running(store)
    assert store.is_cancel_requested(job.id) is False
    asked = store.cancel(job.id)
    assert asked.status is JobStatus.PROCESSING and asked.cancel_requested
    assert store.is_cancel_requested(job.id) is True
    assert store.heartbeat(job.id, LEASE).cancel_requested is True
    store.cancel(job.id)  # asking twice is harmless
    stopped = store.confirm_cancel(job.id, attempt=1)
    assert stopped.status is JobStatus.CANCELLED
    assert event_types(store, job.id) == ["created", "claimed", "cancel_requested", "cancelled"]
    with raises(409, "JOB_FINISHED"):
        store.cancel(job.id)


def test_confirm_cancel_needs_a_request(store: JobStore) -> None:
    job = running(store)
    with raises(409, "CANCEL_NOT_REQUESTED"):
        store.confirm_cancel(job.id)
    queued = store.create("tool")
    with raises(409, "JOB_NOT_RUNNING"):
        store.confirm_cancel(queued.id)


def test_a_late_cancel_does_not_discard_a_finished_result(store: JobStore) -> None:
    job = running(store)
    store.cancel(job.id)
    assert store.complete(job.id, [ref("r.png", 5)]).status is JobStatus.COMPLETED


@pytest.mark.parametrize("final", ["completed", "failed", "cancelled"])
def test_cancel_of_a_finished_job_is_409(store: JobStore, final: str) -> None:
    job = running(store)
    if final == "completed":
        store.complete(job.id)
    elif final == "failed":
        store.fail(job.id, "X", "x")
    else:
        store.cancel(job.id)
        store.confirm_cancel(job.id)
    with raises(409, "JOB_FINISHED") as caught:
        store.cancel(job.id)
    assert caught.value.details == {"jobId": job.id, "status": final}


# ----- delete, cache, events ---------------------------------------------------------------


def test_delete_returns_every_blob_and_removes_events_and_children(store: JobStore) -> None:
    batch = store.create("batch", inputs=[ref("all.zip", 10, "zip")])
    member = store.create("tool", parent_id=batch.id, inputs=[ref("m.png", 3)])
    assert store.claim(member.id, LEASE) is not None
    store.complete(member.id, [ref("m-out.png", 4)])
    other = store.create("tool")

    refs = store.delete(batch.id)
    assert sorted(r["filename"] for r in refs) == ["all.zip", "m-out.png", "m.png"]
    for gone in (batch.id, member.id):
        with raises(404, "JOB_NOT_FOUND"):
            store.get(gone)
        with raises(404, "JOB_NOT_FOUND"):
            store.events(gone)
    assert store.get(other.id).id == other.id
    with raises(404, "JOB_NOT_FOUND"):
        store.delete(batch.id)


def test_find_completed_by_cache_key(store: JobStore, clock: Clock) -> None:
    key = "a" * 64
    assert store.find_completed_by_cache_key(key) is None
    failed = running(store, cache_key=key)
    store.fail(failed.id, "X", "x")
    queued = store.create("tool", cache_key=key)
    assert store.find_completed_by_cache_key(key) is None

    first = running(store, cache_key=key)
    store.complete(first.id, [ref("1.png", 1)])
    clock.advance(5)
    second = running(store, cache_key=key)
    store.complete(second.id, [ref("2.png", 2)])
    found = store.find_completed_by_cache_key(key)
    assert found is not None and found.id == second.id
    assert store.find_completed_by_cache_key("b" * 64) is None
    assert queued.status is JobStatus.QUEUED


def test_events_record_the_history(store: JobStore, clock: Clock) -> None:
    job = running(store)
    clock.advance(1)
    note = store.add_event(job.id, "retry_scheduled", "backing off", {"delaySeconds": 4})
    assert note.at == START + timedelta(seconds=1)
    store.complete(job.id)
    events = store.events(job.id)
    assert [e.type for e in events] == ["created", "claimed", "retry_scheduled", "completed"]
    assert [e.status for e in events] == ["queued", "processing", "processing", "completed"]
    assert events[2].data == {"delaySeconds": 4} and events[2].message == "backing off"
    assert [e.id for e in events] == sorted(e.id for e in events)
    later = store.events(job.id, after_id=events[1].id)
    assert [e.type for e in later] == ["retry_scheduled", "completed"]
    shown = event_to_dict(events[-1])
    json.dumps(shown)
    assert shown["jobId"] == job.id and shown["status"] == "completed"
    with raises(400, "BAD_REQUEST"):
        store.add_event(job.id, "")
    with pytest.raises(ValueError):
        store.add_event(job.id, "note", data={"x": float("nan")})


# ----- list --------------------------------------------------------------------------------


def test_list_filters(store: JobStore, clock: Clock) -> None:
    resize = store.create("tool", tool_id="resize", owner_id="ann")
    clock.advance(60)
    crop = store.create("tool", tool_id="crop", owner_id="bob")
    clock.advance(60)
    palette = store.create("extract", tool_id="palette", owner_id="ann")
    clock.advance(60)
    batch = store.create("batch", tool_id="resize")
    assert store.claim(crop.id, LEASE) is not None
    store.complete(crop.id)
    store.cancel(palette.id)

    def ids(**filters: Any) -> list[str]:
        page = store.list(**filters)
        assert page.total == len(page.items)
        return [job.id for job in page.items]

    assert ids() == [batch.id, palette.id, crop.id, resize.id]  # newest first
    assert ids(status="queued") == [batch.id, resize.id]
    assert ids(status=[JobStatus.COMPLETED, "cancelled"]) == [palette.id, crop.id]
    assert ids(kind="tool") == [crop.id, resize.id]
    assert ids(kind=["extract", "batch"]) == [batch.id, palette.id]
    assert ids(tool_id="resize") == [batch.id, resize.id]
    assert ids(owner_id="ann") == [palette.id, resize.id]
    assert ids(owner_id="ann", kind="tool") == [resize.id]
    assert ids(tool_id="nothing") == []

    # Date range, both ends inclusive, in any time zone.
    assert ids(created_from=START + timedelta(seconds=60)) == [batch.id, palette.id, crop.id]
    assert ids(created_to=START + timedelta(seconds=60)) == [crop.id, resize.id]
    paris = timezone(timedelta(hours=1))
    assert ids(
        created_from=(START + timedelta(seconds=60)).astimezone(paris),
        created_to=(START + timedelta(seconds=120)).astimezone(paris),
    ) == [palette.id, crop.id]


def test_list_children_of_a_batch(store: JobStore) -> None:
    batch = store.create("batch")
    members = [store.create("tool", parent_id=batch.id) for _ in range(3)]
    store.create("tool")
    page = store.list(parent_id=batch.id, limit=100)
    assert {job.id for job in page.items} == {m.id for m in members}


def test_list_pagination(store: JobStore, clock: Clock) -> None:
    created = []
    for _ in range(7):
        created.append(store.create("tool").id)
        clock.advance(1)
    newest_first = created[::-1]
    pages = [store.list(page=n, limit=3) for n in (1, 2, 3, 4)]
    assert [page.total for page in pages] == [7, 7, 7, 7]
    assert [[job.id for job in page.items] for page in pages] == [
        newest_first[:3],
        newest_first[3:6],
        newest_first[6:],
        [],
    ]
    assert [page.has_more for page in pages] == [True, True, False, False]
    assert len(store.list(limit=100).items) == 7


def test_same_instant_jobs_page_without_overlap(store: JobStore) -> None:
    created = {store.create("tool").id for _ in range(5)}  # the clock does not move
    seen = [job.id for n in (1, 2, 3) for job in store.list(page=n, limit=2).items]
    assert len(seen) == 5 and set(seen) == created


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": True}, "limit"),
        ({"page": 0}, "page"),
        ({"page": -1}, "page"),
        ({"status": "sleeping"}, "status"),
        ({"status": []}, "status"),
        ({"kind": "painting"}, "kind"),
        ({"created_from": datetime(2025, 1, 1)}, "createdFrom"),
        ({"created_to": datetime(2025, 1, 1)}, "createdTo"),
        ({"created_from": START, "created_to": START - timedelta(seconds=1)}, "createdFrom"),
    ],
)
def test_list_refuses_bad_filters(store: JobStore, filters: dict[str, Any], field: str) -> None:
    with raises(400, "VALIDATION_ERROR") as caught:
        store.list(**filters)
    assert field in caught.value.details["fields"]


def test_list_limit_bounds_are_inclusive(store: JobStore) -> None:
    store.create("tool")
    assert store.list(limit=1).limit == 1
    assert store.list(limit=100).total == 1


# ----- pipelines ---------------------------------------------------------------------------


STEPS = [{"toolId": "resize", "settings": {"width": 800}}, {"toolId": "convert", "settings": {}}]


def test_pipeline_crud(store: JobStore) -> None:
    saved = store.save_pipeline("  Thumbnails ", STEPS, description="small webp")
    assert saved.name == "Thumbnails" and saved.steps == STEPS
    assert store.get_pipeline(saved.id).steps == STEPS
    listed = store.list_pipelines()
    assert [p.id for p in listed] == [saved.id]
    shown = pipeline_to_dict(listed[0])
    json.dumps(shown)
    assert shown["description"] == "small webp" and shown["createdAt"].endswith("Z")

    store.delete_pipeline(saved.id)
    assert store.list_pipelines() == []
    with raises(404, "PIPELINE_NOT_FOUND"):
        store.delete_pipeline(saved.id)
    with raises(404, "PIPELINE_NOT_FOUND"):
        store.get_pipeline("nope")


@pytest.mark.parametrize("owner", [None, "ann"])
def test_pipeline_names_are_unique_per_owner(store: JobStore, owner: str | None) -> None:
    store.save_pipeline("thumbs", STEPS, owner_id=owner)
    with raises(409, "PIPELINE_EXISTS"):
        store.save_pipeline("thumbs", STEPS, owner_id=owner)
    other = "bob" if owner else "ann"
    store.save_pipeline("thumbs", STEPS, owner_id=other)  # another owner's namespace
    store.save_pipeline("Thumbs", STEPS, owner_id=owner)  # names are case-sensitive
    assert len(store.list_pipelines(all_owners=True)) == 3


def test_concurrent_saves_of_one_name_have_one_winner(store: JobStore) -> None:
    outcomes = race(6, lambda: store.save_pipeline("race", STEPS, owner_id="ann"))
    saved = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, PixmillError)]
    assert len(saved) == 1 and len(refused) == 5
    assert {(e.status, e.code) for e in refused} == {(409, "PIPELINE_EXISTS")}
    assert [p.id for p in store.list_pipelines(owner_id="ann")] == [saved[0].id]


def test_pipelines_are_scoped_to_their_owner(store: JobStore) -> None:
    ann = store.save_pipeline("mine", STEPS, owner_id="ann")
    bob = store.save_pipeline("his", STEPS, owner_id="bob")
    anonymous = store.save_pipeline("anyone", STEPS)
    assert [p.id for p in store.list_pipelines(owner_id="ann")] == [ann.id]
    assert [p.id for p in store.list_pipelines()] == [anonymous.id]
    assert {p.id for p in store.list_pipelines(all_owners=True)} == {ann.id, bob.id, anonymous.id}
    with raises(404, "PIPELINE_NOT_FOUND"):  # someone else's looks like nothing at all
        store.get_pipeline(bob.id, owner_id="ann")
    with raises(404, "PIPELINE_NOT_FOUND"):
        store.delete_pipeline(bob.id, owner_id="ann")
    store.delete_pipeline(bob.id, all_owners=True)  # an admin may
    assert store.get_pipeline(ann.id, owner_id="ann").name == "mine"


@pytest.mark.parametrize(
    ("name", "steps", "field"),
    [
        ("", STEPS, "name"),
        ("   ", STEPS, "name"),
        ("x" * 201, STEPS, "name"),
        ("ok", [], "steps"),
        ("ok", "resize", "steps"),
        ("ok", {"toolId": "resize"}, "steps"),
    ],
)
def test_save_pipeline_refuses_bad_input(
    store: JobStore, name: str, steps: Any, field: str
) -> None:
    with raises(400, "VALIDATION_ERROR") as caught:
        store.save_pipeline(name, steps)
    assert field in caught.value.details["fields"]
    assert store.list_pipelines(all_owners=True) == []


def test_jobs_outlive_their_saved_pipeline(store: JobStore) -> None:
    pipeline = store.save_pipeline("p", STEPS)
    job = store.create("pipeline", pipeline_id=pipeline.id)
    assert to_dict(job)["pipelineId"] == pipeline.id
    store.delete_pipeline(pipeline.id)
    assert store.get(job.id).pipeline_id is None


def test_the_clock_must_be_timezone_aware(database: Database) -> None:
    naive = JobStore(database.sessions, clock=lambda: datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        naive.create("tool")
