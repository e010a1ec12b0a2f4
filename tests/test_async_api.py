"""Queued tool calls over REST: `?async=true`, heavy tools and large inputs answer 202.

Two set-ups: an app with no Redis, whose jobs run on the in-process `LocalRunner`, and an
app on a real private redis-server, whose jobs wait in RQ until a worker runs them (here
`run_job_with`, the function the RQ worker calls, with the app's own plugins).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from marshmallow import fields
from rq import Queue
from test_jobs_api import assert_error, conforms, post_tool, state_of

from pixmill import ImageResult, Settings, Tool, hookimpl
from pixmill.core.config import Config
from pixmill.core.contracts import Context, Inputs
from pixmill.core.models import JobStatus
from pixmill.core.plugin_host import load_registry
from pixmill.core.redis_server import PrivateRedis
from pixmill.core.worker import WorkerState, run_job_with
from pixmill.server.app import create_app
from pixmill.testing import images

WAIT_S = 30.0


class HeavySettings(Settings):
    factor = fields.Integer(load_default=2)


def _heavy_run(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> Any:
    image = inputs.file.open()
    factor = settings["factor"]
    return ImageResult(image.resize((image.width * factor, image.height * factor)))


HEAVY = Tool(
    id="test-heavy-upscale",
    name="Heavy upscale",
    description="a tool declared heavy: always queued",
    settings=HeavySettings,
    run=_heavy_run,
    heavy=True,
)


def _wrong_result(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> Any:
    return inputs.file.open()  # a bare Image instead of an ImageResult: a plugin bug


WRONG = Tool(
    id="test-wrong-result",
    name="Wrong result",
    description="returns what the contract does not allow",
    settings=HeavySettings,
    run=_wrong_result,
)


class HeavyPlugin:
    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        return [HEAVY, WRONG]


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    registry = load_registry(None, [HeavyPlugin()])
    return create_app(Config(data_dir=tmp_path / "data"), registry=registry)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def spec(client: FlaskClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/api/v1/openapi.json").get_json()
    return document


def jpeg(width: int = 64, height: int = 48) -> bytes:
    return images.encode(images.photo(width, height), "JPEG")


def test_async_true_answers_202_and_the_job_completes(
    app: Flask, client: FlaskClient, spec: dict[str, Any]
) -> None:
    response = post_tool(client, "resize?async=true", jpeg(), {"width": 32})
    body = conforms(spec, response, "/api/v1/tools/image/resize", "post")
    assert response.status_code == 202
    assert body["async"] is True
    job_id = body["jobId"]
    assert response.headers["X-Job-Id"] == job_id
    assert response.headers["Location"].endswith(f"/api/v1/jobs/{job_id}")
    assert body["progressUrl"] == f"/api/v1/jobs/{job_id}/progress"

    job = state_of(app).jobs.wait_until_final(job_id, WAIT_S)
    assert job.status is JobStatus.COMPLETED, job.error_message
    results = client.get(f"/api/v1/jobs/{job_id}/results").get_json()
    (output,) = results["files"]
    download = client.get(output["downloadUrl"])
    assert download.status_code == 200
    assert images.decode(download.data).size == (32, 24)


def test_an_async_extractor_keeps_its_json_on_the_job(app: Flask, client: FlaskClient) -> None:
    response = post_tool(client, "info?async=1", jpeg(40, 30))
    assert response.status_code == 202
    job = state_of(app).jobs.wait_until_final(response.get_json()["jobId"], WAIT_S)
    assert job.status is JobStatus.COMPLETED
    assert job.result is not None and (job.result["width"], job.result["height"]) == (40, 30)


def test_a_heavy_tool_is_queued_even_when_async_is_false(app: Flask, client: FlaskClient) -> None:
    for query in ("", "?async=false"):
        response = post_tool(client, f"{HEAVY.id}{query}", jpeg(10, 10))
        assert response.status_code == 202, response.get_data(as_text=True)
        job = state_of(app).jobs.wait_until_final(response.get_json()["jobId"], WAIT_S)
        assert job.status is JobStatus.COMPLETED, (job.error_code, job.error_message)
        assert job.outputs[0]["size"] > 0


def test_a_plugin_breaking_the_contract_fails_at_once_without_retries(
    app: Flask, client: FlaskClient
) -> None:
    inline = post_tool(client, WRONG.id, jpeg(10, 10))
    assert_error(inline, 500, "PLUGIN_CONTRACT_VIOLATION")
    queued = post_tool(client, f"{WRONG.id}?async=true", jpeg(10, 10))
    job = state_of(app).jobs.wait_until_final(queued.get_json()["jobId"], WAIT_S)
    assert (job.status, job.error_code, job.attempt) == (
        JobStatus.FAILED,
        "PLUGIN_CONTRACT_VIOLATION",
        1,
    )
    assert "returned JpegImageFile; image tools return an ImageResult" in (job.error_message or "")


def test_inputs_over_the_threshold_are_queued(tmp_path: Path) -> None:
    app = create_app(Config(data_dir=tmp_path / "data", async_threshold_mb=0.001))
    client = app.test_client()
    small_enough = post_tool(client, "resize", jpeg(8, 8), {"width": 4})
    assert small_enough.status_code == 200
    large = post_tool(client, "resize", jpeg(400, 300), {"width": 40})
    assert large.status_code == 202
    job = state_of(app).jobs.wait_until_final(large.get_json()["jobId"], WAIT_S)
    assert job.status is JobStatus.COMPLETED


@pytest.mark.parametrize("query", ["?async=maybe", "?async=true&async=false", "?async=2"])
def test_a_bad_async_value_is_400(client: FlaskClient, query: str) -> None:
    body = assert_error(post_tool(client, f"resize{query}", jpeg()), 400, "VALIDATION_ERROR")
    assert "async" in body["details"]["fields"]


def test_bad_calls_are_refused_before_anything_is_queued(app: Flask, client: FlaskClient) -> None:
    assert_error(
        post_tool(client, "resize?async=true", jpeg(), {"width": -5}), 400, "VALIDATION_ERROR"
    )
    assert_error(
        post_tool(client, "resize?async=true", b"not an image at all", {"width": 5}),
        415,
        "UNSUPPORTED_FORMAT",
    )
    response = client.post(
        "/api/v1/tools/image/resize?async=true", data={"settings": json.dumps({"width": 5})}
    )
    assert response.status_code == 400
    assert state_of(app).jobs.list().items == []


def test_the_same_call_again_reuses_the_stored_result(app: Flask, client: FlaskClient) -> None:
    data = jpeg()
    first = post_tool(client, "resize?async=true", data, {"width": 16}).get_json()["jobId"]
    assert state_of(app).jobs.wait_until_final(first, WAIT_S).status is JobStatus.COMPLETED
    second = post_tool(client, "resize?async=true", data, {"width": 16}, filename="again.jpg")
    job = state_of(app).jobs.wait_until_final(second.get_json()["jobId"], WAIT_S)
    assert job.status is JobStatus.COMPLETED
    assert job.message == f"reused the result of job {first}"
    assert job.outputs[0]["filename"] == "again.jpg"


# ----- with a real Redis ------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def test_with_redis_the_job_waits_in_rq_until_a_worker_runs_it(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    registry = load_registry(None, [HeavyPlugin()])
    app = create_app(
        Config(data_dir=tmp_path / "data", redis_url=private_redis.url), registry=registry
    )
    state = state_of(app)
    assert state.redis is not None and state.dispatcher.has_queue
    state.redis.flushdb()
    client = app.test_client()

    response = client.post(
        f"/api/v1/tools/image/{HEAVY.id}",
        data={"file": (io.BytesIO(jpeg(12, 10)), "small.jpg")},
    )
    assert response.status_code == 202
    job_id = response.get_json()["jobId"]
    assert Queue("default", connection=state.redis).get_job_ids() == [job_id]
    assert client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "queued"

    worker_state = WorkerState(
        config=state.config,
        registry=state.registry,
        jobstore=state.jobs,
        blobs=state.blobs,
        redis=state.redis,
    )
    assert run_job_with(worker_state, job_id) is None
    shown = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert shown["status"] == "completed"
    (output,) = client.get(f"/api/v1/jobs/{job_id}/results").get_json()["files"]
    assert images.decode(client.get(output["downloadUrl"]).data).size == (24, 20)


def test_with_redis_cancel_takes_a_queued_job_off_the_queue(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    app = create_app(Config(data_dir=tmp_path / "data", redis_url=private_redis.url))
    state = state_of(app)
    assert state.redis is not None
    state.redis.flushdb()
    client = app.test_client()
    job_id = post_tool(client, "resize?async=true", jpeg(), {"width": 8}).get_json()["jobId"]
    assert job_id in Queue("default", connection=state.redis).get_job_ids()

    cancelled = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.get_json()["job"]["status"] == "cancelled"
    assert job_id not in Queue("default", connection=state.redis).get_job_ids()
    assert_error(client.post(f"/api/v1/jobs/{job_id}/cancel"), 409, "JOB_FINISHED")
