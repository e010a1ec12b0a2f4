"""The conversion plugin (svg-to-raster, vectorize, pdf-to-image and its /info and /preview
sub-routes) on SVGs and PDFs the tests build themselves."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import resvg_py
from flask.testing import FlaskClient
from PIL import Image, ImageDraw

from pixmill.core.errors import PixmillError, SettingsError
from pixmill.testing import check_plugin, images
from pixmill.testing.images import encode

SVG_NS = "http://www.w3.org/2000/svg"

pytestmark = pytest.mark.pixmill_plugins("conversion")


def svg(body: str, attrs: str = 'width="40" height="20"', prolog: str = "") -> bytes:
    return (
        f'{prolog}<svg xmlns="{SVG_NS}" xmlns:xlink="http://www.w3.org/1999/xlink" {attrs}>'
        f"{body}</svg>"
    ).encode()


# Left half red, right half blue, on a transparent canvas 40x20.
TWO_HALVES = svg(
    '<rect width="20" height="20" fill="#ff0000"/>'
    '<rect x="20" width="20" height="10" fill="#0000ff"/>'
)


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def pdf(
    sizes: list[tuple[int, int]] = [(200, 100), (100, 300), (150, 150)],  # noqa: B006
    **info: str,
) -> bytes:
    """A PDF whose pages are `sizes` points (Pillow at 72 dpi: one pixel, one point)."""
    colours = [(255, 0, 0), (0, 128, 0), (0, 0, 255), (200, 200, 0)]
    pages = [Image.new("RGB", size, colours[i % 4]) for i, size in enumerate(sizes)]
    out = io.BytesIO()
    pages[0].save(out, "PDF", save_all=True, append_images=pages[1:], resolution=72, **info)
    return out.getvalue()


def encrypted_pdf() -> bytes:
    """A one-page PDF under the standard security handler whose user password is not empty."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <"
        + b"ab" * 32
        + b"> /U <"
        + b"cd" * 32
        + b"> /P -4 >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += (
        b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [<" % (len(objects) + 1)
        + b"01" * 16
        + b"> <"
        + b"01" * 16
        + b">] >>\nstartxref\n%d\n%%%%EOF\n" % xref
    )
    return bytes(out)


def zip_of(data: bytes) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(data))


def post(
    client: FlaskClient, route: str, data: bytes, filename: str, accept: str = "", **settings: Any
) -> Any:
    form = {"file": (io.BytesIO(data), filename), "settings": json.dumps(settings)}
    headers = {"Accept": accept} if accept else {}
    section = "pdf" if route.startswith("pdf-") else "image"  # the seed's URL sections
    return client.post(f"/api/v1/tools/{section}/{route}", data=form, headers=headers)


def close(a: Any, b: tuple[int, ...], tolerance: int = 4) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


# --- svg-to-raster ----------------------------------------------------------------------------


def test_svg_renders_at_its_size_with_the_drawn_colours(run_tool: Any) -> None:
    outcome = run_tool("svg-to-raster", TWO_HALVES, "halves.svg")
    img = decoded(outcome.data)
    assert img.format == "PNG" and img.size == (40, 20) and img.mode == "RGBA"
    assert img.getpixel((5, 10)) == (255, 0, 0, 255)
    assert img.getpixel((30, 5)) == (0, 0, 255, 255)
    assert img.getpixel((30, 15))[3] == 0  # transparent by default
    assert outcome.filename == "halves.png"


def test_svg_size_from_width_keeps_aspect_and_scale_and_dpi_multiply(run_tool: Any) -> None:
    assert decoded(run_tool("svg-to-raster", TWO_HALVES, "a.svg", width=100).data).size == (100, 50)
    assert decoded(run_tool("svg-to-raster", TWO_HALVES, "a.svg", height=40).data).size == (80, 40)
    # Both: fits inside, undistorted.
    boxed = decoded(run_tool("svg-to-raster", TWO_HALVES, "a.svg", width=100, height=100).data)
    assert boxed.size == (100, 50)
    assert decoded(run_tool("svg-to-raster", TWO_HALVES, "a.svg", scale=2.5).data).size == (100, 50)
    assert decoded(run_tool("svg-to-raster", TWO_HALVES, "a.svg", dpi=192).data).size == (80, 40)
    view_box = svg('<rect width="10" height="5"/>', attrs='viewBox="0 0 30 15"')
    assert decoded(run_tool("svg-to-raster", view_box, "v.svg").data).size == (30, 15)
    in_mm = svg("", attrs='width="25.4mm" height="1in"')
    assert decoded(run_tool("svg-to-raster", in_mm, "mm.svg").data).size == (96, 96)


