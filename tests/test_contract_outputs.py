"""Contract pieces the catalogue's families stand on: document results (`OutputKind.FILE`),
result `meta`, sub-routes, optional dependencies (`requires`/`install`) and document inputs.

Each is exercised through a small plugin object defined here, served by a real app.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from marshmallow import fields, validate
from PIL import Image

from pixmill import (
    Context,
    Extractor,
    FileInput,
    FileResult,
    ImageResult,
    Inputs,
    OutputKind,
    Settings,
    Tool,
    hookimpl,
)
from pixmill.cli import main
from pixmill.core.plugin_host import load_registry
from pixmill.testing import images
from pixmill.testing.conformance import check_plugin
from pixmill.testing.harness import Harness

MISSING_MODULE = "pixmill_no_such_module_for_tests"


def flat_png(value: int) -> bytes:
    return images.encode(Image.new("RGB", (8, 8), (value, value, value)))


class NoSettings(Settings):
    pass


class CountSettings(Settings):
    count = fields.Integer(
        load_default=2,
        validate=validate.Range(min=1, max=5),
        metadata={"description": "how many members"},
    )


def zip_members(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(settings["count"]):
            archive.writestr(f"member-{n}.txt", inputs.file.stem)
    return FileResult(buffer.getvalue(), "zip", filename=f"{inputs.file.stem}-bundle")


def zip_from_image_tool(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    return zip_members(ctx, inputs, {"count": 1})


def mean_meta(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    img = inputs.file.open().convert("L")
    mean = sum(i * n for i, n in enumerate(img.histogram())) / (img.width * img.height)
    return ImageResult(img, format="png", meta={"mean": round(mean, 3)})


def inspect_size(ctx: Context, image: Any, settings: dict[str, Any]) -> dict[str, Any]:
    return {"bytes": image.size, "format": image.format.name}


def document_kind(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> dict[str, Any]:
    return {"format": inputs.file.format.name}


class ContractPlugin:
    @hookimpl
    def pixmill_tools(self) -> list[Tool]:
        return [
            Tool(
                id="bundle",
                name="Bundle",
                description="a ZIP of text members",
                settings=CountSettings,
                run=zip_members,
                output=OutputKind.FILE,
            ),
            Tool(
                id="liar",
                name="Liar",
                description="declares an image, returns a ZIP",
                settings=NoSettings,
                run=zip_from_image_tool,
            ),
            Tool(
                id="gray-mean",
                name="Gray mean",
                description="grayscale, with the mean in meta",
                settings=NoSettings,
                run=mean_meta,
            ),
            Tool(
                id="needs-module",
                name="Needs module",
                description="needs a module that is not installed",
                settings=NoSettings,
                run=mean_meta,
                requires=(MISSING_MODULE,),
                install="pixmill-test-extra>=1",
            ),
            Tool(
                id="doc-kind",
                name="Document kind",
                description="takes a PDF or SVG as well as images",
                settings=NoSettings,
                run=document_kind,
                output=OutputKind.JSON,
                inputs=(FileInput("file", "a PDF, an SVG or an image", documents=("pdf", "svg")),),
            ),
        ]

    @hookimpl
    def pixmill_extractors(self) -> list[Extractor]:
        return [
            Extractor(
                id="gray-mean-inspect",
                name="Inspect",
                description="bytes and format, under gray-mean's path",
                settings=NoSettings,
                extract=inspect_size,
                route="gray-mean/inspect",
            )
        ]


@pytest.fixture
def harness(tmp_path: Any) -> Harness:
    return Harness(load_registry(extra_plugins=[ContractPlugin()], entry_points=False), tmp_path)


def post(harness: Harness, path: str, data: bytes, **kwargs: Any) -> Any:
    return harness.client().post(
        f"/api/v1/tools/image/{path}",
        data={"file": (io.BytesIO(data), "photo.png"), **kwargs.pop("form", {})},
        content_type="multipart/form-data",
        **kwargs,
    )


def test_a_document_result_is_stored_and_served_with_its_type(harness: Harness) -> None:
    response = post(harness, "bundle", images.png(8, 8), form={"settings": '{"count": 3}'})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["downloadUrl"].endswith("/photo-bundle.zip")
    download = harness.client().get(body["downloadUrl"])
    assert download.status_code == 200
    assert download.mimetype == "application/zip"
    assert "sandbox" in download.headers["Content-Security-Policy"]
    with zipfile.ZipFile(io.BytesIO(download.data)) as archive:
        assert archive.namelist() == ["member-0.txt", "member-1.txt", "member-2.txt"]
    # Asked for the file itself, the call answers the ZIP.
    raw = post(harness, "bundle", images.png(8, 8), headers={"Accept": "application/zip"})
    assert raw.status_code == 200 and raw.mimetype == "application/zip"
    assert zipfile.is_zipfile(io.BytesIO(raw.data))


def test_a_document_tool_is_described_as_such_and_refused_as_a_pipeline_step(
    harness: Harness,
) -> None:
    entry = harness.client().get("/api/v1/tools/image/bundle").get_json()
    assert entry["output"] == "file"
    response = harness.client().post(
        "/api/v1/pipeline/execute",
        data={
            "file": (io.BytesIO(images.png(8, 8)), "p.png"),
            "pipeline": json.dumps({"steps": [{"toolId": "bundle"}, {"toolId": "gray-mean"}]}),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert "returns file, not an image" in response.get_json()["error"]


def test_a_tool_returning_another_kind_than_it_declares_is_a_contract_violation(
    harness: Harness,
) -> None:
    response = post(harness, "liar", images.png(8, 8))
    assert response.status_code == 500
    body = response.get_json()
    assert body["code"] == "PLUGIN_CONTRACT_VIOLATION"
    assert "output=OutputKind.FILE" in body["error"]


def test_meta_reaches_the_answer_and_the_job(harness: Harness) -> None:
    response = post(harness, "gray-mean", flat_png(200))
    assert response.status_code == 200
    body = response.get_json()
    assert body["meta"] == {"mean": 200.0}
    job = harness.client().get(f"/api/v1/jobs/{body['jobId']}").get_json()
    assert job["result"] == {"mean": 200.0}
    queued = post(harness, "gray-mean", flat_png(10), query_string={"async": "true"})
    assert queued.status_code == 202
    job_id = queued.get_json()["jobId"]
    final = harness.app.extensions["pixmill"].jobs.wait_until_final(job_id, 30)
    assert final.result == {"mean": 10.0}


def test_a_sub_route_answers_under_its_tool(harness: Harness) -> None:
    response = post(harness, "gray-mean/inspect", images.png(8, 8))
    assert response.status_code == 200
    assert response.get_json() == {"bytes": len(images.png(8, 8)), "format": "png"}
    # Described in the catalogue (and by GET on its id), answered at its route.
    described = harness.client().get("/api/v1/tools/image/gray-mean-inspect").get_json()
    assert described["endpoint"] == "/api/v1/tools/image/gray-mean/inspect"
    listed = harness.client().get("/api/v1/tools").get_json()["tools"]
    assert any(tool["endpoint"].endswith("/gray-mean/inspect") for tool in listed)
    at_route = harness.client().get("/api/v1/tools/image/gray-mean/inspect").get_json()
    assert at_route["id"] == "gray-mean-inspect"
    # `batch` is never an action: GET there is refused with only POST allowed.
    batch = harness.client().get("/api/v1/tools/image/gray-mean/batch")
    assert batch.status_code == 405 and batch.get_json()["details"]["allowed"] == [
        "OPTIONS",
        "POST",
    ]
    missing = post(harness, "gray-mean/nothing", images.png(8, 8))
    assert missing.status_code == 404 and missing.get_json()["code"] == "TOOL_NOT_FOUND"
    paths = harness.client().get("/api/v1/openapi.json").get_json()["paths"]
    assert "/api/v1/tools/image/gray-mean/inspect" in paths


def test_a_tool_with_a_missing_module_is_listed_unavailable_and_refused_with_the_fix(
    harness: Harness,
) -> None:
    listed = harness.client().get("/api/v1/tools").get_json()["tools"]
    entry = next(tool for tool in listed if tool["id"] == "needs-module")
    assert entry["available"] is False
    assert entry["install"] == "pip install 'pixmill-test-extra>=1'"
    assert next(tool for tool in listed if tool["id"] == "bundle")["available"] is True
    response = post(harness, "needs-module", images.png(8, 8))
    assert response.status_code == 503
    body = response.get_json()
    assert body["code"] == "TOOL_UNAVAILABLE"
    assert body["details"] == {
        "missing": [MISSING_MODULE],
        "install": "pip install 'pixmill-test-extra>=1'",
    }
    # Queued calls are refused the same way, before any job is stored.
    queued = post(harness, "needs-module", images.png(8, 8), query_string={"async": "true"})
    assert queued.status_code == 503
    jobs = harness.client().get("/api/v1/jobs").get_json()
    assert all(job["toolId"] != "needs-module" for job in jobs["jobs"])


def test_documents_are_taken_only_by_parts_that_declare_them(harness: Harness) -> None:
    pdf = b"%PDF-1.4\n%fake but sniffable\n%%EOF\n"
    svg = b'\xef\xbb\xbf<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>'
    assert post(harness, "doc-kind", pdf).get_json() == {"format": "pdf"}
    assert post(harness, "doc-kind", svg).get_json() == {"format": "svg"}
    assert post(harness, "doc-kind", images.png(4, 4)).get_json() == {"format": "png"}
    text = post(harness, "doc-kind", b"just some text, neither")
    assert text.status_code == 415
    assert "this part also takes pdf, svg" in text.get_json()["error"]
    # A part that declares no documents refuses a PDF as before.
    refused = post(harness, "gray-mean", pdf)
    assert refused.status_code == 415
    assert "also takes" not in refused.get_json()["error"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("route", "gray-mean/batch", "cannot be 'batch'"),
        ("route", "Gray/Inspect", "is not `<tool-id>/<action>`"),
        ("requires", ["cv2"], "requires must be a tuple"),
        ("requires", ("cv2",), "names its `install` requirement"),
    ],
)
def test_bad_routes_and_requirements_are_refused_at_load(
    field: str, value: Any, message: str
) -> None:
    bad = Tool(
        id="bad-declaration",
        name="Bad",
        description="bad",
        settings=NoSettings,
        run=mean_meta,
        **{field: value},
    )

    class BadPlugin:
        @hookimpl
        def pixmill_tools(self) -> list[Tool]:
            return [bad]

    registry = load_registry(extra_plugins=[BadPlugin()], entry_points=False)
    assert "bad-declaration" not in registry.tools
    errors = " ".join(error for _, error in registry.errors)
    assert message in errors


def test_the_conformance_check_reads_document_results() -> None:
    report = check_plugin(ContractPlugin())
    found = {(item.subject, item.check): item for item in report.findings}
    bundle = found[("tool 'bundle'", "runs on every sample image kind")]
    assert bundle.ok, bundle.message
    liar = found[("tool 'liar'", "runs on every sample image kind")]
    assert not liar.ok and "PLUGIN_CONTRACT_VIOLATION" in liar.message


NEEDY_PLUGIN = """
import pixmill


