"""Installing and removing plugin packages with pip, and telling what that changed.

Shared by `pixmill install`/`uninstall` (the CLI) and the feature-bundle jobs
(`pixmill.features`): both run pip as `python -m pip` by the very interpreter running
pixmill, so that plugins land in the environment pixmill loads them from (as `datasette
install` does). What changed is read by listing the plugins in a fresh
`python -m pixmill plugins --json` before and after: the calling process has the old package
metadata and modules loaded, a new process sees the new ones.

This module imports nothing from `pixmill.server` or `pixmill.cli`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pixmill.core.errors import PixmillError

# Variables that would make a plugin listing show less than what is installed.
LISTING_ENV_DROPPED = ("PIXMILL_LOAD_PLUGINS", "PIXMILL_PLUGINS_DIR", "PIXMILL_TRACE_PLUGINS")
RESTART_NOTE = (
    "A running `pixmill serve` (and any `pixmill worker`) loads plugins when it starts: "
    "restart it to pick up the change."
)
# pip never asks a question nor phones home for its own version from a server-side job.
_PIP_ENV = {"PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@dataclass(frozen=True)
class PipRun:
    """One finished pip command: what ran, and what it printed (stdout and stderr merged)."""

    command: list[str]
    output: str


def installed_plugins(timeout_s: float | None = None) -> dict[str, dict[str, Any]]:
    """Every installed plugin's report by name, as a new Python process loads them."""
    env = {k: v for k, v in os.environ.items() if k not in LISTING_ENV_DROPPED}
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "pixmill", "plugins", "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as error:
        raise PixmillError(
            f"cannot list the installed plugins: `python -m pixmill plugins --json` took "
            f"more than {timeout_s:g} s"
        ) from error
    if listing.returncode != 0:
        raise PixmillError(
            f"cannot list the installed plugins (`python -m pixmill plugins --json` exited "
            f"{listing.returncode}): {listing.stderr.strip()}"
        )
    return {info["name"]: info for info in json.loads(listing.stdout)}


def run_pip(args: Sequence[str], *, timeout_s: float | None = None) -> PipRun:
    """Run pip with `args`; its output is returned. A failure (or running past `timeout_s`)
    raises `PixmillError` with pip's output and the exact command, so it can be rerun."""
    command = [sys.executable, "-m", "pip", *args]
    try:
        completed = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            env={**os.environ, **_PIP_ENV},
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as error:
        raise PixmillError(
            f"pip {args[0]} took more than {timeout_s:g} s and was stopped. "
            f"Command: {shlex.join(command)}",
            code="PIP_FAILED",
        ) from error
    output = completed.stdout.rstrip()
    if completed.returncode != 0:
        raise PipFailedError(command, completed.returncode, output)
    return PipRun(command, output)


class PipFailedError(PixmillError):
    """pip exited non-zero; `output` holds what it said (callers show it where it helps)."""

    def __init__(self, command: Sequence[str], returncode: int, output: str) -> None:
        self.subcommand = command[3] if len(command) > 3 else "command"
        self.returncode = returncode
        self.command = shlex.join(command)
        self.output = output
        super().__init__(
            f"pip {self.subcommand} failed (exit {returncode}). Command: {self.command}",
            code="PIP_FAILED",
            details={"pipOutput": output},
        )


def _provides(info: Mapping[str, Any]) -> str:
    parts = [
        f"{kind} {', '.join(info.get(kind) or [])}"
        for kind in ("tools", "extractors", "sources")
        if info.get(kind)
    ]
    return "; ".join(parts) or "nothing"


def _origin(info: Mapping[str, Any]) -> str:
    return f"{info.get('package') or '?'} {info.get('version') or '?'}"


def plugin_changes(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """One line per plugin added, upgraded (or downgraded) or removed, with its ids and
    version, then its load errors: a plugin installed but refused must say so at once."""
    lines: list[str] = []
    for name, info in after.items():
        old = before.get(name)
        if old is None:
            lines.append(f"added plugin {name} ({_origin(info)}): {_provides(info)}")
        elif (old.get("package"), old.get("version")) != (info.get("package"), info.get("version")):
            lines.append(
                f"changed plugin {name} ({_origin(old)} -> {_origin(info)}): {_provides(info)}"
            )
        else:
            continue
        lines.extend(f"  ERROR {name}: {error}" for error in info.get("errors") or [])
    for name, info in before.items():
        if name not in after:
            lines.append(f"removed plugin {name} ({_origin(info)}): {_provides(info)}")
    return lines
