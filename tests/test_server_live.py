"""Smoke test against the real server: `pixmill serve` as a subprocess on 127.0.0.1."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from pixmill.testing import images

pytestmark = pytest.mark.server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    data_dir = tmp_path_factory.mktemp("serve-data")
    log = data_dir / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXMILL_")}
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pixmill",
                "serve",
                "--port",
                str(port),
                "--workers",
                "2",
                "--data-dir",
                str(data_dir),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"pixmill serve exited early:\n{log.read_text()}")
            try:
                if requests.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"pixmill serve did not answer within 30 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    # Graceful stop: SIGTERM ends the whole server with exit status 0.
    assert process.returncode == 0, Path(log).read_text()


def test_serve_prints_url_and_answers(server: str) -> None:
    body = requests.get(f"{server}/api/v1/tools", timeout=10).json()
    assert any(tool["id"] == "resize" for tool in body["tools"])


def test_tool_call_over_http(server: str) -> None:
    response = requests.post(
        f"{server}/api/v1/tools/image/resize",
        files={"file": ("photo.jpg", images.jpeg(800, 600), "image/jpeg")},
        data={"settings": '{"width": 200}'},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    download = requests.get(server + response.json()["downloadUrl"], timeout=10)
    assert Image.open(io.BytesIO(download.content)).size == (200, 150)


def test_inline_image_over_http(server: str) -> None:
    response = requests.post(
        f"{server}/api/v1/tools/image/resize",
        files={"file": ("photo.jpg", images.jpeg(800, 600), "image/jpeg")},
        data={"settings": '{"width": 100}'},
        headers={"Accept": "image/*"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.headers["ETag"]
    assert Image.open(io.BytesIO(response.content)).width == 100


def test_errors_over_http(server: str) -> None:
    response = requests.post(
        f"{server}/api/v1/tools/image/resize",
        files={"file": ("doc.png", b"%PDF-1.7\n", "image/png")},
        data={"settings": '{"width": 100}'},
        timeout=10,
    )
    assert response.status_code == 415
    assert response.json()["code"] == "UNSUPPORTED_FORMAT"
    assert response.headers["X-Request-ID"] == response.json()["requestId"]


def test_large_upload_over_http(server: str) -> None:
    """A multi-megabyte body goes through the large-read path intact (every pixel counts)."""
    source = images.photo(2400, 1800, seed=3)
    buffer = io.BytesIO()
    source.save(buffer, "PNG")
    upload = buffer.getvalue()
    assert len(upload) > 4 * 1024 * 1024
    response = requests.post(
        f"{server}/api/v1/tools/image/convert",
        files={"file": ("big.png", upload, "image/png")},
        data={"settings": '{"format": "png"}'},
        headers={"Accept": "image/png"},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:300]
    result = Image.open(io.BytesIO(response.content))
    assert result.size == (2400, 1800)
    assert result.convert("RGB").tobytes() == source.tobytes()
