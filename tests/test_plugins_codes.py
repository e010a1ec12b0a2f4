"""codes (qr-generate, barcode-generate, barcode-read) and utilities (image-to-base64,
lqip-placeholder): generated codes are decoded back and compared with what was encoded."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
import zxingcpp
from flask.testing import FlaskClient
from PIL import Image, ImageStat

from pixmill.core.errors import SettingsError, UnsupportedFormatError
from pixmill.plugins.codes import gs1_check_digit
from pixmill.testing import images

QR_URL = "/api/v1/tools/image/qr-generate"
BARCODE_URL = "/api/v1/tools/image/barcode-generate"


def post_json(client: FlaskClient, url: str, body: dict[str, Any]) -> Any:
    return client.post(url, json=body, headers={"Accept": "image/png"})


def image_of(response: Any) -> Image.Image:
    assert response.status_code == 200, response.get_json(silent=True)
    img = Image.open(io.BytesIO(response.data))
    assert img.format == "PNG"
    img.load()
    return img


def decode(run_tool: Any, img: Image.Image, **settings: Any) -> list[dict[str, Any]]:
    """Decode through barcode-read itself (flattening, format names, UPC-A text)."""
    outcome = run_tool("barcode-read", images.encode(img, "PNG"), filename="code.png", **settings)
    assert outcome.json["count"] == len(outcome.json["codes"])
    return list(outcome.json["codes"])


# ---------------------------------------------------------------------------------------------
# qr-generate


@pytest.mark.parametrize("level", ["L", "M", "Q", "H"])
def test_qr_round_trips_at_every_error_correction_level(
    pixmill_client: FlaskClient, level: str
) -> None:
    data = "https://example.com/?q=pixmill&level=" + level
    img = image_of(
        post_json(
            pixmill_client, QR_URL, {"data": data, "size": 300, "errorCorrectionLevel": level}
        )
    )
    assert img.size == (300, 300)
    found = zxingcpp.read_barcodes(img.convert("L"))
    assert [(code.text, code.ec_level) for code in found] == [(data, level)]


def test_qr_colours_and_transparent_background(pixmill_client: FlaskClient, run_tool: Any) -> None:
    img = image_of(
        post_json(
            pixmill_client,
            QR_URL,
            {"data": "colour", "size": 250, "colorDark": "#1e3a8a", "colorLight": "#ffffff00"},
        )
    )
    assert img.mode == "RGBA"
    colours = {colour for _, colour in img.getcolors(maxcolors=16) or []}
    assert colours == {(0x1E, 0x3A, 0x8A, 255), (255, 255, 255, 0)}
    assert [code["text"] for code in decode(run_tool, img)] == ["colour"]


def test_qr_margin_and_size_leave_a_light_quiet_zone(pixmill_client: FlaskClient) -> None:
    img = image_of(post_json(pixmill_client, QR_URL, {"data": "m", "size": 100, "margin": 4}))
    # Version 1 is 21 modules, 29 with the margin: 3 px per module, 13 px of padding.
    assert img.size == (100, 100)
    assert img.convert("L").crop((0, 0, 6 + 12, 100)).getextrema() == (255, 255)
    assert img.convert("L").getextrema() == (0, 255)


def test_qr_bad_settings_are_400s(pixmill_client: FlaskClient) -> None:
    cases: list[dict[str, Any]] = [
        {"data": ""},
        {"data": "x", "size": 20},
        {"data": "x", "size": 5000},
        {"data": "x", "margin": -1},
        {"data": "x", "errorCorrectionLevel": "X"},
        {"data": "x", "colorDark": "#fff", "colorLight": "#ffffff"},
        {"data": "x", "size": 2.5},
    ]
    for body in cases:
        response = post_json(pixmill_client, QR_URL, body)
        assert response.status_code == 400, body
        assert response.get_json()["code"] == "VALIDATION_ERROR"
    too_small = post_json(pixmill_client, QR_URL, {"data": "x" * 200, "size": 30})
    assert too_small.status_code == 400
    assert too_small.get_json()["code"] == "SIZE_TOO_SMALL"
    too_long = post_json(pixmill_client, QR_URL, {"data": "x" * 2900, "errorCorrectionLevel": "H"})
    assert too_long.status_code == 400
    assert too_long.get_json()["code"] == "DATA_TOO_LONG"


def test_qr_runs_on_its_defaults_and_as_a_queued_job(
    pixmill_client: FlaskClient, pixmill_app: Any, run_tool: Any
) -> None:
    default = image_of(post_json(pixmill_client, QR_URL, {}))
    assert default.size == (512, 512)
    assert [code["text"] for code in decode(run_tool, default)] == ["https://example.com"]
    accepted = pixmill_client.post(QR_URL + "?async=true", json={"data": "queued", "size": 64})
    assert accepted.status_code == 202, accepted.get_json()
    job_id = accepted.get_json()["jobId"]
    job = pixmill_app.extensions["pixmill"].jobs.wait_until_final(job_id, 30.0)
    assert job.status.value == "completed", job.error_message
    results = pixmill_client.get(f"/api/v1/jobs/{job_id}/results").get_json()
    queued = Image.open(io.BytesIO(pixmill_client.get(results["files"][0]["downloadUrl"]).data))
    assert queued.size == (64, 64)
    assert [code["text"] for code in decode(run_tool, queued)] == ["queued"]


def test_a_malformed_multipart_body_is_refused_not_run_on_defaults(
    pixmill_client: FlaskClient,
) -> None:
    response = pixmill_client.post(
        QR_URL,
        data=b"--b\r\n-1833109281--b--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 400
    assert response.get_json()["code"] == "MALFORMED_BODY"


def test_qr_refuses_a_file_part(pixmill_client: FlaskClient) -> None:
    response = pixmill_client.post(
        QR_URL,
        data={"settings": '{"data": "x"}', "file": (io.BytesIO(images.png(8, 8)), "a.png")},
    )
    assert response.status_code == 400
    assert response.get_json()["code"] == "UNEXPECTED_FILE"


def post_logo(client: FlaskClient, settings: dict[str, Any], logo: bytes) -> Any:
    return client.post(
        QR_URL,
        data={"settings": json.dumps(settings), "logo": (io.BytesIO(logo), "logo.png")},
        headers={"Accept": "image/png"},
    )


def test_qr_with_a_logo_still_reads_and_shows_the_logo(pixmill_client: FlaskClient) -> None:
    red_logo = images.encode(Image.new("RGB", (100, 100), (220, 20, 20)))
    data = "https://example.com/with-logo"
    settings = {"data": data, "size": 400, "errorCorrectionLevel": "H", "logoSize": 25}
    img = image_of(post_logo(pixmill_client, settings, red_logo)).convert("RGB")
    assert img.getpixel((200, 200)) == (220, 20, 20)  # the logo sits in the middle
    assert [code.text for code in zxingcpp.read_barcodes(img.convert("L"))] == [data]
    # The same code without the logo has no red anywhere.
    plain = image_of(post_json(pixmill_client, QR_URL, {"data": data, "size": 400}))
    assert (220, 20, 20) not in {color for _, color in plain.convert("RGB").getcolors(1 << 16)}


def test_a_logo_too_large_for_the_level_is_refused_with_the_level_it_needs(
    pixmill_client: FlaskClient,
) -> None:
    logo = images.png(40, 40)
    response = post_logo(
        pixmill_client, {"data": "x", "errorCorrectionLevel": "L", "logoSize": 25}, logo
    )
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "LOGO_TOO_LARGE"
    assert "use errorCorrectionLevel M" in body["error"]
    assert body["details"]["levels"] == ["M", "Q", "H"]
    # The same size at M is accepted; 5% fits any level.
    assert post_logo(pixmill_client, {"data": "x", "errorCorrectionLevel": "M", "logoSize": 25},
                     logo).status_code == 200  # fmt: skip
    small = post_logo(pixmill_client, {"data": "x", "errorCorrectionLevel": "L", "logoSize": 5},
                      logo)  # fmt: skip
    assert small.status_code == 200
    not_an_image = post_logo(pixmill_client, {"data": "x"}, b"not an image at all")
    assert not_an_image.status_code == 415


@pytest.mark.parametrize("dot_style", ["square", "rounded", "dots"])
@pytest.mark.parametrize("corner_style", ["square", "rounded", "dots"])
def test_qr_styles_draw_differently_and_still_read(
    pixmill_client: FlaskClient, dot_style: str, corner_style: str
) -> None:
    data = "styled " + dot_style + corner_style
    settings = {"data": data, "size": 330, "dotStyle": dot_style, "cornerStyle": corner_style}
    img = image_of(post_json(pixmill_client, QR_URL, settings)).convert("L")
    assert [code.text for code in zxingcpp.read_barcodes(img)] == [data]
    square = image_of(post_json(pixmill_client, QR_URL, {"data": data, "size": 330})).convert("L")
    if (dot_style, corner_style) == ("square", "square"):
        assert img.tobytes() == square.tobytes()
    else:
        assert img.tobytes() != square.tobytes()
    if dot_style == "dots":  # circles: anti-corners are light where squares are dark
        assert ImageStat.Stat(img).mean[0] > ImageStat.Stat(square).mean[0]


def test_qr_style_and_logo_bounds(pixmill_client: FlaskClient) -> None:
    for settings in ({"dotStyle": "stars"}, {"cornerStyle": 1}, {"logoSize": 31},
                     {"logoSize": 4}):  # fmt: skip
        response = post_json(pixmill_client, QR_URL, {"data": "x", **settings})
        assert response.status_code == 400, settings
        assert response.get_json()["code"] == "VALIDATION_ERROR"


# ---------------------------------------------------------------------------------------------
# barcode-generate -> barcode-read

ROUND_TRIPS = [
    ("code128", "Pixmill-128 ok!", "code128", "Pixmill-128 ok!"),
    ("ean13", "400638133393", "ean13", "4006381333931"),
    ("ean13", "4006381333931", "ean13", "4006381333931"),
    ("upca", "03600029145", "upca", "036000291452"),
    ("code39", "CODE-39 $/+%", "code39", "CODE-39 $/+%"),
    ("itf14", "1001234500001", "itf", "10012345000017"),
    ("datamatrix", "Data Matrix: ünïcode ✓", "datamatrix", "Data Matrix: ünïcode ✓"),
]


@pytest.mark.parametrize(("kind", "text", "read_as", "expected"), ROUND_TRIPS)
def test_barcode_round_trips(
    pixmill_client: FlaskClient, run_tool: Any, kind: str, text: str, read_as: str, expected: str
) -> None:
    img = image_of(post_json(pixmill_client, BARCODE_URL, {"text": text, "type": kind, "scale": 2}))
    found = decode(run_tool, img, formats=[read_as])
    assert [(code["format"], code["text"]) for code in found] == [(read_as, expected)]
    corners = found[0]["position"]
    assert corners["topLeft"]["x"] < corners["bottomRight"]["x"] <= img.width


def test_barcode_scale_and_text_change_the_drawing(pixmill_client: FlaskClient) -> None:
    def drawn(**body: Any) -> Image.Image:
        return image_of(post_json(pixmill_client, BARCODE_URL, {"text": "SCALE", **body}))

    small, large = drawn(scale=1, includeText=False), drawn(scale=4, includeText=False)
    assert large.width == 4 * small.width
    with_text = drawn(scale=4, includeText=True)
    assert with_text.width == large.width and with_text.height > large.height


def test_gs1_check_digit_matches_known_codes() -> None:
    # Published codes: an EAN-13 (Faber-Castell), a UPC-A and an ITF-14 (GS1 example).
    assert gs1_check_digit("400638133393") == 1
    assert gs1_check_digit("03600029145") == 2
    assert gs1_check_digit("1001234500001") == 7


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ({"type": "ean13", "text": "4006381333932"}, "check digit"),
        ({"type": "ean13", "text": "40063813339"}, "12 digits"),
        ({"type": "upca", "text": "03600029145x"}, "11 digits"),
        ({"type": "itf14", "text": "10012345000018"}, "check digit"),
        ({"type": "code39", "text": "lower"}, "upper-case"),
        ({"type": "code128", "text": "naïve"}, "printable ASCII"),
        ({"type": "code128", "text": "x" * 81}, "at most 80"),
        ({"type": "qr", "text": "x"}, "Must be one of"),
        ({"type": "code128", "text": "x", "scale": 9}, "less than or equal to 8"),
        ({"type": "code128", "text": ""}, "Length"),
        ({"type": "ean13"}, "13 digits"),  # the default text is not an EAN-13
    ],
)
def test_bad_barcode_data_is_a_400_naming_the_rule(
    pixmill_client: FlaskClient, body: dict[str, Any], rule: str
) -> None:
    response = post_json(pixmill_client, BARCODE_URL, body)
    assert response.status_code == 400
    error = response.get_json()
    assert error["code"] == "VALIDATION_ERROR"
    assert rule.lower() in str(error["details"]["fields"]).lower()


def test_barcode_read_finds_several_codes_on_a_photo_with_alpha(run_tool: Any) -> None:
    qr = zxingcpp.create_barcode("first", zxingcpp.BarcodeFormat.QRCode).to_image(scale=4)
    ean = zxingcpp.create_barcode("400638133393", zxingcpp.BarcodeFormat.EAN13).to_image(scale=2)
    canvas = Image.new("RGBA", (700, 400), (0, 0, 0, 0))
    # Black bars on a transparent canvas: must be read as dark on light, not lost on black.
    for bitmap, origin in ((qr, (20, 20)), (ean, (300, 150))):
        grey = Image.fromarray(bitmap)
        canvas.paste(
            Image.new("RGBA", grey.size, (0, 0, 0, 255)),
            origin,
            mask=grey.point(lambda value: 255 - value),
        )
    outcome = run_tool("barcode-read", images.encode(canvas, "PNG"), filename="codes.png")
    found = sorted((code["format"], code["text"]) for code in outcome.json["codes"])
    assert found == [("ean13", "4006381333931"), ("qrcode", "first")]
    assert outcome.json["count"] == 2


def test_barcode_read_of_a_photo_without_codes_is_empty(run_tool: Any) -> None:
    outcome = run_tool("barcode-read", images.jpeg(160, 120))
    assert outcome.json == {"codes": [], "count": 0}


def test_barcode_read_refuses_non_images_and_unknown_formats(run_tool: Any) -> None:
    with pytest.raises(UnsupportedFormatError) as refused:
        run_tool("barcode-read", b"%PDF-1.4 not an image", filename="doc.pdf")
    assert refused.value.status == 415
    with pytest.raises(SettingsError):
        run_tool("barcode-read", images.png(8, 8), formats=["qr"])


# ---------------------------------------------------------------------------------------------
# image-to-base64 and lqip-placeholder


def test_image_to_base64_round_trips_the_file(run_tool: Any) -> None:
    data = images.png(12, 10)
    uri = run_tool("image-to-base64", data, filename="a.png").json
    assert uri["mimeType"] == "image/png" and uri["size"] == len(data)
    header, encoded = uri["dataUri"].split(",", 1)
    assert header == "data:image/png;base64"
    assert base64.b64decode(encoded) == data
    plain = run_tool("image-to-base64", data, filename="a.png", format="plain").json
    assert base64.b64decode(plain["base64"]) == data and "dataUri" not in plain
    with pytest.raises(SettingsError):
        run_tool("image-to-base64", data, format="hex")
    with pytest.raises(UnsupportedFormatError):
        run_tool("image-to-base64", b"plain text", filename="a.txt")


def _halves(width: int = 400, height: int = 200) -> bytes:
    img = Image.new("RGB", (width, height), (255, 0, 0))
    img.paste((0, 0, 255), (width // 2, 0, width, height))
    return images.encode(img, "PNG")


@pytest.mark.parametrize("strategy", ["blur", "pixelate", "solid"])
def test_lqip_is_tiny_and_keeps_the_colours(run_tool: Any, strategy: str) -> None:
    outcome = run_tool(
        "lqip-placeholder", _halves(), filename="a.png", width=32, strategy=strategy, format="png"
    )
    img = Image.open(io.BytesIO(outcome.data)).convert("RGB")
    assert img.size == (32, 16)
    mean = ImageStat.Stat(img).mean
    # Half red, half blue: the mean colour survives every strategy.
    assert abs(mean[0] - 127.5) < 3 and abs(mean[2] - 127.5) < 3 and mean[1] < 3
    left, right = img.getpixel((0, 8)), img.getpixel((31, 8))
    assert isinstance(left, tuple) and isinstance(right, tuple)
    if strategy == "solid":
        assert left == right
    else:
        assert left[0] > 200 and right[2] > 200


def test_lqip_keeps_alpha_and_checks_bounds(run_tool: Any) -> None:
    rgba = Image.new("RGBA", (64, 64), (0, 128, 0, 0))
    outcome = run_tool(
        "lqip-placeholder", images.encode(rgba, "PNG"), filename="a.png", format="png", width=8
    )
    placeholder = Image.open(io.BytesIO(outcome.data))
    assert placeholder.mode == "RGBA" and placeholder.size == (8, 8)
    assert placeholder.getchannel("A").getextrema() == (0, 0)
    for bad in ({"width": 3}, {"width": 65}, {"blur": 11}, {"strategy": "noise"}):
        with pytest.raises(SettingsError):
            run_tool("lqip-placeholder", images.png(8, 8), **bad)
