"""Pipelines: tool steps run one after another, each step's output the next step's input.

Seed 003's `/api/v1/pipeline/*`. A definition is `{"steps": [{"toolId", "settings"}, ...]}`.
Three callers share this module, so that they agree on what a pipeline is:

- Checking (the REST routes, saved pipelines, and the worker again with its own plugins):
  `read_definition` and `validate_steps` check every step before any work is done: a known
  tool, usable as a step, settings valid for its schema (normalized as a job records them,
  `dispatch.checked_settings`), at most `MAX_PIPELINE_STEPS` steps. Every refusal is a 400
  `VALIDATION_ERROR` whose message and `details` name the step (`step`, counted from 1, and
  `toolId`), with `details.fields` as a direct call of that tool would report them.
- Submitting (`submit_pipeline`): the upload is checked against the first step's inputs (a
  non-image is a 415 before anything is stored) and queued through `Dispatcher.submit_job`:
  one job of kind `pipeline` whose settings are `{"steps": [normalized steps]}`, on the queue
  of its first step that asks for a special one (an `ai` step needs an `ai` worker), with
  the sum of the steps' time limits and the fewest attempts any step allows.
  `submit_pipeline_batch` makes one such job per file, as the members of a batch
  (`pixmill.core.batch`), which zips their results once they have all ended.
- Running (`run_pipeline`, for the worker): the steps run in order through the worker's
  `StepRunner`, which calls `execution.execute` (the path of every tool call) under the
  step's own time limit and checks for cancellation between steps. The final output is named
  after the upload's stem with the last format's extension; the job's `result` records
  `stepsCompleted` and, per step, `{step, toolId, inputSize, outputSize, format, cached}`.

Which tools can be steps: tools whose output is one image, that take a `file` and need no
other file part. Extractors and JSON tools are refused, also as a last step: their output
feeds no next step, and a pipeline's answer is always a file (seed 003's `downloadUrl`), so
run them on the pipeline's result instead.

Per-step result reuse. Each computed step is recorded as a completed child job of the
pipeline job (kind `tool`, `JobStore.record_completed`) holding its output blob and the same
`dispatch.cache_key` a queued call of that tool computes (input bytes, tool id and version,
normalized settings). Before a step runs, `JobStore.find_completed_by_cache_key` is asked for
its key; a hit whose blob is still stored is read instead of computed and reported
`cached: true`. Job rows rather than a cache of its own cost one insert per computed step and
bring: reuse across pipelines and queued tool calls alike, a retried pipeline resuming after
its last finished step, each step's timings in the jobs API, and expiry and deletion through
the usual result retention and `DELETE /api/v1/jobs/<id>` of the pipeline (children go with
their parent). A step row's input reference names its own, never written, upload key (as an
inline call's record does), so deleting a step's row never touches another job's files.

Failures. A step's error keeps its type and code, so the worker still fails the job at once
below 500 and retries it otherwise, with the step named in its message and details. The step,
tool, code and HTTP status are also noted as a `step_failed` event of the job, from which
`failure_of` rebuilds the error that an HTTP call waiting on the job answers with (the row
keeps only a code and a message).

This module imports nothing from `pixmill.server`, `pixmill.cli`, `pixmill.plugins`, and not
`pixmill.core.worker` either (the worker imports it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from pixmill.core.batch import BatchMember, check_batch_size, submit_members
from pixmill.core.blobs import BlobKey, BlobStore, safe_filename
from pixmill.core.catalogue import output_kind, tool_path
from pixmill.core.contracts import Extractor, Inputs, OutputKind, Tool
from pixmill.core.dispatch import (
    DEFAULT_QUEUE,
    Dispatcher,
    cache_key,
    checked_settings,
    download_url,
    tool_timeout,
)
from pixmill.core.errors import (
    BadRequestError,
    CancelledError,
    NotFoundError,
    PixmillError,
    SettingsError,
    ToolFailedError,
)
from pixmill.core.execution import Outcome, UploadedFile, build_inputs, safe_stem
from pixmill.core.imageio import format_by_name, sniff_format
from pixmill.core.jobstore import JobStore
from pixmill.core.models import Job, JobKind, new_id, utcnow
from pixmill.core.plugin_host import Registry

log = logging.getLogger(__name__)

STEP_FAILED_EVENT = "step_failed"
DEFINITION_KEYS = frozenset({"steps"})
STEP_KEYS = frozenset({"toolId", "settings"})
MAIN_PART = "file"


# ----- what a pipeline is -------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineStep:
    """One checked step: its tool and its settings normalized (defaults in, wire names)."""

    position: int  # counted from 1, as messages and `details.step` name it
    definition: Tool
    settings: dict[str, Any]

    @property
    def tool_id(self) -> str:
        return self.definition.id

    @property
    def label(self) -> str:
        return f"step {self.position} ({self.tool_id})"

    def to_json(self) -> dict[str, Any]:
        return {"toolId": self.tool_id, "settings": self.settings}


def step_refusal(definition: Tool | Extractor) -> str | None:
    """Why a tool or extractor cannot be a pipeline step, or None when it can."""
    if isinstance(definition, Extractor) or definition.output is not OutputKind.IMAGE:
        return (
            f"{definition.id} returns {output_kind(definition).value}, not an image, so it "
            "cannot be a pipeline step; "
            f"call it on the pipeline's result with POST {tool_path(definition)}"
        )
    parts = {spec.name: spec for spec in definition.inputs}
    if MAIN_PART not in parts:
        return f"{definition.id} takes no {MAIN_PART!r} part, so no step can feed it"
    extra = sorted(name for name, spec in parts.items() if name != MAIN_PART and spec.required)
    if extra:
        return (
            f"{definition.id} also needs the file part(s) {', '.join(extra)}, which a pipeline "
            "cannot supply"
        )
    return None


def step_tools(registry: Registry) -> list[Tool]:
    """The tools usable as pipeline steps, by section and id."""
    return [
        tool
        for tool in sorted(registry.tools.values(), key=lambda tool: (tool.section, tool.id))
        if step_refusal(tool) is None
    ]


def parse_definition_text(text: str | None, field: str = "pipeline") -> Any:
    """The `pipeline` form field (JSON text) parsed; 400 when it is absent or not JSON."""
    if text is None or not text.strip():
        raise _invalid(
            f'{field} is required: a JSON object such as {{"steps": [{{"toolId": "resize", '
            '"settings": {"width": 800}}]}',
            {field: ["required"]},
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _invalid(
            f"{field} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
            {field: ["not valid JSON"]},
        ) from error


def read_definition(value: Any, registry: Registry, max_steps: int | None) -> list[PipelineStep]:
    """A parsed definition `{"steps": [...]}` checked whole (see `validate_steps`)."""
    if not isinstance(value, Mapping):
        raise _invalid(
            'a pipeline is a JSON object such as {"steps": [{"toolId": "resize"}]}',
            {"pipeline": ["not a JSON object"]},
        )
    unknown = sorted(str(key) for key in value if key not in DEFINITION_KEYS)
    if unknown:
        raise _invalid(
            f"unknown pipeline field(s) {', '.join(unknown)}; a pipeline has only steps",
            {key: ["unknown field"] for key in unknown},
        )
    return validate_steps(value.get("steps"), registry, max_steps)


def validate_steps(raw: Any, registry: Registry, max_steps: int | None) -> list[PipelineStep]:
    """Every step checked, in order, before any work: the first bad one is a 400 naming it.

    `max_steps` None: no limit (a worker re-checking a job that was admitted already).
    """
    if raw is None:
        raise _invalid("steps is required: a list of {toolId, settings}", {"steps": ["required"]})
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise _invalid("steps must be a list of {toolId, settings}", {"steps": ["not a list"]})
    if not raw:
        raise _invalid("a pipeline needs at least one step", {"steps": ["empty"]})
    if max_steps is not None and len(raw) > max_steps:
        raise BadRequestError(
            f"a pipeline has at most {max_steps} steps (MAX_PIPELINE_STEPS); this one has "
            f"{len(raw)}",
            code="VALIDATION_ERROR",
            details={
                "fields": {"steps": [f"more than {max_steps} steps"]},
                "maxSteps": max_steps,
                "steps": len(raw),
            },
        )
    return [_checked_step(position, item, registry) for position, item in enumerate(raw, 1)]


def _checked_step(position: int, raw: Any, registry: Registry) -> PipelineStep:
    if not isinstance(raw, Mapping):
        raise _step_invalid(position, None, "must be an object {toolId, settings}", "_schema")
    unknown = sorted(str(key) for key in raw if key not in STEP_KEYS)
    if unknown:
        raise _step_invalid(
            position, None, f"unknown field(s) {', '.join(unknown)}; a step has toolId, settings"
        )
    tool_id = raw.get("toolId")
    if not isinstance(tool_id, str) or not tool_id:
        raise _step_invalid(position, None, "toolId is required (a tool id such as resize)")
    try:
        definition = registry.catalogue_entry(tool_id)
    except NotFoundError:
        usable = [tool.id for tool in step_tools(registry)]
        raise _step_invalid(
            position,
            tool_id,
            f"no tool {tool_id!r}; tools usable as steps: {', '.join(usable)}",
            extra={"available": usable},
        ) from None
    refusal = step_refusal(definition)
    if refusal is not None or not isinstance(definition, Tool):
        raise _step_invalid(position, tool_id, refusal or "not a tool")
    try:
        settings = checked_settings(definition, raw.get("settings"))
    except SettingsError as error:
        raise SettingsError(
            f"step {position} ({tool_id}): {error.message}",
            details={**error.details, "step": position, "toolId": tool_id},
        ) from error
    return PipelineStep(position, definition, settings)


def _invalid(message: str, fields: dict[str, list[str]]) -> BadRequestError:
    return BadRequestError(message, code="VALIDATION_ERROR", details={"fields": fields})


def _step_invalid(
    position: int,
    tool_id: str | None,
    problem: str,
    field: str = "toolId",
    extra: Mapping[str, Any] | None = None,
) -> BadRequestError:
    named = f"step {position}" + (f" ({tool_id})" if tool_id else "")
    return BadRequestError(
        f"{named}: {problem}",
        code="VALIDATION_ERROR",
        details={
            "step": position,
            "toolId": tool_id,
            "fields": {field: [problem]},
            **(extra or {}),
        },
    )


# ----- what a job of kind `pipeline` records ------------------------------------------------


def job_settings(steps: Sequence[PipelineStep]) -> dict[str, Any]:
    """The settings a pipeline job records: its normalized steps, which the worker runs."""
    return {"steps": [step.to_json() for step in steps]}


def steps_of_job(job: Job, registry: Registry) -> list[PipelineStep]:
    """A pipeline job's steps checked again with this process's plugins (a worker may lack a
    tool the web process had): a 400 naming the step fails the job at once."""
    settings = job.settings if isinstance(job.settings, Mapping) else {}
    return validate_steps(settings.get("steps"), registry, max_steps=None)


def is_heavy(steps: Sequence[PipelineStep]) -> bool:
    """A pipeline with a heavy step is always queued (202), as that tool's own calls are."""
    return any(step.definition.heavy for step in steps)


