"""`pixmill jobs list`, `show`, `cancel` and `delete`: the server's job records."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pixmill.cli.common import dump_json, human_size, load_config, main, render_table, warn
from pixmill.core.errors import PixmillError
from pixmill.core.plugin_host import Registry

if TYPE_CHECKING:  # imported inside the commands when they run
    from pixmill.core.blobs import BlobStore
    from pixmill.core.jobstore import JobPage
    from pixmill.core.models import Job
    from pixmill.server.jobs import ListingQuery
    from pixmill.server.state import AppState


# --- jobs ------------------------------------------------------------------------------------
#
# The jobs commands read and change the server's job records directly: its database
# (DATABASE_URL, or pixmill.db in the data dir), its blob store (the data dir) and its Redis
# (REDIS_URL), through the same `JobStore`, `Dispatcher.cancel` and REST helpers as the
# `/api/v1/jobs` routes, so a job reads and behaves the same here as over HTTP. Those modules
# pull in SQLAlchemy, RQ and Flask: they are imported inside the commands, as `serve` does.

# The REST listing's query parameters and the options that give them here: the listing's own
# parsers check the options, and the messages name what the user typed.
_LISTING_OPTIONS = {
    "status": "--status",
    "kind": "--kind",
    "tool": "--tool",
    "from": "--since",
    "to": "--until",
    "limit": "--limit",
    "page": "--page",
}


def _job_id_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A malformed id is a typo in the command (exit 2), not a job that does not exist."""
    from pixmill.core.blobs import is_valid_job_id

    if not is_valid_job_id(value):
        raise click.BadParameter(
            f"{value!r} is not a job id: ids are 32 lowercase hex characters, as "
            "`pixmill jobs list` shows them",
            ctx=ctx,
            param=param,
        )
    return value


_job_id = click.argument("job_id", metavar="ID", callback=_job_id_argument)
_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The server's data dir: its results, and its SQLite database unless DATABASE_URL "
    "is set. [env PIXMILL_DATA_DIR]",
)


@contextlib.contextmanager
def job_records(data_dir: Path | None) -> Iterator[AppState]:
    """The server's job records as an `AppState`, the object the REST helpers take.

    Opening the database brings its schema to the newest revision, as the server and the
    worker do when they start (idempotent, and safe next to a running server). Without
    REDIS_URL the dispatcher has no queue and cancelling is the row's change alone, which is
    enough: a row cancelled while queued is never claimed. Database failures become one
    `error:` line and exit 1, never a traceback.
    """
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from pixmill.core.blobs import LocalBlobStore
    from pixmill.core.db import Database
    from pixmill.core.dispatch import Dispatcher, connect
    from pixmill.core.dispatch import log as dispatch_log
    from pixmill.core.jobstore import JobStore
    from pixmill.server.state import AppState

    config = load_config(data_dir=data_dir)
    where = _printable_database_url(config.sqlalchemy_url)
    try:
        database = Database.from_config(config)
    except (SQLAlchemyError, CommandError, OSError) as exc:
        raise _database_error(f"cannot open the job database {where}", exc) from None
    connection = connect(config.redis_url) if config.redis_url else None
    try:
        jobstore = JobStore(database.sessions)
        blobs = LocalBlobStore(config.blobs_dir)
        dispatcher = Dispatcher(
            jobstore, blobs, None, config=config, connection=connection, local_runner=_no_runs
        )
        # The dispatcher logs Redis trouble and goes on (the row is the truth): say so here.
        with _log_records_as_warnings(dispatch_log):
            yield AppState(
                config=config,
                registry=Registry(),  # no plugins: these commands touch records only
                blobs=blobs,
                db=database,
                jobs=jobstore,
                dispatcher=dispatcher,
                redis=connection,
            )
    except SQLAlchemyError as exc:
        raise _database_error(f"the job database {where} failed", exc) from None
    finally:
        if connection is not None:
            connection.close()
        database.dispose()


@contextlib.contextmanager
def _log_records_as_warnings(logger: logging.Logger) -> Iterator[None]:
    """`logger`'s warnings and errors as `warning:` lines on stderr, like the CLI's own."""
    handler = _WarningLines(logging.WARNING)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class _WarningLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        warn(f"warning: {record.getMessage()}")


