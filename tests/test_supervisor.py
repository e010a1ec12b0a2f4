"""`pixmill serve`'s own Redis, queue workers and reconciler (pixmill.server.supervisor).

The pool's restart and stop logic runs on trivial child commands (`python -c ...`), its
backoff schedule on a fake clock; the reconciler loop against a private Redis and both
database backends; and `pixmill serve` itself as a real subprocess on a free loopback port,
once with zero configuration (its private redis-server and worker pool: jobs run, a SIGKILLed
worker comes back, SIGTERM leaves no process behind) and once with REDIS_URL, PostgreSQL and
no local workers (the two-machine layout: a separate `pixmill worker` runs the job).

Processes are found through /proc (parent pids and command lines). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import test_db  # the database fixtures (SQLite and a throwaway PostgreSQL database)
from click.testing import CliRunner
from PIL import Image
from rq import Queue

from pixmill import Settings, Tool, hookimpl
from pixmill.cli import main
from pixmill.core import defaults
from pixmill.core.blobs import BlobKey, LocalBlobStore
from pixmill.core.config import Config
from pixmill.core.db import Database
from pixmill.core.defaults import RESULT_PURGE_INTERVAL_S
from pixmill.core.jobstore import JobStore
from pixmill.core.models import JobKind, new_id, utcnow
from pixmill.core.plugin_host import load_registry
from pixmill.core.redis_server import PrivateRedis
from pixmill.server import supervisor
from pixmill.server.supervisor import (
    BackgroundServices,
    ProcessPool,
    ReconcileLoop,
    check_config,
    child_environment,
    printable_redis_url,
)
from pixmill.testing import images

migrated_database = test_db.migrated_database
database = test_db.database

PYTHON = sys.executable
SLEEPER = [PYTHON, "-c", "import time; time.sleep(120)"]


# ----- helpers -------------------------------------------------------------------------------


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until `condition()` is truthy and return it; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def processes() -> dict[int, tuple[int, str]]:
    """Every live process (zombies excluded) as pid -> (parent pid, command line)."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError):
            continue  # ended while we looked
        if stat[0] in ("Z", "X"):
            continue
        table[int(entry.name)] = (int(stat[1]), cmdline)
    return table


def descendants(root: int) -> dict[int, str]:
    """The live processes below `root`, pid -> command line."""
    table = processes()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, cmdline) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = cmdline
                frontier.append(pid)
    return found


def children(parent: int, marker: str) -> list[int]:
    """Direct children of `parent` whose command line contains `marker`."""
    return sorted(
        pid for pid, (ppid, cmdline) in processes().items() if ppid == parent and marker in cmdline
    )


