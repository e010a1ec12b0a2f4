"""Jobs benchmark: queued resizes on RQ workers versus inline, dispatch latency, warm models.

Measured in one run, on one machine, with a private Redis, the metadata in SQLite in a
temporary data dir (or --database-url), and real `pixmill worker` processes:

(a) N async resize jobs (1920x1080 JPEG -> 800 px wide) through the Dispatcher, run by 1
    worker, then by 2 workers, each in two ways: "concurrent", submitted as fast as this
    process can while the workers work (the wall time from the first submit to the last
    completion, the rows' `finished_at`), and "pre-queued", every row committed first and then
    all pushed to Redis at once (from the first push to the last completion: the workers'
    throughput alone). The CPU time the workers, this process and Redis spent is printed per
    job: with few cores they share them;
(b) the same N resizes inline in this process (`execution.execute`), one after another, and
    the machine's own ceiling for 2 workers: how much faster 2 processes resize inline than 1
    (no queue, database or Redis), measured in the same run, since other programs on the
    machine take their share of the cores too;
(c) enqueue-to-start latency of each job: its row's `started_at` (the worker's claim) minus
    the moment just before it was pushed to Redis. p50/p99 of the runs of (a), where jobs
    wait behind each other (queueing, not dispatch), and of a paced run where jobs arrive at
    half the rate 2 workers sustained, so a worker is idle-waiting when one arrives: the
    dispatch overhead the latency target is about;
(d) a model-backed tool: an extractor that loads an ONNX model (an MLP built here) through
    `ctx.load_model` and runs it on a thumbnail. The first and the second job through one
    fresh worker: cold (session created) versus warm (session kept by the worker).

Every input is made unique (its own JPEG comment), so the content-addressed result cache never
answers in a worker's place. Workers are started and warmed (a few jobs each) before a clock
starts.

Usage: python bench/bench_jobs.py [--jobs 200] [--paced-jobs 100] [--database-url URL]
Targets (issue 3): 2 workers finish >= 1.7x faster than 1; p50 enqueue-to-start < 20 ms;
the warm second call of a model-backed tool >= 5x faster than the cold first.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import redis
from onnx import TensorProto, helper, numpy_helper
from rq import Worker

from pixmill import Settings, hookimpl
from pixmill.core.blobs import LocalBlobStore
from pixmill.core.config import Config
from pixmill.core.contracts import Context, Extractor, InputFile, Tool
from pixmill.core.db import Database
from pixmill.core.defaults import JOB_TIMEOUT_S
from pixmill.core.dispatch import Dispatcher, connect
from pixmill.core.execution import execute
from pixmill.core.jobstore import JobStore
from pixmill.core.models import UNFINISHED_STATUSES, Job, JobStatus, utcnow
from pixmill.core.plugin_host import Registry, load_registry
from pixmill.core.redis_server import PrivateRedis
from pixmill.testing.images import photo

HERE = Path(__file__).resolve().parent
TARGET_WIDTH = 800
SOURCE_SIZE = (1920, 1080)
WAIT_TIMEOUT_S = 600.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# The model of (d): an MLP over a 32x32 grey thumbnail. Its weights (8 layers of 2048,
# about 126 MB) make creating an ONNX Runtime session cost a few hundred milliseconds, as
# loading a real classifier or upscaler does; one inference costs a few milliseconds.
MODEL_FILE = "bench-mlp.onnx"
MODEL_KEY = "bench-jobs-mlp"
THUMB = 32
HIDDEN_WIDTH = 2048
HIDDEN_LAYERS = 8
CLASSES = 10


# ----- the model-backed tool (the workers load it through PIXMILL_EXTRA_PLUGINS) --------------


def build_model(path: Path) -> int:
    """Write the benchmark's MLP to `path`; returns its size in bytes."""
    rng = np.random.default_rng(7)
    nodes = []
    weights = []
    previous, width = "x", THUMB * THUMB
    for layer in range(HIDDEN_LAYERS + 1):
        out_width = HIDDEN_WIDTH if layer < HIDDEN_LAYERS else CLASSES
        matrix = rng.standard_normal((width, out_width), dtype=np.float32)
        weights.append(numpy_helper.from_array(matrix / np.float32(np.sqrt(width)), f"w{layer}"))
        nodes.append(helper.make_node("MatMul", [previous, f"w{layer}"], [f"m{layer}"]))
        previous, width = f"m{layer}", out_width
        if layer < HIDDEN_LAYERS:
            nodes.append(helper.make_node("Relu", [previous], [f"r{layer}"]))
            previous = f"r{layer}"
    nodes.append(helper.make_node("Identity", [previous], ["scores"]))
    graph = helper.make_graph(
        nodes,
        "bench-mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, THUMB * THUMB])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, CLASSES])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by any onnxruntime since 1.10
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path.stat().st_size


def _classify(ctx: Context, image: InputFile, settings: dict[str, Any]) -> Mapping[str, Any]:
    path = Path(ctx.config["data_dir"]) / MODEL_FILE
    started = time.perf_counter()
    session = ctx.load_model(
        MODEL_KEY,
        lambda: onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]),
    )
    loaded = time.perf_counter()
    thumb = image.open(draft_size=(THUMB, THUMB)).convert("L").resize((THUMB, THUMB))
    pixels = np.asarray(thumb, dtype=np.float32).reshape(1, THUMB * THUMB) / np.float32(255)
    [scores] = session.run(None, {"x": pixels})
    done = time.perf_counter()
    return {
        "label": int(scores.argmax()),
        "loadMs": round((loaded - started) * 1000, 2),
        "inferenceMs": round((done - loaded) * 1000, 2),
    }