def queue_of(steps: Sequence[PipelineStep]) -> str:
    """One worker runs the whole pipeline: on the queue of the first step that asks for a
    special one (its worker has the models), else the default queue."""
    for step in steps:
        if step.definition.queue and step.definition.queue != DEFAULT_QUEUE:
            return step.definition.queue
    return DEFAULT_QUEUE


def time_limit_of(steps: Sequence[PipelineStep]) -> float:
    """The whole pipeline's outer time limit: each step also has its own."""
    return sum(tool_timeout(step.definition) for step in steps)


def max_attempts_of(steps: Sequence[PipelineStep], default: int) -> int:
    """The fewest attempts any step allows: a tool that must not run twice keeps that."""
    return min(step.definition.max_attempts or default for step in steps)


def submit_pipeline(
    dispatcher: Dispatcher,
    steps: Sequence[PipelineStep],
    files: Mapping[str, Sequence[UploadedFile]],
    *,
    pipeline_id: str | None = None,
    owner_id: str | None = None,
    enqueue: bool = True,
) -> Job:
    """Check the one upload against the first step, store it, commit the job, enqueue it."""
    inputs = build_inputs(steps[0].definition, single_file(files), dispatcher.config.limits)
    return _submit(
        dispatcher, steps, inputs, pipeline_id=pipeline_id, owner_id=owner_id, enqueue=enqueue
    )


