"""The `generate` and `local-folder` sources, run through the real `fetch` path."""

from __future__ import annotations

import os
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pixmill.core.config import Config
from pixmill.core.errors import (
    BadRequestError,
    CancelledError,
    ImageTooLargeError,
    NotFoundError,
    PixmillError,
    SettingsError,
)
from pixmill.core.execution import FetchedImage, fetch
from pixmill.core.imageio import ImageLimits
from pixmill.core.plugin_host import Registry
from pixmill.testing import images
from pixmill.testing.images import decode


@pytest.fixture
def run_source(registry: Registry, limits: ImageLimits, config: Config) -> Any:
    def call(source_id: str, config_: Config | None = None, **kwargs: Any) -> list[FetchedImage]:
        options = {
            key: kwargs.pop(key)
            for key in ("limits", "on_progress", "is_cancelled")
            if key in kwargs
        }
        options.setdefault("limits", limits)
        return fetch(
            registry.source(source_id),
            kwargs,
            config=(config_ or config).plugin_config(),
            **options,
        )

    return call


def test_sources_are_registered(registry: Registry) -> None:
    assert not [e for e in registry.errors if e[0] in ("generate", "local_folder")]
    assert {"generate", "local-folder"} <= set(registry.sources)


# ---------------------------------------------------------------------------------------------
# generate


def test_generate_solid(run_source: Any) -> None:
    [item] = run_source("generate", kind="solid", width=40, height=30, color="#336699")
    img = decode(item.data)
    assert (img.format, img.mode, img.size) == ("PNG", "RGB", (40, 30))
    assert img.getcolors() == [(1200, (0x33, 0x66, 0x99))]
    assert (item.filename, item.format.name) == ("solid-40x30.png", "png")
    assert item.tags == ("generated", "solid")


def test_generate_solid_with_alpha(run_source: Any) -> None:
    [item] = run_source("generate", width=8, height=8, color="#f008")
    img = decode(item.data)
    assert img.mode == "RGBA"
    assert img.getcolors() == [(64, (255, 0, 0, 0x88))]


def test_generate_horizontal_gradient(run_source: Any) -> None:
    [item] = run_source(
        "generate", kind="gradient", width=256, height=4, color="#000000", colorTo="#ffffff"
    )
    img = decode(item.data).convert("L")
    assert img.size == (256, 4)
    # 256 columns from black to white: column x is exactly grey level x, on every row.
    for y in range(4):
        assert [img.getpixel((x, y)) for x in range(256)] == list(range(256))


def test_generate_vertical_gradient_between_colours(run_source: Any) -> None:
    [item] = run_source(
        "generate",
        kind="gradient",
        direction="vertical",
        width=5,
        height=101,
        color="#ff0000",
        colorTo="#0000ff",
    )
    img = decode(item.data)
    assert img.getpixel((0, 0)) == (255, 0, 0)
    assert img.getpixel((4, 100)) == (0, 0, 255)
    mid = img.getpixel((2, 50))
    assert isinstance(mid, tuple)
    assert mid == pytest.approx((127.5, 0, 127.5), abs=1)
    for y in (0, 50, 100):
        assert len({img.getpixel((x, y)) for x in range(5)}) == 1


def test_generate_diagonal_gradient(run_source: Any) -> None:
    [item] = run_source(
        "generate",
        kind="gradient",
        direction="diagonal",
        width=64,
        height=64,
        color="#ffffff",
        colorTo="#000000",
    )
    img = decode(item.data).convert("L")
    assert img.getpixel((0, 0)) == 255
    assert img.getpixel((63, 63)) == 0
    top_right = img.getpixel((63, 0))
    assert isinstance(top_right, int) and abs(top_right - 128) <= 1
    assert all(img.getpixel((x, y)) == img.getpixel((y, x)) for x in range(64) for y in range(64))


def test_generate_noise_is_reproducible_by_seed(run_source: Any) -> None:
    [first] = run_source("generate", kind="noise", width=64, height=48, seed=42)
    [again] = run_source("generate", kind="noise", width=64, height=48, seed=42)
    [other] = run_source("generate", kind="noise", width=64, height=48, seed=43)
    assert first.data == again.data
    assert decode(first.data).tobytes() != decode(other.data).tobytes()
    values = list(decode(first.data).tobytes())
    assert statistics.fmean(values) == pytest.approx(127.5, abs=6)
    assert statistics.pstdev(values) > 65  # uniform 0..255 has 73.9
    assert first.tags == ("generated", "noise", "seed:42")


