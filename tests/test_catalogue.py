"""The whole catalogue, tool by tool, through the REST API of one real app.

Every tool and extractor in `GET /api/v1/tools` (the built-ins and the installed example
plugin): its example settings (defaults for most) validate, it runs on a sample photo
(multi-file tools on several; document tools on a document), its result is what it says it
is (an image that decodes in its declared format, a readable ZIP/PDF/SVG, JSON matching the
output schema), and it appears in the OpenAPI document. A tool added without a working
default path fails here, whatever its own tests cover.
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
from PIL import Image

from pixmill.core.contracts import OutputKind, Tool
from pixmill.core.execution import Outcome
from pixmill.core.imageio import result_format_by_name, sniff_format
from pixmill.core.plugin_host import load_registry
from pixmill.core.settings import validate_settings
from pixmill.testing import images
from pixmill.testing.conformance import result_problem
from pixmill.testing.harness import Harness

BUILT_IN_MODULE = "pixmill.plugins."
JOB_WAIT_S = 120.0

REGISTRY = load_registry()


def _module_of(definition: Any) -> str:
    function = definition.run if isinstance(definition, Tool) else definition.extract
    return getattr(function, "__module__", "") or ""


BUILT_INS = sorted(
    definition.id
    for definition in [*REGISTRY.tools.values(), *REGISTRY.extractors.values()]
    if _module_of(definition).startswith(BUILT_IN_MODULE)
)
DEFINITIONS = sorted(
    ((definition.id, definition)
     for definition in [*REGISTRY.tools.values(), *REGISTRY.extractors.values()]),
    key=lambda pair: pair[0],
)  # fmt: skip


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    harness = Harness(REGISTRY, Path(tmp_path_factory.mktemp("catalogue")))
    yield harness.app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def parts_for(definition: Any) -> dict[str, list[tuple[bytes, str]]]:
    """A sample for each file part: documents for document parts, two photos for
    multi-file parts, a small PNG for secondary parts (watermark, overlay)."""
    parts: dict[str, list[tuple[bytes, str]]] = {}
    for spec in getattr(definition, "inputs", ()) or ():
        if spec.documents:
            fmt = spec.documents[0]
            parts[spec.name] = [(images.document_sample(fmt), images.DOCUMENT_SAMPLES[fmt][1])]
        elif spec.name != "file":
            parts[spec.name] = [(images.png(64, 48), f"{spec.name}.png")]
        elif spec.multiple:
            parts[spec.name] = [
                (images.jpeg(), "first.jpg"),
                (images.encode(images.photo(240, 320, seed=2), "JPEG"), "second.jpg"),
                (images.png(200, 200), "third.png"),
            ]
        elif spec.required:
            parts[spec.name] = [(images.jpeg(), "photo.jpg")]
    if not isinstance(definition, Tool):  # an extractor: one image
        parts["file"] = [(images.jpeg(), "photo.jpg")]
    return parts


def test_the_catalogue_lists_every_built_in(client: FlaskClient) -> None:
    listed = {tool["id"]: tool for tool in client.get("/api/v1/tools").get_json()["tools"]}
    assert {tool_id for tool_id, _ in DEFINITIONS} == set(listed)
    unavailable = [tool_id for tool_id, tool in listed.items() if not tool["available"]]
    # The test environment installs every extra ("pixmill[test]"): nothing is missing here.
    assert unavailable == []
    assert len(BUILT_INS) >= 40


@pytest.mark.parametrize(("tool_id", "definition"), DEFINITIONS, ids=[i for i, _ in DEFINITIONS])
def test_every_tool_runs_on_its_defaults(
    client: FlaskClient, app: Flask, tool_id: str, definition: Any
) -> None:
    # Its defaults (with its documented example, for tools with a required setting) validate.
    settings = dict(definition.example)
    validate_settings(definition.settings, settings)
    entry = client.get("/api/v1/tools").get_json()["tools"]
    endpoint = next(tool["endpoint"] for tool in entry if tool["id"] == tool_id)

    form: dict[str, Any] = {"settings": json.dumps(settings)}
    for name, uploads in parts_for(definition).items():
        form[name] = [(io.BytesIO(data), filename) for data, filename in uploads]
    response = client.post(endpoint, data=form, content_type="multipart/form-data")
    assert response.status_code in (200, 202), (tool_id, response.get_json())
    body = response.get_json()

    if response.status_code == 202:  # heavy: wait for the job and read its result
        job = app.extensions["pixmill"].jobs.wait_until_final(body["jobId"], JOB_WAIT_S)
        assert job.status.value == "completed", (tool_id, job.error_code, job.error_message)
        results = client.get(f"/api/v1/jobs/{body['jobId']}/results").get_json()
        if not isinstance(definition, Tool) or definition.output is OutputKind.JSON:
            assert isinstance(results.get("result"), dict)
            return
        body = {"downloadUrl": results["files"][0]["downloadUrl"]}

    if "downloadUrl" not in body:  # a JSON tool or extractor: its answer is the data
        assert isinstance(body, dict) and body, tool_id
        schema = getattr(definition, "output_schema", None)
        if schema is not None:
            assert schema().validate(body) == {}, body
        return
    download = client.get(body["downloadUrl"])
    assert download.status_code == 200, tool_id
    extension = body["downloadUrl"].rsplit(".", 1)[-1]
    fmt = result_format_by_name(extension)
    kind = definition.output
    problem = result_problem("photo", Outcome(kind, data=download.data, format=fmt))
    assert problem is None, (tool_id, problem)
    if kind is OutputKind.IMAGE:
        assert sniff_format(download.data).pil_name == fmt.pil_name, tool_id
        with Image.open(io.BytesIO(download.data)) as result:
            assert result.width > 0 and result.height > 0
            result.verify()


def test_every_built_in_appears_in_the_openapi_document(client: FlaskClient) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    listed = {tool["id"]: tool for tool in client.get("/api/v1/tools").get_json()["tools"]}
    missing = [
        tool_id
        for tool_id, _ in DEFINITIONS
        if "post" not in document["paths"].get(listed[tool_id]["endpoint"], {})
    ]
    assert missing == []
