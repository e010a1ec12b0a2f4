"""The `info` and `color-palette` extractors, run through the real execute path."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFile
from PIL.TiffImagePlugin import IFDRational

from pixmill.core.errors import InvalidImageError, SettingsError, UnsupportedFormatError
from pixmill.core.settings import to_json_schema
from pixmill.plugins.image_data import InfoOutput, PaletteOutput
from pixmill.testing import images
from pixmill.testing.images import encode


def info_of(run_tool: Any, data: bytes, **settings: Any) -> dict[str, Any]:
    outcome = run_tool("info", data, **settings)
    assert outcome.json is not None
    assert InfoOutput().validate(dict(outcome.json)) == {}
    return dict(outcome.json)


def palette_of(run_tool: Any, data: bytes, **settings: Any) -> list[dict[str, Any]]:
    outcome = run_tool("color-palette", data, filename="input.png", **settings)
    assert outcome.json is not None
    assert PaletteOutput().validate(dict(outcome.json)) == {}
    return list(outcome.json["colors"])


# ---------------------------------------------------------------------------------------------
# info


def test_extractors_are_registered_with_exportable_output_schemas(registry: Any) -> None:
    assert not [error for error in registry.errors if error[0] == "image_data"]
    info = registry.catalogue_entry("info", "image")
    palette = registry.catalogue_entry("color-palette", "image")
    assert info.output_schema is InfoOutput
    assert palette.output_schema is PaletteOutput
    info_props = to_json_schema(InfoOutput)["properties"]
    assert {"mimeType", "fileSize", "hasAlpha", "iccDescription", "durationMs"} <= set(info_props)
    palette_item = to_json_schema(PaletteOutput)["properties"]["colors"]["items"]
    assert set(palette_item["properties"]) == {"color", "percentage"}


def test_info_of_a_jpeg(run_tool: Any) -> None:
    data = images.jpeg(320, 240)
    assert info_of(run_tool, data) == {
        "width": 320,
        "height": 240,
        "format": "jpg",
        "mimeType": "image/jpeg",
        "fileSize": len(data),
        "channels": 3,
        "hasAlpha": False,
        "colorSpace": "srgb",
        "bitDepth": 8,
        "dpi": None,
        "hasExif": False,
        "hasIcc": False,
        "iccDescription": None,
        "orientation": None,
        "frames": 1,
        "animated": False,
        "durationMs": None,
        "exif": {},
    }


def test_info_of_a_png_with_alpha(run_tool: Any) -> None:
    data = images.png(120, 80)
    info = info_of(run_tool, data)
    assert (info["width"], info["height"]) == (120, 80)
    assert (info["format"], info["mimeType"], info["fileSize"]) == ("png", "image/png", len(data))
    assert (info["channels"], info["hasAlpha"], info["colorSpace"]) == (4, True, "srgb")
    assert info["bitDepth"] == 8
    assert (info["frames"], info["animated"], info["durationMs"]) == (1, False, None)


def test_info_of_an_animated_gif(run_tool: Any) -> None:
    info = info_of(run_tool, images.animated_gif(64, 48, frames=4))
    assert (info["width"], info["height"], info["format"]) == (64, 48, "gif")
    assert (info["frames"], info["animated"]) == (4, True)
    assert info["durationMs"] == 4 * 80
    assert (info["colorSpace"], info["channels"], info["hasAlpha"]) == ("palette", 3, False)


def test_info_of_a_gif_with_a_transparent_colour(run_tool: Any) -> None:
    img = Image.new("RGBA", (30, 20), (10, 200, 30, 255))
    img.paste((0, 0, 0, 0), (0, 0, 10, 10))
    info = info_of(run_tool, encode(img, "GIF"))
    assert (info["colorSpace"], info["channels"], info["hasAlpha"]) == ("palette", 4, True)


def test_info_durations_of_animated_webp_and_apng(run_tool: Any) -> None:
    frames = [Image.new("RGBA", (20, 10), (i * 60, 0, 0, 255)) for i in range(3)]
    webp = encode(
        frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=[100, 200, 300]
    )
    apng = encode(
        frames[0], "PNG", save_all=True, append_images=frames[1:], duration=[100, 200, 50]
    )
    webp_info = info_of(run_tool, webp)
    assert (webp_info["frames"], webp_info["durationMs"]) == (3, 600)
    apng_info = info_of(run_tool, apng)
    assert (apng_info["frames"], apng_info["animated"], apng_info["durationMs"]) == (3, True, 350)


def test_info_reports_the_displayed_size_of_an_exif_rotated_jpeg(run_tool: Any) -> None:
    info = info_of(run_tool, images.exif_rotated_jpeg(300, 200, orientation=6))
    assert (info["width"], info["height"]) == (200, 300)
    assert info["orientation"] == 6
    assert info["hasExif"] is True
    assert info["exif"] == {"Orientation": 6}
    # Pillow invents 72 dpi for a JPEG with EXIF but no resolution; nothing was declared.
    assert info["dpi"] is None


def test_info_of_a_cmyk_jpeg(run_tool: Any) -> None:
    info = info_of(run_tool, images.cmyk_jpeg(200, 150))
    assert (info["colorSpace"], info["channels"], info["hasAlpha"]) == ("cmyk", 4, False)
    assert (info["width"], info["height"], info["format"]) == (200, 150, "jpg")


def test_info_reads_the_icc_profile_description(run_tool: Any) -> None:
    info = info_of(run_tool, images.jpeg_with_icc(200, 150))
    assert info["hasIcc"] is True
    assert info["iccDescription"] == "sRGB built-in"


def test_info_dpi_from_jfif_png_and_exif(run_tool: Any) -> None:
    img = Image.new("RGB", (10, 10), "white")
    assert info_of(run_tool, encode(img, "JPEG", dpi=(300, 150)))["dpi"] == [300.0, 150.0]
    # PNG stores pixels per metre: 72 dpi round-trips as 72.009.
    assert info_of(run_tool, encode(img, "PNG", dpi=(72, 72)))["dpi"] == [72.0, 72.0]
    exif = Image.Exif()
    exif[0x011A] = IFDRational(240, 1)  # XResolution
    exif[0x011B] = IFDRational(240, 1)  # YResolution
    exif[0x0128] = 2  # inches
    assert info_of(run_tool, encode(img, "JPEG", exif=exif.tobytes()))["dpi"] == [240.0, 240.0]


def test_info_exif_tags_are_named_and_json_safe(run_tool: Any) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0110] = "EOS R5\x00"  # Model, NUL-terminated as cameras write it
    exif[0x0112] = 1
    exif[0x010E] = "x" * 5000  # ImageDescription: cut short
    sub = exif.get_ifd(0x8769)
    sub[0x829A] = IFDRational(1, 250)  # ExposureTime
    sub[0x829D] = IFDRational(28, 10)  # FNumber
    sub[0x9003] = "2024:05:01 10:20:30"  # DateTimeOriginal
    sub[0x927C] = b"\x01\x02opaque maker note"  # MakerNote: binary, left out
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"  # GPSLatitudeRef
    gps[2] = (IFDRational(48, 1), IFDRational(51, 1), IFDRational(2964, 100))  # GPSLatitude
    data = encode(Image.new("RGB", (16, 8), "gray"), "JPEG", exif=exif.tobytes())

    info = info_of(run_tool, data)
    tags = info["exif"]
    assert tags["Make"] == "Canon"
    assert tags["Model"] == "EOS R5"
    assert tags["Orientation"] == 1
    assert len(tags["ImageDescription"]) == 1000
    assert tags["ExposureTime"] == pytest.approx(0.004)
    assert tags["FNumber"] == pytest.approx(2.8)
    assert tags["DateTimeOriginal"] == "2024:05:01 10:20:30"
    assert tags["GPSLatitudeRef"] == "N"
    assert tags["GPSLatitude"] == pytest.approx([48.0, 51.0, 29.64])
    assert "MakerNote" not in tags
    assert "ExifOffset" not in tags and "GPSInfo" not in tags
    assert (info["hasExif"], info["orientation"]) == (True, 1)

    without = info_of(run_tool, data, includeExif=False)
    assert "exif" not in without
    assert without["hasExif"] is True


def test_info_bit_depth_of_a_16_bit_png(run_tool: Any) -> None:
    deep = Image.new("I;16", (8, 8), 40000)
    info = info_of(run_tool, encode(deep, "PNG"))
    assert (info["bitDepth"], info["colorSpace"], info["channels"]) == (16, "gray", 1)


def test_info_never_decodes_pixels(run_tool: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str | None] = []
    real_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        decoded.append(self.format)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    for build in images.SAMPLES.values():
        info_of(run_tool, build())
    assert decoded == []


def test_info_of_a_corrupt_png_is_invalid_image(run_tool: Any) -> None:
    with pytest.raises(InvalidImageError):
        run_tool("info", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)


def test_info_refuses_a_non_image(run_tool: Any) -> None:
    with pytest.raises(UnsupportedFormatError):
        run_tool("info", b"%PDF-1.7 not an image at all")


@pytest.mark.parametrize(
    ("settings", "field"),
    [({"includeExif": "perhaps"}, "includeExif"), ({"verbose": True}, "verbose")],
)
def test_info_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as caught:
        run_tool("info", images.tiny(), **settings)
    assert field in caught.value.details["fields"]


# ---------------------------------------------------------------------------------------------
# color-palette


def blocks(
    size: tuple[int, int], parts: list[tuple[tuple[int, ...], float]], mode: str = "RGB"
) -> Image.Image:
    """Vertical stripes of the given colours, each taking its share of the width."""
    img = Image.new(mode, size)
    draw = ImageDraw.Draw(img)
    left = 0
    for color, share in parts:
        right = left + round(size[0] * share)
        draw.rectangle((left, 0, right - 1, size[1] - 1), fill=color)
        left = right
    return img


RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def test_palette_of_known_blocks(run_tool: Any) -> None:
    img = blocks((200, 100), [(RED, 0.5), (GREEN, 0.3), (BLUE, 0.2)])
    colors = palette_of(run_tool, encode(img, "PNG"), count=3)
    assert [c["color"] for c in colors] == ["#ff0000", "#00ff00", "#0000ff"]
    assert [c["percentage"] for c in colors] == pytest.approx([50, 30, 20], abs=2)

    # Asking for more colours than there are never invents any.
    assert [c["color"] for c in palette_of(run_tool, encode(img, "PNG"))] == [
        "#ff0000",
        "#00ff00",
        "#0000ff",
    ]


def test_palette_rgb_format(run_tool: Any) -> None:
    img = blocks((100, 50), [(RED, 0.75), (BLUE, 0.25)])
    colors = palette_of(run_tool, encode(img, "PNG"), count=2, format="rgb")
    assert [c["color"] for c in colors] == [[255, 0, 0], [0, 0, 255]]
    assert [c["percentage"] for c in colors] == pytest.approx([75, 25], abs=2)


def test_palette_of_a_large_jpeg_is_computed_on_a_downsized_copy(run_tool: Any) -> None:
    orange, teal = (240, 130, 20), (20, 140, 150)
    img = blocks((1600, 1200), [(orange, 0.6), (teal, 0.4)])
    colors = palette_of(run_tool, encode(img, "JPEG", quality=95), count=2)
    found = [tuple(int(c["color"][i : i + 2], 16) for i in (1, 3, 5)) for c in colors]
    assert len(found) == 2
    for got, expected in zip(found, [orange, teal], strict=True):
        assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) <= 8
    assert [c["percentage"] for c in colors] == pytest.approx([60, 40], abs=2)


def test_palette_ignores_fully_transparent_pixels(run_tool: Any) -> None:
    clear = (0, 0, 0, 0)
    img = blocks(
        (200, 40), [(clear, 0.5), ((255, 255, 0, 255), 0.375), ((0, 0, 255, 255), 0.125)], "RGBA"
    )
    colors = palette_of(run_tool, encode(img, "PNG"), count=4)
    assert [c["color"] for c in colors] == ["#ffff00", "#0000ff"]
    assert [c["percentage"] for c in colors] == pytest.approx([75, 25], abs=2)


def test_palette_of_a_fully_transparent_image_is_empty(run_tool: Any) -> None:
    img = Image.new("RGBA", (30, 30), (255, 0, 0, 0))
    assert palette_of(run_tool, encode(img, "PNG")) == []


def test_palette_of_an_animation_reads_its_first_frame(run_tool: Any) -> None:
    colors = palette_of(run_tool, images.animated_gif(32, 24, frames=3))
    # animated_gif's first frame is a flat (0, 255, 120).
    assert colors == [{"color": "#00ff78", "percentage": 100.0}]


def test_palette_of_one_colour_averages_the_picture(run_tool: Any) -> None:
    img = blocks((100, 100), [(RED, 0.5), (BLUE, 0.5)])
    colors = palette_of(run_tool, encode(img, "PNG"), count=1, format="rgb")
    assert len(colors) == 1 and colors[0]["percentage"] == 100.0
    assert colors[0]["color"] == pytest.approx([127.5, 0, 127.5], abs=1)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"count": 0}, "count"),
        ({"count": 33}, "count"),
        ({"format": "hsl"}, "format"),
        ({"colours": 3}, "colours"),
    ],
)
def test_palette_bad_settings(run_tool: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as caught:
        run_tool("color-palette", images.tiny(), **settings)
    assert field in caught.value.details["fields"]