def submit_pipeline_batch(
    dispatcher: Dispatcher,
    steps: Sequence[PipelineStep],
    files: Sequence[UploadedFile],
    *,
    pipeline_id: str | None = None,
    owner_id: str | None = None,
) -> Job:
    """The pipeline on each of `files`, as a batch (`pixmill.core.batch`) whose members are
    pipeline jobs; the batch job. A file that is not an image (415) or is empty (400) is
    reported in the ZIP's manifest rather than sinking the batch."""
    check_batch_size(len(files), dispatcher.config)
    members: list[BatchMember] = []
    for data, filename in files:
        try:
            inputs = build_inputs(
                steps[0].definition, {MAIN_PART: [(data, filename)]}, dispatcher.config.limits
            )
        except PixmillError as refusal:  # only the file's own format can be wrong here
            members.append(BatchMember(filename, len(data), None, refusal=refusal))
            continue
        create = partial(_create_member, dispatcher, steps, inputs, pipeline_id, owner_id)
        detected = inputs.file.format.name  # sniffed by `build_inputs` already
        timeout_s = time_limit_of(steps)
        members.append(BatchMember(filename, len(data), detected, create, timeout_s=timeout_s))
    return submit_members(
        dispatcher,
        members,
        member_kind=JobKind.PIPELINE,
        settings=job_settings(steps),
        queue=queue_of(steps),
        pipeline_id=pipeline_id,
        owner_id=owner_id,
    )


