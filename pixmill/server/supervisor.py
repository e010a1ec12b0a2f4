"""What `pixmill serve` runs beside gunicorn: its own Redis, the queue workers, the reconciler.

The process tree of `pixmill serve` when no `REDIS_URL` is configured:

    pixmill serve              the gunicorn master; the app is built here once (preload)
    ├── gunicorn workers       forked by the master; they serve HTTP
    ├── redis-server           the private Redis: unix socket in <data dir>/redis, no TCP port
    └── pixmill supervisor     `python -m pixmill.server.supervisor`
        ├── pixmill worker     `python -m pixmill worker --queue default --queue ai`,
        ├── ...                QUEUE_WORKERS of them (0: none)
        └── (a thread)         the reconciler: once at start, then every RECONCILE_INTERVAL_S

With `REDIS_URL` there is no redis-server and the rest is the same; when every worker runs
on other machines (`pixmill worker`), QUEUE_WORKERS=0 leaves only the reconciler here.

The master's side is `BackgroundServices`. `run_server` starts the private Redis before the
app is built, so that the app's `redis_url` (and that of every forked web worker) is its
socket and queued jobs go to RQ. It starts the supervisor once gunicorn is ready, from
gunicorn's `when_ready` hook, which runs in the master's main thread only: the web workers
never start anything. On SIGINT or SIGTERM gunicorn stops first (answers in flight are
finished), then the supervisor (which stops the workers), then Redis; each step is bounded.

Why the workers hang off a supervisor process and not off the gunicorn master:
- the master reaps every child with `waitpid(-1)`, so it would collect the exit status of a
  worker before we could read it;
- the master forks web workers at any moment (at start, and to replace one that timed out),
  and a thread of ours running in it (watching the pool, reconciling) could hold a lock at
  that moment which the forked child would then wait on forever.
The supervisor has neither problem: its main thread watches its children and its only other
thread reconciles. It runs no tool code (the registry is loaded, lazily, only to read tools'
time limits), so nothing in it is expected to crash; if it is killed anyway, its workers stop
with it and `pixmill serve` must be restarted.

The children:
- Each runs in a session of its own, so a Ctrl-C in the terminal reaches `pixmill serve` alone,
  which then stops everything in order, and with `PR_SET_PDEATHSIG`, so that a SIGKILLed parent
  still leaves no orphan (the signal is tied to the thread that started the child: always the
  main thread here).
- A worker's process group holds what it forked (RQ's scheduler process). When a worker dies
  unexpectedly its group gets SIGTERM, so nothing of it lingers (the scheduler releases its
  lock); at stop, whatever is left in any group gets SIGKILL.
- Stopping a worker: SIGTERM, RQ's warm shutdown (the current job finishes); after
  WORKER_STOP_GRACE_S a second SIGTERM, RQ's cold shutdown (the job is handed back to the queue
  at once, see `worker._Attempt.run`); after WORKER_COLD_STOP_S, SIGKILL (the job's lease runs
  out and the reconciler takes it back).
- A worker that exits on its own is restarted after a backoff: RESTART_BACKOFF_S, doubled for
  each exit in quick succession up to RESTART_BACKOFF_MAX_S, and back to the start once a worker
  has run STABLE_RUN_S. A crash loop (the database is down, say) does not spin.
- Children are configured through the environment alone (`child_environment`): the same data
  dir, database and Redis as the server. `Config.extra` cannot travel that way.

This module imports nothing from Flask, `pixmill.server.app` or `pixmill.plugins`: the
supervisor process stays small.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pixmill.core.blobs import LocalBlobStore
from pixmill.core.config import ENV_PREFIX, Config
from pixmill.core.db import Database
from pixmill.core.defaults import RESULT_PURGE_INTERVAL_S
from pixmill.core.dispatch import Reconciler, ReconcileReport, connect, tool_timeout
from pixmill.core.jobstore import JobStore
from pixmill.core.models import Job
from pixmill.core.plugin_host import Registry, load_registry
from pixmill.core.redis_server import PrivateRedis, die_with_parent
from pixmill.core.worker import extra_plugins_from_env

log = logging.getLogger(__name__)

SUPERVISOR_MODULE = "pixmill.server.supervisor"
# The queues of the built-in plugins; a plugin that declares another one needs a
# `pixmill worker --queue NAME` of its own.
POOL_QUEUES = ("default", "ai")
WORKER_STOP_GRACE_S = 20.0
WORKER_COLD_STOP_S = 5.0
KILL_WAIT_S = 5.0
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 60.0
STABLE_RUN_S = 60.0
WATCH_INTERVAL_S = 0.5
# The master waits this long for the supervisor to stop its workers before killing it.
SUPERVISOR_STOP_TIMEOUT_S = WORKER_STOP_GRACE_S + WORKER_COLD_STOP_S + KILL_WAIT_S + 10.0
# A reconciler pass stuck on an unreachable database must not hold up the exit.
RECONCILER_JOIN_S = 5.0


def check_config(config: Config) -> None:
    """Raise `ValueError` naming the variable when the supervision settings make no sense."""
    if config.queue_workers < 0:
        raise ValueError(
            f"{ENV_PREFIX}QUEUE_WORKERS must be 0 (no local workers) or more, "
            f"not {config.queue_workers}"
        )
    if not config.reconcile_interval_s > 0:
        raise ValueError(
            f"{ENV_PREFIX}RECONCILE_INTERVAL_S must be more than 0 seconds, "
            f"not {config.reconcile_interval_s:g}"
        )


def child_environment(config: Config, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with `PIXMILL_*` variables from which
    `Config.from_env` rebuilds `config` in a child process.

    The database URL is always written out (`sqlalchemy_url`), so a child uses the very same
    database even with the SQLite default; the data dir is made absolute.
    """
    env = dict(os.environ if base is None else base)
    for spec in fields(Config):
        if spec.name == "extra":
            continue
        name = ENV_PREFIX + spec.name.upper()
        value = config.sqlalchemy_url if spec.name == "database_url" else getattr(config, spec.name)
        if value is None:
            env.pop(name, None)
            if spec.name == "redis_url":  # `Config.from_env` falls back to the bare name
                env.pop("REDIS_URL", None)
            continue
        env[name] = _env_value(value)
    return env


