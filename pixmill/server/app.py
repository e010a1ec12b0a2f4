"""The Flask app factory.

At import nothing happens. `create_app()` reads the config (defaults < `PIXMILL_*` environment
< arguments), loads the plugin registry once, opens the metadata database (SQLite in the data
dir unless `DATABASE_URL` says otherwise) and brings its schema to the newest migration, and
registers one blueprint per resource. The app's state lives in `app.extensions["pixmill"]`
(see `state.py`), never in module globals.

Under `pixmill serve` the app is built once in the gunicorn master (`preload_app`), so the
migration runs once and the workers inherit a ready schema; their pooled connections are
never reused across the fork (see `pixmill.core.db`). Processes that build the app at the same
moment (workers without preload, a CLI next to a server) are safe too: the migration is
serialized by the database's own lock and is a quick no-op for whoever comes second.
"""

from __future__ import annotations

import io
import logging
import time
import weakref
from typing import IO, Any

from flask import Flask, Request, request
from werkzeug.exceptions import RequestEntityTooLarge

from pixmill.core.blobs import LocalBlobStore
from pixmill.core.config import Config
from pixmill.core.contracts import ModelCache
from pixmill.core.db import Database
from pixmill.core.defaults import RESULT_PURGE_INTERVAL_S
from pixmill.core.dispatch import Dispatcher, connect
from pixmill.core.jobstore import JobStore
from pixmill.core.plugin_host import Registry, load_registry
from pixmill.core.worker import LocalRunner, WorkerState
from pixmill.server import (
    batch,
    docs,
    downloads,
    errors,
    features,
    health,
    history,
    jobs,
    pipelines,
    plugins,
    progress,
    tools,
)
from pixmill.server.state import EXTENSION_KEY, AppState, get_state

log = logging.getLogger(__name__)


class PixmillRequest(Request):
    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        # Uploads are capped by MAX_CONTENT_LENGTH and every tool reads its input into memory
        # whole: spooling large parts to a temporary file first would only copy them twice.
        return io.BytesIO()


def create_app(
    config: Config | None = None,
    registry: Registry | None = None,
    **overrides: Any,
) -> Flask:
    """Build a pixmill app. `overrides` are Config fields (e.g. `data_dir=...`)."""
    config = (config or Config.from_env()).with_overrides(**overrides)
    if registry is None:
        registry = load_registry(config.load_plugins, plugins_dir=config.plugins_dir)
    for plugin_name, error in registry.errors:
        log.warning("plugin %s: %s", plugin_name, error)

    app = Flask(__name__)
    app.request_class = PixmillRequest
    # Werkzeug refuses a body over this size from its Content-Length before reading it.
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_bytes
    app.config["MAX_FORM_PARTS"] = config.max_form_parts
    app.config["MAX_FORM_MEMORY_SIZE"] = 1024 * 1024  # text fields (settings JSON), not files
    app.json.sort_keys = False  # type: ignore[attr-defined]
    database = Database.from_config(config)
    # The engine's pooled connections go with the app (tests build hundreds of apps).
    weakref.finalize(app, database.dispose)
    app.extensions[EXTENSION_KEY] = _build_state(config, registry, database)

    errors.init_app(app)
    app.before_request(_refuse_oversized_body)
    app.before_request(_purge_expired_results)
    blueprints = (
        health.bp,
        tools.bp,
        batch.bp,
        downloads.bp,
        plugins.bp,
        jobs.bp,
        progress.bp,
        history.bp,
        pipelines.bp,
        features.bp,
    )
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    docs.init_app(app)
    app.wsgi_app = LargeBodyReads(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _build_state(config: Config, registry: Registry, database: Database) -> AppState:
    """The app's state. With a `REDIS_URL` queued work goes to RQ workers; without one it
    runs on a `LocalRunner` in this process, sharing the app's plugins and warm models."""
    blobs = LocalBlobStore(config.blobs_dir)
    jobstore = JobStore(database.sessions)
    models = ModelCache()
    connection = connect(config.redis_url) if config.redis_url else None
    runner: LocalRunner | None = None
    if connection is None:
        runner = LocalRunner(
            WorkerState(
                config=config,
                registry=registry,
                jobstore=jobstore,
                blobs=blobs,
                models=models,
                database=database,
            )
        )
    dispatcher = Dispatcher(
        jobstore, blobs, None, config=config, connection=connection, local_runner=runner
    )
    return AppState(
        config=config,
        registry=registry,
        blobs=blobs,
        db=database,
        jobs=jobstore,
        dispatcher=dispatcher,
        redis=connection,
        models=models,
    )


class _RawInput(io.RawIOBase):
    """The WSGI input as a raw stream, so `io.BufferedReader` can put a large buffer on it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class LargeBodyReads:
    """WSGI middleware: read request bodies from the server in 1 MiB pieces.

    Werkzeug's multipart parser asks for 64 KiB at a time, and gunicorn serves each small read
    by copying what it has buffered ahead: a multi-megabyte upload was copied over and over.
    One large buffer between them makes each byte cross once.
    """

    BUFFER_SIZE = 1 << 20

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        stream = environ.get("wsgi.input")
        length = environ.get("CONTENT_LENGTH") or ""
        if stream is not None and length.isdigit() and int(length) > self.BUFFER_SIZE // 4:
            environ["wsgi.input"] = io.BufferedReader(_RawInput(stream), self.BUFFER_SIZE)
        return self.app(environ, start_response)


def _purge_expired_results() -> None:
    # Results live PIXMILL_RESULT_TTL_HOURS; each process sweeps at most every 10 minutes,
    # on the request that happens to come first (cheap: one directory listing).
    state = get_state()
    now = time.monotonic()
    if now - state.cache.get("last_purge", -RESULT_PURGE_INTERVAL_S) < RESULT_PURGE_INTERVAL_S:
        return
    state.cache["last_purge"] = now
    removed = state.blobs.purge_older_than(state.config.result_ttl_hours * 3600)
    if removed:
        log.info("removed %d expired results", removed)


def _refuse_oversized_body() -> None:
    # Answer 413 from the declared length alone, before any of the body is read or parsed.
    limit = request.max_content_length
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()
