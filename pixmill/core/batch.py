"""Batches: many files in one call, each file a job of its own, one ZIP of the results.

A batch is a parent job (kind `batch`) with one member job per input file (`parent_id` = the
batch). Members are ordinary runnable jobs (a tool or extractor call here; a pipeline run
for `/pipeline/batch`), so they spread over the workers, retry, time out and reuse cached
results exactly like single calls. The batch itself does no work until every member has
finished; then one worker builds the ZIP from the members' results.

Submitting (`submit_batch` for a tool, `submit_members` for any kind of member):

- Everything that concerns the whole batch is checked before anything is written: the number
  of files (none, or more than `MAX_BATCH_SIZE`: 400), the settings (400), file parts the
  tool does not take (400), shared extra files (e.g. a `watermark`) in a format the tool
  cannot read (415). A member file that is not an image of an allowed format (415, among
  them every archive: batches do not unpack ZIPs) or is empty (400) does not sink the batch:
  its member is recorded failed with that error at once, and the others run.
- The batch row is committed first (the members point to it), then one row per member,
  then every queued member is enqueued, then the batch itself, last.
- The batch's `inputs` list each member's file, in input order: the reference's key is the
  member's first upload (`uploads/<memberId>/000-file`), so it names the member job. This is
  what orders the ZIP (creation times could tie or step back with the clock), and what tells
  a member that does not exist yet from one that was deleted.

Running (`pixmill.core.worker` calls into this module):

- A batch is safe to run any number of times. `is_waiting` is asked before a claim: while a
  member is unfinished the batch is left queued and the run returns at once, costing no
  attempt. The worker that brings a member to its end calls `member_finished`, which records
  the progress on the batch (an event in its history, and a progress message on its channel)
  and wakes the batch once no member is left. The reconciler re-enqueues a waiting batch on
  every pass (it is queued and not in Redis), which catches any wake-up that was lost (a
  worker killed between the two, a member ended by the reconciler itself).
- `assemble` (the batch's work, once claimed) writes the ZIP: one entry per member that
  produced something, in input order, named after the member's output with names made
  unique (`photo.jpg`, `photo-2.jpg`; compared without case, so the ZIP unpacks on any file
  system), extractor results as `<stem>.json`, and `manifest.json` listing every input with
  its status, output name, sizes and error. The manifest is also the batch's `result`, so
  `GET /api/v1/jobs/<id>/results` and the final progress event carry it too.
- Member names come from blob keys, which never contain a path separator, so the ZIP holds
  no `../` or absolute names.

Cancelling a batch cancels its unfinished members (`Dispatcher.cancel`).

Progress of a waiting batch is written as history events and published, but the row's
`progress` moves only once the batch runs: `JobStore` records progress on processing rows
only, and a waiting batch is queued.

This module imports nothing from `pixmill.server`, `pixmill.cli`, `pixmill.plugins` or
`pixmill.core.worker`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import IO, Any

from pixmill.core.blobs import BlobKey, BlobStore, is_valid_job_id, safe_filename
from pixmill.core.catalogue import inputs_of
from pixmill.core.config import Config
from pixmill.core.contracts import Extractor, Inputs, Tool
from pixmill.core.defaults import JOB_TIMEOUT_S
from pixmill.core.dispatch import (
    DEFAULT_QUEUE,
    Dispatcher,
    checked_settings,
    publish,
    tool_timeout,
)
from pixmill.core.errors import (
    BadRequestError,
    CancelledError,
    NotFoundError,
    PixmillError,
)
from pixmill.core.execution import UploadedFile, build_inputs, safe_stem
from pixmill.core.imageio import sniff_format
from pixmill.core.jobstore import JobStore
from pixmill.core.models import Job, JobKind, JobStatus, new_id, utcnow

log = logging.getLogger(__name__)

MAIN_PART = "file"
MANIFEST_NAME = "manifest.json"
ARCHIVE_FORMAT = "zip"
# A member's file is always its first upload (see `_main_first`).
MEMBER_UPLOAD_NAME = f"000-{MAIN_PART}"
# A member row missing this long after its batch was created will never appear: the process
# submitting the batch died half way, or the member was deleted on its own. The batch then
# goes ahead and reports it. Far beyond the seconds a submission takes, so a slow one is
# never taken for a dead one.
SUBMIT_GRACE_S = 600.0
# Images are compressed already: deflating them again costs time and saves nothing.
_DEFLATED_FORMATS = frozenset({"json", "bmp", "tiff", "ico"})
_COPY_CHUNK = 1024 * 1024
# The ZIP is built in memory up to this size, then in a temporary file.
_SPOOL_BYTES = 16 * 1024 * 1024


# ----- submitting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchMember:
    """One input file of a batch: how to create its job, or why it was refused.

    `create(batch_id, member_id)` stores the member's inputs and commits its row under
    exactly `member_id` with `parent_id=batch_id`, without enqueuing it; the row may come
    back completed (a cached result). `refusal` is the error of a file refused at submission
    (unsupported format, empty): its member is recorded failed with it and never runs.
    """

    filename: str
    size: int
    format: str | None
    create: Callable[[str, str], Job] | None = None
    refusal: PixmillError | None = None
    timeout_s: float = JOB_TIMEOUT_S

    def __post_init__(self) -> None:
        if (self.create is None) == (self.refusal is None):
            raise ValueError("a batch member has either a way to create its job or a refusal")


def check_batch_size(count: int, config: Config) -> None:
    """400 for a batch without files or with more than `MAX_BATCH_SIZE`."""
    if count == 0:
        raise BadRequestError(
            "a batch needs at least one file: send each as a `files` part",
            code="MISSING_FILE",
            details={"field": "files"},
        )
    if count > config.max_batch_size:
        raise BadRequestError(
            f"a batch takes at most {config.max_batch_size} files (MAX_BATCH_SIZE), got {count}",
            code="TOO_MANY_FILES",
            details={"field": "files", "maxBatchSize": config.max_batch_size, "received": count},
        )


def submit_batch(
    dispatcher: Dispatcher,
    definition: Tool | Extractor,
    files: Sequence[UploadedFile],
    raw_settings: Mapping[str, Any] | None,
    *,
    shared_files: Mapping[str, Sequence[UploadedFile]] | None = None,
    owner_id: str | None = None,
) -> Job:
    """Run `definition` on each of `files` (its `file` input) as a batch; the batch job.

    `shared_files` are the tool's other file parts (e.g. `watermark`), given to every member.
    Whole-batch errors raise before anything is stored; see the module docstring.
    """
    check_batch_size(len(files), dispatcher.config)
    normalized = checked_settings(definition, raw_settings)
    shared = {part: list(uploads) for part, uploads in (shared_files or {}).items()}
    _check_shared_parts(definition, shared)
    limits = dispatcher.config.limits
    members: list[BatchMember] = []
    for data, filename in files:
        try:
            detected = sniff_format(data)
        except PixmillError as refusal:
            members.append(BatchMember(filename, len(data), None, refusal=refusal))
            continue
        # The member's own file is known good here, so an error now is about the shared
        # parts and concerns the whole batch: it propagates.
        inputs = build_inputs(definition, {**shared, MAIN_PART: [(data, filename)]}, limits)
        create = partial(
            _create_tool_member, dispatcher, definition, _main_first(inputs), normalized, owner_id
        )
        members.append(
            BatchMember(
                filename, len(data), detected.name, create, timeout_s=tool_timeout(definition)
            )
        )
    return submit_members(
        dispatcher,
        members,
        member_kind=JobKind.EXTRACT if isinstance(definition, Extractor) else JobKind.TOOL,
        settings=normalized,
        queue=definition.queue or DEFAULT_QUEUE,
        tool_id=definition.id,
        owner_id=owner_id,
    )


def submit_members(
    dispatcher: Dispatcher,
    members: Sequence[BatchMember],
    *,
    member_kind: JobKind,
    settings: Mapping[str, Any],
    queue: str = DEFAULT_QUEUE,
    tool_id: str | None = None,
    pipeline_id: str | None = None,
    owner_id: str | None = None,
) -> Job:
    """Create the batch job and its members (checked by the caller), enqueue the members,
    then the batch; the batch job (queued).

    The batch runs on `queue`, the members' queue: whoever serves the work also builds the
    ZIP, so a deployment whose workers serve only `ai` still finishes its AI batches.
    `member_kind`, `tool_id` and `settings` are also what a refused member is recorded with.
    If creating any member fails, the batch and every member created so far are deleted
    with their files, and the error propagates: nothing half-submitted is left to run.
    """
    check_batch_size(len(members), dispatcher.config)
    store = dispatcher.jobstore
    numbered = [(new_id(), member) for member in members]
    batch = store.create(
        JobKind.BATCH,
        tool_id=tool_id,
        pipeline_id=pipeline_id,
        owner_id=owner_id,
        settings=settings,
        inputs=[_member_ref(member_id, member) for member_id, member in numbered],
        queue=queue,
        progress_total=len(members),
        message=f"waiting for {len(members)} files",
    )
    created: list[tuple[Job, BatchMember]] = []
    try:
        for member_id, member in numbered:
            if member.create is None:
                job = _refused_member(store, batch, member_id, member, member_kind, settings)
            else:
                job = member.create(batch.id, member_id)
                if job.id != member_id or job.parent_id != batch.id:
                    raise ValueError(
                        f"a batch member's job must be created as {member_id} of batch "
                        f"{batch.id}, not {job.id} of {job.parent_id}"
                    )
            created.append((job, member))
    except BaseException:
        _withdraw(store, dispatcher.blobs, batch.id)
        raise
    for job, member in created:
        if job.status is JobStatus.QUEUED:
            dispatcher.enqueue(job, timeout_s=member.timeout_s)
    # Last: if every member is final already (refused, or reused from the cache), nobody
    # else would wake the batch.
    dispatcher.enqueue(batch)
    return batch


def _check_shared_parts(definition: Tool | Extractor, shared: Mapping[str, Any]) -> None:
    # Checked on its own because `build_inputs` only sees the shared parts next to a member
    # file that passed, and a batch whose every file was refused must still hear about them.
    shared_parts = {spec.name for spec in inputs_of(definition)} - {MAIN_PART}
    unexpected = sorted(str(part) for part in set(shared) - shared_parts)
    if unexpected:
        accepted = sorted({"files", *shared_parts})
        raise BadRequestError(
            f"unexpected file part(s) {', '.join(unexpected)}; a batch of {definition.id} "
            f"takes {', '.join(accepted)}",
            code="UNEXPECTED_FILE",
            details={"unexpected": unexpected, "accepted": accepted},
        )


def _main_first(inputs: Inputs) -> Inputs:
    """The same inputs with the member's own file first, so it is stored as `000-file`."""
    ordered = {MAIN_PART: inputs[MAIN_PART]}
    ordered.update((part, inputs[part]) for part in inputs if part != MAIN_PART)
    return Inputs(ordered)