def _no_runs(job_id: str) -> None:
    # A Dispatcher without Redis wants a local runner; the jobs commands never enqueue.
    raise RuntimeError(f"pixmill jobs does not run jobs (asked to run {job_id})")


def _printable_database_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # unparsable: opening it reports why; never echo a password
        return "named by DATABASE_URL"


def _database_error(what: str, exc: BaseException) -> PixmillError:
    # The driver's own first line says what is wrong (refused, unknown database, ...); the
    # rest of SQLAlchemy's text is the statement and a link, noise on a command line.
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return PixmillError(
        f"{what}: {lines[0] if lines else type(exc).__name__}",
        code="DATABASE_UNAVAILABLE",
        status=503,
    )


def parse_job_filters(
    status: Sequence[str],
    kind: Sequence[str],
    tool: str | None,
    since: str | None,
    until: str | None,
    limit: str | None,
    page: str | None,
) -> ListingQuery:
    """The options of `jobs list` checked by the REST listing's parsers (the same values,
    bounds and messages as GET /api/v1/jobs); every bad one is named in one usage error."""
    from pixmill.server.jobs import QueryErrors, parse_listing

    given = {
        "status": ",".join(status) if status else None,
        "kind": ",".join(kind) if kind else None,
        "tool": tool,
        "from": since,
        "to": until,
        "limit": limit,
        "page": page,
    }
    args = {name: value for name, value in given.items() if value is not None}
    errors = QueryErrors()
    query = parse_listing(args, errors)
    problems = [
        f"{option} {args[name]!r}: {errors.fields[name][0]}"
        for name, option in _LISTING_OPTIONS.items()
        if name in errors.fields
    ]
    # Checked here rather than by the REST `check_range`, whose message names `from`/`to`.
    if query.created_from and query.created_to and query.created_from > query.created_to:
        problems.append("--since must not be after --until")
    if problems:
        raise click.UsageError("; ".join(problems))
    return query


@main.group(short_help="List, show, cancel and delete jobs.")
def jobs() -> None:
    """The server's jobs: queued work and the record of every tool call.

    Reads the database, data dir and Redis of `pixmill serve` (DATABASE_URL,
    PIXMILL_DATA_DIR or --data-dir, REDIS_URL). Times are UTC.
    """


