"""Feature bundles at run time: status, disk use, and the install/uninstall jobs.

Status. A bundle is `installed` when its distribution is present in the environment pixmill
runs in (with that version), `broken` when it is present but one of its plugins failed to
load in this server or one of its model files is missing, `available` otherwise. A plugin
installed after the server started is not loaded until it restarts: the bundle then says
`restartRequired`.

Jobs. Install and uninstall change the Python environment and the models dir, so they run as
queued jobs (kind `feature`, the bundle id in `tool_id`) on a worker, never in a request:
pip can take minutes. One attempt only: a failed pip or a bad download does not get better
by retrying, and a half-done retry would mix two attempts' files. Installing fetches and
checks the model files first (each kept only once its size and sha256 match the catalogue;
a download in progress lives in a `.part` file that is removed on any failure), then runs
pip: a bundle whose models cannot be had never touches the environment, and a pip failure
removes the model files that this job added. Uninstalling runs `pip uninstall` and removes
the bundle's model directory.

pip runs in the worker's environment (`pixmill.core.installer`), configured the usual way
(pip.conf, `PIP_INDEX_URL`, `PIP_FIND_LINKS`, ...): in a deployment the workers and the web
processes share one environment. Running servers and workers keep the plugins they loaded
at start: the job's result and message say that a restart picks up the change.

Two jobs of the same bundle never overlap: a second one is refused with 409 while the first
is unfinished, and a worker takes a per-bundle file lock (next to the models) before it
starts, which also covers two requests racing past that check.

This module imports nothing from `pixmill.server` or `pixmill.cli`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import IO, Any

from pixmill.core import installer
from pixmill.core.config import Config
from pixmill.core.defaults import FEATURE_JOB_TIMEOUT_S
from pixmill.core.errors import (
    BadRequestError,
    CancelledError,
    ConflictError,
    NotFoundError,
    PixmillError,
)
from pixmill.core.models import UNFINISHED_STATUSES, Job, JobKind
from pixmill.core.plugin_host import Registry
from pixmill.features.catalogue import Bundle, ModelFile, load_catalogue

ACTIONS = ("install", "uninstall")
STATUS_INSTALLED = "installed"
STATUS_AVAILABLE = "available"
STATUS_BROKEN = "broken"
_CHUNK = 1024 * 1024
_DOWNLOAD_TIMEOUT_S = 60
# The end of pip's output kept in a job's result: enough to see what it did or why it failed.
_PIP_OUTPUT_TAIL = 4000

ProgressCallback = Callable[[float, str | None], None]


# ----- the catalogue and each bundle's state ------------------------------------------------


def catalogue_of(config: Config) -> dict[str, Bundle]:
    return load_catalogue(config.features_catalogue)


def find_bundle(config: Config, bundle_id: str) -> Bundle:
    bundle = catalogue_of(config).get(bundle_id)
    if bundle is None:
        raise NotFoundError(
            f"no feature bundle {bundle_id!r}; GET /api/v1/features lists them",
            code="BUNDLE_NOT_FOUND",
            details={"bundleId": bundle_id},
        )
    return bundle


def installed_version(distribution: str) -> str | None:
    """The version of `distribution` installed in this environment, None if absent.

    importlib.metadata rescans a site directory whenever its mtime changes, so a package that
    pip installed after this process started is seen."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def bundle_models_dir(config: Config, bundle_id: str) -> Path:
    return config.models_dir / bundle_id


def tree_size(path: Path) -> int:
    """Bytes of the regular files under `path` (symbolic links are not followed: a link to
    a shared model does not use the space twice)."""
    if path.is_symlink() or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed while walking
                info = os.lstat(os.path.join(root, name))
                if not os.path.islink(os.path.join(root, name)):
                    total += info.st_size
    return total


def _model_present(directory: Path, model: ModelFile) -> bool:
    # Size only: hashing every model on every listing would read gigabytes. The sha256 was
    # checked when the file was written, and the file is replaced atomically.
    path = directory / model.name
    return path.is_file() and path.stat().st_size == model.size