def _create_tool_member(
    dispatcher: Dispatcher,
    definition: Tool | Extractor,
    inputs: Inputs,
    normalized: Mapping[str, Any],
    owner_id: str | None,
    batch_id: str,
    member_id: str,
) -> Job:
    return dispatcher.create_tool_job(
        definition, inputs, normalized, owner_id=owner_id, parent_id=batch_id, job_id=member_id
    )


def _member_ref(member_id: str, member: BatchMember) -> dict[str, Any]:
    return {
        "key": BlobKey.upload(member_id, MEMBER_UPLOAD_NAME).relative_path,
        "filename": member.filename,
        "size": member.size,
        "format": member.format,
    }


def _refused_member(
    store: JobStore,
    batch: Job,
    member_id: str,
    member: BatchMember,
    kind: JobKind,
    settings: Mapping[str, Any],
) -> Job:
    """A member row for a refused file, failed at once with its error. Its input reference
    names the upload it would have had (never written, so it reads as FILE_NOT_FOUND)."""
    assert member.refusal is not None
    store.create(
        kind,
        tool_id=batch.tool_id,
        pipeline_id=batch.pipeline_id,
        parent_id=batch.id,
        owner_id=batch.owner_id,
        settings=settings,
        inputs=[_member_ref(member_id, member)],
        queue=batch.queue,
        job_id=member_id,
    )
    return store.fail(member_id, member.refusal.code, member.refusal.message)


