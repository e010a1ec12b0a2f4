"""Input files from the command line and running one tool over them, in parallel processes."""

from __future__ import annotations

import glob
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from pixmill.cli.common import STDIO, Definition, load_quietly
from pixmill.core.catalogue import inputs_of
from pixmill.core.config import Config
from pixmill.core.contracts import Source
from pixmill.core.errors import PixmillError
from pixmill.core.execution import Outcome, UploadedFile, execute, safe_stem
from pixmill.core.plugin_host import Registry

_GLOB_CHARS = re.compile(r"[*?[]")


# --- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputList:
    paths: list[str]
    from_pattern: bool  # a glob was given: the output is a directory even for one match


def expand_inputs(patterns: Sequence[str]) -> InputList:
    """Expand globs ourselves (a quoted `*.jpg`, or a shell that does not), check files exist.

    `-` is stdin and must come alone. Duplicates (a file named twice) are processed once.
    """
    if STDIO in patterns:
        if len(patterns) > 1:
            raise click.BadParameter(
                "'-' (stdin) cannot be mixed with other inputs", param_hint="INPUT"
            )
        return InputList([STDIO], False)
    paths: list[str] = []
    from_pattern = False
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if os.path.exists(expanded) or not _GLOB_CHARS.search(expanded):
            matches = [expanded]
        else:
            from_pattern = True
            matches = sorted(m for m in glob.glob(expanded, recursive=True) if os.path.isfile(m))
            if not matches:
                raise click.BadParameter(f"no file matches {pattern!r}", param_hint="INPUT")
        for path in matches:
            if os.path.isdir(path):
                raise click.BadParameter(
                    f"{path!r} is a directory; pass '{os.path.join(path, '*')}' to process its "
                    "files",
                    param_hint="INPUT",
                )
            if not os.path.exists(path):
                raise click.BadParameter(f"file {path!r} does not exist", param_hint="INPUT")
            paths.append(path)
    unique, seen = [], set()
    for path in paths:
        if os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            unique.append(path)
    return InputList(unique, from_pattern)


def read_input(path: str) -> bytes:
    if path == STDIO:
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise click.FileError(path, hint=exc.strerror or str(exc)) from None


def parse_extra_files(
    definition: Definition, pairs: Sequence[str]
) -> dict[str, list[UploadedFile]]:
    """`--file watermark=logo.png` pairs, read now: every file of a batch gets the same ones."""
    accepted = (
        {spec.name for spec in inputs_of(definition)} - {"file"}
        if not isinstance(definition, Source)
        else set()
    )
    extra: dict[str, list[UploadedFile]] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(
                f"expected name=path (e.g. --file watermark=logo.png), got {pair!r}",
                param_hint="--file",
            )
        if name not in accepted:
            takes = ", ".join(sorted(accepted)) or "no extra files"
            raise click.BadParameter(
                f"{definition.id} has no file input {name!r}; it takes {takes}",
                param_hint="--file",
            )
        if not os.path.isfile(path):
            raise click.BadParameter(f"file {path!r} does not exist", param_hint="--file")
        extra.setdefault(name, []).append((read_input(path), os.path.basename(path)))
    return extra


# --- running over files ----------------------------------------------------------------------


