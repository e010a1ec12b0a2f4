"""`pixmill install`/`uninstall` (plugin packages, with pip), `plugin new`/`plugin check`."""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from pixmill.cli.common import dump_json, main, warn
from pixmill.core import installer, plugin_host
from pixmill.core.errors import PixmillError

# --- install and uninstall -------------------------------------------------------------------
#
# pip and the before/after plugin listings live in `pixmill.core.installer`, shared with the
# feature-bundle jobs (`pixmill.features`).

_RESTART_NOTE = installer.RESTART_NOTE
installed_plugins = installer.installed_plugins
plugin_changes = installer.plugin_changes


def run_pip(args: Sequence[str]) -> None:
    """Run pip with `args`, its output on stderr; a failure is exit 1 with pip's message."""
    try:
        output = installer.run_pip(args).output
    except installer.PipFailedError as error:
        if error.output:
            click.echo(error.output, err=True)
        raise PixmillError(
            f"pip {error.subcommand} failed (exit {error.returncode}); its message is above. "
            f"Command: {error.command}"
        ) from error
    if output:
        click.echo(output, err=True)


def _report_changes(before: Mapping[str, Any], after: Mapping[str, Any], verb: str) -> None:
    changes = plugin_changes(before, after)
    for line in changes:
        click.echo(line)
    if not changes:
        warn(
            f"pip {verb} finished, but no pixmill plugin was {verb}ed or changed: a plugin "
            "package declares an entry point in the `pixmill` group (docs/plugins/installing.md)"
        )
    else:
        click.echo(_RESTART_NOTE)


def _pip_names(args: Sequence[str]) -> list[str]:
    """The package arguments among pass-through pip options (those start with `-`)."""
    return [arg for arg in args if not arg.startswith("-")]


@main.command(
    short_help="Install plugin packages with pip (names, paths, wheels).",
    context_settings={"ignore_unknown_options": True},
)
@click.argument("packages", metavar="NAME...", nargs=-1, type=click.UNPROCESSED)
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade packages already installed.")
@click.option(
    "-e",
    "--editable",
    "editables",
    multiple=True,
    metavar="PATH",
    help="Install a plugin's source directory in editable mode (repeatable).",
)
def install(packages: tuple[str, ...], upgrade: bool, editables: tuple[str, ...]) -> None:
    """Install plugins into the environment pixmill runs in, with pip, and print the plugins
    added or changed: their names, packages, versions and the ids they provide.

    NAME is anything pip installs: a name on the index (`pixmill-hello`, `pixmill-hello==1.2`),
    a wheel, a source directory. Other pip options pass through (e.g. `--no-deps`,
    `--index-url URL`). Restart a running server to load the new plugins.
    """
    if not _pip_names(packages) and not editables:
        raise click.UsageError("name at least one package, path or wheel to install")
    before = installed_plugins()
    pip_args = ["install", *(["--upgrade"] if upgrade else [])]
    for path in editables:
        pip_args += ["--editable", path]
    run_pip([*pip_args, *packages])
    _report_changes(before, installed_plugins(), "install")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def uninstall_target(name: str) -> str:
    """The distribution to uninstall for `name`: a package name, or a plugin's name (the
    package providing it). pixmill and its built-in plugins are refused (usage error)."""
    if _canonical(name) == plugin_host.BUILTIN_PACKAGE:
        raise click.UsageError(
            "pixmill will not uninstall itself; if you mean it, run pip uninstall pixmill"
        )
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        package = str(distribution.metadata["Name"])
        if not distribution.entry_points.select(group=plugin_host.ENTRY_POINT_GROUP):
            # Most likely a dependency some plugin needs: not ours to remove.
            raise click.UsageError(
                f"{package} provides no pixmill plugin; uninstall it with pip if you mean it"
            )
        return package
    for ep in importlib.metadata.entry_points(group=plugin_host.ENTRY_POINT_GROUP):
        if ep.name != name or ep.dist is None:
            continue
        package = ep.dist.metadata["Name"]
        if _canonical(package) == plugin_host.BUILTIN_PACKAGE:
            raise click.UsageError(
                f"{name} is a built-in plugin of pixmill and cannot be uninstalled; to leave "
                "it out, list the plugins to load in PIXMILL_LOAD_PLUGINS"
            )
        return str(package)
    raise click.UsageError(
        f"{name} is not installed: neither a package nor a plugin name "
        "(`pixmill plugins` lists the plugins and their packages)"
    )