def _withdraw(store: JobStore, blobs: BlobStore, batch_id: str) -> None:
    """Delete a half-submitted batch: its row (members cascade) and every file of them."""
    try:
        refs = store.delete(batch_id)
    except Exception:
        # Left queued with members missing: after SUBMIT_GRACE_S it finishes reporting them.
        log.exception("could not withdraw the half-submitted batch %s", batch_id)
        return
    owners = {batch_id}
    for ref in refs:
        parts = str(ref["key"]).split("/")
        if len(parts) > 1 and is_valid_job_id(parts[1]):
            owners.add(parts[1])
    for owner in owners:
        with contextlib.suppress(Exception):
            blobs.delete_job(owner)


# ----- waiting for the members -----------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    index: int
    ref: Mapping[str, Any]
    job_id: str
    job: Job | None  # None: not created yet, or deleted


def _members(store: JobStore, batch: Job) -> list[_Member]:
    """The batch's members in input order, each with its row as it is now."""
    rows = {job.id: job for job in store.children(batch.id)}
    members = []
    for index, ref in enumerate(batch.inputs):
        member_id = BlobKey.parse(ref["key"]).job_id
        members.append(_Member(index, ref, member_id, rows.get(member_id)))
    return members


def _waiting(batch: Job, members: Sequence[_Member], now: datetime) -> bool:
    if any(m.job is not None and not m.job.is_final for m in members):
        return True
    missing = any(m.job is None for m in members)
    return missing and now - batch.created_at < timedelta(seconds=SUBMIT_GRACE_S)


