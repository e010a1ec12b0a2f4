"""The REST API through Flask's test client: catalogue, tool calls, negotiation, errors, docs."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from pixmill import Settings, Tool, hookimpl
from pixmill.core.catalogue import inputs_of, tool_path
from pixmill.core.config import Config
from pixmill.core.plugin_host import load_registry
from pixmill.server.app import create_app
from pixmill.testing import images


@pytest.fixture
def app(config: Config) -> Flask:
    return create_app(config)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Every error has the documented shape, status, code and a request id header."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error", "code", "details", "requestId"}
    assert body["code"] == code
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["details"], dict)
    assert body["requestId"] == response.headers["X-Request-ID"]
    return body


def post_tool(
    client: FlaskClient,
    tool: str,
    data: bytes | None = None,
    settings: Any = None,
    filename: str = "photo.jpg",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Any:
    form: dict[str, Any] = dict(extra)
    if data is not None:
        form["file"] = (io.BytesIO(data), filename)
    if settings is not None:
        form["settings"] = settings if isinstance(settings, str) else json.dumps(settings)
    return client.post(f"/api/v1/tools/image/{tool}", data=form, headers=headers or {})


def test_health(client: FlaskClient) -> None:
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "healthy"
    assert response.headers["X-Request-ID"].startswith("req_")


def test_catalogue_lists_every_tool_with_its_schema(client: FlaskClient, app: Flask) -> None:
    body = client.get("/api/v1/tools").get_json()
    registry = app.extensions["pixmill"].registry
    ids = {entry["id"] for entry in body["tools"]}
    assert ids == set(registry.tools) | set(registry.extractors)
    assert body["total"] == len(ids)
    resize = next(entry for entry in body["tools"] if entry["id"] == "resize")
    assert resize["section"] == "image"
    assert resize["output"] == "image"
    assert resize["inputs"][0]["name"] == "file"
    props = resize["settingsSchema"]["properties"]
    assert props["fit"]["enum"] == ["cover", "contain", "fill", "inside", "outside"]
    assert props["width"]["maximum"] == 16384
    assert "withoutEnlargement" in props
    assert resize["settingsSchema"]["additionalProperties"] is False


def test_show_tool_and_unknown_tool(client: FlaskClient) -> None:
    assert client.get("/api/v1/tools/image/resize").get_json()["id"] == "resize"
    assert_error(client.get("/api/v1/tools/image/no-such-tool"), 404, "TOOL_NOT_FOUND")
    assert_error(client.get("/api/v1/tools/video/resize"), 404, "TOOL_NOT_FOUND")
    assert_error(post_tool(client, "no-such-tool", images.jpeg()), 404, "TOOL_NOT_FOUND")


def test_resize_returns_envelope_and_download(client: FlaskClient) -> None:
    source = images.jpeg(640, 480)
    response = post_tool(client, "resize", source, {"width": 320})
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"jobId", "downloadUrl", "originalSize", "processedSize"}
    assert body["originalSize"] == len(source)
    assert body["downloadUrl"] == f"/api/v1/download/{body['jobId']}/photo.jpg"
    download = client.get(body["downloadUrl"])
    assert download.status_code == 200
    assert download.mimetype == "image/jpeg"
    assert len(download.data) == body["processedSize"]
    assert Image.open(io.BytesIO(download.data)).size == (320, 240)


def test_download_url_ends_in_output_extension(client: FlaskClient) -> None:
    body = post_tool(client, "resize", images.png(), {"width": 10}, filename="x.jpeg").get_json()
    assert body["downloadUrl"].endswith("/x.png")


@pytest.mark.parametrize(
    ("accept", "inline"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", False),
        ("image/*", True),
        ("image/jpeg", True),
        ("image/*, application/json;q=0.5", True),
        ("application/json, image/*;q=0.5", False),
        ("image/png", False),  # the result is a JPEG: the client did not ask for it
    ],
)
def test_accept_negotiation(client: FlaskClient, accept: str | None, inline: bool) -> None:
    headers = {"Accept": accept} if accept else {}
    response = post_tool(client, "resize", images.jpeg(), {"width": 64}, headers=headers)
    assert response.status_code == 200
    if inline:
        assert response.mimetype == "image/jpeg"
        assert int(response.headers["Content-Length"]) == len(response.data)
        assert re.fullmatch(r'"[0-9a-f]{32}"', response.headers["ETag"])
        assert Image.open(io.BytesIO(response.data)).width == 64
    else:
        assert response.mimetype == "application/json"
        assert "downloadUrl" in response.get_json()


def test_inline_etag_is_stable_for_same_result(client: FlaskClient) -> None:
    first = post_tool(client, "resize", images.jpeg(), {"width": 50}, headers={"Accept": "image/*"})
    again = post_tool(client, "resize", images.jpeg(), {"width": 50}, headers={"Accept": "image/*"})
    other = post_tool(client, "resize", images.jpeg(), {"width": 51}, headers={"Accept": "image/*"})
    assert first.headers["ETag"] == again.headers["ETag"] != other.headers["ETag"]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"width": 0}, "width"),
        ({"width": 100, "fit": "squash"}, "fit"),
        ({"width": "wide"}, "width"),
        ({"widht": 100}, "widht"),
        ({}, "_schema"),
    ],
)
def test_bad_settings_give_validation_error(
    client: FlaskClient, settings: dict[str, Any], field: str
) -> None:
    body = assert_error(
        post_tool(client, "resize", images.jpeg(), settings), 400, "VALIDATION_ERROR"
    )
    assert field in body["details"]["fields"]


@pytest.mark.parametrize("raw", ["{", "[1, 2]", '"width"', "null", "12"])
def test_settings_must_be_a_json_object(client: FlaskClient, raw: str) -> None:
    assert_error(post_tool(client, "resize", images.jpeg(), raw), 400, "VALIDATION_ERROR")


def test_unknown_field_message_is_clear(client: FlaskClient) -> None:
    body = assert_error(
        post_tool(client, "resize", images.jpeg(), {"width": 10, "colour": "red"}),
        400,
        "VALIDATION_ERROR",
    )
    assert body["details"]["fields"] == {"colour": ["unknown field"]}
    assert "colour" in body["error"]


def test_missing_and_unexpected_parts(client: FlaskClient) -> None:
    assert_error(post_tool(client, "resize", None, {"width": 10}), 400, "MISSING_FILE")
    response = post_tool(
        client, "resize", images.jpeg(), {"width": 10}, mask=(io.BytesIO(images.png()), "m.png")
    )
    assert_error(response, 400, "UNEXPECTED_FILE")
    response = post_tool(client, "resize", images.jpeg(), {"width": 10}, setting="{}")
    assert_error(response, 400, "UNEXPECTED_FIELD")
    response = client.post(
        "/api/v1/tools/image/resize",
        data={
            "file": [(io.BytesIO(images.jpeg()), "a.jpg"), (io.BytesIO(images.jpeg()), "b.jpg")],
            "settings": '{"width": 10}',
        },
    )
    assert_error(response, 400, "TOO_MANY_FILES")


def test_json_body_instead_of_multipart(client: FlaskClient) -> None:
    response = client.post("/api/v1/tools/image/resize", json={"width": 10})
    assert_error(response, 400, "MISSING_FILE")


def test_bad_files(client: FlaskClient, app: Flask) -> None:
    assert_error(post_tool(client, "resize", b"", {"width": 10}), 400, "EMPTY_FILE")
    assert_error(
        post_tool(client, "resize", b"%PDF-1.4 x", {"width": 10}), 415, "UNSUPPORTED_FORMAT"
    )
    assert_error(
        post_tool(client, "resize", b"%!PS-Adobe-3.0", {"width": 10}), 415, "UNSUPPORTED_FORMAT"
    )
    truncated = images.jpeg()[:2000]
    assert_error(post_tool(client, "resize", truncated, {"width": 10}), 422, "INVALID_IMAGE")
    animated = images.animated_gif()
    ok = post_tool(client, "resize", animated, {"width": 10}, filename="a.gif")
    assert ok.status_code == 200
    frames = Image.open(io.BytesIO(client.get(ok.get_json()["downloadUrl"]).data)).n_frames
    assert frames == 4


def test_pixel_bomb_refused(config: Config) -> None:
    client = create_app(config, max_image_pixels=10_000).test_client()
    response = post_tool(client, "resize", images.jpeg(200, 100), {"width": 10})
    body = assert_error(response, 413, "IMAGE_TOO_LARGE")
    assert body["details"]["width"] == 200


def test_upload_limit_is_exact(config: Config) -> None:
    limit_mb = 0.01
    client = create_app(config, max_upload_size_mb=limit_mb).test_client()
    limit = int(limit_mb * 1024 * 1024)
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body_of(total: int) -> bytes:
        return head + b"\xff" * (total - len(head) - len(tail)) + tail

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    over = client.post("/api/v1/tools/image/resize", data=body_of(limit + 1), headers=headers)
    body = assert_error(over, 413, "PAYLOAD_TOO_LARGE")
    assert body["details"]["maxUploadSizeMb"] == limit_mb
    at_limit = client.post("/api/v1/tools/image/resize", data=body_of(limit), headers=headers)
    assert at_limit.status_code != 413


def test_request_id_echo(client: FlaskClient) -> None:
    sent = client.get("/api/v1/health", headers={"X-Request-ID": "abc-123"})
    assert sent.headers["X-Request-ID"] == "abc-123"
    hostile = client.get("/api/v1/health", headers={"X-Request-ID": "<script> " + "x" * 200})
    assert hostile.headers["X-Request-ID"].startswith("req_")
    error = client.get("/api/v1/tools/image/nope", headers={"X-Request-ID": "trace-9"})
    assert error.get_json()["requestId"] == "trace-9"


def test_method_not_allowed_has_error_shape(client: FlaskClient) -> None:
    body = assert_error(client.delete("/api/v1/tools"), 405, "METHOD_NOT_ALLOWED")
    assert "GET" in body["details"]["allowed"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/download/0123456789abcdef0123456789abcdef/missing.jpg",
        "/api/v1/download/not-a-job/photo.jpg",
        "/api/v1/download/0123456789abcdef0123456789abcdef/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/download/../../etc/passwd",
    ],
)
def test_download_unknown_or_escaping(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.get_json()["code"] in ("FILE_NOT_FOUND", "NOT_FOUND")


def test_plugins_endpoint(client: FlaskClient) -> None:
    body = client.get("/api/v1/plugins").get_json()
    essentials = next(p for p in body["plugins"] if p["name"] == "essentials")
    assert essentials["package"] == "pixmill"
    assert essentials["builtin"] is True
    assert "resize" in essentials["tools"]
    assert essentials["hooks"] == ["pixmill_tools"]
    assert body["errors"] == []


class _BrokenPlugin:
    """A plugin whose hook raises and whose tool raises: the app must still serve the rest."""

    __name__ = "broken-plugin"

    @hookimpl
    def pixmill_extractors(self) -> list[Any]:
        raise RuntimeError("cannot reach my model server")

    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        def explode(*_: Any) -> Any:
            raise ZeroDivisionError("division by zero inside the plugin")

        return [
            Tool(
                id="explode",
                name="Explode",
                description="always fails",
                settings=Settings,
                run=explode,
            )
        ]


def test_broken_plugins_are_reported_and_tool_failures_are_500(config: Config) -> None:
    registry = load_registry(extra_plugins=[_BrokenPlugin()])
    client = create_app(config, registry=registry).test_client()
    plugins = client.get("/api/v1/plugins").get_json()
    assert any("cannot reach my model server" in e["error"] for e in plugins["errors"])
    assert client.get("/api/v1/health").get_json()["pluginErrors"] == 1
    body = assert_error(post_tool(client, "explode", images.jpeg(), {}), 500, "TOOL_FAILED")
    assert "division by zero" in body["error"]
    assert post_tool(client, "resize", images.jpeg(), {"width": 8}).status_code == 200


def test_openapi_documents_every_tool(client: FlaskClient, app: Flask) -> None:
    from openapi_spec_validator import validate

    spec = client.get("/api/v1/openapi.json").get_json()
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    registry = app.extensions["pixmill"].registry
    for definition in registry.catalogue():
        operation = spec["paths"][tool_path(definition)]["post"]
        form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
        parts = {spec.name for spec in inputs_of(definition)} | {"settings"}
        assert parts <= set(form["properties"]), definition.id
        for status in ("200", "400", "413", "415", "422"):
            assert status in operation["responses"]
    resize_settings = spec["components"]["schemas"]["ResizeSettings"]
    assert resize_settings["properties"]["fit"]["default"] == "cover"
    as_yaml = yaml.safe_load(client.get("/api/v1/openapi.yaml").data)
    assert as_yaml == spec


def test_interactive_docs_are_served_locally(client: FlaskClient) -> None:
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/api/v1/openapi.json" in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(not a.startswith(("http:", "https:", "//")) for a in assets)
    bundle = client.get("/api/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.data) > 100_000
    assert client.get("/").status_code == 302


def test_llms_txt_lists_every_tool(client: FlaskClient, app: Flask) -> None:
    text = client.get("/llms.txt").get_data(as_text=True)
    for definition in app.extensions["pixmill"].registry.catalogue():
        assert f"### {definition.id} " in text
    assert "withoutEnlargement" in text


def test_other_body_types_are_refused(client: FlaskClient) -> None:
    response = client.post(
        "/api/v1/tools/image/resize", data=b"width=10", headers={"Content-Type": "text/plain"}
    )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    response = client.post(
        "/api/v1/tools/image/resize", data=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "VALIDATION_ERROR")


def test_large_bodies_are_read_whole(client: FlaskClient) -> None:
    big = images.png(1600, 1200, alpha=False)
    assert len(big) > 1024 * 1024
    response = post_tool(client, "info", big, {}, filename="big.png")
    assert response.status_code == 200
    assert response.get_json()["fileSize"] == len(big)
    assert (response.get_json()["width"], response.get_json()["height"]) == (1600, 1200)


def test_expired_results_are_purged(config: Config) -> None:
    import os
    import time

    client = create_app(config, result_ttl_hours=1).test_client()
    old = post_tool(client, "resize", images.jpeg(), {"width": 10}).get_json()
    fresh_client = create_app(config, result_ttl_hours=1).test_client()
    job_dir = config.blobs_dir / "results" / old["jobId"]
    two_hours_ago = time.time() - 7200
    for path in [*job_dir.rglob("*"), job_dir]:
        os.utime(path, (two_hours_ago, two_hours_ago))
    new = post_tool(fresh_client, "resize", images.jpeg(), {"width": 12}).get_json()
    assert not job_dir.exists()
    assert fresh_client.get(old["downloadUrl"]).status_code == 404
    assert fresh_client.get(new["downloadUrl"]).status_code == 200