def _env_value(value: Any) -> str:
    if isinstance(value, Path):
        return str(value.absolute())
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def printable_redis_url(url: str) -> str:
    """The URL without its password: the banner goes to terminals and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    netloc = user + host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def worker_command(queues: Sequence[str] = POOL_QUEUES, log_level: str = "warning") -> list[str]:
    """The command of one pool worker: `pixmill worker` with this interpreter, logging at
    `pixmill serve`'s level (RQ's own INFO line per job would flood the server's output)."""
    command = [sys.executable, "-m", "pixmill", "worker", "--log-level", log_level]
    for queue in queues:
        command += ["--queue", queue]
    return command


# ----- the master's side ------------------------------------------------------------------------


class BackgroundServices:
    """What the `pixmill serve` master owns besides gunicorn: the private Redis (when there is
    no `REDIS_URL`) and the supervisor process. Stops them on exit from the `with` block.

    Every method does nothing in a process forked from the owner (a gunicorn web worker leaves
    through the same `with` block when it exits).
    """

    def __init__(self, config: Config, *, log_level: str = "warning") -> None:
        self.config = config
        self.log_level = log_level
        self.private_redis: PrivateRedis | None = None
        self.supervisor: subprocess.Popen[bytes] | None = None
        self._owner_pid = os.getpid()

    def __enter__(self) -> BackgroundServices:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def _in_owner(self) -> bool:
        return os.getpid() == self._owner_pid

    def start_redis(self) -> Config:
        """The config to build the app with: with a `REDIS_URL`, the config as it is; else the
        config pointing at a private redis-server started now in `<data dir>/redis`.

        Call it from the main thread: the server is stopped by the kernel when the thread
        that started it ends (see `pixmill.core.redis_server`)."""
        if self.config.redis_url or not self._in_owner or self.private_redis is not None:
            return self.config
        self.private_redis = PrivateRedis(self.config.data_dir / "redis").start()
        self.config = self.config.with_overrides(redis_url=self.private_redis.url)
        return self.config

    def start_supervisor(self) -> None:
        """Start the supervisor process (workers and reconciler); from the main thread."""
        if not self._in_owner or self.supervisor is not None:
            return
        if not self.config.redis_url:
            raise ValueError("start the private Redis (or set REDIS_URL) before the supervisor")
        self.supervisor = subprocess.Popen(
            [sys.executable, "-m", SUPERVISOR_MODULE, "--log-level", self.log_level],
            env=child_environment(self.config),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )

    def banner_lines(self) -> list[str]:
        """Where Redis and the queue workers are, for the start banner."""
        config = self.config
        redis_server = self.private_redis
        if redis_server is not None:
            where = (
                f"  redis: private redis-server (pid {redis_server.pid}) on "
                f"{redis_server.socket_path}, log {redis_server.logfile}"
            )
        else:
            where = f"  redis: {printable_redis_url(config.redis_url or '')} (REDIS_URL)"
        supervisor = f"pid {self.supervisor.pid}" if self.supervisor is not None else "not started"
        if config.queue_workers:
            workers = (
                f"  queue workers: {config.queue_workers} on queues {', '.join(POOL_QUEUES)} "
                f"(supervisor {supervisor})"
            )
        else:
            workers = (
                "  queue workers: none here (QUEUE_WORKERS=0); `pixmill worker` processes "
                f"sharing this Redis run the jobs (supervisor {supervisor})"
            )
        reconciler = f"  reconciler: at start and every {config.reconcile_interval_s:g} s"
        return [where, workers, reconciler]

    def stop(self) -> None:
        """Stop the supervisor (and so the workers), then Redis. Bounded; idempotent."""
        if not self._in_owner:
            return
        supervisor, self.supervisor = self.supervisor, None
        if supervisor is not None:
            _stop_process(supervisor, SUPERVISOR_STOP_TIMEOUT_S)
        redis_server, self.private_redis = self.private_redis, None
        if redis_server is not None:
            redis_server.stop()