def test_generate_batch_of_noise_uses_seed_plus_index(run_source: Any) -> None:
    batch = run_source("generate", kind="noise", width=16, height=16, seed=7, count=3)
    assert [item.tags[-1] for item in batch] == ["seed:7", "seed:8", "seed:9"]
    assert [item.filename for item in batch] == [
        "noise-16x16-1.png",
        "noise-16x16-2.png",
        "noise-16x16-3.png",
    ]
    [alone] = run_source("generate", kind="noise", width=16, height=16, seed=8)
    assert batch[1].data == alone.data


def test_generate_without_seed_reports_the_seed_it_used(run_source: Any) -> None:
    [item] = run_source("generate", kind="noise", width=16, height=16)
    seed = int(item.tags[-1].removeprefix("seed:"))
    [again] = run_source("generate", kind="noise", width=16, height=16, seed=seed)
    assert again.data == item.data


@pytest.mark.parametrize(("fmt", "pil_format"), [("jpg", "JPEG"), ("webp", "WEBP")])
def test_generate_lossy_formats(run_source: Any, fmt: str, pil_format: str) -> None:
    [item] = run_source("generate", width=32, height=24, color="#3c78b4", format=fmt)
    decoded = decode(item.data)
    assert (decoded.format, decoded.size, item.format.name) == (pil_format, (32, 24), fmt)
    img = decoded.convert("RGB")
    assert item.filename == f"solid-32x24.{fmt}"
    r, g, b = (statistics.fmean(img.getchannel(i).tobytes()) for i in range(3))
    assert (r, g, b) == pytest.approx((0x3C, 0x78, 0xB4), abs=3)


def test_generate_reports_progress_for_batches(run_source: Any) -> None:
    seen: list[float] = []
    run_source("generate", width=4, height=4, count=4, on_progress=lambda f, _m: seen.append(f))
    assert seen == [0.25, 0.5, 0.75, 1.0]
    seen.clear()
    run_source("generate", width=4, height=4, on_progress=lambda f, _m: seen.append(f))
    assert seen == []


def test_generate_stops_when_cancelled(run_source: Any) -> None:
    checks: list[int] = []

    def cancelled_after_two() -> bool:
        checks.append(1)
        return len(checks) > 2

    with pytest.raises(CancelledError):
        run_source("generate", width=4, height=4, count=10, is_cancelled=cancelled_after_two)
    assert len(checks) == 3


