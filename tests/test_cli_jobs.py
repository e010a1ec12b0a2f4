"""`pixmill jobs list|show|cancel|delete`, through click's runner, on the records a server
keeps: a real database (every test that touches one runs on SQLite and on a throwaway
PostgreSQL database, see tests/test_db.py), real blobs under tmp_path, and for cancelling a
queued job a private Redis (RQ's queue must no longer hold it afterwards).

Jobs are made the way the server makes them: `Dispatcher.submit_tool_job` run through
`worker.run_job_with` in this process (real outputs in the blob store), or `JobStore`
transitions for the states a test needs (queued, processing, failed). The store's clock is
a fake one stepping one second per call, so listing order and date filters are exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import test_db  # the database fixtures (SQLite and a throwaway PostgreSQL database)
from click.testing import CliRunner, Result
from rq import Queue

from pixmill.cli import human_size, main
from pixmill.core import dispatch
from pixmill.core.blobs import BlobKey, LocalBlobStore
from pixmill.core.config import Config
from pixmill.core.db import Database
from pixmill.core.dispatch import Dispatcher, event_channel
from pixmill.core.jobstore import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, JobStore, to_dict
from pixmill.core.models import Job, JobKind, JobStatus
from pixmill.core.plugin_host import Registry
from pixmill.core.redis_server import PrivateRedis
from pixmill.core.worker import WorkerState, run_job_with
from pixmill.testing import images

migrated_database = test_db.migrated_database
database = test_db.database

START = datetime(2024, 1, 25, 10, 0, tzinfo=UTC)
# Every variable that could point the CLI at another database or Redis than the test's.
_ISOLATED = ("DATABASE_URL", "PIXMILL_DATABASE_URL", "REDIS_URL", "PIXMILL_REDIS_URL")


class SteppingClock:
    """Each reading is one second after the previous one, from `now` (settable)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        reading = self.now
        self.now += timedelta(seconds=1)
        return reading


@dataclass
class Records:
    """What a server keeps about jobs, and the CLI invoked on it."""

    config: Config
    database_url: str
    clock: SteppingClock
    jobs: JobStore
    blobs: LocalBlobStore
    worker: WorkerState

    def cli(self, *args: str, redis_url: str | None = None) -> Result:
        env: dict[str, str | None] = dict.fromkeys(_ISOLATED)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=redis_url,
            PIXMILL_DATA_DIR=str(self.config.data_dir),
        )
        return CliRunner().invoke(main, list(args), env=env)

    def completed(self, tool_id: str = "resize", **settings: Any) -> Job:
        """A tool or extractor job run as a worker runs it, its outputs in the blob store."""
        dispatcher = Dispatcher(
            self.jobs, self.blobs, None, config=self.config, local_runner=self._run_now
        )
        if tool_id == "resize":
            settings.setdefault("width", 100)  # resize needs a target size
        definition = self.worker.registry.catalogue_entry(tool_id)
        files = {"file": [(images.jpeg(400, 300), "photo.jpg")]}
        submitted = dispatcher.submit_tool_job(definition, files, settings)
        job = self.jobs.get(submitted.id)
        assert job.status is JobStatus.COMPLETED, job.error_message
        return job

    def _run_now(self, job_id: str) -> None:
        # Synchronously, where the server's LocalRunner would use a thread.
        run_job_with(self.worker, job_id)

    def queued(self, tool_id: str = "resize") -> Job:
        return self.jobs.create(JobKind.TOOL, tool_id=tool_id, settings={"width": 10})

    def processing(self) -> Job:
        job = self.queued()
        claimed = self.jobs.claim(job.id, lease_seconds=600)
        assert claimed is not None
        return claimed

    def failed(self) -> Job:
        job = self.processing()
        return self.jobs.fail(job.id, "TOOL_FAILED", "the plugin exploded", attempt=job.attempt)


@pytest.fixture
def records(database: Database, tmp_path: Path, registry: Registry) -> Iterator[Records]:
    config = Config(data_dir=tmp_path / "data")
    clock = SteppingClock(START)
    jobs = JobStore(database.sessions, clock=clock)
    blobs = LocalBlobStore(config.blobs_dir)
    worker = WorkerState(
        config=config, registry=registry, jobstore=jobs, blobs=blobs, database=database
    )
    yield Records(
        config=config,
        database_url=database.engine.url.render_as_string(hide_password=False),
        clock=clock,
        jobs=jobs,
        blobs=blobs,
        worker=worker,
    )


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


