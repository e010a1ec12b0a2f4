"""`pixmill worker`: a real worker process runs a job queued by the dispatcher."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pixmill.cli import main
from pixmill.core.blobs import BlobKey, LocalBlobStore
from pixmill.core.config import Config
from pixmill.core.db import Database
from pixmill.core.dispatch import Dispatcher
from pixmill.core.jobstore import JobStore
from pixmill.core.models import JobStatus
from pixmill.core.plugin_host import load_registry
from pixmill.core.redis_server import PrivateRedis
from pixmill.testing import images


def test_worker_needs_redis_url() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PIXMILL_REDIS_URL")}
    result = CliRunner().invoke(main, ["worker", "--burst"], env={**env, "REDIS_URL": ""})
    assert result.exit_code == 2
    assert "REDIS_URL" in result.output


def test_worker_process_runs_a_queued_job(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with PrivateRedis(tmp_path / "redis") as redis_server:
        config = Config(data_dir=data_dir, redis_url=redis_server.url)
        database = Database.from_config(config)
        jobs = JobStore(database.sessions)
        blobs = LocalBlobStore(config.blobs_dir)
        dispatcher = Dispatcher(jobs, blobs, redis_server.url, config=config)
        tool = load_registry().tools["resize"]
        job = dispatcher.submit_tool_job(
            tool, {"file": [(images.jpeg(400, 300), "photo.jpg")]}, {"width": 100}
        )
        assert jobs.get(job.id).status is JobStatus.QUEUED

        env = {k: v for k, v in os.environ.items() if not k.startswith("PIXMILL_")}
        env.update(REDIS_URL=redis_server.url, DATABASE_URL=config.sqlalchemy_url)
        done = subprocess.run(
            [sys.executable, "-m", "pixmill", "worker", "--burst", "--data-dir", str(data_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        finished = jobs.get(job.id)
        assert finished.status is JobStatus.COMPLETED, finished.error_message
        [output] = finished.outputs
        stored = blobs.path(BlobKey.parse(output["key"]))
        assert stored.read_bytes()[:3] == b"\xff\xd8\xff"
        database.engine.dispose()
