"""Running the app under gunicorn: the production server behind `pixmill serve`.

One master process binds the socket and builds the app once (`preload_app`: the registry and
the plugins' imports are shared copy-on-write by the forked workers); each worker serves
requests on a pool of threads, so a slow upload or a long response does not hold up the rest.

Ctrl-C (SIGINT) and SIGTERM both stop without cutting answers short: the socket closes and a
worker exits only once its request threads are done (joined at exit), bounded by
`GRACEFUL_TIMEOUT_S` after which the master kills what is left.

Queued jobs need Redis and RQ workers. `run_server` starts them around gunicorn through
`supervisor.BackgroundServices`: a private redis-server before the app is built (unless
`REDIS_URL` names one), and once gunicorn is ready the supervisor process with the
`QUEUE_WORKERS` queue workers and the reconciler; all of them stop after gunicorn. See
`pixmill.server.supervisor` for the process tree and why it has that shape.

This module imports gunicorn at import time; only `pixmill serve` imports it.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from gunicorn.app.base import BaseApplication

from pixmill.core.config import Config
from pixmill.server.supervisor import BackgroundServices, check_config

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 20
# A worker that does not check in for this long is restarted. Threaded workers check in from
# their main loop, so a long request in a thread does not count against it.
WORKER_TIMEOUT_S = 60
KEEPALIVE_S = 5
# The request line and headers are small in this API (bodies carry the files); tight limits
# turn header floods into a quick 400 instead of buffered memory.
LIMIT_REQUEST_LINE = 4094
LIMIT_REQUEST_FIELDS = 100
LIMIT_REQUEST_FIELD_SIZE = 8190
OPTIONAL_SETTINGS = frozenset({"control_socket_disable"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to anything


def url_host(host: str) -> str:
    """The host as it goes in a URL or a gunicorn bind (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def gunicorn_options(
    config: Config,
    *,
    access_log: bool = False,
    log_level: str = "warning",
    on_ready: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """The gunicorn settings for `config` (see the module docstring for the choices)."""
    options: dict[str, Any] = {
        "bind": [f"{url_host(config.host)}:{config.port}"],
        "workers": config.workers,
        "threads": config.threads,
        "worker_class": "gthread",
        "preload_app": True,
        "timeout": WORKER_TIMEOUT_S,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "keepalive": KEEPALIVE_S,
        "limit_request_line": LIMIT_REQUEST_LINE,
        "limit_request_fields": LIMIT_REQUEST_FIELDS,
        "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": log_level,
        "proc_name": "pixmill",
        # gunicorn >= 25 opens a control socket at a fixed path in $HOME by default: two
        # servers would fight over it, and nothing in pixmill uses it.
        "control_socket_disable": True,
        "post_worker_init": install_stop_handlers,
    }
    if on_ready is not None:
        options["when_ready"] = on_ready
    return options


def install_stop_handlers(worker: Any) -> None:
    """gunicorn's `post_worker_init` hook: how a web worker stops.

    Progress streams end first. An open `/progress` stream is a response that never finishes
    on its own, so a graceful stop (SIGTERM) would wait GRACEFUL_TIMEOUT_S for it and then
    cut it mid-event; ending the streams (`progress.end_open_streams`) lets each send its
    last event and close within a fraction of a second, and the client reconnects elsewhere.

    Then a worker acts on its first quit signal only. A Ctrl-C reaches the whole process
    group, so a web worker gets SIGINT from the terminal and, moments later, SIGQUIT from the
    master handling the same Ctrl-C. gthread's `handle_quit` shuts its thread pool down while
    holding the pool's non-reentrant lock; a second signal arriving right then runs the
    handler again on the same thread, which waits for that lock forever, and the worker hangs
    until the master SIGKILLs it after GRACEFUL_TIMEOUT_S (seen with gunicorn 27 in about
    one stop in six). The first quit already ends the worker, so the later ones are dropped.
    """
    from pixmill.server.progress import end_open_streams  # the app's module, loaded by now

    def end_streams() -> None:
        try:
            end_open_streams(worker.wsgi)
        except Exception:  # never let a stop handler keep the worker from stopping
            log.exception("could not end the open progress streams")

    handle_quit = worker.handle_quit
    quitting = threading.Event()

    def handle_quit_once(signum: int, frame: FrameType | None) -> None:
        if quitting.is_set():
            return
        quitting.set()
        end_streams()
        handle_quit(signum, frame)

    for signum in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, handle_quit_once)

    previous_term = signal.getsignal(signal.SIGTERM)

    def handle_term(signum: int, frame: FrameType | None) -> None:
        end_streams()
        if callable(previous_term):
            previous_term(signum, frame)

    signal.signal(signal.SIGTERM, handle_term)


class PixmillServer(BaseApplication):
    """gunicorn driven from code: no gunicorn command line or config file is read."""

    def __init__(self, config: Config, options: dict[str, Any]) -> None:
        self.pixmill_config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in OPTIONAL_SETTINGS and key not in self.cfg.settings:
                continue  # an older gunicorn without this setting
            self.cfg.set(key, value)

    def load(self) -> Any:
        from pixmill.server.app import create_app

        return create_app(self.pixmill_config)


def serving_url(server: Any, host: str) -> str:
    """The URL of the first socket gunicorn bound (the real port when 0 was asked for)."""
    bound = server.LISTENERS[0].sock.getsockname()
    return f"http://{url_host(host)}:{bound[1]}"


# glibc mallopt() parameters (malloc.h) and the values pixmill serve sets.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


def keep_freed_memory_for_reuse() -> bool:
    """Tell glibc's malloc to keep freed image buffers instead of returning them to the kernel.

    Every request allocates and frees buffers of several megabytes (the upload, the decoded
    pixels). By default glibc serves those with fresh mmap()s and trims the heap after each
    free, so each request paid again for page faults: about 6 ms of kernel time per 12 MP JPEG
    on this project's benchmark, ~8% of the work. Workers then keep their high-water mark of
    memory. Inherited by the forked workers; a no-op (False) off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: leave its defaults alone
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


def run_server(config: Config, *, access_log: bool = False, log_level: str = "warning") -> None:
    """Serve until stopped; prints `pixmill serving on <url> (N workers)` once bound, then
    where Redis and the queue workers are. A bad QUEUE_WORKERS or RECONCILE_INTERVAL_S
    raises `ValueError` before anything starts."""
    check_config(config)
    keep_freed_memory_for_reuse()
    if not is_loopback(config.host):
        print(
            f"warning: binding {config.host} makes pixmill reachable from other machines; "
            "it has no authentication yet. Use 127.0.0.1 behind a reverse proxy.",
            file=sys.stderr,
            flush=True,
        )
    config.data_dir.mkdir(parents=True, exist_ok=True)
    # The `with` block is also left by every forked web worker when it exits (gunicorn ends
    # them with SystemExit); BackgroundServices does nothing outside the master.
    with BackgroundServices(config, log_level=log_level) as services:
        served = services.start_redis()

        def announce(server: Any) -> None:
            # gunicorn's `when_ready`: in the master's main thread, after the app was built
            # (so its migrations ran once), before the web workers are forked.
            workers = f"{config.workers} worker{'s' if config.workers != 1 else ''}"
            print(f"pixmill serving on {serving_url(server, config.host)} ({workers})", flush=True)
            services.start_supervisor()
            for line in services.banner_lines():
                print(line, flush=True)

        options = gunicorn_options(
            served, access_log=access_log, log_level=log_level, on_ready=announce
        )
        PixmillServer(served, options).run()