CLASSIFY = Extractor(
    id="bench-classify",
    name="Benchmark classifier",
    description="an ONNX MLP over a 32x32 thumbnail (bench/bench_jobs.py)",
    settings=Settings,
    extract=_classify,
)


class _BenchPlugin:
    @hookimpl
    def pixmill_extractors(self) -> list[Extractor]:
        return [CLASSIFY]


PLUGIN = _BenchPlugin()


# ----- inputs ---------------------------------------------------------------------------------


def make_source() -> bytes:
    out = io.BytesIO()
    photo(*SOURCE_SIZE, seed=3).save(out, "JPEG", quality=90)
    return out.getvalue()


def unique(jpeg: bytes, label: str) -> bytes:
    """`jpeg` with a comment (COM segment) after its SOI marker: other bytes, same pixels and
    the same decoding cost, so no two jobs share a cache key."""
    comment = label.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


# ----- the deployment -------------------------------------------------------------------------


class TimedDispatcher(Dispatcher):
    """A Dispatcher noting when each job is handed to Redis: where its latency starts.

    While `holding`, committed jobs are kept back instead of being pushed; `release()` then
    pushes them all in one burst (the pre-queued runs: the workers' throughput, without the
    submitter's own cost interleaved).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enqueued_at: dict[str, datetime] = {}
        self.holding = False
        self.held: list[tuple[Job, float]] = []

    def enqueue(self, job: Job, *, timeout_s: float = JOB_TIMEOUT_S) -> None:
        if self.holding:
            self.held.append((job, timeout_s))
            return
        self.enqueued_at[job.id] = utcnow()
        super().enqueue(job, timeout_s=timeout_s)

    def release(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        for job, timeout_s in held:
            self.enqueue(job, timeout_s=timeout_s)


@dataclass
class Deployment:
    config: Config
    registry: Registry
    jobstore: JobStore
    dispatcher: TimedDispatcher
    connection: redis.Redis
    logs: Path
    redis_pid: int | None
    workers_started: int = 0
    submitted: int = 0

    def worker_environment(self) -> dict[str, str]:
        variables = {k: v for k, v in os.environ.items() if not k.startswith("PIXMILL_")}
        variables.update(
            {
                "PIXMILL_DATA_DIR": str(self.config.data_dir),
                "DATABASE_URL": self.config.sqlalchemy_url,
                "REDIS_URL": self.config.redis_url or "",
                "PIXMILL_EXTRA_PLUGINS": "bench_jobs:PLUGIN",
                "PYTHONPATH": os.pathsep.join(
                    [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
                ),
            }
        )
        return variables

    def submit(self, definition: Tool | Extractor, data: bytes, settings: dict[str, Any]) -> Job:
        self.submitted += 1
        files = {"file": [(data, f"in-{self.submitted}.jpg")]}
        return self.dispatcher.submit_tool_job(definition, files, settings)

    def wait_all(self, job_ids: Sequence[str]) -> list[Job]:
        """Every job of this deployment finished: their rows (all must have completed).
        One cheap count per poll, so that waiting steals little from the workers."""
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        unfinished = list(UNFINISHED_STATUSES)
        while self.jobstore.list(status=unfinished, limit=1).total:
            if time.monotonic() > deadline:
                raise RuntimeError("the jobs did not finish in time")
            time.sleep(0.05)
        rows = [self.jobstore.get(job_id) for job_id in job_ids]
        failed = [row for row in rows if row.status is not JobStatus.COMPLETED]
        if failed:
            raise RuntimeError(
                f"{len(failed)} jobs did not complete: {failed[0].error_code} "
                f"{failed[0].error_message}"
            )
        return rows


@dataclass
class Workers:
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # RQ's warm shutdown
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def start_workers(deployment: Deployment, count: int) -> Workers:
    """`count` `pixmill worker` processes, returned once RQ lists them all (their state is
    built before they register: plugins loaded, database connected)."""
    workers = Workers()
    for _ in range(count):
        deployment.workers_started += 1
        log = deployment.logs / f"worker-{deployment.workers_started}.log"
        with open(log, "wb") as handle:
            workers.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "pixmill", "worker", "--queue", "default"],
                    env=deployment.worker_environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    deadline = time.monotonic() + 120
    while Worker.count(connection=deployment.connection) < count:
        if time.monotonic() > deadline or any(p.poll() is not None for p in workers.processes):
            workers.stop()
            raise RuntimeError(f"the workers did not start; see {deployment.logs}")
        time.sleep(0.05)
    return workers


# ----- the measurements -----------------------------------------------------------------------


@dataclass
class QueuedRun:
    wall_s: float
    latencies_ms: list[float]
    # CPU seconds spent during the run by the workers, this (submitting) process and Redis:
    # on a machine with few cores they share them, which caps what more workers can gain.
    cpu_s: dict[str, float]


def enqueue_to_start_ms(deployment: Deployment, rows: Sequence[Job]) -> list[float]:
    enqueued = deployment.dispatcher.enqueued_at
    return [
        (row.started_at - enqueued[row.id]).total_seconds() * 1000
        for row in rows
        if row.started_at is not None
    ]


def warm_up(deployment: Deployment, resize: Tool | Extractor, source: bytes, count: int) -> None:
    """A few untimed jobs per worker: first-call costs (codecs, connections) paid before."""
    jobs = [
        deployment.submit(resize, unique(source, f"warm-{deployment.submitted}-{n}"), SETTINGS)
        for n in range(count)
    ]
    deployment.wait_all([job.id for job in jobs])


SETTINGS = {"width": TARGET_WIDTH}


def run_queued(
    deployment: Deployment,
    resize: Tool | Extractor,
    source: bytes,
    workers: int,
    inputs: Sequence[bytes],
    *,
    pace_s: float = 0.0,
    pre_queued: bool = False,
) -> QueuedRun:
    """Submit every input to `workers` fresh workers: as fast as this process can while they
    work (the wall time counts from the first submit), one every `pace_s`, or `pre_queued`:
    every row committed first, then all pushed to Redis at once (the wall time counts from
    the first push)."""
    running = start_workers(deployment, workers)
    redis_pid = deployment.redis_pid
    dispatcher = deployment.dispatcher
    try:
        warm_up(deployment, resize, source, 3 * workers)
        dispatcher.holding = pre_queued
        jobs = []
        if pre_queued:
            jobs = [deployment.submit(resize, data, SETTINGS) for data in inputs]
        worker_cpu = sum(process_cpu_s(p.pid) for p in running.processes)
        own_cpu = time.process_time()
        redis_cpu = process_cpu_s(redis_pid)
        first = utcnow()
        started = time.monotonic()
        if pre_queued:
            dispatcher.release()
        for index, data in enumerate(inputs if not pre_queued else ()):
            if pace_s:
                time.sleep(max(0.0, started + index * pace_s - time.monotonic()))
            jobs.append(deployment.submit(resize, data, SETTINGS))
        rows = deployment.wait_all([job.id for job in jobs])
        cpu_s = {
            "workers": sum(process_cpu_s(p.pid) for p in running.processes) - worker_cpu,
            "submitter": time.process_time() - own_cpu,
            "Redis": process_cpu_s(redis_pid) - redis_cpu,
        }
    finally:
        dispatcher.release()
        running.stop()
    last = max(row.finished_at for row in rows if row.finished_at is not None)
    wall_s = (last - first).total_seconds()
    return QueuedRun(wall_s, enqueue_to_start_ms(deployment, rows), cpu_s)


def process_cpu_s(pid: int | None) -> float:
    """utime + stime of one process, from /proc (0 when it is gone or unknown)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def run_inline(deployment: Deployment, resize: Tool | Extractor, inputs: Sequence[bytes]) -> float:
    def call(data: bytes) -> None:
        execute(
            resize,
            {"file": [(data, "in.jpg")]},
            SETTINGS,
            limits=deployment.config.limits,
            config=deployment.config.plugin_config(),
        )

    call(inputs[0])  # the same warm-up courtesy as the workers get
    started = time.perf_counter()
    for data in inputs:
        call(data)
    return time.perf_counter() - started


