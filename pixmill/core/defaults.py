"""Every default of pixmill, in one place. Those that are fields of `Config` can be set by a
`PIXMILL_<NAME>` variable (docs/configuration.md lists them); the others are fixed.

| name | default | meaning |
| --- | --- | --- |
| HOST | 127.0.0.1 | address `pixmill serve` binds; loopback unless you choose otherwise |
| PORT | 8731 | port `pixmill serve` binds |
| WORKERS | number of CPU cores | web worker processes of `pixmill serve` |
| THREADS | 8 | threads per web worker: requests in flight and open progress streams |
| DATA_DIR | ~/.local/share/pixmill | uploads, results and (later) the SQLite database |
| MAX_UPLOAD_SIZE_MB | 100 | largest request body; bigger ones get 413 before being read |
| MAX_FORM_PARTS | 64 | most multipart parts in one request |
| MAX_IMAGE_PIXELS | 100_000_000 | largest width x height decoded; more is refused as a bomb |
| MAX_IMAGE_FRAMES | 1000 | most frames in an animated input |
| LOCAL_FOLDER_ROOT | (unset) | the only directory the `local-folder` source may read |
| LOAD_PLUGINS | (unset: all) | comma-separated entry-point names: load only these plugins |
| PLUGINS_DIR | (unset) | a directory of unpackaged plugin modules to load as well |
| TRACE_PLUGINS | (unset) | 1: log every hook and plugin call with its duration to stderr |
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
| RECONCILE_INTERVAL_S | 30 | how often `pixmill serve` runs the reconciler |
| QUEUE_WORKERS | number of CPU cores | RQ workers `pixmill serve` starts (0: none) |
| ASYNC_THRESHOLD_MB | 20 | a tool call with more file bytes than this is queued (202) |
| MAX_BATCH_SIZE | 50 | most files in one batch call |
| MAX_PIPELINE_STEPS | 20 | most steps in one pipeline |
| WAIT_TIMEOUT_S | 600 | a batch or pipeline call waiting longer answers 202 |
| STREAM_RESERVED_THREADS | 4 | threads per web worker progress streams never take (see below) |
| STREAM_KEEPALIVE_S | 15 | a progress stream silent this long sends a `: keep-alive` comment |
| STREAM_MAX_S | 600 | a progress stream ends after this long; the client reconnects |
| ENABLE_ADMIN | 0 | 1 turns on the /api/v1/admin routes (feature bundles); no auth yet |
| FEATURES_CATALOGUE | (shipped) | a feature-bundle catalogue file to use instead of pixmill's own |

DATABASE_URL and REDIS_URL are also read without the `PIXMILL_` prefix.

Progress streams (`GET /api/v1/jobs/<id>/progress`) hold a request thread each for as long as
they are open, so each web worker lets at most THREADS - STREAM_RESERVED_THREADS of them be
open at once (more get 503 TOO_MANY_STREAMS): the reserved threads always answer ordinary
requests. See `pixmill.server.progress`.
"""

from __future__ import annotations

import os
from pathlib import Path

HOST = "127.0.0.1"
PORT = 8731
WORKERS = os.cpu_count() or 1
THREADS = 8
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
RECONCILE_INTERVAL_S = 30.0
# How often expired results are swept (by `pixmill serve`, and by web processes on requests).
RESULT_PURGE_INTERVAL_S = 600.0
QUEUE_WORKERS = os.cpu_count() or 1
ASYNC_THRESHOLD_MB = 20
MAX_BATCH_SIZE = 50
MAX_PIPELINE_STEPS = 20
WAIT_TIMEOUT_S = 600.0
STREAM_RESERVED_THREADS = 4
STREAM_KEEPALIVE_S = 15.0
STREAM_MAX_S = 600.0
ENABLE_ADMIN = False
# A feature-bundle job (pip, model downloads) may take this long before it is stopped.
FEATURE_JOB_TIMEOUT_S = 1800.0