class NoSettings(pixmill.Settings):
    pass


def run(ctx, inputs, settings):
    import pixmill_no_such_module_for_tests  # noqa: F401 - the optional dependency

    return pixmill.ImageResult(inputs.file.open())


@pixmill.hookimpl
def pixmill_tools():
    return [
        pixmill.Tool(
            id="needy",
            name="Needy",
            description="needs an optional module",
            settings=NoSettings,
            run=run,
            requires=("pixmill_no_such_module_for_tests",),
            install="pixmill-test-extra>=1",
        )
    ]
"""


def test_the_cli_lists_unavailable_tools_with_their_install_command_and_refuses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "pixmill_needy.py").write_text(NEEDY_PLUGIN)
    monkeypatch.setenv("PIXMILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIXMILL_PLUGINS_DIR", str(plugins))
    runner = CliRunner()
    listed = runner.invoke(main, ["tools"])
    assert listed.exit_code == 0, listed.output
    assert "needy: pip install 'pixmill-test-extra>=1'" in listed.stdout
    photo = tmp_path / "photo.png"
    photo.write_bytes(flat_png(50))
    ran = runner.invoke(main, ["run", "needy", str(photo), "-o", str(tmp_path / "out.png")])
    assert ran.exit_code != 0
    assert "install it with: pip install 'pixmill-test-extra>=1'" in ran.stderr
    assert not (tmp_path / "out.png").exists()