def _create_member(
    dispatcher: Dispatcher,
    steps: Sequence[PipelineStep],
    inputs: Inputs,
    pipeline_id: str | None,
    owner_id: str | None,
    batch_id: str,
    member_id: str,
) -> Job:
    return _submit(
        dispatcher,
        steps,
        inputs,
        pipeline_id=pipeline_id,
        owner_id=owner_id,
        parent_id=batch_id,
        job_id=member_id,
        enqueue=False,  # the batch enqueues its members once every row exists
    )


def _submit(
    dispatcher: Dispatcher,
    steps: Sequence[PipelineStep],
    inputs: Inputs,
    *,
    pipeline_id: str | None,
    owner_id: str | None,
    enqueue: bool,
    parent_id: str | None = None,
    job_id: str | None = None,
) -> Job:
    """One pipeline job for checked `inputs`: what every pipeline job records and how it runs."""
    return dispatcher.submit_job(
        JobKind.PIPELINE,
        inputs,
        settings=job_settings(steps),
        queue=queue_of(steps),
        timeout_s=time_limit_of(steps),
        max_attempts=max_attempts_of(steps, dispatcher.max_attempts),
        pipeline_id=pipeline_id,
        parent_id=parent_id,
        owner_id=owner_id,
        progress_total=len(steps),
        job_id=job_id,
        enqueue=enqueue,
    )


def single_file(files: Mapping[str, Sequence[UploadedFile]]) -> dict[str, list[UploadedFile]]:
    """The one `file` part a pipeline takes; 400 for other parts, none, or several."""
    extra = sorted(str(name) for name in files if name != MAIN_PART)
    if extra:
        raise BadRequestError(
            f"unexpected file part(s) {', '.join(extra)}; a pipeline takes one {MAIN_PART!r}",
            code="UNEXPECTED_FILE",
            details={"unexpected": extra, "accepted": [MAIN_PART]},
        )
    uploads = list(files.get(MAIN_PART, ()))
    if not uploads:
        raise BadRequestError(
            f"missing file part {MAIN_PART!r} (the image to run the pipeline on)",
            code="MISSING_FILE",
            details={"field": MAIN_PART},
        )
    if len(uploads) > 1:
        raise BadRequestError(
            f"a pipeline runs on one {MAIN_PART!r}, got {len(uploads)}; send several files "
            "to /api/v1/pipeline/batch",
            code="TOO_MANY_FILES",
            details={"field": MAIN_PART},
        )
    return {MAIN_PART: uploads}


