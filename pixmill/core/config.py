"""Runtime configuration: the defaults of `defaults.py`, overridden by `PIXMILL_*` variables,
overridden by explicit arguments (CLI flags, test fixtures)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pixmill.core import defaults
from pixmill.core.imageio import ImageLimits

ENV_PREFIX = "PIXMILL_"


@dataclass(frozen=True)
class Config:
    host: str = defaults.HOST
    port: int = defaults.PORT
    workers: int = defaults.WORKERS
    threads: int = defaults.THREADS
    data_dir: Path = defaults.DATA_DIR
    max_upload_size_mb: float = defaults.MAX_UPLOAD_SIZE_MB
    max_form_parts: int = defaults.MAX_FORM_PARTS
    max_image_pixels: int = defaults.MAX_IMAGE_PIXELS
    max_image_frames: int = defaults.MAX_IMAGE_FRAMES
    local_folder_root: Path | None = None
    load_plugins: tuple[str, ...] | None = None
    # Unpackaged plugin modules to load too (`--plugins-dir`); see plugin_host.
    plugins_dir: Path | None = None
    result_ttl_hours: float = defaults.RESULT_TTL_HOURS
    database_url: str | None = None
    redis_url: str | None = None
    queue_workers: int = defaults.QUEUE_WORKERS
    async_threshold_mb: float = defaults.ASYNC_THRESHOLD_MB
    max_batch_size: int = defaults.MAX_BATCH_SIZE
    max_pipeline_steps: int = defaults.MAX_PIPELINE_STEPS
    wait_timeout_s: float = defaults.WAIT_TIMEOUT_S
    reconcile_interval_s: float = defaults.RECONCILE_INTERVAL_S
    stream_reserved_threads: int = defaults.STREAM_RESERVED_THREADS
    stream_keepalive_s: float = defaults.STREAM_KEEPALIVE_S
    stream_max_s: float = defaults.STREAM_MAX_S
    # Read by the worker processes (`worker.build_state`): each runs its own jobs' leases.
    job_lease_s: float = defaults.JOB_LEASE_S
    job_max_attempts: int = defaults.JOB_MAX_ATTEMPTS
    job_retry_backoff_s: float = defaults.JOB_RETRY_BACKOFF_S
    # The /api/v1/admin routes (feature bundles): off until there is auth to guard them.
    enable_admin: bool = defaults.ENABLE_ADMIN
    # The feature-bundle catalogue to use instead of the one shipped with pixmill.
    features_catalogue: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accept str paths and comma-separated names from any caller (env, CLI, tests).
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        if self.local_folder_root is not None:
            root = Path(self.local_folder_root).expanduser()
            object.__setattr__(self, "local_folder_root", root)
        if self.plugins_dir is not None:
            plugins_dir = Path(self.plugins_dir).expanduser()
            # Checked here so that a typo stops `serve` at once instead of serving no plugins.
            if not plugins_dir.is_dir():
                raise ValueError(f"{ENV_PREFIX}PLUGINS_DIR {plugins_dir} is not a directory")
            object.__setattr__(self, "plugins_dir", plugins_dir)
        if isinstance(self.load_plugins, str):
            object.__setattr__(self, "load_plugins", _split_names(self.load_plugins))
        # Refused here rather than on the first claim: a worker with a non-positive lease
        # could claim nothing and would retry every job forever.
        if not 0 < self.job_lease_s < math.inf:
            raise ValueError(
                f"{ENV_PREFIX}JOB_LEASE_S must be a positive number of seconds, "
                f"not {self.job_lease_s}"
            )
        if not 0 <= self.job_retry_backoff_s < math.inf:
            raise ValueError(
                f"{ENV_PREFIX}JOB_RETRY_BACKOFF_S must be 0 or a positive number of seconds, "
                f"not {self.job_retry_backoff_s}"
            )
        if self.job_max_attempts < 1:
            raise ValueError(f"{ENV_PREFIX}JOB_MAX_ATTEMPTS must be at least 1")
        # A zero or negative interval would make every progress stream spin or end at once.
        if self.stream_reserved_threads < 0:
            raise ValueError(f"{ENV_PREFIX}STREAM_RESERVED_THREADS must not be negative")
        for name in ("stream_keepalive_s", "stream_max_s"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} must be a positive number of seconds")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_size_mb * 1024 * 1024)

    @property
    def async_threshold_bytes(self) -> int:
        return int(self.async_threshold_mb * 1024 * 1024)

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(max_pixels=self.max_image_pixels, max_frames=self.max_image_frames)

    def plugin_config(self) -> dict[str, Any]:
        """What plugins see as `ctx.config`: plain values, no secrets."""
        return {
            "local_folder_root": self.local_folder_root,
            "data_dir": self.data_dir,
            "max_upload_bytes": self.max_upload_bytes,
            **self.extra,
        }

    @property
    def sqlalchemy_url(self) -> str:
        """`database_url`, or the zero-configuration SQLite file in the data dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'pixmill.db'}"

    @property
    def models_dir(self) -> Path:
        """Model files of the feature bundles, one directory per bundle."""
        return self.data_dir / "models"

    @property
    def blobs_dir(self) -> Path:
        """Uploads and results (see `pixmill.core.blobs`)."""
        return self.data_dir / "blobs"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build a config from `PIXMILL_<NAME>` variables, then apply non-None overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None and f.name in _UNPREFIXED:
                raw = env.get(f.name.upper())  # DATABASE_URL, REDIS_URL: the usual names
            if raw is None or f.name == "extra":
                continue
            values[f.name] = _parse(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Config:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _split_names(raw: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in raw.split(",") if name.strip())


_UNPREFIXED = {"database_url", "redis_url"}
_INT_FIELDS = {
    "port",
    "workers",
    "threads",
    "max_form_parts",
    "max_image_pixels",
    "max_image_frames",
    "queue_workers",
    "max_batch_size",
    "max_pipeline_steps",
    "stream_reserved_threads",
    "job_max_attempts",
}
_FLOAT_FIELDS = {
    "max_upload_size_mb",
    "result_ttl_hours",
    "async_threshold_mb",
    "wait_timeout_s",
    "reconcile_interval_s",
    "stream_keepalive_s",
    "stream_max_s",
    "job_lease_s",
    "job_retry_backoff_s",
}

_BOOL_FIELDS = {"enable_admin"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(name: str, raw: str) -> bool:
    # Refused rather than guessed: a typo must not switch admin routes on (or silently off).
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a boolean (use 1 or 0)")


def _parse(name: str, raw: str) -> Any:
    try:
        if name in _INT_FIELDS:
            return int(raw)
        if name in _FLOAT_FIELDS:
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number") from exc
    if name in _BOOL_FIELDS:
        return _parse_bool(name, raw)
    if name == "load_plugins":
        return _split_names(raw)
    if name == "plugins_dir" and not raw.strip():
        return None  # set but empty: no plugins dir, rather than the current directory
    if name in ("data_dir", "local_folder_root", "plugins_dir", "features_catalogue"):
        return Path(raw).expanduser()
    return raw