def _inline_in_child(
    deployment: Deployment, resize: Tool | Extractor, inputs: Sequence[bytes], go: Any
) -> None:
    go.wait()
    run_inline(deployment, resize, inputs)


def parallel_ceiling(
    deployment: Deployment, resize: Tool | Extractor, inputs: Sequence[bytes]
) -> float:
    """How much faster 2 processes resize than 1 on this machine right now, with no queue,
    database or Redis at all: the most 2 workers could gain over 1 (other programs on the
    machine take their share of its cores too)."""
    context = multiprocessing.get_context("fork")
    walls = []
    for processes in (1, 2):
        go = context.Event()
        children = [
            context.Process(target=_inline_in_child, args=(deployment, resize, inputs, go))
            for _ in range(processes)
        ]
        for child in children:
            child.start()
        started = time.perf_counter()
        go.set()
        for child in children:
            child.join(timeout=WAIT_TIMEOUT_S)
        walls.append((time.perf_counter() - started) / processes)
        if any(child.exitcode for child in children):
            raise RuntimeError("a resize process failed")
    return walls[0] / walls[1]


@dataclass
class ModelRun:
    model_bytes: int
    cold: Job
    warm: Job


def run_model(deployment: Deployment, source: bytes) -> ModelRun:
    size = build_model(deployment.config.data_dir / MODEL_FILE)
    running = start_workers(deployment, 1)
    try:
        done = []
        for label in ("cold", "warm"):
            job = deployment.submit(CLASSIFY, unique(source, f"model-{label}"), {})
            done.extend(deployment.wait_all([job.id]))
    finally:
        running.stop()
    return ModelRun(size, done[0], done[1])


