"""What the app holds for its lifetime: config, plugin registry, blob store, the metadata
database with its job store, the dispatcher of queued work, and warm models.

Blueprints reach it through `get_state()`, never through module globals, so two apps with
different configs can live in one process (the tests do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis
from flask import current_app

from pixmill.core.blobs import BlobStore
from pixmill.core.config import Config
from pixmill.core.contracts import ModelCache
from pixmill.core.db import Database
from pixmill.core.dispatch import Dispatcher
from pixmill.core.jobstore import JobStore
from pixmill.core.plugin_host import Registry

EXTENSION_KEY = "pixmill"


@dataclass
class AppState:
    config: Config
    registry: Registry
    blobs: BlobStore
    db: Database
    jobs: JobStore
    dispatcher: Dispatcher
    # The Redis of the queues and progress events; None when jobs run in this process.
    redis: redis.Redis | None
    models: ModelCache = field(default_factory=ModelCache)
    cache: dict[str, Any] = field(default_factory=dict)


def get_state() -> AppState:
    state: AppState = current_app.extensions[EXTENSION_KEY]
    return state