def _stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout`. A child that the gunicorn master reaped
    already (its `waitpid(-1)` takes any child) reads as exited: Popen gets ECHILD and
    records it as gone instead of signalling its pid again."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("pid %d did not stop within %g s; killing it", process.pid, timeout)
        process.kill()
        process.wait(timeout=KILL_WAIT_S)


# ----- the pool -------------------------------------------------------------------------------


@dataclass
class _Place:
    """One place of the pool and the process filling it (None while waiting to restart)."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None
    restarts: int = 0


class ProcessPool:
    """`size` copies of one command, each restarted (with a backoff) when it exits.

    Drive it from one thread, the main one (see the module docstring on PDEATHSIG): `start()`,
    then `check()` regularly, then `stop()`. `clock` is injectable so that tests can check the
    backoff schedule without waiting for it.
    """

    def __init__(
        self,
        command: Sequence[str],
        size: int,
        *,
        env: Mapping[str, str] | None = None,
        label: str = "queue worker",
        backoff_s: float = RESTART_BACKOFF_S,
        backoff_max_s: float = RESTART_BACKOFF_MAX_S,
        stable_after_s: float = STABLE_RUN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 0:
            raise ValueError(f"a pool cannot have {size} processes")
        if not command:
            raise ValueError("a pool needs a command")
        self.command = list(command)
        self.env = dict(env) if env is not None else None
        self.label = label
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.stable_after_s = stable_after_s
        self.clock = clock
        self.places = [_Place(number) for number in range(1, size + 1)]
        self._stopping = False
        # Process groups of dead members that still had processes in them (see `_on_exit`).
        self._leftover_groups: set[int] = set()

    @property
    def pids(self) -> list[int]:
        """The pids of the members running now, in place order."""
        return [
            place.process.pid
            for place in self.places
            if place.process is not None and place.process.poll() is None
        ]

    def start(self) -> None:
        now = self.clock()
        for place in self.places:
            if place.process is None:
                self._spawn(place, now)

    def restart_delay(self, quick_exits: int) -> float:
        """The wait before restarting after the `quick_exits`-th exit in quick succession."""
        return float(min(self.backoff_s * 2 ** max(quick_exits - 1, 0), self.backoff_max_s))

    def check(self) -> None:
        """Notice members that exited, and restart those whose backoff is over."""
        if self._stopping:
            return
        now = self.clock()
        for place in self.places:
            process = place.process
            if process is not None and process.poll() is not None:
                self._on_exit(place, process, now)
            if place.process is None and place.restart_at is not None and now >= place.restart_at:
                place.restarts += 1
                self._spawn(place, now)

    def _spawn(self, place: _Place, now: float) -> None:
        place.restart_at = None
        place.started_at = now
        try:
            place.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        except OSError as error:
            place.process = None
            place.quick_exits += 1
            delay = self.restart_delay(place.quick_exits)
            place.restart_at = now + delay
            log.error(
                "cannot start %s %d: %s; trying again in %g s",
                self.label,
                place.number,
                error,
                delay,
            )
            return
        verb = "restarted" if place.restarts else "started"
        log.info("%s %d %s (pid %d)", self.label, place.number, verb, place.process.pid)

    def _on_exit(self, place: _Place, process: subprocess.Popen[bytes], now: float) -> None:
        ran = now - place.started_at
        place.quick_exits = 1 if ran >= self.stable_after_s else place.quick_exits + 1
        delay = self.restart_delay(place.quick_exits)
        place.process = None
        place.restart_at = now + delay
        # What the member forked (RQ's scheduler) outlives it in its process group. Groups
        # noted earlier are forgotten once empty (signal 0 only checks for members).
        self._leftover_groups = {
            group for group in self._leftover_groups if _signal_group(group, 0)
        }
        if _signal_group(process.pid, signal.SIGTERM):
            self._leftover_groups.add(process.pid)
        log.warning(
            "%s %d (pid %d) %s after %.0f s; restarting it in %g s",
            self.label,
            place.number,
            process.pid,
            describe_exit(process.returncode),
            ran,
            delay,
        )

    def stop(
        self,
        grace_s: float = WORKER_STOP_GRACE_S,
        cold_s: float = WORKER_COLD_STOP_S,
        kill_wait_s: float = KILL_WAIT_S,
    ) -> None:
        """SIGTERM every member; SIGTERM again after `grace_s`; SIGKILL their process groups
        after `cold_s` more. No restarts from then on."""
        self._stopping = True
        running = [
            place.process
            for place in self.places
            if place.process is not None and place.process.poll() is None
        ]
        groups = {process.pid for process in running} | self._leftover_groups
        for process in running:
            _signal_process(process, signal.SIGTERM)
        left = _wait_all(running, grace_s)
        for process in left:
            log.warning(
                "%s (pid %d) still busy after %g s: cold shutdown", self.label, process.pid, grace_s
            )
            _signal_process(process, signal.SIGTERM)
        left = _wait_all(left, cold_s)
        for process in left:
            log.warning("%s (pid %d) ignored SIGTERM; killing it", self.label, process.pid)
            _signal_group(process.pid, signal.SIGKILL)
        _wait_all(left, kill_wait_s)
        for group in groups:
            _signal_group(group, signal.SIGKILL)
        for place in self.places:
            place.process = None
        self._leftover_groups.clear()


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def _signal_process(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signum)


def _signal_group(group: int, signum: int) -> bool:
    """Signal a process group; False when it has no process left (or is not ours)."""
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _wait_all(
    processes: Sequence[subprocess.Popen[bytes]], timeout: float
) -> list[subprocess.Popen[bytes]]:
    """Wait until every process has exited or `timeout` passed; the ones still running."""
    deadline = time.monotonic() + timeout
    left = [process for process in processes if process.poll() is None]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [process for process in left if process.poll() is None]
    return left


# ----- the reconciler ------------------------------------------------------------------------


class ReconcileLoop:
    """`Reconciler.run_once` at start and every `config.reconcile_interval_s` until stopped.

    The database, the Redis connection and the registry are opened on first use, so that a
    database that is down at start delays reconciling instead of stopping the supervisor; a
    failed pass is logged and the next one tries again.
    """

    def __init__(self, config: Config, *, registry: Registry | None = None) -> None:
        self.config = config
        self._registry = registry
        self._reconciler: Reconciler | None = None
        self._database: Database | None = None
        self._last_purge = -math.inf

    def run(self, stop: threading.Event) -> None:
        while True:
            self.run_once()
            self.purge_expired_results()
            if stop.wait(self.config.reconcile_interval_s):
                return

    def purge_expired_results(self, now: float | None = None) -> int:
        """The scheduled retention sweep: blobs older than RESULT_TTL_HOURS go, at most once
        per RESULT_PURGE_INTERVAL_S. (Web processes also sweep on requests, for apps run without
        `pixmill serve`; concurrent sweeps are safe, see `LocalBlobStore.purge_older_than`.)
        """
        at = time.monotonic() if now is None else now
        if at - self._last_purge < RESULT_PURGE_INTERVAL_S:
            return 0
        self._last_purge = at
        try:
            removed = LocalBlobStore(self.config.blobs_dir).purge_older_than(
                self.config.result_ttl_hours * 3600
            )
        except OSError as error:
            log.warning("retention sweep failed: %s", error)
            return 0
        if removed:
            log.info("retention: removed the files of %d expired job(s)", removed)
        return removed

    def run_once(self, now: datetime | None = None) -> ReconcileReport | None:
        """One pass (at `now`, a datetime, for tests); None when it could not run."""
        try:
            report = self._open().run_once(now)
        except Exception as error:
            log.warning(
                "reconciler pass failed (%s: %s); next try in %g s",
                type(error).__name__,
                error,
                self.config.reconcile_interval_s,
            )
            return None
        if report.requeued or report.finished or report.reenqueued:
            log.warning(
                "reconciler: %d job(s) of stopped workers requeued, %d failed (no attempts "
                "left), %d lost by Redis enqueued again",
                len(report.requeued),
                len(report.finished),
                len(report.reenqueued),
            )
        return report

    def _open(self) -> Reconciler:
        if self._reconciler is None:
            if not self.config.redis_url:
                raise ValueError("the reconciler needs the server's Redis (REDIS_URL)")
            if self._database is None:
                self._database = Database.from_config(self.config)
            self._reconciler = Reconciler(
                JobStore(self._database.sessions),
                connect(self.config.redis_url),
                timeout_for=self.timeout_for,
                blobs=LocalBlobStore(self.config.blobs_dir),
            )
        return self._reconciler

    def close(self) -> None:
        """Release the database's and Redis's connections (after the last pass)."""
        reconciler, self._reconciler = self._reconciler, None
        if reconciler is not None:
            reconciler.redis.close()
        database, self._database = self._database, None
        if database is not None:
            database.dispose()

    def timeout_for(self, job: Job) -> float:
        """The time limit of the job's tool as the registry declares it (else the default)."""
        if not job.tool_id:
            return tool_timeout(None)
        registry = self._loaded_registry()
        return tool_timeout(registry.tools.get(job.tool_id) or registry.extractors.get(job.tool_id))

    def _loaded_registry(self) -> Registry:
        if self._registry is None:
            try:
                self._registry = load_registry(
                    self.config.load_plugins,
                    extra_plugins_from_env(),
                    plugins_dir=self.config.plugins_dir,
                )
            except Exception as error:  # a bad PIXMILL_EXTRA_PLUGINS: default limits, not a stop
                log.warning("cannot load the plugins for their time limits: %s", error)
                self._registry = Registry()
        return self._registry


# ----- the supervisor process ----------------------------------------------------------------


def supervise(
    config: Config,
    *,
    command: Sequence[str] | None = None,
    stop: threading.Event | None = None,
    log_level: str = "warning",
) -> int:
    """Run the worker pool and the reconciler until SIGTERM or SIGINT (or `stop` is set);
    returns the exit status. Call it from the main thread."""
    check_config(config)
    if not config.redis_url:
        raise ValueError("the supervisor needs the server's Redis (REDIS_URL)")
    stop = stop if stop is not None else threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    reconcile = ReconcileLoop(config)
    reconciler = threading.Thread(
        target=reconcile.run, args=(stop,), name="pixmill-reconciler", daemon=True
    )
    reconciler.start()
    pool = ProcessPool(command or worker_command(log_level=log_level), config.queue_workers)
    try:
        pool.start()
        if pool.places:
            pids = ", ".join(str(pid) for pid in pool.pids)
            print(f"  queue workers started: pids {pids}", flush=True)
        while not stop.wait(WATCH_INTERVAL_S):
            pool.check()
    finally:
        stop.set()
        pool.stop()
        reconciler.join(timeout=RECONCILER_JOIN_S)
        if not reconciler.is_alive():
            reconcile.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {SUPERVISOR_MODULE}",
        description="The queue workers and reconciler of `pixmill serve` (started by it; "
        "configured through PIXMILL_* variables).",
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="warning"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="pixmill supervisor: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = Config.from_env()
        return supervise(config, log_level=args.log_level)
    except ValueError as error:
        log.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