def alive(pid: int) -> bool:
    return pid in processes()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any pixmill, Redis or database settings, plus `extra`."""
    dropped = ("PIXMILL_", "REDIS_URL", "DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(extra)
    return env


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ----- configuration -------------------------------------------------------------------------


def test_child_environment_rebuilds_the_config(tmp_path: Path) -> None:
    config = Config(
        port=9001,
        workers=3,
        data_dir=tmp_path / "data",
        local_folder_root=tmp_path / "library",
        load_plugins=("essentials", "image_data"),
        redis_url="unix:///run/pixmill/redis.sock?db=0",
        queue_workers=5,
        reconcile_interval_s=1.5,
        max_upload_size_mb=12.5,
    )
    stale = {"PIXMILL_QUEUE_WORKERS": "1", "REDIS_URL": "redis://elsewhere:6379/0", "PATH": "/x"}
    env = child_environment(config, base=stale)
    assert env["PATH"] == "/x"  # the rest of the environment is passed on
    rebuilt = Config.from_env(env)
    # The database is named explicitly: a child must not work out its own default.
    assert rebuilt.database_url == config.sqlalchemy_url
    assert dataclasses.replace(rebuilt, database_url=None) == config


def test_child_environment_drops_what_the_config_leaves_unset(tmp_path: Path) -> None:
    base = {
        "REDIS_URL": "redis://stale:6379/0",
        "PIXMILL_REDIS_URL": "redis://stale:6379/1",
        "PIXMILL_LOCAL_FOLDER_ROOT": "/somewhere/else",
    }
    env = child_environment(Config(data_dir=Path("relative/data")), base=base)
    rebuilt = Config.from_env(env)
    assert rebuilt.redis_url is None
    assert rebuilt.local_folder_root is None
    assert rebuilt.data_dir.is_absolute()
    assert rebuilt.data_dir == Path("relative/data").absolute()


def test_bad_supervision_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="PIXMILL_QUEUE_WORKERS must be 0"):
        check_config(Config(queue_workers=-1))
    with pytest.raises(ValueError, match="PIXMILL_RECONCILE_INTERVAL_S must be more than 0"):
        check_config(Config(reconcile_interval_s=0))
    check_config(Config(queue_workers=0))  # 0 is allowed: the workers run elsewhere


def test_serve_flags_and_bad_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    import pixmill.server.serve as serve_module

    seen: list[Config] = []
    monkeypatch.setattr(serve_module, "run_server", lambda config, **_: seen.append(config))
    runner = CliRunner()
    env = clean_env(PIXMILL_QUEUE_WORKERS="7")
    assert runner.invoke(main, ["serve"], env=env).exit_code == 0
    flagged = runner.invoke(main, ["serve", "--queue-workers", "0"], env=env)
    assert flagged.exit_code == 0, flagged.output
    assert [config.queue_workers for config in seen] == [7, 0]

    negative_flag = runner.invoke(main, ["serve", "--queue-workers", "-1"], env=clean_env())
    assert negative_flag.exit_code == 2
    assert "--queue-workers" in negative_flag.output
    negative_env = runner.invoke(main, ["serve"], env=clean_env(PIXMILL_QUEUE_WORKERS="-2"))
    assert negative_env.exit_code == 2
    assert "PIXMILL_QUEUE_WORKERS must be 0 (no local workers) or more, not -2" in (
        negative_env.output
    )
    zero = runner.invoke(main, ["serve"], env=clean_env(PIXMILL_RECONCILE_INTERVAL_S="0"))
    assert zero.exit_code == 2
    assert "PIXMILL_RECONCILE_INTERVAL_S must be more than 0 seconds" in zero.output
    assert len(seen) == 2  # the refused ones never reached the server


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache.internal:6379/0", "redis://:***@cache.internal:6379/0"),
        ("rediss://pixmill:s3cret@[::1]:6380/2", "rediss://pixmill:***@[::1]:6380/2"),
        ("redis://cache.internal:6379/0", "redis://cache.internal:6379/0"),
        ("unix:///run/pixmill/redis.sock?db=0", "unix:///run/pixmill/redis.sock?db=0"),
    ],
)
def test_printable_redis_url_hides_the_password(url: str, shown: str) -> None:
    assert printable_redis_url(url) == shown


# ----- the pool ------------------------------------------------------------------------------


def test_pool_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="cannot have -1 processes"):
        ProcessPool(SLEEPER, -1)
    with pytest.raises(ValueError, match="needs a command"):
        ProcessPool([], 1)


def test_a_crash_loop_backs_off_and_a_stable_run_resets_it() -> None:
    clock = FakeClock()
    pool = ProcessPool(
        [PYTHON, "-c", "raise SystemExit(3)"],
        1,
        backoff_s=10,
        backoff_max_s=40,
        stable_after_s=100,
        clock=clock,
    )
    place = pool.places[0]

    def crash_and_notice(ran_for: float) -> float:
        """Let the member exit, advance the clock by `ran_for`; the restart delay chosen."""
        process = place.process
        assert process is not None
        wait_for(lambda: process.poll() is not None, 30, "the member to exit")
        clock.now += ran_for
        pool.check()
        assert place.process is None and place.restart_at is not None
        return place.restart_at - clock.now

    def restart_when_due(delay: float) -> None:
        clock.now += delay - 0.5
        pool.check()
        assert place.process is None, "restarted before its backoff was over"
        clock.now += 0.5
        pool.check()
        assert place.process is not None, "not restarted once its backoff was over"

    try:
        pool.start()
        delays = []
        for _ in range(4):
            delays.append(crash_and_notice(ran_for=1))
            restart_when_due(delays[-1])
        assert delays == [10, 20, 40, 40]  # doubled, then capped
        assert place.restarts == 4
        # A member that ran longer than `stable_after_s` starts the schedule over.
        assert crash_and_notice(ran_for=150) == 10
        assert pool.pids == []  # and it stays down until then
    finally:
        pool.stop(grace_s=1, cold_s=1)


def test_a_killed_member_is_restarted_and_stop_ends_them_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = ProcessPool(SLEEPER, 2, backoff_s=0.2)
    try:
        pool.start()
        first, second = pool.pids
        os.kill(first, signal.SIGKILL)

        def replaced() -> bool:
            pool.check()
            pids = pool.pids
            return len(pids) == 2 and first not in pids

        wait_for(replaced, 15, "the killed member to be replaced")
        restarted, kept = pool.pids
        assert kept == second and restarted != first
        assert pool.places[0].restarts == 1 and pool.places[1].restarts == 0
        assert f"queue worker 1 (pid {first}) was killed by SIGKILL" in caplog.text
    finally:
        started = time.monotonic()
        pool.stop(grace_s=10, cold_s=5)
    assert time.monotonic() - started < 5  # SIGTERM ends a plain sleeper at once
    assert pool.pids == []
    assert not alive(restarted) and not alive(second)
    # Stopped is stopped: no restart afterwards.
    pool.check()
    assert pool.pids == []


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the grandchild as well
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(sys.argv[1], "w") as handle:
    handle.write(str(grandchild.pid))
time.sleep(120)
"""