# ----- running (the worker's side) ----------------------------------------------------------


class StepRunner(Protocol):
    """What the worker lends `run_pipeline` for each step."""

    def run_step(self, step: PipelineStep, file: UploadedFile, total: int) -> Outcome:
        """Run `step` on `file` through `execution.execute` under the step's time limit,
        its progress scaled into the pipeline's."""
        ...

    def step_finished(self, step: PipelineStep, total: int) -> None:
        """Record that `step` is done (progress `step.position / total`); raise
        `CancelledError` when the job must stop before the next step."""
        ...


def run_pipeline(
    job: Job,
    attempt: int,
    steps: Sequence[PipelineStep],
    upload: UploadedFile,
    *,
    jobstore: JobStore,
    blobs: BlobStore,
    runner: StepRunner,
) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """Run every step in order; return the job's output refs, its result JSON and message.

    The output is stored under `BlobKey.result(job.id, attempt, <stem>.<ext>)`.
    """
    data, filename = upload
    current_format = _format_name(data)
    reports: list[dict[str, Any]] = []
    for step in steps:
        key = cache_key(step.definition, step.settings, [(MAIN_PART, _sha256(data), len(data))])
        reused = _stored_output(jobstore, blobs, key) if step.definition.cacheable else None
        if reused is not None:
            output, output_format = reused
        else:
            started_at = utcnow()
            try:
                outcome = runner.run_step(step, (data, filename), len(steps))
            except CancelledError:
                raise
            except PixmillError as error:
                raise _step_failed(jobstore, job, step, error, len(reports)) from None
            output, output_format = _image_of(step, outcome)
            _record_step(
                jobstore,
                blobs,
                job,
                step,
                key if step.definition.cacheable else None,
                (data, filename, current_format),
                (output, output_format),
                started_at,
            )
        reports.append(
            {
                "step": step.position,
                "toolId": step.tool_id,
                "inputSize": len(data),
                "outputSize": len(output),
                "format": output_format,
                "cached": reused is not None,
            }
        )
        data, current_format = output, output_format
        runner.step_finished(step, len(steps))

    name = result_filename(filename, current_format)
    stored = blobs.put(BlobKey.result(job.id, attempt, name), data)
    outputs = [
        {
            "key": stored.key.relative_path,
            "filename": name,
            "size": stored.size,
            "format": current_format,
        }
    ]
    reused_count = sum(1 for report in reports if report["cached"])
    message = f"{len(reports)} steps completed"
    if reused_count:
        message += f", {reused_count} reused from stored results"
    return outputs, {"stepsCompleted": len(reports), "steps": reports}, message


def result_filename(upload_name: str, format_name: str | None) -> str:
    """`<upload stem>.<extension of the last step's format>`, safe as a blob name."""
    extension = format_by_name(format_name).extension if format_name else "bin"
    fallback = f"result.{extension}"
    return safe_filename(f"{safe_stem(upload_name)}.{extension}", fallback=fallback)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _format_name(data: bytes) -> str | None:
    try:
        return sniff_format(data).name
    except PixmillError:
        return None


def _image_of(step: PipelineStep, outcome: Outcome) -> tuple[bytes, str]:
    if outcome.data is None or outcome.format is None:
        # A tool declaring an image output that produced none: a plugin bug, said plainly.
        raise ToolFailedError(
            f"{step.label}: {step.tool_id} produced no image",
            details={"step": step.position, "toolId": step.tool_id},
        )
    return outcome.data, outcome.format.name


def _stored_output(jobstore: JobStore, blobs: BlobStore, key: str) -> tuple[bytes, str] | None:
    """The bytes and format of the newest stored result with this key, if still stored."""
    source = jobstore.find_completed_by_cache_key(key)
    if source is None or len(source.outputs) != 1:
        return None
    ref = source.outputs[0]
    try:
        with blobs.open(BlobKey.parse(ref["key"])) as stream:
            data = stream.read()
        format_name = ref.get("format") or sniff_format(data).name
    except PixmillError:  # purged, deleted, or not an image we know: compute it again
        return None
    return data, format_name