def bundle_status(
    bundle: Bundle, config: Config, registry: Registry, running_job: Job | None = None
) -> dict[str, Any]:
    """One bundle as GET /api/v1/features shows it."""
    version = installed_version(bundle.distribution)
    directory = bundle_models_dir(config, bundle.id)
    loaded = {info.name: info for info in registry.plugins}
    models = [
        {
            "name": model.name,
            "size": model.size,
            "sha256": model.sha256,
            "present": _model_present(directory, model),
        }
        for model in bundle.models
    ]
    problems: list[str] = []
    restart_required = False
    if version is not None:
        for name in bundle.plugins:
            info = loaded.get(name)
            if info is None:
                restart_required = True
            else:
                problems.extend(f"plugin {name}: {error}" for error in info.errors)
        problems.extend(
            f"model file {model['name']} is missing or incomplete: install the bundle again "
            "(uninstall, then install)"
            for model in models
            if not model["present"]
        )
    else:
        # Uninstalled while this server runs: it still serves the plugin until a restart.
        restart_required = any(name in loaded for name in bundle.plugins)
    if version is None:
        status = STATUS_AVAILABLE
    else:
        status = STATUS_BROKEN if problems else STATUS_INSTALLED
    return {
        "id": bundle.id,
        "name": bundle.name,
        "description": bundle.description,
        "package": bundle.package,
        "distribution": bundle.distribution,
        "plugins": list(bundle.plugins),
        "models": models,
        "sizeEstimate": bundle.size_estimate,
        "status": status,
        "version": version,
        "problems": problems,
        "restartRequired": restart_required,
        "modelBytes": tree_size(directory),
        "jobId": running_job.id if running_job is not None else None,
    }


def disk_usage(config: Config) -> dict[str, Any]:
    """Bytes under the models dir: in total, per catalogue bundle, and per other directory
    found there (a bundle dropped from the catalogue still uses its space)."""
    catalogue = catalogue_of(config)
    root = config.models_dir
    entries = [
        {"id": bundle_id, "bytes": tree_size(root / bundle_id), "inCatalogue": True}
        for bundle_id in catalogue
    ]
    if root.is_dir():
        entries.extend(
            {"id": child.name, "bytes": tree_size(child), "inCatalogue": False}
            for child in sorted(root.iterdir())
            if child.is_dir() and not child.is_symlink() and child.name not in catalogue
        )
    return {"modelsDir": str(root), "totalBytes": tree_size(root), "bundles": entries}


# ----- submitting a job (the web process) ---------------------------------------------------


def unfinished_job(jobstore: Any, bundle_id: str) -> Job | None:
    """The queued or running feature job of `bundle_id`, if any."""
    page = jobstore.list(
        status=list(UNFINISHED_STATUSES), kind=JobKind.FEATURE, tool_id=bundle_id, limit=1
    )
    return page.items[0] if page.items else None


def submit_feature_job(dispatcher: Any, bundle_id: str, action: str) -> Job:
    """Check that `action` makes sense for the bundle now, commit its job, enqueue it.

    404 unknown bundle; 409 when another job of the bundle is unfinished, when installing an
    installed bundle (uninstall it first to reinstall), or when uninstalling a bundle that is
    neither installed nor has model files."""
    if action not in ACTIONS:
        raise BadRequestError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    config: Config = dispatcher.config
    bundle = find_bundle(config, bundle_id)
    running = unfinished_job(dispatcher.jobstore, bundle.id)
    if running is not None:
        raise ConflictError(
            f"bundle {bundle.id} already has a {running.settings.get('action', 'feature')} job "
            f"({running.status}); wait for it to finish",
            code="FEATURE_JOB_RUNNING",
            details={"jobId": running.id},
        )
    version = installed_version(bundle.distribution)
    if action == "install" and version is not None:
        raise ConflictError(
            f"bundle {bundle.id} is already installed ({bundle.distribution} {version}); "
            "to reinstall it, uninstall it first",
            code="BUNDLE_INSTALLED",
            details={"bundleId": bundle.id, "version": version},
        )
    if (
        action == "uninstall"
        and version is None
        and not bundle_models_dir(config, bundle.id).exists()
    ):
        raise ConflictError(
            f"bundle {bundle.id} is not installed",
            code="BUNDLE_NOT_INSTALLED",
            details={"bundleId": bundle.id},
        )
    job = dispatcher.jobstore.create(
        JobKind.FEATURE,
        tool_id=bundle.id,
        settings={"action": action, "bundleId": bundle.id},
        max_attempts=1,
        message=f"{action} of bundle {bundle.id} queued",
    )
    dispatcher.enqueue(job, timeout_s=FEATURE_JOB_TIMEOUT_S)
    return job