def test_stop_escalates_to_sigkill_for_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    pool = ProcessPool([PYTHON, "-c", STUBBORN, str(pid_file)], 1)
    pool.start()
    spawned = list(pool.pids)
    try:
        grandchild = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 30, "pid"))
        spawned.append(grandchild)
        process = pool.places[0].process
        assert process is not None
        started = time.monotonic()
        pool.stop(grace_s=0.5, cold_s=0.5, kill_wait_s=5)
        assert time.monotonic() - started < 6
        assert process.returncode == -signal.SIGKILL
        wait_for(lambda: not alive(grandchild), 10, "the grandchild to be killed")
    finally:
        for pid in spawned:  # only if the test failed before the pool could kill them
            kill_quietly(pid)


FORKS_A_HELPER = """
import subprocess, sys, time
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(sys.argv[1], "w") as handle:
    handle.write(str(helper.pid))
time.sleep(120)
"""


def test_what_a_dead_member_forked_is_stopped_with_it(tmp_path: Path) -> None:
    """RQ's scheduler is a fork of the worker: a SIGKILLed worker must not leave it behind."""
    pid_file = tmp_path / "helper.pid"
    pool = ProcessPool([PYTHON, "-c", FORKS_A_HELPER, str(pid_file)], 1, backoff_s=30)
    pool.start()
    helpers: list[int] = []
    try:
        helper = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 30, "pid"))
        helpers.append(helper)
        (member,) = pool.pids
        os.kill(member, signal.SIGKILL)

        def noticed() -> bool:
            pool.check()
            return pool.places[0].process is None

        wait_for(noticed, 10, "the pool to notice the exit")
        wait_for(lambda: not alive(helper), 10, "the orphaned helper to be stopped")
    finally:
        pool.stop(grace_s=1, cold_s=1)
        for pid in helpers:  # only if the pool failed to stop it
            kill_quietly(pid)


def test_an_unstartable_command_is_retried_with_backoff() -> None:
    clock = FakeClock()
    pool = ProcessPool(["/nonexistent/pixmill-worker"], 1, backoff_s=5, clock=clock)
    pool.start()
    place = pool.places[0]
    assert place.process is None and place.restart_at == clock.now + 5
    clock.now += 5
    pool.check()
    assert place.process is None and place.restart_at == clock.now + 10
    pool.stop()


# ----- the master's services -----------------------------------------------------------------


