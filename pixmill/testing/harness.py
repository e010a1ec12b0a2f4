"""Running plugins under test the way pixmill runs them, without a server process.

`Harness` holds a registry of only the plugins under test (or every installed one), a config
whose data lives in a scratch directory, and the app built from both. `run_tool` goes through
`pixmill.core.execution.execute`, the path the REST API, the CLI and the workers share; with
`via="worker"` it goes through the app's job queue instead (an app with no Redis runs its jobs
on the in-process `LocalRunner`, which calls the worker's `run_job_with`), so a tool is also
exercised as a queued job: stored settings, progress, the result in the blob store.

The pytest fixtures in `pixmill.testing.pytest_plugin` are thin wrappers over this class, so
a plugin author who does not use pytest can use it directly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from pixmill.core.config import Config
from pixmill.core.contracts import Extractor, OutputKind, Tool
from pixmill.core.errors import PixmillError
from pixmill.core.execution import Outcome, UploadedFile, execute
from pixmill.core.imageio import result_format_by_name, sniff_format
from pixmill.core.models import JobStatus
from pixmill.core.plugin_host import ENTRY_POINT_GROUP, Registry, load_registry

PluginSpec = ModuleType | object | str
"""A plugin under test: a module or object with hook implementations, or the name of an
installed one (its `pixmill` entry-point name or its distribution name)."""

WORKER_WAIT_S = 60.0


class PluginNotFoundError(PixmillError):
    """A plugin named by the caller is not installed (or a path holds no importable module)."""

    status = 404
    code = "PLUGIN_NOT_FOUND"


def installed_plugin_names() -> dict[str, str]:
    """Every installed `pixmill` entry point: its name -> its distribution's name."""
    names = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        names[ep.name] = dist.metadata["Name"] if dist is not None else ep.name
    return names


def entry_point_names(name: str) -> list[str]:
    """The entry-point names `name` stands for: itself, or every entry point of a distribution
    of that name (`pixmill-sepia` and `pixmill_sepia` both match)."""
    installed = installed_plugin_names()
    if name in installed:
        return [name]

    def canonical(text: str) -> str:
        return text.lower().replace("_", "-").replace(".", "-")

    matches = sorted(ep for ep, dist in installed.items() if canonical(dist) == canonical(name))
    if not matches:
        raise PluginNotFoundError(
            f"no installed plugin or distribution named {name!r}; installed plugins: "
            f"{', '.join(sorted(installed)) or 'none'}. Install it (pip install -e DIR) or "
            "pass the path of its module or directory",
            details={"name": name, "installed": sorted(installed)},
        )
    return matches


def import_path(path: Path) -> list[ModuleType]:
    """Import the plugin module(s) at `path`: a `.py` file, a package directory, or a
    directory of modules and packages (a project checkout: its `src/` is searched too)."""
    path = path.resolve()
    if not path.exists():
        raise PluginNotFoundError(f"{path} does not exist", details={"path": str(path)})
    if path.is_file():
        if path.suffix != ".py":
            raise PluginNotFoundError(
                f"{path} is not a Python module (.py)", details={"path": str(path)}
            )
        return [_import_from(path.parent, path.stem)]
    if (path / "__init__.py").exists():
        return [_import_from(path.parent, path.name)]
    root = path / "src" if (path / "src").is_dir() else path
    names = sorted(
        child.stem if child.is_file() else child.name
        for child in root.iterdir()
        if not child.name.startswith(("test", "setup", "conftest", ".", "_"))
        and (
            (child.is_file() and child.suffix == ".py")
            or (child.is_dir() and (child / "__init__.py").exists())
        )
    )
    if not names:
        raise PluginNotFoundError(
            f"{path} holds no Python module or package to load as a plugin",
            details={"path": str(path)},
        )
    return [_import_from(root, name) for name in names]


def _import_from(directory: Path, name: str) -> ModuleType:
    # The directory goes first on sys.path so a module being developed wins over an installed
    # copy of the same name; it stays there, as pytest's rootdir insertion does.
    entry = str(directory)
    if entry not in sys.path:
        sys.path.insert(0, entry)
    return importlib.import_module(name)


def registry_for(plugins: Sequence[PluginSpec] | None) -> Registry:
    """A registry of only `plugins` (modules, objects or installed names), or of every
    installed plugin when `plugins` is None."""
    if plugins is None:
        return load_registry()
    names = [name for item in plugins if isinstance(item, str) for name in entry_point_names(item)]
    objects = [item for item in plugins if not isinstance(item, str)]
    return load_registry(names, objects, entry_points=bool(names))