def test_generate_refuses_more_pixels_than_the_server_decodes(run_source: Any) -> None:
    with pytest.raises(ImageTooLargeError):
        run_source(
            "generate", width=100, height=100, limits=ImageLimits(max_pixels=9999, max_frames=10)
        )


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"width": 0}, "width"),
        ({"height": 8193}, "height"),
        ({"kind": "plasma"}, "kind"),
        ({"direction": "up"}, "direction"),
        ({"color": "red"}, "color"),
        ({"colorTo": "#12345"}, "colorTo"),
        ({"format": "gif"}, "format"),
        ({"count": 101}, "count"),
        ({"count": 0}, "count"),
        ({"seed": -1}, "seed"),
        ({"palette": "warm"}, "palette"),
    ],
)
def test_generate_bad_settings(run_source: Any, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as caught:
        run_source("generate", **settings)
    assert field in caught.value.details["fields"]


# ---------------------------------------------------------------------------------------------
# local-folder


@pytest.fixture
def library(config: Config) -> Path:
    """The configured root with images, look-alikes and junk, in nested folders."""
    root = config.local_folder_root
    assert root is not None
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.png").write_bytes(images.tiny("PNG"))
    (root / "b.jpg").write_bytes(images.jpeg(40, 30))
    (root / "notes.txt").write_text("not an image")
    (root / "fake.png").write_text("a text file with an image's name")
    (root / "empty.gif").write_bytes(b"")
    (root / "sub" / "c.gif").write_bytes(images.animated_gif(8, 8, frames=2))
    (root / "sub" / "deeper" / "d.webp").write_bytes(images.tiny("WEBP"))
    return root


def paths(items: list[FetchedImage]) -> list[str]:
    return [tag.removeprefix("path:") for item in items for tag in item.tags]


def test_local_folder_lists_images_and_skips_the_rest(run_source: Any, library: Path) -> None:
    items = run_source("local-folder")
    assert paths(items) == ["a.png", "b.jpg"]
    assert [(i.filename, i.format.name) for i in items] == [("a.png", "png"), ("b.jpg", "jpg")]
    assert items[1].data == (library / "b.jpg").read_bytes()
    assert decode(items[1].data).size == (40, 30)
    assert items[0].url is None


def test_local_folder_recursive_order(run_source: Any, library: Path) -> None:
    items = run_source("local-folder", recursive=True)
    assert paths(items) == ["a.png", "b.jpg", "sub/c.gif", "sub/deeper/d.webp"]
    assert run_source("local-folder", recursive=True, limit=3) == items[:3]


def test_local_folder_subfolder_and_pattern(run_source: Any, library: Path) -> None:
    assert paths(run_source("local-folder", path="sub")) == ["sub/c.gif"]
    assert paths(run_source("local-folder", path="sub/", recursive=True)) == [
        "sub/c.gif",
        "sub/deeper/d.webp",
    ]
    # Case-insensitive; fake.png matches the pattern but is not an image.
    assert paths(run_source("local-folder", pattern="*.PNG")) == ["a.png"]
    assert paths(run_source("local-folder", pattern="*.webp", recursive=True)) == [
        "sub/deeper/d.webp"
    ]


@pytest.mark.parametrize("path", ["..", "../", "sub/../..", "sub\\..\\..", "/etc", "C:\\x"])
def test_local_folder_refuses_paths_out_of_the_root(
    run_source: Any, library: Path, path: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        run_source("local-folder", path=path)
    assert (caught.value.code, caught.value.status) == ("PATH_OUTSIDE_ROOT", 400)


def test_local_folder_refuses_an_absolute_path_even_inside_the_root(
    run_source: Any, library: Path
) -> None:
    with pytest.raises(BadRequestError) as caught:
        run_source("local-folder", path=str(library / "sub"))
    assert caught.value.code == "PATH_OUTSIDE_ROOT"


def test_local_folder_symlinks(run_source: Any, library: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(images.tiny("PNG"))
    (library / "escape").symlink_to(outside, target_is_directory=True)
    (library / "leak.png").symlink_to(outside / "secret.png")
    (library / "alias.png").symlink_to(library / "sub" / "c.gif")

    with pytest.raises(BadRequestError) as caught:
        run_source("local-folder", path="escape")
    assert caught.value.code == "PATH_OUTSIDE_ROOT"
    # A file link that leaves the root is skipped; one that stays inside is read.
    items = run_source("local-folder")
    assert paths(items) == ["a.png", "alias.png", "b.jpg"]
    assert items[1].format.name == "gif"
    # Folder links are not followed while recursing, wherever they point.
    assert "escape/secret.png" not in paths(run_source("local-folder", recursive=True))


def test_local_folder_skips_special_files_without_blocking(run_source: Any, library: Path) -> None:
    os.mkfifo(library / "pipe.png")
    assert paths(run_source("local-folder")) == ["a.png", "b.jpg"]


def test_local_folder_skips_files_over_the_size_cap(
    run_source: Any, library: Path, config: Config
) -> None:
    capped = replace(config, extra={"max_upload_bytes": 1000})
    assert len((library / "b.jpg").read_bytes()) > 1000 > len((library / "a.png").read_bytes())
    assert paths(run_source("local-folder", config_=capped)) == ["a.png"]


def test_local_folder_not_configured(run_source: Any, config: Config) -> None:
    with pytest.raises(BadRequestError) as caught:
        run_source("local-folder", config_=replace(config, local_folder_root=None))
    assert (caught.value.code, caught.value.status) == ("SOURCE_NOT_CONFIGURED", 400)
    assert "PIXMILL_LOCAL_FOLDER_ROOT" in caught.value.message


def test_local_folder_root_that_does_not_exist(run_source: Any, config: Config) -> None:
    assert config.local_folder_root is not None and not config.local_folder_root.exists()
    with pytest.raises(BadRequestError) as caught:
        run_source("local-folder")
    assert caught.value.code == "SOURCE_NOT_CONFIGURED"
    assert str(config.local_folder_root) not in caught.value.message


def test_local_folder_missing_folder_and_file_path(run_source: Any, library: Path) -> None:
    with pytest.raises(NotFoundError) as missing:
        run_source("local-folder", path="nope")
    assert (missing.value.code, missing.value.status) == ("FOLDER_NOT_FOUND", 404)
    with pytest.raises(PixmillError) as not_folder:
        run_source("local-folder", path="a.png")
    assert (not_folder.value.code, not_folder.value.status) == ("NOT_A_FOLDER", 400)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"pattern": "../*.png"}, "pattern"),
        ({"pattern": ""}, "pattern"),
        ({"recursive": "sometimes"}, "recursive"),
        ({"path": ""}, "path"),
        ({"folder": "x"}, "folder"),
    ],
)
def test_local_folder_bad_settings(
    run_source: Any, library: Path, settings: dict[str, Any], field: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        run_source("local-folder", **settings)
    assert field in caught.value.details["fields"]