def test_private_redis_is_started_and_stopped_by_its_owner_only(tmp_path: Path) -> None:
    services = BackgroundServices(Config(data_dir=tmp_path / "data", queue_workers=2))
    with services:
        served = services.start_redis()
        redis_server = services.private_redis
        assert redis_server is not None
        assert served.redis_url == redis_server.url
        assert served.redis_url.startswith("unix://")
        client = redis_server.client()
        assert client.ping()
        where, workers, reconciler = services.banner_lines()
        assert f"pid {redis_server.pid}" in where and str(redis_server.socket_path) in where
        assert "2 on queues default, ai" in workers
        assert "every 30 s" in reconciler
        # A forked child (a gunicorn web worker) leaves through the same code: it must not
        # stop what its parent owns.
        child = os.fork()
        if child == 0:
            services.stop()
            os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert client.ping()
        client.close()
        pid = redis_server.pid
        assert pid is not None
    assert not alive(pid)
    assert not redis_server.socket_path.exists()
    assert services.private_redis is None


def test_with_redis_url_nothing_is_started_and_the_password_is_not_shown(tmp_path: Path) -> None:
    config = Config(
        data_dir=tmp_path / "data", redis_url="redis://:hunter2@127.0.0.1:1/0", queue_workers=0
    )
    with BackgroundServices(config) as services:
        assert services.start_redis() is config
        assert services.private_redis is None
        where, workers, _ = services.banner_lines()
        assert "hunter2" not in where and "redis://:***@127.0.0.1:1/0 (REDIS_URL)" in where
        assert "none here (QUEUE_WORKERS=0)" in workers
    assert not (tmp_path / "data" / "redis").exists()


# ----- the reconciler loop -------------------------------------------------------------------


def _sleepy(ctx: Any, inputs: Any, settings: dict[str, Any]) -> None:
    raise AssertionError("never run here")


SLEEPY = Tool(
    id="sleepy", name="sleepy", description="sleepy", settings=Settings, run=_sleepy, timeout=7.0
)


class _SleepyPlugin:
    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        return [SLEEPY]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path / "redis") as server:
        yield server


