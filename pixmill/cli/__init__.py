"""The `pixmill` command line: list and describe plugins, run tools, extract, fetch, serve,
work the queue and look after its jobs.

Every command runs plugins through the same core path as the REST API (`execute`, `fetch`), so
a tool behaves identically here and over HTTP. Exit codes follow click's convention: 0 on
success, 1 when the work failed (a `PixmillError`, an unreadable file, any failed file of a
batch), 2 for a usage problem (unknown tool, bad `--set`, missing input file).

The server is imported only by `pixmill serve` and `pixmill jobs` (which reuses its job
helpers), so the other commands start without Flask.

`common` holds the `main` group and what the commands share; each command module registers
its commands on `main` when imported, which this package does below.
"""

from __future__ import annotations

# The command modules, imported for their `@main.command` decorators.
from pixmill.cli import catalogue, install, jobs, running, server  # noqa: F401
from pixmill.cli.common import human_size, main, parse_settings
from pixmill.cli.install import _RESTART_NOTE, plugin_changes

__all__ = ["_RESTART_NOTE", "human_size", "main", "parse_settings", "plugin_changes"]