@main.command(
    short_help="Uninstall plugin packages with pip.",
    context_settings={"ignore_unknown_options": True},
)
@click.argument("packages", metavar="NAME...", nargs=-1, type=click.UNPROCESSED)
def uninstall(packages: tuple[str, ...]) -> None:
    """Uninstall plugin packages (by package name, or by plugin name as `pixmill plugins`
    lists it) and print the plugins removed. pixmill and its built-ins are refused.
    """
    names = _pip_names(packages)
    if not names:
        raise click.UsageError("name at least one plugin package to uninstall")
    options = [arg for arg in packages if arg.startswith("-")]
    targets = list(dict.fromkeys(uninstall_target(name) for name in names))
    before = installed_plugins()
    run_pip(["uninstall", "--yes", *options, *targets])
    _report_changes(before, installed_plugins(), "uninstall")


# --- plugin new and check --------------------------------------------------------------------


@main.group(short_help="Create and check plugins (for plugin authors).")
def plugin() -> None:
    """Tools for writing plugins: `new` creates a package, `check` runs the conformance check."""


@plugin.command("new", short_help="Create a plugin package with an example tool and tests.")
@click.argument("name")
@click.option(
    "--directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to create it (default: ./NAME). Must not exist or be empty.",
)
def plugin_new(name: str, directory: Path | None) -> None:
    """Create NAME (a distribution name such as pixmill-sepia): setup.cfg with the `pixmill`
    entry point, one example tool with a settings schema, a README, and tests on pixmill's
    harness. `pip install -e NAME` then `pytest NAME` pass with no edits."""
    from pixmill.scaffold import ScaffoldError, create_plugin

    try:
        names, written = create_plugin(name, directory)
    except ScaffoldError as exc:
        raise click.BadParameter(exc.message, param_hint="NAME") from None
    except PixmillError as exc:  # the directory is not empty: nothing was written
        raise click.UsageError(exc.message) from None
    root = (directory if directory is not None else Path(name)).resolve()
    click.echo(f"created {names.dist_name} in {root} (tool {names.tool_id!r}):")
    for path in written:
        click.echo(f"  {path.relative_to(root)}")
    click.echo("next:")
    click.echo(f"  pip install -e '{root}[test]'")
    click.echo(f"  pytest {root}")
    click.echo(f"  pixmill tools show {names.tool_id}")


@plugin.command("check", short_help="Run the conformance check on a plugin.")
@click.argument("target", metavar="PATH_OR_NAME")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="List only the failed checks.")
def plugin_check(target: str, as_json: bool, quiet: bool) -> None:
    """Check a plugin the way pixmill relies on it: ids, settings schemas, bad settings
    refused, every sample image kind handled, deterministic output, progress for heavy work.

    PATH_OR_NAME is an installed plugin (entry-point or distribution name) or the path of a
    module, package or project directory. Exit 0 when every check passes, 1 when one fails,
    2 when the plugin cannot be found."""
    from pixmill.testing.conformance import check_plugin
    from pixmill.testing.harness import PluginNotFoundError, entry_point_names

    path = Path(target)
    looks_like_path = path.exists() or os.sep in target or target.endswith(".py")
    try:
        if not looks_like_path:
            entry_point_names(target)  # a clear usage error for an unknown name
    except PluginNotFoundError as exc:
        raise click.BadParameter(exc.message, param_hint="PATH_OR_NAME") from None
    if looks_like_path and not path.exists():
        raise click.BadParameter(f"{path} does not exist", param_hint="PATH_OR_NAME")
    report = check_plugin(path if looks_like_path else target)
    if as_json:
        click.echo(dump_json(report.to_dict()))
    else:
        click.echo(report.text(verbose=not quiet))
    if not report.ok:
        raise click.exceptions.Exit(1)