# ----- running a job (the worker) -----------------------------------------------------------


class _Steps:
    """Progress of one feature job: each step reported to the worker (which throttles what
    it writes) and kept whole for the job's result."""

    def __init__(self, on_progress: ProgressCallback, is_cancelled: Callable[[], bool]) -> None:
        self.on_progress = on_progress
        self.is_cancelled = is_cancelled
        self.log: list[str] = []

    def __call__(self, fraction: float, message: str) -> None:
        self.log.append(message)
        self.on_progress(fraction, message)

    def check_cancelled(self) -> None:
        if self.is_cancelled():
            raise CancelledError("the feature job was cancelled")


def run_feature_job(
    job: Job,
    config: Config,
    *,
    on_progress: ProgressCallback,
    is_cancelled: Callable[[], bool],
) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """Run a claimed feature job: (outputs, result, message) as the worker records them."""
    action = (job.settings or {}).get("action")
    if action not in ACTIONS:
        raise BadRequestError(
            f"feature job {job.id} has no valid action ({action!r})", code="INVALID_JOB"
        )
    bundle = find_bundle(config, job.tool_id or "")
    steps = _Steps(on_progress, is_cancelled)
    with _bundle_lock(config, bundle.id):
        if action == "install":
            result = _install(bundle, config, steps)
        else:
            result = _uninstall(bundle, config, steps)
    verb = "installed" if action == "install" else "uninstalled"
    message = f"{verb} bundle {bundle.id}. {installer.RESTART_NOTE}"
    return [], result, message


@contextlib.contextmanager
def _bundle_lock(config: Config, bundle_id: str) -> Iterator[None]:
    config.models_dir.mkdir(parents=True, exist_ok=True)
    with open(config.models_dir / f".{bundle_id}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise ConflictError(
                f"another job is installing or uninstalling bundle {bundle_id}",
                code="FEATURE_JOB_RUNNING",
            ) from error
        yield


def _install(bundle: Bundle, config: Config, steps: _Steps) -> dict[str, Any]:
    steps(0.0, f"installing bundle {bundle.id}: {bundle.package}")
    before = installer.installed_plugins(timeout_s=FEATURE_JOB_TIMEOUT_S)
    directory = bundle_models_dir(config, bundle.id)
    added: list[Path] = []
    try:
        for index, model in enumerate(bundle.models):
            steps.check_cancelled()
            steps(
                0.05 + 0.45 * index / len(bundle.models),
                f"fetching model {model.name} ({model.size} bytes) from {model.origin}",
            )
            if _fetch_model(model, directory, steps.check_cancelled):
                added.append(directory / model.name)
        steps.check_cancelled()
        steps(0.5, f"pip install {bundle.package}")
        pip = installer.run_pip(["install", bundle.package], timeout_s=FEATURE_JOB_TIMEOUT_S)
    except installer.PipFailedError as error:
        _remove(added, directory)
        raise PixmillError(
            f"{error.message}\n{error.output[-_PIP_OUTPUT_TAIL:]}", code="PIP_FAILED", status=422
        ) from error
    except BaseException:
        _remove(added, directory)
        raise
    steps(0.9, "listing the plugins now installed")
    after = installer.installed_plugins(timeout_s=FEATURE_JOB_TIMEOUT_S)
    changes = installer.plugin_changes(before, after)
    steps(1.0, f"installed bundle {bundle.id}")
    return {
        "bundleId": bundle.id,
        "action": "install",
        "version": installed_version(bundle.distribution),
        "changes": changes,
        "modelsAdded": [path.name for path in added],
        "restartRequired": True,
        "note": installer.RESTART_NOTE,
        "log": steps.log,
        "pipOutput": pip.output[-_PIP_OUTPUT_TAIL:],
    }