def table_ids(result: Result) -> list[str]:
    """The ID column of `jobs list`'s table (the first line is the header)."""
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split()[:2] == ["ID", "STATUS"]
    return [row.split()[0] for row in rows]


def listed_ids(records: Records, *args: str) -> list[str]:
    result = records.cli("jobs", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return [job["id"] for job in json.loads(result.stdout)["jobs"]]


def assert_usage_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr


# ----- list ---------------------------------------------------------------------------------


def test_list_prints_a_table_newest_first(records: Records) -> None:
    done = records.completed()
    failed = records.failed()
    queued = records.queued()

    result = records.cli("jobs", "list")

    assert table_ids(result) == [queued.id, failed.id, done.id]
    rows = {row.split()[0]: row.split() for row in result.stdout.splitlines()[1:]}
    assert rows[done.id][1:5] == ["completed", "tool", "resize", "100%"]
    assert rows[failed.id][1] == "failed"
    assert rows[queued.id][1:5] == ["queued", "tool", "resize", "0%"]
    created = done.created_at.strftime("%Y-%m-%d %H:%M:%S")
    assert created in " ".join(rows[done.id])
    assert result.stderr.strip() == "page 1 of 1, 3 jobs"


def test_list_marks_a_running_job_asked_to_stop(records: Records) -> None:
    job = records.processing()
    records.jobs.cancel(job.id)

    result = records.cli("jobs", "list")

    assert table_ids(result) == [job.id]
    assert "processing (cancelling)" in result.stdout


def test_list_json_is_the_rest_listing(records: Records) -> None:
    jobs = [records.completed(), records.queued()]

    result = records.cli("jobs", "list", "--json")

    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    expected = [json.loads(json.dumps(to_dict(records.jobs.get(j.id)))) for j in reversed(jobs)]
    assert listing["jobs"] == expected
    assert listing["pagination"] == {
        "page": 1,
        "limit": DEFAULT_PAGE_LIMIT,
        "total": 2,
        "pages": 1,
        "hasMore": False,
    }


def test_list_filters_by_status_kind_and_tool(records: Records) -> None:
    resized = records.completed("resize", width=50)
    extracted = records.completed("info")
    failed = records.failed()
    queued = records.queued("rotate")

    assert listed_ids(records, "--status", "failed") == [failed.id]
    both = [failed.id, extracted.id, resized.id]
    assert listed_ids(records, "--status", "completed,failed") == both
    assert listed_ids(records, "--status", "completed", "--status", "failed") == both
    assert listed_ids(records, "--kind", "extract") == [extracted.id]
    assert listed_ids(records, "--tool", "rotate") == [queued.id]
    assert listed_ids(records, "--tool", "resize", "--status", "completed") == [resized.id]
    assert listed_ids(records, "--tool", "crop") == []

    empty = records.cli("jobs", "list", "--tool", "crop")
    assert empty.exit_code == 0
    assert empty.stdout == ""
    assert empty.stderr.strip() == "no jobs matching the filters"


def test_list_filters_by_creation_time(records: Records) -> None:
    records.clock.now = datetime(2024, 1, 24, 23, 59, 58, tzinfo=UTC)
    before = records.queued()
    records.clock.now = datetime(2024, 1, 25, 12, 0, tzinfo=UTC)
    during = records.queued()
    records.clock.now = datetime(2024, 1, 26, 0, 0, 0, tzinfo=UTC)
    after = records.queued()

    # A bare --until date includes that whole day; a bare --since date starts at midnight.
    assert listed_ids(records, "--since", "2024-01-25", "--until", "2024-01-25") == [during.id]
    assert listed_ids(records, "--until", "2024-01-25") == [during.id, before.id]
    assert listed_ids(records, "--since", "2024-01-25T12:00:00Z") == [after.id, during.id]
    # An offset is honoured: 13:00 at +01:00 is 12:00 UTC.
    assert listed_ids(records, "--since", "2024-01-25T13:00:01+01:00") == [after.id]


def test_list_pages(records: Records) -> None:
    made = [records.queued() for _ in range(5)]
    newest_first = [job.id for job in reversed(made)]

    first = records.cli("jobs", "list", "--limit", "2")
    assert table_ids(first) == newest_first[:2]
    assert first.stderr.strip() == "page 1 of 3, 5 jobs; --page 2 for more"

    last = records.cli("jobs", "list", "--limit", "2", "--page", "3")
    assert table_ids(last) == newest_first[4:]
    assert last.stderr.strip() == "page 3 of 3, 5 jobs"

    beyond = records.cli("jobs", "list", "--limit", "2", "--page", "9")
    assert beyond.exit_code == 0
    assert beyond.stdout == ""
    assert beyond.stderr.strip() == "page 9 is past the last page (3) of 5 jobs"

    listing = json.loads(
        records.cli("jobs", "list", "--json", "--limit", "2", "--page", "2").stdout
    )
    assert [job["id"] for job in listing["jobs"]] == newest_first[2:4]
    assert listing["pagination"]["hasMore"] is True


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--status", "done"], ["--status 'done'", "queued, processing, completed"]),
        (["--status", "failed,"], ["--status 'failed,'"]),
        (["--kind", "image"], ["--kind 'image'", "tool, pipeline, batch"]),
        (["--tool", "Resize_Now"], ["--tool 'Resize_Now'", "must be a tool id"]),
        (["--since", "yesterday"], ["--since 'yesterday'", "ISO 8601"]),
        (["--until", "2024-13-45"], ["--until '2024-13-45'", "ISO 8601"]),
        (["--limit", "0"], ["--limit '0'", f"between 1 and {MAX_PAGE_LIMIT}"]),
        (["--limit", str(MAX_PAGE_LIMIT + 1)], ["--limit", f"between 1 and {MAX_PAGE_LIMIT}"]),
        (["--limit", "ten"], ["--limit 'ten'"]),
        (["--page", "0"], ["--page '0'", "integer between 1"]),
        (["--since", "2024-02-01", "--until", "2024-01-31"], ["--since must not be after --until"]),
        # Every bad option is named at once, in the order of the options.
        (["--page", "-1", "--status", "nope"], ["--status 'nope'", "; --page '-1'"]),
    ],
)
def test_list_refuses_bad_filters_as_usage_errors(
    args: list[str], fragments: list[str], tmp_path: Path
) -> None:
    # Checked before the database is opened: pointing at none proves it is never reached.
    env: dict[str, str | None] = dict.fromkeys(_ISOLATED)
    env["DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/nothing"
    env["PIXMILL_DATA_DIR"] = str(tmp_path)
    result = CliRunner().invoke(main, ["jobs", "list", *args], env=env)
    assert_usage_error(result, *fragments)


def test_list_help_states_the_listing_bounds() -> None:
    result = CliRunner().invoke(main, ["jobs", "list", "--help"])
    assert result.exit_code == 0
    assert f"1 to {MAX_PAGE_LIMIT}, default {DEFAULT_PAGE_LIMIT}" in result.stdout


def test_list_reads_the_data_dirs_own_database(tmp_path: Path) -> None:
    # No DATABASE_URL: the zero-configuration SQLite file in the data dir, given by flag.
    data_dir = tmp_path / "server-data"
    database = Database.from_config(Config(data_dir=data_dir))
    try:
        job = JobStore(database.sessions).create(JobKind.TOOL, tool_id="resize")
    finally:
        database.dispose()
    env: dict[str, str | None] = dict.fromkeys(_ISOLATED)
    env["PIXMILL_DATA_DIR"] = str(tmp_path / "elsewhere")
    result = CliRunner().invoke(main, ["jobs", "list", "--data-dir", str(data_dir)], env=env)
    assert table_ids(result) == [job.id]


def test_an_unreachable_database_is_one_error_line(tmp_path: Path) -> None:
    env: dict[str, str | None] = dict.fromkeys(_ISOLATED)
    env["DATABASE_URL"] = "postgresql://pixmill:s3cret@127.0.0.1:1/jobs"
    env["PIXMILL_DATA_DIR"] = str(tmp_path)
    for args in (["list"], ["show", "0" * 32], ["cancel", "0" * 32]):
        result = CliRunner().invoke(main, ["jobs", *args], env=env)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("error: cannot open the job database ")
        assert "127.0.0.1:1/jobs" in result.stderr
        assert "s3cret" not in result.output
        assert "Traceback" not in result.output


# ----- show ---------------------------------------------------------------------------------


def test_show_a_tool_job_with_its_output_on_disk(records: Records) -> None:
    job = records.completed("resize", width=100)
    [output] = job.outputs
    on_disk = records.blobs.path(BlobKey.parse(output["key"]))

    result = records.cli("jobs", "show", job.id)

    assert result.exit_code == 0, result.output
    facts = dict(line.split(None, 1) for line in result.stdout.split("\n\n")[0].splitlines())
    assert facts["job"] == job.id
    assert facts["kind"] == "tool (resize)"
    assert facts["status"] == "completed"
    assert facts["progress"] == "100%"
    assert facts["attempt"] == f"1 of {job.max_attempts}, queue {job.queue}"
    assert facts["created"] == job.created_at.strftime("%Y-%m-%d %H:%M:%S") + " UTC"
    assert "finished" in facts and "duration" in facts
    assert json.loads(facts["settings"])["width"] == 100
    [upload] = job.inputs
    assert f"photo.jpg  {human_size(upload['size'])}  {upload['format']}" in result.stdout
    output_line = next(line for line in result.stdout.splitlines() if str(on_disk) in line)
    assert output_line.split()[0] == output["filename"]
    assert f"/api/v1/download/{job.id}/<filename>" in result.stdout
    # The path shown is the result itself.
    assert images.decode(on_disk.read_bytes()).size == (100, 75)


def test_show_json_adds_paths_and_download_urls(records: Records) -> None:
    job = records.completed("resize", width=100)

    result = records.cli("jobs", "show", job.id, "--json")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    [output] = job.outputs
    [file] = shown["results"].pop("files")
    expected = json.loads(json.dumps(to_dict(job)))
    expected["results"].pop("files")
    assert shown == expected
    assert file == {
        "filename": output["filename"],
        "size": output["size"],
        "format": output["format"],
        "available": True,
        "path": str(records.blobs.path(BlobKey.parse(output["key"]))),
        "downloadUrl": f"/api/v1/download/{job.id}/{output['filename']}",
    }


def test_show_an_extractor_job_prints_its_json(records: Records) -> None:
    job = records.completed("info")
    assert job.result is not None

    text = records.cli("jobs", "show", job.id)
    shown = json.loads(records.cli("jobs", "show", job.id, "--json").stdout)

    assert text.exit_code == 0, text.output
    result_text = text.stdout.split("\nresult:\n", 1)[1]
    assert json.loads(result_text) == json.loads(json.dumps(job.result))
    assert shown["result"] == json.loads(json.dumps(job.result))
    assert shown["kind"] == "extract"


def test_show_a_failed_job_prints_its_error(records: Records) -> None:
    job = records.failed()

    result = records.cli("jobs", "show", job.id)

    assert result.exit_code == 0, result.output
    assert "error     TOOL_FAILED: the plugin exploded" in result.stdout
    assert "status    failed" in result.stdout


def test_show_an_output_no_longer_stored(records: Records) -> None:
    job = records.completed("resize", width=40)
    [output] = job.outputs
    records.blobs.delete(BlobKey.parse(output["key"]))

    text = records.cli("jobs", "show", job.id)
    [file] = json.loads(records.cli("jobs", "show", job.id, "--json").stdout)["results"]["files"]

    assert text.exit_code == 0, text.output
    assert "no longer stored" in text.stdout
    assert "/api/v1/download/" not in text.stdout
    assert file["available"] is False
    assert file["path"] is None and file["downloadUrl"] is None


def test_show_progress_of_a_counted_job(records: Records) -> None:
    job = records.jobs.create(JobKind.BATCH, progress_total=8)
    claimed = records.jobs.claim(job.id, lease_seconds=600)
    assert claimed is not None
    records.jobs.heartbeat(job.id, 600, current=2, message="2 of 8 files")

    result = records.cli("jobs", "show", job.id)

    assert result.exit_code == 0, result.output
    assert "progress  2/8 (25%)" in result.stdout
    assert "message   2 of 8 files" in result.stdout


def test_unknown_job_is_exit_1_with_the_404_message(records: Records) -> None:
    unknown = "f" * 32
    for command in ("show", "cancel", "delete"):
        result = records.cli("jobs", command, unknown)
        assert result.exit_code == 1, result.output
        assert result.stderr.strip() == "error: no such job"


@pytest.mark.parametrize("command", ["show", "cancel", "delete"])
@pytest.mark.parametrize(
    "bad_id", ["xyz", "F" * 32, "0" * 31, "0" * 33, "../" + "0" * 29, "0" * 31 + "g"]
)
def test_malformed_job_id_is_a_usage_error(command: str, bad_id: str, tmp_path: Path) -> None:
    env: dict[str, str | None] = dict.fromkeys(_ISOLATED)
    env["PIXMILL_DATA_DIR"] = str(tmp_path)
    result = CliRunner().invoke(main, ["jobs", command, bad_id], env=env)
    assert_usage_error(result, "Invalid value for 'ID'", "is not a job id")
    assert not (tmp_path / "pixmill.db").exists()  # refused before opening any database


# ----- cancel -------------------------------------------------------------------------------


def test_cancel_a_queued_job_takes_it_off_redis(
    records: Records, conn: redis.Redis, private_redis: PrivateRedis
) -> None:
    job = records.queued()
    dispatch.enqueue(conn, job)
    queue = Queue(job.queue, connection=conn)
    assert job.id in queue.job_ids
    events = conn.pubsub()
    events.subscribe(event_channel(job.id))
    subscribed = events.get_message(timeout=5)
    assert subscribed is not None and subscribed["type"] == "subscribe"

    result = records.cli("jobs", "cancel", job.id, redis_url=private_redis.url)

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"job {job.id} cancelled"
    assert records.jobs.get(job.id).status is JobStatus.CANCELLED
    assert job.id not in queue.job_ids
    assert queue.count == 0
    message = events.get_message(timeout=5)
    assert message is not None, "no event was published"
    payload = json.loads(message["data"])
    # The event inside whatever envelope dispatch.publish wraps it in for SSE consumers.
    event = payload.get("data", payload)
    assert (event["jobId"], event["status"]) == (job.id, "cancelled")
    events.close()


def test_cancel_a_queued_job_without_redis_is_never_run(records: Records) -> None:
    job = records.queued()

    result = records.cli("jobs", "cancel", job.id)

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"job {job.id} cancelled"
    # A worker that picks the id up anyway (a queue the CLI could not reach) cannot claim it.
    assert run_job_with(records.worker, job.id) is None
    after = records.jobs.get(job.id)
    assert after.status is JobStatus.CANCELLED
    assert after.attempt == 0 and after.outputs == []


def test_cancel_with_redis_down_still_cancels_the_row(records: Records) -> None:
    # The row is the truth: a worker that dequeues the id later cannot claim it.
    job = records.queued()

    result = records.cli("jobs", "cancel", job.id, redis_url="redis://127.0.0.1:1/0")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"job {job.id} cancelled"
    assert f"warning: could not take cancelled job {job.id} off Redis" in result.stderr
    assert records.jobs.get(job.id).status is JobStatus.CANCELLED


def test_cancel_a_running_job_requests_it(records: Records) -> None:
    job = records.processing()

    first = records.cli("jobs", "cancel", job.id)
    again = records.cli("jobs", "cancel", job.id)

    for result in (first, again):
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"job {job.id}: cancel requested")
    after = records.jobs.get(job.id)
    assert after.status is JobStatus.PROCESSING
    assert after.cancel_requested is True
    assert "status    processing, cancel requested" in records.cli("jobs", "show", job.id).stdout