@jobs.command("list", short_help="List jobs, newest first (filters, pages, --json).")
@click.option(
    "--status",
    multiple=True,
    metavar="STATUS[,...]",
    help="queued, processing, completed, failed, cancelled (repeatable or comma-separated).",
)
@click.option(
    "--kind",
    multiple=True,
    metavar="KIND[,...]",
    help="tool, extract, batch, pipeline, fetch (repeatable or comma-separated).",
)
@click.option("--tool", metavar="TOOL", help="Only the jobs of this tool or extractor id.")
@click.option(
    "--since",
    metavar="WHEN",
    help="Created at or after this ISO 8601 date or date-time (UTC unless it has an offset).",
)
@click.option(
    "--until", metavar="WHEN", help="Created at or before this; a bare date includes its day."
)
@click.option("--limit", metavar="N", help="Jobs per page: 1 to 100, default 20.")
@click.option("--page", metavar="N", help="Which page, from 1 (newest jobs first).")
@click.option("--json", "as_json", is_flag=True, help="Print the REST listing's JSON.")
@_data_dir_option
def jobs_list(
    status: tuple[str, ...],
    kind: tuple[str, ...],
    tool: str | None,
    since: str | None,
    until: str | None,
    limit: str | None,
    page: str | None,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    """List jobs, newest first, a page at a time: a table, or --json for scripts.

    The filters are those of GET /api/v1/jobs, and combine: --status failed --tool resize
    --since 2024-01-25.
    """
    from pixmill.core.jobstore import to_dict
    from pixmill.server.jobs import list_jobs_page, pagination

    query = parse_job_filters(status, kind, tool, since, until, limit, page)
    with job_records(data_dir) as state:
        listing = list_jobs_page(state.jobs, query)
    if as_json:
        jobs_json = [to_dict(job) for job in listing.items]
        click.echo(dump_json({"jobs": jobs_json, "pagination": pagination(listing)}))
        return
    if listing.items:
        header = ("ID", "STATUS", "KIND", "TOOL", "PROGRESS", "CREATED (UTC)", "DURATION")
        for line in render_table(header, [_job_row(job) for job in listing.items]):
            click.echo(line)
    filtered = any((status, kind, tool, since, until))
    click.echo(_listing_summary(listing, filtered=filtered), err=True)


def _job_row(job: Job) -> tuple[str, ...]:
    status = str(job.status)
    if job.cancel_requested and not job.is_final:
        status += " (cancelling)"
    return (
        job.id,
        status,
        str(job.kind),
        job.tool_id or "-",
        _progress_text(job),
        _utc_text(job.created_at),
        _duration_text(job),
    )


def _listing_summary(listing: JobPage, *, filtered: bool) -> str:
    """The line under the table (on stderr, so stdout stays the table)."""
    matching = " matching the filters" if filtered else ""
    if listing.total == 0:
        return f"no jobs{matching}"
    pages = -(-listing.total // listing.limit)
    noun = "job" if listing.total == 1 else "jobs"
    if not listing.items:
        return f"page {listing.page} is past the last page ({pages}) of {listing.total} {noun}"
    text = f"page {listing.page} of {pages}, {listing.total} {noun}{matching}"
    return text + (f"; --page {listing.page + 1} for more" if listing.has_more else "")


def _progress_text(job: Job) -> str:
    percent = f"{round(job.progress * 100)}%"
    if job.progress_total is not None and job.progress_current is not None:
        return f"{job.progress_current}/{job.progress_total} ({percent})"
    return percent


def _utc_text(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration_text(job: Job) -> str:
    if job.started_at is None or job.finished_at is None:
        return "-"
    seconds = (job.finished_at - job.started_at).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


@jobs.command("show", short_help="One job: progress, timings, files, result, error.")
@_job_id
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the job as GET /api/v1/jobs/ID does, its output files with their paths.",
)
@_data_dir_option
def jobs_show(job_id: str, as_json: bool, data_dir: Path | None) -> None:
    """Show one job: status, progress, timings, inputs, outputs (their files on disk and
    download paths) or the extracted JSON, and the error of a failed job."""
    from pixmill.core.jobstore import to_dict

    with job_records(data_dir) as state:
        job = state.jobs.get(job_id)
        files = output_files(state.blobs, job)
    if as_json:
        shown = to_dict(job)
        shown["results"]["files"] = files
        click.echo(dump_json(shown))
        return
    for line in job_lines(job, files):
        click.echo(line)


def output_files(blobs: BlobStore, job: Job) -> list[dict[str, Any]]:
    """The job's output files, each with where it lies on disk and the server's download
    path; `available` is false (and both null) once the file is gone (expired, deleted, or
    an inline result sent back in the response and never kept)."""
    from pixmill.core.blobs import BlobKey, LocalBlobStore
    from pixmill.core.dispatch import download_url
    from pixmill.core.errors import NotFoundError

    files = []
    for ref in job.outputs:
        path: Path | None = None
        try:
            key = BlobKey.parse(ref["key"])
            if isinstance(blobs, LocalBlobStore):
                path = blobs.path(key)
            available = path is not None or blobs.exists(key)
        except NotFoundError:  # no longer stored, or a key that is not a blob's
            available = False
        files.append(
            {
                "filename": ref["filename"],
                "size": ref["size"],
                "format": ref.get("format"),
                "available": available,
                "path": str(path) if path is not None else None,
                "downloadUrl": download_url(job.id, ref["filename"]) if available else None,
            }
        )
    return files


def job_lines(job: Job, files: Sequence[Mapping[str, Any]]) -> list[str]:
    """`jobs show` as text: one `label  value` line per fact, then the files and result."""
    from pixmill.core.models import JobStatus

    facts: list[tuple[str, str]] = [("job", job.id)]
    facts.append(("kind", str(job.kind) + (f" ({job.tool_id})" if job.tool_id else "")))
    status = str(job.status)
    if job.cancel_requested and not job.is_final:
        status += ", cancel requested"
    facts.append(("status", status))
    facts.append(("progress", _progress_text(job)))
    if job.message:
        facts.append(("message", job.message))
    for label, related in (("pipeline", job.pipeline_id), ("parent", job.parent_id)):
        if related:
            facts.append((label, related))
    facts.append(("attempt", f"{job.attempt} of {job.max_attempts}, queue {job.queue}"))
    facts.append(("created", _utc_text(job.created_at) + " UTC"))
    if job.started_at is not None:
        facts.append(("started", _utc_text(job.started_at) + " UTC"))
    if job.finished_at is not None:
        facts.append(("finished", _utc_text(job.finished_at) + " UTC"))
        facts.append(("duration", _duration_text(job)))
    if job.settings:
        facts.append(("settings", json.dumps(job.settings, ensure_ascii=False)))
    if job.error_code is not None:
        facts.append(("error", f"{job.error_code}: {job.error_message}"))
    width = max(len(label) for label, _ in facts)
    lines = [f"{label.ljust(width)}  {value}" for label, value in facts]

    lines += ["", f"inputs: {_count(len(job.inputs), 'file')}, {human_size(job.input_size)}"]
    input_rows = [
        (str(ref["filename"]), human_size(int(ref["size"])), str(ref.get("format") or "-"))
        for ref in job.inputs
    ]
    lines += _indented_rows(input_rows)

    if files:
        lines += ["", f"outputs: {_count(len(files), 'file')}, {human_size(job.output_size)}"]
        output_rows = [
            (
                str(file["filename"]),
                human_size(int(file["size"])),
                str(file["format"] or "-"),
                str(file["path"] or file["downloadUrl"] or "no longer stored"),
            )
            for file in files
        ]
        lines += _indented_rows(output_rows)
        if any(file["available"] for file in files):
            lines.append(f"  the server serves them at {_download_pattern(job.id)}")
    elif job.status is JobStatus.COMPLETED and job.result is None:
        lines += ["", "outputs: none"]
    if job.result is not None:
        lines += ["", "result:"]
        lines += ["  " + line for line in dump_json(job.result).splitlines()]
    return lines


def _indented_rows(rows: Sequence[Sequence[str]]) -> list[str]:
    """Aligned columns under a heading line, without a header row of their own."""
    if not rows:
        return []
    return ["  " + line for line in render_table([""] * len(rows[0]), rows)[1:]]


def _download_pattern(job_id: str) -> str:
    from pixmill.core.dispatch import download_url

    return download_url(job_id, "<filename>")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@jobs.command("cancel", short_help="Cancel a queued job, or ask a running one to stop.")
@_job_id
@_data_dir_option
def jobs_cancel(job_id: str, data_dir: Path | None) -> None:
    """Cancel a job. A queued job is cancelled at once and taken off its queue; a running one
    is asked to stop and does at its next cancellation check. A finished or unknown job is
    an error (exit 1)."""
    from pixmill.core.models import JobStatus

    with job_records(data_dir) as state:
        job = state.dispatcher.cancel(job_id)
    if job.status is JobStatus.CANCELLED:
        click.echo(f"job {job.id} cancelled")
    else:
        click.echo(
            f"job {job.id}: cancel requested; it stops at its next cancellation check "
            f"(`pixmill jobs show {job.id}` tells when)"
        )


@jobs.command("delete", short_help="Delete a finished job's record and files.")
@_job_id
@_data_dir_option
def jobs_delete(job_id: str, data_dir: Path | None) -> None:
    """Delete a job's record and its files (and those of its child jobs). A queued job is
    cancelled first; a running one is asked to stop and refused (exit 1): delete it again
    once it has stopped."""
    from pixmill.server.jobs import delete_job_and_blobs

    with job_records(data_dir) as state:
        delete_job_and_blobs(state, job_id)
    click.echo(f"job {job_id} deleted")