# ----- report ---------------------------------------------------------------------------------


def duration_ms(job: Job) -> float:
    assert job.started_at is not None and job.finished_at is not None
    return (job.finished_at - job.started_at).total_seconds() * 1000


def percentiles(values: Sequence[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return statistics.median(values), cuts[98]


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def latency_line(label: str, run: QueuedRun) -> str:
    p50, p99 = percentiles(run.latencies_ms)
    return f"    {label:40}: p50 {p50:8.1f} ms   p99 {p99:8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--paced-jobs", type=int, default=100)
    parser.add_argument(
        "--database-url", help="metadata database (default: SQLite in a temporary data dir)"
    )
    args = parser.parse_args()
    if args.jobs < 2 or args.paced_jobs < 2:
        parser.error("--jobs and --paced-jobs need at least 2 jobs (for percentiles)")

    source = make_source()
    with (
        tempfile.TemporaryDirectory(prefix="pixmill-bench-jobs-") as tmp,
        PrivateRedis(Path(tmp) / "redis") as redis_server,
    ):
        config = Config(
            data_dir=Path(tmp) / "data",
            redis_url=redis_server.url,
            database_url=args.database_url,
        )
        database = Database.from_config(config)
        connection = connect(redis_server.url)
        jobstore = JobStore(database.sessions)
        blobs = LocalBlobStore(config.blobs_dir)
        deployment = Deployment(
            config=config,
            registry=load_registry(config.load_plugins, [PLUGIN]),
            jobstore=jobstore,
            dispatcher=TimedDispatcher(
                jobstore, blobs, redis_server.url, config=config, connection=connection
            ),
            connection=connection,
            logs=Path(tmp),
            redis_pid=redis_server.pid,
        )
        try:
            report(deployment, source, args.jobs, args.paced_jobs)
        finally:
            connection.close()
            database.dispose()


def report(deployment: Deployment, source: bytes, jobs: int, paced_jobs: int) -> None:
    resize = deployment.registry.catalogue_entry("resize")
    database = "PostgreSQL" if deployment.config.database_url else "SQLite"
    print(
        f"input: {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} JPEG, {len(source) / 1e6:.2f} MB, "
        f"-> {TARGET_WIDTH} px wide; {jobs} jobs; cores: {os.cpu_count()}; "
        f"metadata: {database}; Redis: private, unix socket; "
        "load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    )

    def inputs(run: str, count: int) -> list[bytes]:
        return [unique(source, f"{run}-{n}") for n in range(count)]

    runs: dict[tuple[str, int], QueuedRun] = {}
    for mode in ("concurrent", "pre-queued"):
        for workers in (1, 2):
            runs[mode, workers] = run_queued(
                deployment,
                resize,
                source,
                workers,
                inputs(f"{mode}-{workers}", jobs),
                pre_queued=mode == "pre-queued",
            )
    inline_cpu = time.process_time()
    inline = run_inline(deployment, resize, inputs("inline", jobs))
    inline_cpu = time.process_time() - inline_cpu
    print(f"(a) {jobs} async resize jobs through RQ; CPU ms per job of the workers, this")
    print("    (submitting) process and Redis:")
    for (mode, workers), run in runs.items():
        cpu = ", ".join(f"{k} {v / jobs * 1000:.1f}" for k, v in run.cpu_s.items())
        start = "first submit" if mode == "concurrent" else "first push"
        print(
            f"    {mode:10}, {workers} worker{'s' if workers > 1 else ' '}: {run.wall_s:6.2f} s "
            f"from {start} to last completion ({jobs / run.wall_s:5.1f} jobs/s); CPU: {cpu}"
        )
    print(
        f"(b) inline, one process: {jobs} resizes in {inline:6.2f} s ({jobs / inline:5.1f} /s); "
        f"CPU ms per resize: {inline_cpu / (jobs + 1) * 1000:.1f}"
    )
    ceiling = parallel_ceiling(deployment, resize, inputs("ceiling", jobs // 4))
    print(
        f"    the machine's ceiling: 2 processes resizing inline, no queue: {ceiling:.2f}x "
        "the rate of 1"
    )
    for mode in ("concurrent", "pre-queued"):
        one, two = runs[mode, 1], runs[mode, 2]
        scaling = one.wall_s / two.wall_s
        print(
            f"    {mode:10}: 1 worker / 2 workers {scaling:.2f}x (target >= 1.7x) "
            f"{verdict(scaling >= 1.7)};  inline / 2 workers {inline / two.wall_s:.2f}x"
        )

    # Half the rate 2 workers sustained: a job usually finds a worker waiting for it.
    pace = 2 * runs["concurrent", 2].wall_s / jobs
    paced = run_queued(deployment, resize, source, 2, inputs("paced", paced_jobs), pace_s=pace)
    print("(c) enqueue-to-start (the row's started_at minus the push to Redis):")
    for (mode, workers), run in runs.items():
        print(latency_line(f"{mode:10}, {workers} worker{'s' if workers > 1 else ' '}", run))
    print(latency_line(f"paced, 2 workers, one job every {pace * 1000:.0f} ms", paced))
    p50, _ = percentiles(paced.latencies_ms)
    print(f"    paced p50: {p50:.1f} ms (target < 20 ms) {verdict(p50 < 20)}")

    model = run_model(deployment, source)
    cold, warm = model.cold, model.warm
    cold_ms, warm_ms = duration_ms(cold), duration_ms(warm)
    print(f"(d) model-backed tool (ONNX MLP, {model.model_bytes / 1e6:.0f} MB), one fresh worker:")
    for label, job, ms in (("cold first job ", cold, cold_ms), ("warm second job", warm, warm_ms)):
        split = job.result or {}
        print(
            f"    {label}: {ms:7.1f} ms (in the plugin: model {split['loadMs']:7.1f} ms, "
            f"inference {split['inferenceMs']:5.1f} ms)"
        )
    ratio = cold_ms / warm_ms
    print(f"    cold / warm: {ratio:.1f}x (target >= 5x) {verdict(ratio >= 5)}")


if __name__ == "__main__":
    main()