def _record_step(
    jobstore: JobStore,
    blobs: BlobStore,
    job: Job,
    step: PipelineStep,
    key: str | None,
    source: tuple[bytes, str, str | None],
    output: tuple[bytes, str],
    started_at: datetime,
) -> None:
    """Keep a computed step as a completed child job, so that a later run can reuse it.

    Best effort: the output is in hand and the pipeline goes on without the record (losing
    only a future reuse) when the blob store or database refuses it.
    """
    data, filename, input_format = source
    output_data, output_format = output
    step_id = new_id()
    name = result_filename(filename, output_format)
    input_name = safe_filename(filename, MAIN_PART)
    try:
        stored = blobs.put(BlobKey.result(step_id, 1, name), output_data)
        jobstore.record_completed(
            JobKind.TOOL,
            job_id=step_id,
            parent_id=job.id,
            tool_id=step.tool_id,
            owner_id=job.owner_id,
            settings=step.settings,
            inputs=[
                {
                    "key": BlobKey.upload(step_id, input_name).relative_path,
                    "filename": input_name,
                    "size": len(data),
                    "format": input_format,
                }
            ],
            outputs=[
                {
                    "key": stored.key.relative_path,
                    "filename": name,
                    "size": stored.size,
                    "format": output_format,
                }
            ],
            queue=job.queue,
            cache_key=key,
            started_at=started_at,
            message=f"{step.label} of pipeline job {job.id}",
        )
    except Exception as error:
        log.warning("job %s: %s could not be kept for reuse: %s", job.id, step.label, error)
        with contextlib.suppress(Exception):
            blobs.delete_job(step_id)


def _step_failed(
    jobstore: JobStore, job: Job, step: PipelineStep, error: PixmillError, completed: int
) -> PixmillError:
    """`error` with the step named, after noting it as a `step_failed` event (best effort)."""
    details = {
        **_json_safe(error.details),
        "step": step.position,
        "toolId": step.tool_id,
        "stepsCompleted": completed,
    }
    # The same object, so its type (and with it the worker's fail-or-retry) is unchanged.
    error.message = f"{step.label}: {error.message}"
    error.args = (error.message,)
    error.details = details
    try:
        jobstore.add_event(
            job.id,
            STEP_FAILED_EVENT,
            error.message,
            {"code": error.code, "status": error.status, "details": details},
        )
    except Exception as event_error:
        log.warning("job %s: could not note the failed step: %s", job.id, event_error)
    return error


def _json_safe(value: Mapping[str, Any]) -> dict[str, Any]:
    try:
        loaded = json.loads(json.dumps(dict(value), allow_nan=False, default=str))
    except (TypeError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


# ----- answering (the HTTP side) -------------------------------------------------------------


def completed_answer(job: Job) -> dict[str, Any]:
    """Seed 003's answer for a completed pipeline: the tool envelope, plus the steps."""
    result = job.result or {}
    answer: dict[str, Any] = {"jobId": job.id}
    if job.outputs:
        answer["downloadUrl"] = download_url(job.id, job.outputs[0]["filename"])
    answer.update(
        originalSize=job.input_size,
        processedSize=job.output_size,
        stepsCompleted=int(result.get("stepsCompleted", 0)),
        steps=list(result.get("steps", [])),
    )
    return answer


def failure_of(jobstore: JobStore, job: Job) -> PixmillError:
    """The error a failed pipeline job answers with: its code and message, with the status
    and details of the step that failed when a step's error is what ended it (otherwise 500:
    the worker gave up, timed out or lost the input)."""
    code = job.error_code or "PIPELINE_FAILED"
    status, details = 500, {"jobId": job.id}
    for event in reversed(jobstore.events(job.id)):
        data = event.data or {}
        if event.type != STEP_FAILED_EVENT or data.get("code") != code:
            continue
        if isinstance(data.get("status"), int) and 400 <= data["status"] <= 599:
            status = data["status"]
        if isinstance(data.get("details"), dict):
            details = {**data["details"], "jobId": job.id}
        break
    return PixmillError(
        job.error_message or "the pipeline failed", code=code, status=status, details=details
    )