def test_the_reconciler_loop_enqueues_lost_jobs_with_their_tools_time_limit(
    database: Database, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    config = Config(
        data_dir=tmp_path / "data",
        database_url=database.engine.url.render_as_string(hide_password=False),
        redis_url=private_redis.url,
    )
    jobs = JobStore(database.sessions)
    sleepy = jobs.create(JobKind.TOOL, tool_id="sleepy")
    unknown = jobs.create(JobKind.TOOL, tool_id="no-such-tool")
    registry = load_registry((), [_SleepyPlugin()], entry_points=False)
    loop = ReconcileLoop(config, registry=registry)
    try:
        # Rows older than the grace and absent from Redis are what Redis lost.
        report = loop.run_once(utcnow() + timedelta(seconds=defaults.RECONCILE_GRACE_S + 1))
        assert report is not None
        assert sorted(report.reenqueued) == sorted([sleepy.id, unknown.id])
    finally:
        loop.close()
    client = redis.Redis.from_url(private_redis.url)
    try:
        queue = Queue("default", connection=client)
        assert sorted(queue.get_job_ids()) == sorted([sleepy.id, unknown.id])
        grace = defaults.JOB_TIMEOUT_GRACE_S
        timeouts = {job_id: queue.fetch_job(job_id).timeout for job_id in (sleepy.id, unknown.id)}
        assert timeouts == {
            sleepy.id: int(7.0 + grace),
            unknown.id: int(defaults.JOB_TIMEOUT_S + grace),
        }
    finally:
        client.close()


def test_a_reconciler_pass_that_cannot_reach_redis_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config(data_dir=tmp_path / "data", redis_url=f"unix://{tmp_path}/nobody.sock?db=0")
    loop = ReconcileLoop(config)
    try:
        assert loop.run_once() is None
        assert loop.run_once() is None  # and the next pass tries again
    finally:
        loop.close()
    assert caplog.text.count("reconciler pass failed") == 2


def test_the_supervisor_sweeps_expired_results_on_schedule(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data", result_ttl_hours=1)
    blobs = LocalBlobStore(config.blobs_dir)
    expired, fresh = new_id(), new_id()
    blobs.put(BlobKey.result(expired, 1, "old.png"), b"old")
    blobs.put(BlobKey.result(fresh, 1, "new.png"), b"new")
    two_hours_ago = time.time() - 7200
    for path in sorted((config.blobs_dir / "results" / expired).rglob("*"), reverse=True):
        os.utime(path, (two_hours_ago, two_hours_ago))
    os.utime(config.blobs_dir / "results" / expired, (two_hours_ago, two_hours_ago))

    loop = ReconcileLoop(config)
    assert loop.purge_expired_results(now=1000.0) == 1
    assert blobs.list_job(expired) == [] and len(blobs.list_job(fresh)) == 1
    blobs.put(BlobKey.result(new_id(), 1, "x.png"), b"x")
    assert loop.purge_expired_results(now=1001.0) == 0  # not due yet: at most every 10 min
    assert loop.purge_expired_results(now=1000.0 + RESULT_PURGE_INTERVAL_S) == 0  # nothing old


def test_the_supervisor_process_refuses_to_run_without_redis(tmp_path: Path) -> None:
    done = subprocess.run(
        [PYTHON, "-m", supervisor.SUPERVISOR_MODULE],
        env=clean_env(PIXMILL_DATA_DIR=str(tmp_path / "data")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "needs the server's Redis (REDIS_URL)" in done.stderr


# ----- pixmill serve, for real ---------------------------------------------------------------


class Server:
    """A `pixmill serve` subprocess with its output in files (never a full pipe)."""

    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
        self.out = tmp_path / "serve.out"
        self.err = tmp_path / "serve.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "pixmill", "serve", "--port", "0", "--workers", "1", *args],
                stdout=out,
                stderr=err,
                env=env,
                cwd=tmp_path,
            )
        banner = wait_for(self._banner, 90, "the start banner")
        self.url = banner.split()[3]

    def _banner(self) -> str | None:
        if self.process.poll() is not None:
            pytest.fail(f"pixmill serve exited early:\n{self.output()}")
        lines = self.out.read_text().splitlines()
        return lines[0] if lines and "reconciler:" in self.out.read_text() else None

    def output(self) -> str:
        return self.out.read_text() + "\n--- stderr ---\n" + self.err.read_text()[-4000:]

    def supervisor_pid(self) -> int:
        found = wait_for(
            lambda: children(self.process.pid, supervisor.SUPERVISOR_MODULE), 30, "supervisor"
        )
        return int(found[0])

    def queue_workers(self, count: int, without: int | None = None) -> list[int]:
        """The worker processes of the pool, once there are `count` of them and `without`
        (a pid) is not among them."""
        parent = self.supervisor_pid()

        def found() -> list[int] | None:
            pids = children(parent, "pixmill worker")
            return pids if len(pids) == count and without not in pids else None

        workers: list[int] = wait_for(found, 60, f"{count} queue workers")
        return workers

    def stop(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in descendants(self.process.pid):
                kill_quietly(pid)
            self.process.kill()
            self.process.wait(timeout=10)
            pytest.fail(f"pixmill serve did not stop within {timeout:g} s:\n{self.output()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            for pid in descendants(self.process.pid):
                kill_quietly(pid)
            self.process.kill()
            self.process.wait(timeout=10)


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def submit_resize(base: str, width: int) -> str:
    response = requests.post(
        f"{base}/api/v1/tools/image/resize?async=true",
        files={"file": ("photo.jpg", images.jpeg(320, 240), "image/jpeg")},
        data={"settings": f'{{"width": {width}}}'},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["async"] is True and response.headers["X-Job-Id"] == body["jobId"]
    return str(body["jobId"])


def wait_until_completed(base: str, job_id: str, timeout: float = 90) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = requests.get(f"{base}/api/v1/jobs/{job_id}", timeout=10).json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    job = wait_for(finished, timeout, f"job {job_id} to finish")
    assert job["status"] == "completed", job
    return job


def downloaded_size(base: str, job_id: str) -> tuple[int, int]:
    results = requests.get(f"{base}/api/v1/jobs/{job_id}/results", timeout=10).json()
    (file,) = results["files"]
    download = requests.get(base + file["downloadUrl"], timeout=10)
    assert download.status_code == 200
    size: tuple[int, int] = Image.open(io.BytesIO(download.content)).size
    return size


@pytest.mark.server
def test_zero_configuration_serve_runs_jobs_restarts_workers_and_stops_clean(
    tmp_path: Path,
) -> None:
    env = clean_env(PIXMILL_DATA_DIR=str(tmp_path / "data"), PIXMILL_RECONCILE_INTERVAL_S="1")
    server = Server(tmp_path, ["--queue-workers", "2"], env)
    try:
        banner = server.out.read_text()
        redis_dir = tmp_path / "data" / "redis"
        assert "redis: private redis-server (pid " in banner and str(redis_dir) in banner
        assert "queue workers: 2 on queues default, ai" in banner
        (redis_pid,) = children(server.process.pid, "redis-server")
        assert (redis_dir / "redis.sock").exists()

        first = submit_resize(server.url, 32)
        wait_until_completed(server.url, first)
        assert downloaded_size(server.url, first) == (32, 24)

        old_workers = server.queue_workers(2)
        victim, survivor = old_workers
        os.kill(victim, signal.SIGKILL)
        restarted = server.queue_workers(2, without=victim)
        assert survivor in restarted
        second = submit_resize(server.url, 24)
        wait_until_completed(server.url, second)
        assert downloaded_size(server.url, second) == (24, 18)

        everything = descendants(server.process.pid)
        assert redis_pid in everything and all(pid in everything for pid in restarted)
        started = time.monotonic()
        assert server.stop() == 0, server.output()
        assert time.monotonic() - started < 45
        left = [pid for pid in everything if alive(pid)]
        assert left == [], {pid: everything[pid] for pid in left}
        assert not (redis_dir / "redis.sock").exists()
        assert f"queue worker 1 (pid {victim}) was killed by SIGKILL" in server.err.read_text()
    finally:
        server.kill()


@pytest.mark.server
def test_serve_with_redis_url_and_workers_on_another_host(tmp_path: Path) -> None:
    """The two-machine layout on one machine: the web host has QUEUE_WORKERS=0 and shares
    Redis, PostgreSQL and the data dir with a separate `pixmill worker`."""
    test_db.require_postgres()
    data_dir = tmp_path / "shared-data"
    with (
        PrivateRedis(tmp_path / "redis") as shared_redis,
        test_db.throwaway_postgres() as database_url,
    ):
        env = clean_env(
            REDIS_URL=shared_redis.url,
            DATABASE_URL=database_url,
            PIXMILL_DATA_DIR=str(data_dir),
            PIXMILL_RECONCILE_INTERVAL_S="1",
        )
        server = Server(tmp_path, ["--queue-workers", "0"], env)
        try:
            banner = server.out.read_text()
            assert f"redis: {shared_redis.url} (REDIS_URL)" in banner
            assert "queue workers: none here (QUEUE_WORKERS=0)" in banner
            assert children(server.process.pid, "redis-server") == []
            assert not (data_dir / "redis").exists()

            job_id = submit_resize(server.url, 40)
            client = shared_redis.client()
            try:
                assert Queue("default", connection=client).get_job_ids() == [job_id]
            finally:
                client.close()
            time.sleep(1.5)  # a reconciler pass or more: nobody here runs it
            status = requests.get(f"{server.url}/api/v1/jobs/{job_id}", timeout=10).json()
            assert status["status"] == "queued"
            assert children(server.supervisor_pid(), "pixmill worker") == []

            worker = subprocess.run(
                [PYTHON, "-m", "pixmill", "worker", "--queue", "default", "--burst"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert worker.returncode == 0, worker.stderr[-2000:]
            wait_until_completed(server.url, job_id, timeout=30)
            assert downloaded_size(server.url, job_id) == (40, 30)

            everything = descendants(server.process.pid)
            assert server.stop() == 0, server.output()
            assert [pid for pid in everything if alive(pid)] == []
            client = shared_redis.client()
            assert client.ping()  # someone else's Redis is left alone
            client.close()
        finally:
            server.kill()