def is_waiting(store: JobStore, job_id: str) -> bool:
    """True for a queued batch with a member still to finish: it must not be claimed now.

    False for anything else (other kinds, finished or unknown jobs), which the claim then
    handles as usual.
    """
    try:
        job = store.get(job_id)
    except NotFoundError:
        return False
    if job.kind is not JobKind.BATCH or job.status is not JobStatus.QUEUED:
        return False
    return _waiting(job, _members(store, job), utcnow())


def member_finished(
    store: JobStore, member: Job, *, events: Any, wake: Callable[[Job], None]
) -> None:
    """Called once `member` (a job with a `parent_id`) reached its end: record the batch's
    progress and, when no member is left, `wake(batch)` so that a worker builds the ZIP.

    Two members ending at the same moment may both wake the batch; the claim lets one run.
    """
    if member.parent_id is None:
        return
    try:
        batch = store.get(member.parent_id)
    except NotFoundError:
        return
    if batch.kind is not JobKind.BATCH or batch.status is not JobStatus.QUEUED:
        return  # cancelled, or already being built
    members = _members(store, batch)
    done = sum(1 for m in members if m.job is not None and m.job.is_final)
    total = len(members)
    message = f"{done} of {total} files done"
    store.record_progress(
        batch.id,
        "member_finished",
        current=done,
        total=total,
        message=message,
        data={"jobId": member.id, "status": str(member.status), "current": done, "total": total},
    )
    progress = {
        "jobId": batch.id,
        "status": str(batch.status),
        "progress": round(100 * done / total) if total else 0,
        "message": message,
    }
    publish(events, batch.id, progress)
    if not _waiting(batch, members, utcnow()):
        wake(batch)


# ----- building the ZIP ------------------------------------------------------------------------


def archive_name(batch: Job) -> str:
    """`<toolId>-batch.zip` (`pipeline-batch.zip` for a pipeline's batch)."""
    return safe_filename(f"{batch.tool_id or 'pipeline'}-batch.zip", fallback="batch.zip")


class _UniqueNames:
    """Entry names that never collide, compared without case: `a.jpg`, `a-2.jpg`, ..."""

    def __init__(self, *reserved: str) -> None:
        self._taken = {name.lower() for name in reserved}

    def claim(self, name: str) -> str:
        stem, dot, extension = name.rpartition(".")
        if not dot or not stem:
            stem, extension = name, ""
        candidate, number = name, 1
        while candidate.lower() in self._taken:
            number += 1
            candidate = f"{stem}-{number}.{extension}" if extension else f"{stem}-{number}"
        self._taken.add(candidate.lower())
        return candidate