class Harness:
    """Plugins under test, a scratch config, and ways to call them as pixmill would."""

    def __init__(self, registry: Registry, data_dir: Path, **config_overrides: Any) -> None:
        self.registry = registry
        self.config = Config(data_dir=data_dir, **config_overrides)
        self._app: Flask | None = None

    @property
    def app(self) -> Flask:
        """The Flask app serving only these plugins (built on first use: it opens a database)."""
        if self._app is None:
            from pixmill.server.app import create_app

            self._app = create_app(self.config, registry=self.registry)
        return self._app

    def client(self) -> FlaskClient:
        return self.app.test_client()

    def run_tool(
        self,
        tool_id: str,
        image: bytes,
        filename: str = "input.jpg",
        *,
        files: Mapping[str, Sequence[UploadedFile]] | None = None,
        via: str = "inline",
        **settings: Any,
    ) -> Outcome:
        """Run a tool or extractor on `image` with `settings` (wire names, e.g.
        `withoutEnlargement=True`, or the snake_case ones the schema declares).

        `via="inline"` calls the execution path directly; `via="worker"` submits a queued
        job to the app and waits for the in-process worker. Refusals raise the same
        `PixmillError` (code, status, details) in both cases.
        """
        definition = self.registry.catalogue_entry(tool_id)
        parts = {"file": [(image, filename)], **(files or {})}
        if via == "inline":
            return execute(
                definition,
                parts,
                settings,
                limits=self.config.limits,
                config=self.config.plugin_config(),
            )
        if via == "worker":
            return self._run_as_job(definition, parts, settings)
        raise ValueError(f"via must be 'inline' or 'worker', got {via!r}")

    def _run_as_job(
        self,
        definition: Tool | Extractor,
        parts: Mapping[str, Sequence[UploadedFile]],
        settings: Mapping[str, Any],
    ) -> Outcome:
        client = self.client()
        form: dict[str, Any] = {"settings": json.dumps(dict(settings))}
        for name, uploads in parts.items():
            form[name] = [(io.BytesIO(data), filename) for data, filename in uploads]
        response = client.post(
            f"/api/v1/tools/{definition.section}/{definition.id}?async=true", data=form
        )
        body = response.get_json(silent=True) or {}
        if response.status_code != 202:
            raise _error_from_body(response.status_code, body)
        state = self.app.extensions["pixmill"]
        job = state.jobs.wait_until_final(body["jobId"], WORKER_WAIT_S)
        if job.status is not JobStatus.COMPLETED:
            raise PixmillError(
                job.error_message or f"job {job.id} ended {job.status.value}",
                code=job.error_code or "JOB_FAILED",
                details={"jobId": job.id, "status": job.status.value},
            )
        input_size = sum(len(data) for uploads in parts.values() for data, _ in uploads)
        if isinstance(definition, Extractor) or definition.output is OutputKind.JSON:
            return Outcome(OutputKind.JSON, json=job.result or {}, input_size=input_size)
        results = client.get(f"/api/v1/jobs/{job.id}/results").get_json()
        first = results["files"][0]
        download = client.get(first["downloadUrl"])
        if download.status_code != 200:
            raise _error_from_body(download.status_code, download.get_json(silent=True) or {})
        document = definition.output is OutputKind.FILE
        return Outcome(
            definition.output,
            data=download.data,
            format=result_format_by_name(first["format"])
            if document
            else sniff_format(download.data),
            filename=first.get("filename"),
            input_size=input_size,
            meta=job.result,
        )


def _error_from_body(status: int, body: Mapping[str, Any]) -> PixmillError:
    """The documented error body (`{"error": message, "code", "details"}`) as an exception."""
    details = body.get("details")
    return PixmillError(
        str(body.get("error") or f"HTTP {status}"),
        code=str(body.get("code") or "HTTP_ERROR"),
        status=status,
        details=dict(details) if isinstance(details, Mapping) else {},
    )


def plugins_from(items: Iterable[PluginSpec | Path]) -> list[PluginSpec]:
    """Paths imported as modules; modules, objects and names kept as they are."""
    result: list[PluginSpec] = []
    for item in items:
        if isinstance(item, Path):
            result.extend(import_path(item))
        else:
            result.append(item)
    return result