@dataclass
class FileOutcome:
    """The result of one input of a batch, as plain data (it crosses process boundaries)."""

    index: int
    path: str
    data: bytes | None = None
    extension: str | None = None
    json: Mapping[str, Any] | None = None
    input_size: int = 0
    error: str | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class FileRunner:
    """Runs one tool or extractor with fixed settings and extra files over input paths."""

    def __init__(
        self,
        registry: Registry,
        definition_id: str,
        raw_settings: Mapping[str, Any],
        extra_files: Mapping[str, list[UploadedFile]],
        config: Config,
    ) -> None:
        self.definition = registry.catalogue_entry(definition_id)
        self.raw_settings = dict(raw_settings)
        self.extra_files = dict(extra_files)
        self.config = config
        self.plugin_config = config.plugin_config()

    def execute(self, files: list[UploadedFile]) -> Outcome:
        """Run on these main files (one call); raises `PixmillError` on failure."""
        return execute(
            self.definition,
            {"file": files, **self.extra_files},
            self.raw_settings,
            limits=self.config.limits,
            config=self.plugin_config,
        )

    def execute_without_files(self) -> Outcome:
        """Run a tool that takes no main file (one call, extra files only)."""
        return execute(
            self.definition,
            dict(self.extra_files),
            self.raw_settings,
            limits=self.config.limits,
            config=self.plugin_config,
        )

    def run_one(self, index: int, path: str) -> FileOutcome:
        """Run on one file and report failure as data, so one bad file never stops a batch."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            return FileOutcome(index, path, error=f"cannot read: {exc.strerror or exc}")
        try:
            outcome = self.execute([(data, os.path.basename(path))])
        except PixmillError as exc:
            return FileOutcome(index, path, input_size=len(data), error=exc.message, code=exc.code)
        except Exception as exc:  # a bug outside any plugin: still only this file's failure
            return FileOutcome(
                index, path, input_size=len(data), error=f"{type(exc).__name__}: {exc}"
            )
        return FileOutcome(
            index,
            path,
            data=outcome.data,
            extension=outcome.format.extension if outcome.format else None,
            json=outcome.json,
            input_size=len(data),
        )


# One runner per worker process, built once by the pool's initializer: the registry (imports,
# fonts, model caches) is loaded once per process, not once per file.
_process_runner: FileRunner | None = None


def _init_worker(
    definition_id: str,
    raw_settings: Mapping[str, Any],
    extra_files: Mapping[str, list[UploadedFile]],
    config: Config,
) -> None:
    global _process_runner
    registry = load_quietly(config)  # the parent has already warned about broken plugins
    _process_runner = FileRunner(registry, definition_id, raw_settings, extra_files, config)


def _run_in_worker(index: int, path: str) -> FileOutcome:
    assert _process_runner is not None, "the pool initializer did not run"
    return _process_runner.run_one(index, path)


def run_batch(
    runner: FileRunner, paths: Sequence[str], jobs: int, *, quiet: bool
) -> Iterator[FileOutcome]:
    """Yield each file's outcome as it completes, over `jobs` processes, with a progress bar."""
    jobs = max(1, min(jobs, len(paths)))
    bar = click.progressbar(
        length=len(paths),
        label=runner.definition.id,
        file=sys.stderr,
        hidden=quiet,
    )
    with bar:
        if jobs == 1:
            for index, path in enumerate(paths):
                yield runner.run_one(index, path)
                bar.update(1)
            return
        executor = ProcessPoolExecutor(
            max_workers=jobs,
            initializer=_init_worker,
            initargs=(
                runner.definition.id,
                runner.raw_settings,
                runner.extra_files,
                runner.config,
            ),
        )
        try:
            futures = {
                executor.submit(_run_in_worker, index, path): (index, path)
                for index, path in enumerate(paths)
            }
            for future in as_completed(futures):
                try:
                    yield future.result()
                except Exception as exc:  # the worker process died (killed, out of memory)
                    index, path = futures[future]
                    yield FileOutcome(index, path, error=f"worker failed: {exc!r}")
                bar.update(1)
        finally:
            # On Ctrl-C or an early exit, do not wait for files nobody will collect.
            executor.shutdown(wait=True, cancel_futures=True)


def unique_stems(paths: Sequence[str]) -> list[str]:
    """One output stem per input, de-duplicated in input order (case-insensitively, for the
    filesystems that fold case): a/photo.jpg and b/photo.jpg become photo and photo-2."""
    seen: set[str] = set()
    stems = []
    for path in paths:
        base = safe_stem(os.path.basename(path))
        stem, n = base, 1
        while stem.lower() in seen:
            n += 1
            stem = f"{base}-{n}"
        seen.add(stem.lower())
        stems.append(stem)
    return stems


def write_atomically(path: Path, data: bytes) -> None:
    """Write so that an interrupted run never leaves a truncated image under the final name."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise click.FileError(str(path), hint=exc.strerror or str(exc)) from None
