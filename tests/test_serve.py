"""The production runner's own choices (the server itself is tested in test_server_live.py)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import pytest

from pixmill.core.config import Config
from pixmill.server import progress
from pixmill.server.app import create_app
from pixmill.server.serve import (
    gunicorn_options,
    install_stop_handlers,
    keep_freed_memory_for_reuse,
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_malloc_tuning_applies_on_glibc() -> None:
    assert keep_freed_memory_for_reuse() is True


STOP_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)


def test_a_web_worker_acts_on_its_first_quit_signal_only(tmp_path: Path) -> None:
    """A Ctrl-C gives a web worker SIGINT (terminal) and SIGQUIT (master); gthread's quit
    handler must not run again while the first run holds its thread pool's lock."""
    assert gunicorn_options(Config())["post_worker_init"] is install_stop_handlers
    received: list[int] = []

    class ThreadWorker:
        wsgi = create_app(Config(data_dir=tmp_path))

        def handle_quit(self, signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            if len(received) == 1:
                signal.raise_signal(signal.SIGQUIT)  # the master's, in the middle of the quit

    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        install_stop_handlers(ThreadWorker())
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGQUIT)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert received == [signal.SIGINT]
    assert progress.stream_slots(ThreadWorker.wsgi).closing.is_set()


def test_a_graceful_stop_ends_the_open_streams_then_stops_as_before(tmp_path: Path) -> None:
    terms: list[int] = []
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    class ThreadWorker:
        wsgi = create_app(Config(data_dir=tmp_path))

        def handle_quit(self, signum: int, frame: FrameType | None) -> None:
            raise AssertionError("SIGTERM is not a quit")

    try:
        signal.signal(signal.SIGTERM, lambda signum, frame: terms.append(signum))
        install_stop_handlers(ThreadWorker())
        assert not progress.stream_slots(ThreadWorker.wsgi).closing.is_set()
        signal.raise_signal(signal.SIGTERM)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert terms == [signal.SIGTERM]  # gunicorn's own handler still runs
    assert progress.stream_slots(ThreadWorker.wsgi).closing.is_set()