def test_svg_background_and_jpeg_output(run_tool: Any) -> None:
    img = decoded(
        run_tool("svg-to-raster", TWO_HALVES, "a.svg", background="#00ff00", format="webp").data
    )
    assert img.format == "WEBP"
    green = img.convert("RGB").getpixel((30, 15))
    assert green[1] > 200 and green[0] < 40 and green[2] < 40  # type: ignore[index]
    jpeg = decoded(run_tool("svg-to-raster", TWO_HALVES, "a.svg", format="jpeg").data)
    assert jpeg.format == "JPEG" and jpeg.size == (40, 20)


def test_svg_with_entities_or_internal_doctype_is_refused(run_tool: Any) -> None:
    lol = svg(
        "<text>&a;</text>",
        prolog='<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa">]>',
    )
    external = svg(
        "<text>&x;</text>",
        prolog='<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    )
    utf16 = (
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE svg [<!ENTITY a "b">]>'
        f'<svg xmlns="{SVG_NS}"><text>&a;</text></svg>'
    ).encode("utf-16")
    from pixmill.plugins.conversion import safe_svg

    with pytest.raises(PixmillError) as caught:
        safe_svg(utf16)  # the byte pattern misses it; expat does not
    assert caught.value.code == "SVG_ENTITIES_REFUSED"
    for data in (lol, external):
        with pytest.raises(PixmillError) as caught:
            run_tool("svg-to-raster", data, "bad.svg")
        assert caught.value.status == 400 and caught.value.code == "SVG_ENTITIES_REFUSED"


def test_a_plain_public_doctype_is_fine(run_tool: Any) -> None:
    data = svg(
        '<rect width="40" height="20" fill="#ff0000"/>',
        prolog='<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
        '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">',
    )
    assert decoded(run_tool("svg-to-raster", data, "d.svg").data).getpixel((5, 5)) == (
        255,
        0,
        0,
        255,
    )


def test_local_files_and_urls_referenced_by_the_svg_are_never_read(
    run_tool: Any, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.png"
    Image.new("RGB", (10, 10), (255, 0, 0)).save(secret)
    body = (
        f'<image href="{secret}" width="20" height="20"/>'
        f'<image xlink:href="file://{secret}" x="20" width="20" height="20"/>'
        '<image href="http://127.0.0.1:9/x.png" width="40" height="20"/>'
        f'<filter id="f"><feImage href="{secret}"/></filter>'
        '<rect width="40" height="20" filter="url(#f)" fill="none"/>'
    )
    data = svg(body)
    # resvg itself would read the file: the test's premise.
    raw = decoded(bytes(resvg_py.svg_to_bytes(svg_string=data.decode())))
    assert raw.getpixel((5, 5)) == (255, 0, 0, 255)
    outcome = run_tool("svg-to-raster", data, "refs.svg")
    img = decoded(outcome.data)
    assert img.size == (40, 20)
    assert img.getchannel("A").getextrema() == (0, 0)  # nothing was drawn
    assert outcome.meta["removedReferences"] == 4


def test_embedded_data_uri_images_still_render(run_tool: Any) -> None:
    import base64

    png = base64.b64encode(encode(Image.new("RGB", (4, 4), (0, 0, 255)), "PNG")).decode()
    data = svg(f'<image href="data:image/png;base64,{png}" width="40" height="20"/>')
    img = decoded(run_tool("svg-to-raster", data, "embedded.svg").data)
    assert img.getpixel((20, 10)) == (0, 0, 255, 255)


def test_an_svg_nested_in_a_data_uri_cannot_smuggle_a_file_reference(
    run_tool: Any, tmp_path: Path
) -> None:
    import base64

    secret = tmp_path / "secret.png"
    Image.new("RGB", (10, 10), (255, 0, 0)).save(secret)
    inner = svg(f'<image href="{secret}" width="40" height="20"/>')
    nested = base64.b64encode(inner).decode()
    data = svg(f'<image href="data:image/svg+xml;base64,{nested}" width="40" height="20"/>')
    # Whether a renderer version follows references inside an embedded SVG or not, the
    # embedded SVG never reaches it: only raster data: URIs are kept.
    outcome = run_tool("svg-to-raster", data, "nested.svg")
    assert decoded(outcome.data).getchannel("A").getextrema() == (0, 0)
    assert outcome.meta["removedReferences"] == 1


def test_svg_output_size_is_capped_before_rendering(run_tool: Any) -> None:
    huge = svg("", attrs='width="100000" height="100000"')
    with pytest.raises(PixmillError) as caught:
        run_tool("svg-to-raster", huge, "huge.svg")
    assert caught.value.status == 400 and caught.value.code == "OUTPUT_TOO_LARGE"
    big = svg("", attrs='width="9000" height="9000"')  # 81 MP: over the 50 MP test limit
    with pytest.raises(PixmillError) as caught:
        run_tool("svg-to-raster", big, "big.svg")
    assert caught.value.code == "OUTPUT_TOO_LARGE"


def test_svg_to_raster_refuses_images_and_broken_markup(run_tool: Any) -> None:
    with pytest.raises(PixmillError) as caught:
        run_tool("svg-to-raster", images.png(20, 20), "x.png")
    assert caught.value.status == 415
    with pytest.raises(PixmillError) as caught:
        run_tool("svg-to-raster", b'<svg xmlns="http://www.w3.org/2000/svg"><rect', "cut.svg")
    assert caught.value.status == 422 and caught.value.code == "INVALID_SVG"


@pytest.mark.parametrize(
    "settings",
    [
        {"width": 0},
        {"height": 16385},
        {"scale": 0},
        {"dpi": 5},
        {"format": "bmp"},
        {"background": "red"},
        {"quality": 101},
    ],
)
def test_svg_to_raster_bounds_over_rest(
    pixmill_client: FlaskClient, settings: dict[str, Any]
) -> None:
    response = post(pixmill_client, "svg-to-raster", TWO_HALVES, "a.svg", **settings)
    assert response.status_code == 400
    assert response.get_json()["code"] == "VALIDATION_ERROR"


# --- vectorize --------------------------------------------------------------------------------


def shape_image() -> Image.Image:
    img = Image.new("RGB", (96, 64), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.ellipse((8, 8, 56, 56), fill=(220, 30, 30))
    draw.rectangle((60, 16, 88, 48), fill=(30, 40, 200))
    return img


def rasterise(svg_data: bytes) -> Image.Image:
    png = bytes(resvg_py.svg_to_bytes(svg_string=svg_data.decode(), background="#ffffff"))
    return decoded(png).convert("RGB")


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean())


@pytest.mark.parametrize("mode", ["color", "bw"])
def test_vectorize_gives_an_svg_of_paths_that_looks_like_the_input(
    run_tool: Any, mode: str
) -> None:
    source = shape_image()
    outcome = run_tool("vectorize", encode(source, "PNG"), "shapes.png", colorMode=mode)
    assert outcome.filename == "shapes.svg" and outcome.format.name == "svg"
    root = ET.fromstring(outcome.data)
    paths = root.findall(f".//{{{SVG_NS}}}path")
    assert root.tag == f"{{{SVG_NS}}}svg" and paths
    back = rasterise(outcome.data)
    assert back.size == source.size
    expected = (
        source
        if mode == "color"
        else source.convert("L").point(lambda v: 0 if v < 128 else 255).convert("RGB")
    )
    assert mean_abs_diff(back, expected) < 6
    if mode == "bw":
        assert {p.get("fill", "").lower() for p in paths} <= {"#000000", "#000", "#ffffff"}


def test_vectorize_threshold_and_knobs_change_the_trace(run_tool: Any) -> None:
    data = encode(shape_image(), "PNG")
    # Both shapes are darker than 200, only the blue one is darker than 60.
    dark = run_tool("vectorize", data, "s.png", colorMode="bw", threshold=60).data
    both = run_tool("vectorize", data, "s.png", colorMode="bw", threshold=200).data
    assert rasterise(dark).getpixel((32, 32)) == (255, 255, 255)
    assert rasterise(both).getpixel((32, 32)) == (0, 0, 0)
    polygon = run_tool("vectorize", data, "s.png", pathMode="polygon").data
    assert b" C" not in polygon and b"<path" in polygon  # straight segments only


def test_vectorize_refuses_animations(run_tool: Any) -> None:
    with pytest.raises(PixmillError) as caught:
        run_tool("vectorize", images.animated_gif(), "a.gif")
    assert caught.value.status == 422


@pytest.mark.parametrize(
    "settings",
    [
        {"colorMode": "grey"},
        {"colorPrecision": 0},
        {"colorPrecision": 9},
        {"filterSpeckle": -1},
        {"cornerThreshold": 181},
        {"pathPrecision": 9},
        {"threshold": 256},
        {"pathMode": "bezier"},
    ],
)
def test_vectorize_bounds_over_rest(pixmill_client: FlaskClient, settings: dict[str, Any]) -> None:
    response = post(pixmill_client, "vectorize", images.png(20, 20), "a.png", **settings)
    assert response.status_code == 400
    assert response.get_json()["code"] == "VALIDATION_ERROR"


# --- pdf-to-image -----------------------------------------------------------------------------


def test_pdf_pages_become_a_zip_of_images_at_the_dpi(run_tool: Any) -> None:
    outcome = run_tool("pdf-to-image", pdf(), "report.pdf", dpi=144)
    assert outcome.format.name == "zip" and outcome.filename == "report.zip"
    archive = zip_of(outcome.data)
    assert archive.namelist() == ["report-p1.png", "report-p2.png", "report-p3.png"]
    first = decoded(archive.read("report-p1.png"))
    assert first.size == (400, 200)  # 200x100 points at 2x
    assert close(first.convert("RGB").getpixel((200, 100)), (255, 0, 0))
    assert decoded(archive.read("report-p2.png")).size == (200, 600)


def test_a_rotated_page_renders_as_displayed(run_tool: Any) -> None:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(pdf([(200, 100)]))
    document[0].set_rotation(90)
    out = io.BytesIO()
    document.save(out)
    document.close()
    archive = zip_of(run_tool("pdf-to-image", out.getvalue(), "r.pdf", dpi=72).data)
    assert decoded(archive.read("r-p1.png")).size == (100, 200)


def test_pdf_page_ranges_and_formats(run_tool: Any) -> None:
    document = pdf([(100, 100)] * 6)
    archive = zip_of(run_tool("pdf-to-image", document, "d.pdf", pages="1-2,5", format="jpeg").data)
    assert archive.namelist() == ["d-p1.jpg", "d-p2.jpg", "d-p5.jpg"]
    assert decoded(archive.read("d-p5.jpg")).size == (209, 209)  # 150 dpi default, rounded up
    webp = zip_of(
        run_tool("pdf-to-image", document, "d.pdf", pages="6", format="webp", dpi=72).data
    )
    assert webp.namelist() == ["d-p6.webp"]
    assert decoded(webp.read("d-p6.webp")).size == (100, 100)


def test_pdf_progress_is_reported_per_page(registry: Any, limits: Any) -> None:
    from pixmill.core.execution import execute

    seen: list[tuple[float, str | None]] = []
    execute(
        registry.catalogue_entry("pdf-to-image"),
        {"file": [(pdf(), "p.pdf")]},
        {"dpi": 72},
        limits=limits,
        on_progress=lambda fraction, message: seen.append((fraction, message)),
    )
    messages = [message for _, message in seen]
    assert {"page 1", "page 2", "page 3"} <= set(messages)
    assert seen[-1][0] == 1.0


def test_pdf_pages_outside_the_document_and_pixel_caps(run_tool: Any) -> None:
    with pytest.raises(PixmillError) as caught:
        run_tool("pdf-to-image", pdf(), "p.pdf", pages="2-4")
    assert caught.value.status == 400 and caught.value.code == "PAGE_OUT_OF_RANGE"
    poster = pdf([(14000, 14000)])  # at 600 dpi: over 100 000 pixels a side
    with pytest.raises(PixmillError) as caught:
        run_tool("pdf-to-image", poster, "poster.pdf", dpi=600)
    assert caught.value.status == 400 and caught.value.code == "OUTPUT_TOO_LARGE"


def test_pdf_to_image_refuses_images_broken_and_encrypted_pdfs(run_tool: Any) -> None:
    with pytest.raises(PixmillError) as caught:
        run_tool("pdf-to-image", images.jpeg(40, 30), "photo.jpg")
    assert caught.value.status == 415 and "PDF" in caught.value.message
    with pytest.raises(PixmillError) as caught:
        run_tool("pdf-to-image", b"%PDF-1.7\nthis is not a pdf", "broken.pdf")
    assert caught.value.status == 422 and caught.value.code == "INVALID_PDF"
    with pytest.raises(PixmillError) as caught:
        run_tool("pdf-to-image", encrypted_pdf(), "locked.pdf")
    assert caught.value.status == 422 and caught.value.code == "PDF_ENCRYPTED"
    assert "password" in caught.value.message


@pytest.mark.parametrize(
    "settings",
    [
        {"dpi": 71},
        {"dpi": 601},
        {"pages": "one"},
        {"pages": "1-"},
        {"format": "gif"},
        {"quality": 0},
    ],
)
def test_pdf_to_image_bounds_over_rest(
    pixmill_client: FlaskClient, settings: dict[str, Any]
) -> None:
    response = post(pixmill_client, "pdf-to-image", pdf(), "p.pdf", **settings)
    assert response.status_code == 400
    assert response.get_json()["code"] == "VALIDATION_ERROR"


def test_pdf_to_image_over_rest_is_queued_with_progress_and_gives_a_zip_download(
    pixmill_client: FlaskClient, pixmill_app: Any
) -> None:
    response = post(pixmill_client, "pdf-to-image", pdf(), "r.pdf", dpi=72)
    assert response.status_code == 202, response.get_json()  # heavy: many pages take time
    job_id = response.get_json()["jobId"]
    job = pixmill_app.extensions["pixmill"].jobs.wait_until_final(job_id, 60.0)
    assert job.status.value == "completed", job.error_message
    assert job.progress == 1.0
    results = pixmill_client.get(f"/api/v1/jobs/{job_id}/results").get_json()
    download = pixmill_client.get(results["files"][0]["downloadUrl"])
    assert download.status_code == 200
    assert zip_of(download.data).namelist() == ["r-p1.png", "r-p2.png", "r-p3.png"]


def test_pdf_info_over_its_sub_route(pixmill_client: FlaskClient) -> None:
    document = pdf(title="Quarterly", author="Ada")
    response = post(pixmill_client, "pdf-to-image/info", document, "q.pdf")
    assert response.status_code == 200, response.get_json()
    info = response.get_json()
    assert info["pageCount"] == 3
    assert [(p["width"], p["height"]) for p in info["pages"]] == [
        (200, 100),
        (100, 300),
        (150, 150),
    ]
    assert info["title"] == "Quarterly" and info["author"] == "Ada"
    assert info["encrypted"] is False
    locked = post(pixmill_client, "pdf-to-image/info", encrypted_pdf(), "l.pdf").get_json()
    assert locked["encrypted"] is True and locked["passwordRequired"] is True
    image = post(pixmill_client, "pdf-to-image/info", images.png(10, 10), "x.png")
    assert image.status_code == 415
    described = pixmill_client.get("/api/v1/tools/pdf/pdf-to-image-info").get_json()
    assert described["endpoint"] == "/api/v1/tools/pdf/pdf-to-image/info"


def test_pdf_preview_over_its_sub_route(pixmill_client: FlaskClient) -> None:
    response = post(
        pixmill_client, "pdf-to-image/preview", pdf(), "p.pdf", accept="image/png", page=2
    )
    assert response.status_code == 200
    img = decoded(response.data)
    assert img.format == "PNG" and img.size == (400, 1200)
    assert close(img.convert("RGB").getpixel((200, 600)), (0, 128, 0))
    small = post(pixmill_client, "pdf-to-image/preview", pdf(), "p.pdf", width=100).get_json()
    assert decoded(pixmill_client.get(small["downloadUrl"]).data).size == (100, 50)
    missing = post(pixmill_client, "pdf-to-image/preview", pdf(), "p.pdf", page=4)
    assert missing.status_code == 400 and missing.get_json()["code"] == "PAGE_OUT_OF_RANGE"
    bad = post(pixmill_client, "pdf-to-image/preview", pdf(), "p.pdf", width=15)
    assert bad.status_code == 400 and bad.get_json()["code"] == "VALIDATION_ERROR"


def test_refused_settings_raise_settings_error_inline(run_tool: Any) -> None:
    with pytest.raises(SettingsError):
        run_tool("pdf-to-image", pdf(), "p.pdf", pages="0-")


def test_the_plugin_conforms() -> None:
    check_plugin("conversion").assert_ok()