def _uninstall(bundle: Bundle, config: Config, steps: _Steps) -> dict[str, Any]:
    steps(0.0, f"uninstalling bundle {bundle.id}")
    before = installer.installed_plugins(timeout_s=FEATURE_JOB_TIMEOUT_S)
    pip_output = ""
    if installed_version(bundle.distribution) is not None:
        steps(0.2, f"pip uninstall {bundle.distribution}")
        try:
            pip_output = installer.run_pip(
                ["uninstall", "--yes", bundle.distribution], timeout_s=FEATURE_JOB_TIMEOUT_S
            ).output
        except installer.PipFailedError as error:
            raise PixmillError(
                f"{error.message}\n{error.output[-_PIP_OUTPUT_TAIL:]}",
                code="PIP_FAILED",
                status=422,
            ) from error
    directory = bundle_models_dir(config, bundle.id)
    freed = tree_size(directory)
    steps(0.7, f"removing the model files of {bundle.id} ({freed} bytes)")
    shutil.rmtree(directory, ignore_errors=True)
    after = installer.installed_plugins(timeout_s=FEATURE_JOB_TIMEOUT_S)
    steps(1.0, f"uninstalled bundle {bundle.id}")
    return {
        "bundleId": bundle.id,
        "action": "uninstall",
        "changes": installer.plugin_changes(before, after),
        "bytesFreed": freed,
        "restartRequired": True,
        "note": installer.RESTART_NOTE,
        "log": steps.log,
        "pipOutput": pip_output[-_PIP_OUTPUT_TAIL:],
    }


def _remove(paths: list[Path], directory: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: it holds files from before this job
        directory.rmdir()


# ----- model files --------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # Model files come only from the URLs in the catalogue, not from wherever those send us.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _open_origin(model: ModelFile) -> IO[bytes]:
    if model.url is not None:
        return _opener.open(model.url, timeout=_DOWNLOAD_TIMEOUT_S)
    assert model.resource is not None
    package, _, path = model.resource.partition(":")
    return resources.files(package).joinpath(path).open("rb")


@contextlib.contextmanager
def _opened(model: ModelFile) -> Iterator[IO[bytes]]:
    try:
        source = _open_origin(model)
    except (OSError, ValueError) as error:  # URLError is an OSError
        raise PixmillError(
            f"cannot fetch model {model.name} from {model.origin}: {error}",
            code="MODEL_DOWNLOAD_FAILED",
            status=422,
        ) from error
    with source:
        yield source


def _fetch_model(model: ModelFile, directory: Path, check_cancelled: Callable[[], None]) -> bool:
    """Put `model` in `directory`, checked against its size and sha256. False when a good
    copy was already there. On any failure nothing is left behind."""
    target = directory / model.name
    if target.is_file() and target.stat().st_size == model.size and _sha256(target) == model.sha256:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    handle, part_name = tempfile.mkstemp(dir=directory, prefix=f".{model.name}.", suffix=".part")
    part = Path(part_name)
    try:
        digest = hashlib.sha256()
        written = 0
        with os.fdopen(handle, "wb") as out, _opened(model) as source:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > model.size:
                    raise _mismatch(model, f"it is larger than the {model.size} bytes expected")
                digest.update(chunk)
                out.write(chunk)
                check_cancelled()
        if written != model.size:
            raise _mismatch(model, f"it has {written} bytes, {model.size} expected")
        if digest.hexdigest() != model.sha256:
            raise _mismatch(model, f"its sha256 is {digest.hexdigest()}, {model.sha256} expected")
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return True


def _mismatch(model: ModelFile, why: str) -> PixmillError:
    return PixmillError(
        f"model {model.name} from {model.origin} was refused: {why}. Nothing was installed; "
        "the catalogue or the file it points to is wrong",
        code="MODEL_CHECKSUM_MISMATCH",
        status=422,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
