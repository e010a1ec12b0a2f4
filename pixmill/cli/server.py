"""`pixmill serve` (the REST API) and `pixmill worker` (a queue worker)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from pixmill.cli.common import load_config, main, plugins_dir_option
from pixmill.core import defaults

# --- serve -----------------------------------------------------------------------------------


@main.command(short_help="Serve the REST API (gunicorn).")
@click.option(
    "--host",
    help=f"Address to bind. [env PIXMILL_HOST; default {defaults.HOST}]",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help=f"Port to bind; 0 picks a free one. [env PIXMILL_PORT; default {defaults.PORT}]",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Web worker processes. [env PIXMILL_WORKERS; default: one per core]",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help=f"Threads per worker. [env PIXMILL_THREADS; default {defaults.THREADS}]",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Uploads and results. [env PIXMILL_DATA_DIR; default ~/.local/share/pixmill]",
)
@click.option(
    "--queue-workers",
    type=click.IntRange(min=0),
    help="Queue worker processes started beside the server; 0 when `pixmill worker` runs "
    "elsewhere. [env PIXMILL_QUEUE_WORKERS; default: one per core]",
)
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="Server log level (stderr).",
)
@plugins_dir_option
def serve(
    host: str | None,
    port: int | None,
    workers: int | None,
    threads: int | None,
    data_dir: Path | None,
    queue_workers: int | None,
    access_log: bool,
    log_level: str,
) -> None:
    """Serve the REST API with a production WSGI server (gunicorn, threaded workers), plus
    the queue workers and, without REDIS_URL, a private Redis (see docs/deployment.md).

    Ctrl-C or SIGTERM stops it gracefully: requests in flight are finished first.
    """
    config = load_config(
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        data_dir=data_dir,
        queue_workers=queue_workers,
    )
    # Imported here so that every other command starts without Flask and gunicorn.
    from pixmill.server.serve import run_server
    from pixmill.server.supervisor import check_config

    try:
        check_config(config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run_server(config, access_log=access_log, log_level=log_level)


# --- worker ----------------------------------------------------------------------------------


@main.command(short_help="Run jobs from the queue (RQ worker).")
@click.option(
    "--queue",
    "queues",
    multiple=True,
    default=("default",),
    show_default=True,
    help="Queue to serve (repeatable), e.g. --queue ai for model-backed tools.",
)
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where blobs (uploads, results) live; must be the server's. [env PIXMILL_DATA_DIR]",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="info logs every job started and finished.",
)
@plugins_dir_option
def worker(queues: tuple[str, ...], burst: bool, data_dir: Path | None, log_level: str) -> None:
    """Run queued jobs. Needs the server's Redis (REDIS_URL), database (DATABASE_URL) and
    data dir, so that it can run on another machine that shares them.

    A worker keeps plugins' expensive state (models, fonts) warm from one job to the next.
    """
    config = load_config(data_dir=data_dir)
    if not config.redis_url:
        raise click.UsageError(
            "pixmill worker needs REDIS_URL: the Redis of the pixmill server it works for "
            "(e.g. REDIS_URL=redis://host:6379/0)"
        )
    # The worker builds its state from the environment: pass the flags on to it.
    if data_dir is not None:
        os.environ["PIXMILL_DATA_DIR"] = str(data_dir)
    from pixmill.core.worker import make_worker

    click.echo(f"pixmill worker serving queue(s) {', '.join(queues)}", err=True)
    make_worker(config.redis_url, queues, burst=burst).work(logging_level=log_level.upper())