def test_cancel_a_finished_job_is_exit_1_with_the_409_message(records: Records) -> None:
    completed = records.completed()
    failed = records.failed()
    cancelled = records.jobs.cancel(records.queued().id)
    for job, status in ((completed, "completed"), (failed, "failed"), (cancelled, "cancelled")):
        result = records.cli("jobs", "cancel", job.id)
        assert result.exit_code == 1, result.output
        assert result.stderr.strip() == f"error: job is already {status}"
        assert records.jobs.get(job.id).status is job.status


# ----- delete -------------------------------------------------------------------------------


def test_delete_a_finished_job_removes_record_and_files(records: Records) -> None:
    job = records.completed()
    assert records.blobs.list_job(job.id)

    result = records.cli("jobs", "delete", job.id)

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"job {job.id} deleted"
    assert records.blobs.list_job(job.id) == []
    assert records.cli("jobs", "show", job.id).exit_code == 1
    assert listed_ids(records) == []


def test_delete_a_queued_job_cancels_it_first(records: Records) -> None:
    job = records.queued()
    result = records.cli("jobs", "delete", job.id)
    assert result.exit_code == 0, result.output
    assert listed_ids(records) == []


def test_delete_a_running_job_is_refused_and_asks_it_to_stop(records: Records) -> None:
    job = records.processing()

    result = records.cli("jobs", "delete", job.id)

    assert result.exit_code == 1, result.output
    assert "the job is running" in result.stderr
    after = records.jobs.get(job.id)
    assert after.status is JobStatus.PROCESSING
    assert after.cancel_requested is True
