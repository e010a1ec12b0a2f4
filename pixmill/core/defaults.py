"""Every default of pixmill, in one place. Each can be overridden by a `PIXMILL_` variable.

| name | default | meaning |
| --- | --- | --- |
| HOST | 127.0.0.1 | address `pixmill serve` binds; loopback unless you choose otherwise |
| PORT | 8731 | port `pixmill serve` binds |
| WORKERS | number of CPU cores | web worker processes of `pixmill serve` |
| THREADS | 4 | threads per web worker (long responses do not block the others) |
| DATA_DIR | ~/.local/share/pixmill | uploads, results and (later) the SQLite database |
| MAX_UPLOAD_SIZE_MB | 100 | largest request body; bigger ones get 413 before being read |
| MAX_FORM_PARTS | 64 | most multipart parts in one request |
| MAX_IMAGE_PIXELS | 100_000_000 | largest width x height decoded; more is refused as a bomb |
| MAX_IMAGE_FRAMES | 1000 | most frames in an animated input |
| LOCAL_FOLDER_ROOT | (unset) | the only directory the `local-folder` source may read |
| LOAD_PLUGINS | (unset: all) | comma-separated entry-point names: load only these plugins |
| RESULT_TTL_HOURS | 24 | how long inline results stay downloadable |
| DATABASE_URL | (unset: SQLite `pixmill.db` in DATA_DIR) | SQLAlchemy URL of the metadata |
| REDIS_URL | (unset: a private redis-server) | Redis for queues and progress |
| JOB_MAX_ATTEMPTS | 3 | runs a queued job gets before it fails with ATTEMPTS_EXHAUSTED |
| JOB_TIMEOUT_S | 300 | a tool's run time limit unless it declares `timeout` |
| JOB_TIMEOUT_GRACE_S | 60 | beyond a tool's limit: RQ's outer timeout; then the lease lapses |
| JOB_LEASE_S | 60 | how long a claimed job stays leased without a heartbeat |
| JOB_PROGRESS_INTERVAL_S | 0.5 | at most one progress write and event per interval |
| JOB_RETRY_BACKOFF_S | 5 | first retry delay; doubled per attempt |
| JOB_RETRY_BACKOFF_MAX_S | 300 | longest retry delay |
| RECONCILE_GRACE_S | 30 | a queued row untouched this long must already be in Redis |

DATABASE_URL and REDIS_URL are also read without the `PIXMILL_` prefix.
"""

from __future__ import annotations

import os
from pathlib import Path

HOST = "127.0.0.1"
PORT = 8731
WORKERS = os.cpu_count() or 1
THREADS = 4
DATA_DIR = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "pixmill"
MAX_UPLOAD_SIZE_MB = 100
MAX_FORM_PARTS = 64
MAX_IMAGE_PIXELS = 100_000_000
MAX_IMAGE_FRAMES = 1000
RESULT_TTL_HOURS = 24
JOB_MAX_ATTEMPTS = 3
JOB_TIMEOUT_S = 300.0
JOB_TIMEOUT_GRACE_S = 60.0
JOB_LEASE_S = 60.0
JOB_PROGRESS_INTERVAL_S = 0.5
JOB_RETRY_BACKOFF_S = 5
JOB_RETRY_BACKOFF_MAX_S = 300
RECONCILE_GRACE_S = 30.0
