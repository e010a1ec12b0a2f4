"""Runtime configuration: the defaults of `defaults.py`, overridden by `PIXMILL_*` variables,
overridden by explicit arguments (CLI flags, test fixtures)."""

from __future__ import annotations

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
    result_ttl_hours: float = defaults.RESULT_TTL_HOURS
    database_url: str | None = None
    redis_url: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accept str paths and comma-separated names from any caller (env, CLI, tests).
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        if self.local_folder_root is not None:
            root = Path(self.local_folder_root).expanduser()
            object.__setattr__(self, "local_folder_root", root)
        if isinstance(self.load_plugins, str):
            object.__setattr__(self, "load_plugins", _split_names(self.load_plugins))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_size_mb * 1024 * 1024)

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
}
_FLOAT_FIELDS = {"max_upload_size_mb", "result_ttl_hours"}


def _parse(name: str, raw: str) -> Any:
    try:
        if name in _INT_FIELDS:
            return int(raw)
        if name in _FLOAT_FIELDS:
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number") from exc
    if name == "load_plugins":
        return _split_names(raw)
    if name in ("data_dir", "local_folder_root"):
        return Path(raw).expanduser()
    return raw