def assemble(
    store: JobStore,
    blobs: BlobStore,
    batch: Job,
    attempt: int,
    *,
    on_progress: Callable[[float, str | None], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """Build the ZIP of a claimed batch whose members are all final; returns the batch's
    outputs (the ZIP), its result (the manifest) and a completion message.

    Raises `CancelledError` when `is_cancelled()` turns true between entries.
    """
    members = _members(store, batch)
    names = _UniqueNames(MANIFEST_NAME)
    entries: list[dict[str, Any]] = []
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        with zipfile.ZipFile(spool, "w") as archive:
            for member in members:
                if is_cancelled is not None and is_cancelled():
                    raise CancelledError("the batch was cancelled while its ZIP was being built")
                if on_progress is not None:
                    on_progress(
                        member.index / len(members),
                        f"adding file {member.index + 1} of {len(members)} to the ZIP",
                    )
                entries.append(_add_member(archive, blobs, member, names))
            manifest = _manifest(batch, entries)
            manifest_bytes = json.dumps(manifest, indent=2).encode()
            _write_entry(archive, MANIFEST_NAME, "json", utcnow(), manifest_bytes)
        spool.seek(0)
        name = archive_name(batch)
        stored = blobs.put(BlobKey.result(batch.id, attempt, name), spool)
    output = {
        "key": stored.key.relative_path,
        "filename": name,
        "size": stored.size,
        "format": ARCHIVE_FORMAT,
    }
    counts = manifest["counts"]
    message = f"{counts['completed']} of {counts['total']} files processed"
    if counts["failed"] or counts["cancelled"]:
        message += f" ({counts['failed']} failed, {counts['cancelled']} cancelled)"
    return [output], manifest, message


def _add_member(
    archive: zipfile.ZipFile, blobs: BlobStore, member: _Member, names: _UniqueNames
) -> dict[str, Any]:
    """Write one member's results into the ZIP; its manifest entry."""
    job = member.job
    entry: dict[str, Any] = {
        "index": member.index,
        "filename": member.ref["filename"],
        "jobId": member.job_id,
        "status": str(job.status) if job is not None else str(JobStatus.FAILED),
        "output": None,
        "originalSize": member.ref["size"],
        "processedSize": None,
        "error": None,
    }
    if job is None:
        entry["error"] = {
            "code": "MEMBER_MISSING",
            "message": "this file's job was deleted, or never created, before the batch ended",
        }
        return entry
    if job.status is JobStatus.FAILED:
        entry["error"] = {"code": job.error_code, "message": job.error_message}
        return entry
    if job.status is not JobStatus.COMPLETED:
        return entry
    written: list[str] = []
    size = 0
    finished = job.finished_at or utcnow()
    try:
        keys = [BlobKey.parse(ref["key"]) for ref in job.outputs]
        if not all(blobs.exists(key) for key in keys):
            raise NotFoundError("a result file is gone", code="FILE_NOT_FOUND")
        for ref, key in zip(job.outputs, keys, strict=True):
            name = names.claim(ref["filename"])
            with blobs.open(key) as source:
                size += _write_entry(
                    archive, name, ref.get("format"), finished, source, ref["size"]
                )
            written.append(name)
        if not job.outputs and job.result is not None:
            name = names.claim(f"{safe_stem(member.ref['filename'], 'result')}.json")
            data = json.dumps(job.result, indent=2).encode()
            size += _write_entry(archive, name, "json", finished, data)
            written.append(name)
    except NotFoundError:
        # The member's result expired (RESULT_TTL_HOURS) or was deleted before the ZIP was
        # built. Checked before writing, so the ZIP holds nothing of it (unless the file
        # vanished between the check and the copy: then a stray entry, named nowhere).
        entry.update(
            status=str(JobStatus.FAILED),
            error={
                "code": "RESULT_MISSING",
                "message": "this file's result was deleted or expired before the ZIP was built",
            },
        )
        return entry
    entry["output"] = written[0] if written else None
    entry["processedSize"] = size
    return entry


def _write_entry(
    archive: zipfile.ZipFile,
    name: str,
    format_name: str | None,
    when: datetime,
    content: bytes | IO[bytes],
    size: int | None = None,
) -> int:
    """Add one entry; returns its uncompressed size."""
    info = zipfile.ZipInfo(name, date_time=_zip_time(when))
    info.external_attr = 0o644 << 16  # a plain readable file once unpacked
    info.compress_type = (
        zipfile.ZIP_DEFLATED if format_name in _DEFLATED_FORMATS else zipfile.ZIP_STORED
    )
    if isinstance(content, bytes):
        archive.writestr(info, content)
        return len(content)
    # Known up front so that zipfile switches to ZIP64 for an entry over 4 GiB by itself.
    info.file_size = size or 0
    with archive.open(info, "w") as target:
        shutil.copyfileobj(content, target, _COPY_CHUNK)
    return info.file_size


def _zip_time(when: datetime) -> tuple[int, int, int, int, int, int]:
    # ZIP stores local wall time without a zone; UTC is the honest choice for a server.
    moment = max(when, datetime(1980, 1, 1, tzinfo=when.tzinfo))
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)


def _manifest(batch: Job, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest: the batch, the counts and one entry per input file in input order."""
    statuses = [entry["status"] for entry in entries]
    return {
        "jobId": batch.id,
        "toolId": batch.tool_id,
        "pipelineId": batch.pipeline_id,
        "archive": archive_name(batch),
        "counts": {
            "total": len(entries),
            "completed": statuses.count(str(JobStatus.COMPLETED)),
            "failed": statuses.count(str(JobStatus.FAILED)),
            "cancelled": statuses.count(str(JobStatus.CANCELLED)),
        },
        "files": entries,
    }


__all__ = [
    "MANIFEST_NAME",
    "SUBMIT_GRACE_S",
    "BatchMember",
    "archive_name",
    "assemble",
    "check_batch_size",
    "is_waiting",
    "member_finished",
    "submit_batch",
    "submit_members",
]
