"""`pixmill run`, `extract` and `fetch`: tools, extractors and sources on the command line."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from pixmill.cli.common import (
    _DEFINITION_KEY,
    STDIN_NAME,
    STDIO,
    dump_json,
    find_definition,
    human_size,
    load_checked_registry,
    load_config,
    main,
    parse_settings,
    plugins_dir_option,
    warn,
)
from pixmill.cli.files import (
    FileOutcome,
    FileRunner,
    InputList,
    expand_inputs,
    parse_extra_files,
    read_input,
    run_batch,
    unique_stems,
    write_atomically,
)
from pixmill.core.catalogue import inputs_of, output_kind
from pixmill.core.contracts import OutputKind, Source
from pixmill.core.errors import PixmillError
from pixmill.core.execution import Outcome, fetch, safe_stem
from pixmill.core.settings import validate_settings

# --- run and extract -------------------------------------------------------------------------

_settings_options = [
    click.option(
        "--set",
        "set_pairs",
        multiple=True,
        metavar="NAME=VALUE",
        help="A setting (repeatable); `pixmill tools show ID` lists them. JSON for lists/objects.",
    ),
    click.option(
        "--settings-json",
        metavar="JSON",
        help="All settings as one JSON object, e.g. '{\"width\": 800}'; --set overrides it.",
    ),
]
_batch_options = [
    click.option(
        "-j",
        "--jobs",
        type=click.IntRange(min=1),
        default=os.cpu_count() or 1,
        show_default="number of cores",
        help="Processes working on several inputs at once.",
    ),
    click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary on stderr."),
]


def _with(options: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


@main.command(short_help="Run a tool on files (parallel for many).")
@click.argument("tool_id", metavar="TOOL")
@click.argument("inputs", metavar="INPUT...", nargs=-1)
@click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="Output file (one input; '-' for stdout) or directory (several inputs or a glob). "
    "Default for one input: ./<stem>-<TOOL>.<ext>; for a tool that takes no file "
    "(qr-generate): ./<TOOL>.<ext>.",
)
@_with(_settings_options)
@click.option(
    "--file",
    "file_pairs",
    multiple=True,
    metavar="NAME=PATH",
    help="An extra file input the tool takes, e.g. --file watermark=logo.png.",
)
@_with(_batch_options)
@plugins_dir_option
@click.pass_context
def run(
    ctx: click.Context,
    tool_id: str,
    inputs: tuple[str, ...],
    output: str | None,
    set_pairs: tuple[str, ...],
    settings_json: str | None,
    file_pairs: tuple[str, ...],
    jobs: int,
    quiet: bool,
) -> None:
    """Run TOOL on INPUT files ('-' reads stdin; globs such as '*.jpg' are expanded).

    \b
    pixmill run resize photo.jpg --set width=800 -o small.jpg
    pixmill run convert '*.png' --set format=webp -o webp/
    cat photo.jpg | pixmill run resize - --set width=64 -o - > thumb.jpg

    Several inputs run in parallel; a file that fails is reported and the others go on (the
    exit code is then 1). Extractors print their JSON as `pixmill extract` does.
    """
    config = load_config()
    registry = load_checked_registry(config)
    definition = find_definition(registry, tool_id, "run")
    assert not isinstance(definition, Source)
    ctx.meta[_DEFINITION_KEY] = definition
    raw = parse_settings(definition.settings, set_pairs, settings_json)
    validate_settings(definition.settings, raw)  # once, before any file is read or forked for
    extra_files = parse_extra_files(definition, file_pairs)
    runner = FileRunner(registry, definition.id, raw, extra_files, config)
    if not any(spec.name == "file" for spec in inputs_of(definition)):
        if inputs:
            raise click.UsageError(
                f"{definition.id} takes no input files, only settings (and --file parts)"
            )
        _run_without_files(runner, output)
        return
    if not inputs:
        raise click.UsageError(f"{definition.id} needs INPUT files ('-' reads stdin)")
    found = expand_inputs(inputs)
    if output_kind(definition) is OutputKind.JSON:
        _emit_json(runner, found, output, jsonl=False, jobs=jobs, quiet=quiet)
        return
    main_input = inputs_of(definition)[0]
    if main_input.multiple or (len(found.paths) == 1 and not found.from_pattern):
        _run_single_call(runner, found.paths, output)
        return
    if output is None or output == STDIO:
        raise click.BadParameter(
            "several inputs need -o DIR, the directory their results are written to",
            param_hint="-o",
        )
    _run_many(runner, found.paths, Path(output), jobs=jobs, quiet=quiet)


def _run_without_files(runner: FileRunner, output: str | None) -> None:
    """A tool that makes its image from settings alone (qr-generate, barcode-generate)."""
    outcome = runner.execute_without_files()
    assert outcome.data is not None and outcome.format is not None
    if output == STDIO:
        sys.stdout.buffer.write(outcome.data)
        sys.stdout.buffer.flush()
        return
    name = f"{runner.definition.id}.{outcome.format.extension}"
    target = Path(output or name)
    if output is not None and _names_a_directory(output):
        target = target / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(outcome.data)
    click.echo(str(target), err=True)


def _run_single_call(runner: FileRunner, paths: list[str], output: str | None) -> None:
    """One call of the tool (one input, or all inputs for a tool that takes several)."""
    tool_id = runner.definition.id
    to_stdout = output == STDIO or (output is None and paths == [STDIO])
    if to_stdout and output is None and sys.stdout.buffer.isatty():
        raise click.BadParameter(
            "refusing to write an image to the terminal; give -o FILE, or -o - and a pipe",
            param_hint="-o",
        )
    inputs_resolved = {os.path.realpath(p) for p in paths if p != STDIO}
    target_is_dir = output is not None and not to_stdout and _names_a_directory(output)
    explicit_file = output is not None and not to_stdout and not target_is_dir
    if explicit_file and os.path.realpath(str(output)) in inputs_resolved:
        raise click.BadParameter(
            f"{output!r} is an input; refusing to overwrite it", param_hint="-o"
        )
    files = [
        (read_input(path), STDIN_NAME if path == STDIO else os.path.basename(path))
        for path in paths
    ]
    outcome = runner.execute(files)
    assert outcome.data is not None and outcome.format is not None
    if to_stdout:
        stream = sys.stdout.buffer
        stream.write(outcome.data)
        stream.flush()
        return
    stem = safe_stem(files[0][1]) if paths != [STDIO] else STDIN_NAME
    extension = outcome.format.extension
    if output is None:
        target = Path(f"{stem}-{tool_id}.{extension}")
    elif target_is_dir:
        target = Path(output) / f"{stem}.{extension}"
        if os.path.realpath(target) in inputs_resolved:
            target = Path(output) / f"{stem}-{tool_id}.{extension}"
    else:
        target = Path(output)
        suffix = target.suffix.lower().lstrip(".")
        if suffix and suffix not in _extensions_of(outcome):
            warn(
                f"warning: the result is {outcome.format.name} but {output} says .{suffix}; "
                "written as asked"
            )
    write_atomically(target, outcome.data)
    source = paths[0] if paths != [STDIO] else "stdin"
    click.echo(
        f"{source} -> {target}  ({human_size(outcome.input_size)} -> {human_size(outcome.size)})",
        err=True,
    )


def _names_a_directory(output: str) -> bool:
    return os.path.isdir(output) or output.endswith(("/", os.sep))


def _extensions_of(outcome: Outcome) -> set[str]:
    assert outcome.format is not None
    names = {outcome.format.name, outcome.format.extension}
    if "jpg" in names:
        names |= {"jpeg", "jpe"}
    if "tiff" in names:
        names.add("tif")
    return names


def _run_many(
    runner: FileRunner, paths: list[str], out_dir: Path, *, jobs: int, quiet: bool
) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise click.BadParameter(
            f"{str(out_dir)!r} is a file; several inputs need a directory", param_hint="-o"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    tool_id = runner.definition.id
    stems = unique_stems(paths)
    # Outputs never replace an input, even when -o is the inputs' own directory.
    taken = {os.path.realpath(p) for p in paths}
    started = time.monotonic()
    failed = 0
    for result in run_batch(runner, paths, jobs, quiet=quiet):
        if not result.ok or result.data is None:
            failed += 1
            warn(f"error: {result.path}: {result.error}")
            continue
        stem = stems[result.index]
        target = out_dir / f"{stem}.{result.extension}"
        n = 1
        while os.path.realpath(target) in taken:
            n += 1
            suffix = tool_id if n == 2 else f"{tool_id}-{n - 1}"
            target = out_dir / f"{stem}-{suffix}.{result.extension}"
        taken.add(os.path.realpath(target))
        write_atomically(target, result.data)
    if not quiet:
        elapsed = time.monotonic() - started
        done = len(paths) - failed
        status = f"{done} written to {out_dir}" + (f", {failed} failed" if failed else "")
        click.echo(f"{tool_id}: {status} ({len(paths)} files, {elapsed:.1f}s)", err=True)
    if failed:
        raise click.exceptions.Exit(1)


@main.command(short_help="Print what an extractor reads from images.")
@click.argument("extractor_id", metavar="EXTRACTOR")
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@_with(_settings_options)
@click.option(
    "--jsonl", is_flag=True, help='One line per input: {"input": ..., "result"|"error": ...}.'
)
@click.option("-o", "--output", metavar="FILE", help="Write the JSON here instead of stdout.")
@_with(_batch_options)
@plugins_dir_option
@click.pass_context
def extract(
    ctx: click.Context,
    extractor_id: str,
    inputs: tuple[str, ...],
    set_pairs: tuple[str, ...],
    settings_json: str | None,
    jsonl: bool,
    output: str | None,
    jobs: int,
    quiet: bool,
) -> None:
    """Read structured data out of images and print it as JSON.

    One input prints its object; several print one object keyed by input path (a failed file
    maps to {"error", "code"} and the exit code is 1), or JSON lines with --jsonl.
    """
    config = load_config()
    registry = load_checked_registry(config)
    definition = find_definition(registry, extractor_id, "extract")
    ctx.meta[_DEFINITION_KEY] = definition
    raw = parse_settings(definition.settings, set_pairs, settings_json)
    validate_settings(definition.settings, raw)
    found = expand_inputs(inputs)
    runner = FileRunner(registry, definition.id, raw, {}, config)
    _emit_json(runner, found, output, jsonl=jsonl, jobs=jobs, quiet=quiet)


def _emit_json(
    runner: FileRunner,
    found: InputList,
    output: str | None,
    *,
    jsonl: bool,
    jobs: int,
    quiet: bool,
) -> None:
    """Print (or write to `output`) the JSON of an extractor or JSON tool over the inputs."""
    sink = _JsonSink(output)
    if len(found.paths) == 1 and not found.from_pattern and not jsonl:
        path = found.paths[0]
        name = STDIN_NAME if path == STDIO else os.path.basename(path)
        outcome = runner.execute([(read_input(path), name)])
        sink.write(dump_json(outcome.json))
        sink.close()
        return
    if STDIO in found.paths:
        data = read_input(STDIO)
        try:
            outcome = runner.execute([(data, STDIN_NAME)])
            line: dict[str, Any] = {"input": STDIO, "result": outcome.json}
        except PixmillError as exc:
            line = {"input": STDIO, "error": {"message": exc.message, "code": exc.code}}
        sink.write(dump_json(line, lines=True))
        sink.close()
        if "error" in line:
            raise click.exceptions.Exit(1)
        return
    results: dict[int, FileOutcome] = {}
    for result in run_batch(runner, found.paths, jobs, quiet=quiet or jsonl):
        if not result.ok:
            warn(f"error: {result.path}: {result.error}")
        if jsonl:
            entry: dict[str, Any] = {"input": result.path}
            if result.ok:
                entry["result"] = result.json
            else:
                entry["error"] = {"message": result.error, "code": result.code}
            sink.write(dump_json(entry, lines=True))
        results[result.index] = result
    if not jsonl:
        keyed = {
            results[i].path: (
                results[i].json
                if results[i].ok
                else {"error": results[i].error, "code": results[i].code}
            )
            for i in sorted(results)
        }
        sink.write(dump_json(keyed))
    sink.close()
    if any(not r.ok for r in results.values()):
        raise click.exceptions.Exit(1)


class _JsonSink:
    """Stdout, or a file written in one piece when the run ends."""

    def __init__(self, output: str | None) -> None:
        self.path = None if output in (None, STDIO) else Path(str(output))
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        if self.path is None:
            click.echo(text)
        else:
            self.parts.append(text + "\n")

    def close(self) -> None:
        if self.path is not None:
            write_atomically(self.path, "".join(self.parts).encode())


# --- fetch -----------------------------------------------------------------------------------


@main.command(name="fetch", short_help="Bring images in from a source.")
@click.argument("source_id", metavar="SOURCE")
@_with(_settings_options)
@click.option(
    "-o",
    "--output",
    metavar="DIR",
    default=".",
    show_default=True,
    help="Directory the images are written to (created; existing files are kept).",
)
@click.option("--json", "as_json", is_flag=True, help="Print each image's provenance as JSON.")
@plugins_dir_option
@click.pass_context
def fetch_command(
    ctx: click.Context,
    source_id: str,
    set_pairs: tuple[str, ...],
    settings_json: str | None,
    output: str,
    as_json: bool,
) -> None:
    """Bring images in from SOURCE (e.g. generate, local-folder) and write them to DIR."""
    config = load_config()
    registry = load_checked_registry(config)
    source = find_definition(registry, source_id, "fetch")
    assert isinstance(source, Source)
    ctx.meta[_DEFINITION_KEY] = source
    raw = parse_settings(source.settings, set_pairs, settings_json)
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise click.BadParameter(f"{output!r} is a file, not a directory", param_hint="-o")
    images = fetch(source, raw, limits=config.limits, config=config.plugin_config())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for image in images:
        target = _free_name(out_dir, image.filename)
        write_atomically(target, image.data)
        written.append({"path": str(target), **image.provenance()})
        if not as_json:
            click.echo(_provenance_line(written[-1]))
    if as_json:
        click.echo(dump_json(written))
    elif not written:
        click.echo(f"{source.id} brought no images", err=True)


def _free_name(directory: Path, filename: str) -> Path:
    """`filename` in `directory`, or `<stem>-2.<ext>`... if a file by that name already exists."""
    target = directory / filename
    stem, dot, extension = filename.rpartition(".")
    if not dot:
        stem, extension = filename, ""
    n = 1
    while target.exists():
        n += 1
        target = directory / (f"{stem}-{n}.{extension}" if dot else f"{stem}-{n}")
    return target


def _provenance_line(entry: Mapping[str, Any]) -> str:
    parts = [str(entry["path"]), f"({entry['format']}, {human_size(int(entry['size']))})"]
    for key in ("url", "author", "license"):
        if entry.get(key):
            parts.append(f"{key}={entry[key]}")
    if entry.get("tags"):
        parts.append("tags=" + ",".join(entry["tags"]))
    return "  ".join(parts)
