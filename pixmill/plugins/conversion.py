"""Built-in format conversions: svg-to-raster, vectorize and pdf-to-image (with its /info and
/preview sub-routes).

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg. Each tool needs an optional module
(`requires=`): without it the catalogue lists the tool as unavailable with its install command.

Safety: documents are parsed here, never by the core. An SVG with a DOCTYPE internal subset or
an entity declaration is refused before parsing (no entity expansion, no external entities);
every `href` that is not a fragment (`#id`) or a raster `data:` URI is removed before rendering, so
resvg never reads a local file or fetches anything (browsers do the same for an SVG shown as an
image). Output sizes are computed and checked against the server's pixel limits before any
rendering. pdfium is not thread-safe, so its calls are serialised with a lock.
"""

from __future__ import annotations

import io
import math
import re
import threading
import xml.etree.ElementTree as ET
import xml.parsers.expat as expat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from marshmallow import fields, validate
from PIL import Image

from pixmill import (
    Context,
    FileInput,
    FileResult,
    ImageResult,
    InputFile,
    Inputs,
    OutputKind,
    Settings,
    Tool,
    hookimpl,
    parse_color,
)
from pixmill.core.archives import zip_archive
from pixmill.core.errors import BadRequestError, InvalidImageError, UnsupportedFormatError
from pixmill.core.imageio import encode_image, format_by_name
from pixmill.plugins.essentials import check_output_size, on_white

MAX_DIMENSION = 16384
RASTER_FORMATS = ("png", "jpeg", "webp", "avif", "tiff", "gif", "heif")
PAGE_FORMATS = ("png", "jpeg", "webp")


def _require_document(source: InputFile, kind: str, tool_id: str) -> None:
    if source.format.name != kind:
        raise UnsupportedFormatError(
            f"{tool_id} takes only {kind.upper()} documents; the file is a {source.format.name} "
            "image",
            details={"format": source.format.name, "accepted": [kind]},
        )


# --- svg-to-raster ----------------------------------------------------------------------------

SVG_NS = "http://www.w3.org/2000/svg"
_RASTER_DATA_URI = re.compile(r"data:image/(png|jpeg|jpg|gif|webp)[;,]", re.IGNORECASE)
_DECLARATION = re.compile(rb"<!ENTITY|<!DOCTYPE[^>\[]*\[", re.IGNORECASE)
_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(px|pt|pc|mm|cm|in)?\s*$")
_UNIT_PX = {None: 1.0, "px": 1.0, "pt": 96 / 72, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54}
_UNIT_PX["in"] = 96.0
DEFAULT_SVG_SIZE = (100.0, 100.0)  # what resvg uses for an SVG without width, height or viewBox
BACKGROUND = re.compile(r"^(transparent|#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8}))$")


class SvgToRasterSettings(Settings):
    format = fields.String(
        load_default="png",
        validate=validate.OneOf(RASTER_FORMATS),
        metadata={"description": "output format: png, jpeg, webp, avif, tiff, gif or heif"},
    )
    width = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={
            "description": "output width in pixels; alone, the height follows the SVG's aspect "
            "ratio; with height, the drawing fits inside width x height (never distorted). "
            "Overrides scale and dpi"
        },
    )
    height = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(1, MAX_DIMENSION),
        metadata={"description": "output height in pixels (see width)"},
    )
    scale = fields.Float(
        load_default=1.0,
        validate=validate.Range(0.01, 50),
        metadata={
            "description": "multiplier on the SVG's own size (its width/height, else its "
            "viewBox) when width and height are not given"
        },
    )
    dpi = fields.Integer(
        load_default=96,
        validate=validate.Range(10, 2400),
        metadata={
            "description": "rendering resolution: 96 (CSS pixels) renders at the SVG's own size, "
            "192 at twice that; combined with scale"
        },
    )
    background = fields.String(
        load_default="transparent",
        validate=validate.Regexp(BACKGROUND, error="must be transparent or a hex colour"),
        metadata={
            "description": "transparent (formats without alpha get white) or a hex colour "
            "(#rgb, #rgba, #rrggbb, #rrggbbaa) painted behind the drawing"
        },
    )
    quality = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(1, 100),
        metadata={"description": "quality for lossy formats (1-100); default: the format's"},
    )


def _length(value: str | None) -> float | None:
    """An absolute SVG length in CSS pixels; None for missing, relative (%, em) or bad ones."""
    match = _LENGTH.match(value) if value else None
    if match is None:
        return None
    number = float(match.group(1)) * _UNIT_PX[match.group(2)]
    return number if 0 < number < 1e7 else None


def svg_size(root: ET.Element) -> tuple[float, float]:
    """The SVG's own size in CSS pixels, as renderers read it: width/height, else the viewBox
    (one of width/height with a viewBox gives the other by its aspect ratio)."""
    width, height = _length(root.get("width")), _length(root.get("height"))
    box: tuple[float, float] | None = None
    parts = re.split(r"[\s,]+", (root.get("viewBox") or "").strip())
    if len(parts) == 4:
        try:
            box_w, box_h = float(parts[2]), float(parts[3])
        except ValueError:
            box_w = box_h = 0.0
        if 0 < box_w < 1e7 and 0 < box_h < 1e7:
            box = (box_w, box_h)
    if width is not None and height is not None:
        return width, height
    if box is not None:
        if width is not None:
            return width, width * box[1] / box[0]
        if height is not None:
            return height * box[0] / box[1], height
        return box
    return width or DEFAULT_SVG_SIZE[0], height or DEFAULT_SVG_SIZE[1]


class _Declared(Exception):
    pass


def _declares_entities(data: bytes) -> bool:
    """Whether the XML declares an entity or a DOCTYPE internal subset, as expat reads it (in
    any encoding the byte pattern above would miss). Markup errors are left to the parse."""

    def refuse(*_: Any) -> None:
        raise _Declared

    def doctype(_name: str, _system: str | None, _public: str | None, internal: int) -> None:
        if internal:
            raise _Declared

    parser = expat.ParserCreate()
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.StartDoctypeDeclHandler = doctype
    try:
        parser.Parse(data, True)
    except _Declared:
        return True
    except expat.ExpatError:
        return False
    return False


def safe_svg(data: bytes) -> tuple[str, ET.Element, int]:
    """The SVG re-serialised without external references, its root, and how many references
    were removed. 400 for entity/DTD declarations, 422 for markup that does not parse."""
    if _DECLARATION.search(data) or _declares_entities(data):
        raise BadRequestError(
            "the SVG declares entities or a DOCTYPE internal subset, which are refused for "
            "safety (XML entity expansion, external entities); remove the declarations",
            code="SVG_ENTITIES_REFUSED",
        )
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        raise InvalidImageError(
            f"the SVG is not well-formed XML: {error}", code="INVALID_SVG"
        ) from None
    if root.tag not in (f"{{{SVG_NS}}}svg", "svg"):
        raise InvalidImageError(
            f"the document's root element is {root.tag!r}, not an <svg>", code="INVALID_SVG"
        )
    removed = 0
    for element in root.iter():
        for name in list(element.attrib):
            if name.rsplit("}", 1)[-1] != "href":
                continue
            value = element.attrib[name].strip()
            # A data: URI may only hold a raster image: an embedded SVG would be rendered
            # with its own references, which this pass never saw.
            if not (value.startswith("#") or _RASTER_DATA_URI.match(value)):
                del element.attrib[name]
                removed += 1
    return ET.tostring(root, encoding="unicode"), root, removed


def _target_size(natural: tuple[float, float], settings: dict[str, Any]) -> tuple[int, int]:
    nat_w, nat_h = natural
    width, height = settings["width"], settings["height"]
    if width is None and height is None:
        factor = settings["scale"] * settings["dpi"] / 96
    else:
        factor = min(
            width / nat_w if width is not None else float("inf"),
            height / nat_h if height is not None else float("inf"),
        )
    return max(1, round(nat_w * factor)), max(1, round(nat_h * factor))


def run_svg_to_raster(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    import resvg_py

    source = inputs.file
    _require_document(source, "svg", "svg-to-raster")
    markup, root, removed = safe_svg(source.data)
    target = _target_size(svg_size(root), settings)
    if max(target) > MAX_DIMENSION:
        raise BadRequestError(
            f"the result would be {target[0]}x{target[1]}; at most {MAX_DIMENSION} pixels on a "
            "side. Lower scale or dpi, or give width/height",
            code="OUTPUT_TOO_LARGE",
            details={"width": target[0], "height": target[1], "maxSide": MAX_DIMENSION},
        )
    check_output_size(ctx, target)
    ctx.check_cancelled()
    try:
        png = bytes(
            resvg_py.svg_to_bytes(
                svg_string=markup,
                width=target[0],
                height=target[1],
                # Physical units (mm, in, pt) at CSS's 96 dpi, as svg_size reads them; the dpi
                # setting scales the whole drawing through width/height instead.
                dpi=96,
                # Nothing is left to resolve; an empty directory keeps relative paths away
                # from the server's working directory all the same.
                resources_dir=str(ctx.tmp_dir),
            )
        )
    except (ValueError, RuntimeError) as error:
        raise InvalidImageError(
            f"the SVG cannot be rendered: {error}", code="INVALID_SVG"
        ) from None
    img = ctx.input_file(png, "render.png").open()
    if img.mode != "RGBA":
        img = img.convert("RGBA")
    if settings["background"] != "transparent":
        backdrop = Image.new("RGBA", img.size, parse_color(settings["background"]))
        img = Image.alpha_composite(backdrop, img)
    meta: dict[str, Any] = {"width": img.width, "height": img.height}
    if removed:
        meta["removedReferences"] = removed
    return ImageResult(img, format=settings["format"], quality=settings["quality"], meta=meta)


# --- vectorize --------------------------------------------------------------------------------

MAX_VECTORIZE_PIXELS = 4_000_000
PATH_MODES = ("spline", "polygon", "none")


class VectorizeSettings(Settings):
    color_mode = fields.String(
        load_default="color",
        validate=validate.OneOf(("color", "bw")),
        metadata={
            "description": "color (stacked colour layers) or bw (black shapes on a transparent "
            "background, from a threshold on brightness)"
        },
    )
    threshold = fields.Integer(
        load_default=128,
        validate=validate.Range(0, 255),
        metadata={
            "description": "bw: pixels darker than this (0-255 brightness) become black shapes; "
            "transparent pixels count as white"
        },
    )
    color_precision = fields.Integer(
        load_default=6,
        validate=validate.Range(1, 8),
        metadata={"description": "color: significant bits per channel (1-8); fewer, fewer colours"},
    )
    layer_difference = fields.Integer(
        load_default=16,
        validate=validate.Range(0, 255),
        metadata={"description": "color: colour difference between gradient layers (0-255)"},
    )
    filter_speckle = fields.Integer(
        load_default=4,
        validate=validate.Range(0, 128),
        metadata={"description": "discard patches smaller than this many pixels across (0-128)"},
    )
    path_mode = fields.String(
        load_default="spline",
        validate=validate.OneOf(PATH_MODES),
        metadata={
            "description": "spline (smooth curves), polygon (straight segments) or none "
            "(pixel-exact outlines)"
        },
    )
    corner_threshold = fields.Integer(
        load_default=60,
        validate=validate.Range(0, 180),
        metadata={"description": "spline: minimum angle in degrees to count as a corner"},
    )
    length_threshold = fields.Float(
        load_default=4.0,
        validate=validate.Range(3.5, 10),
        metadata={"description": "spline: segment length threshold (3.5-10); higher, smoother"},
    )
    splice_threshold = fields.Integer(
        load_default=45,
        validate=validate.Range(0, 180),
        metadata={"description": "spline: minimum angle displacement in degrees to splice"},
    )
    max_iterations = fields.Integer(
        load_default=10,
        validate=validate.Range(1, 50),
        metadata={"description": "spline: curve-fitting iterations (1-50)"},
    )
    path_precision = fields.Integer(
        load_default=3,
        validate=validate.Range(0, 8),
        metadata={"description": "decimal places kept in path coordinates (0-8)"},
    )


def run_vectorize(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    import vtracer

    source = inputs.file
    img = source.open()  # refuses animations: a trace is of one picture
    if img.width * img.height > MAX_VECTORIZE_PIXELS:
        raise BadRequestError(
            f"vectorize traces at most {MAX_VECTORIZE_PIXELS:,} pixels; the image is "
            f"{img.width}x{img.height}. Resize it first (tracing photos that large takes "
            "minutes and gives huge SVGs)",
            code="IMAGE_TOO_LARGE_TO_TRACE",
            details={"width": img.width, "height": img.height, "maxPixels": MAX_VECTORIZE_PIXELS},
        )
    ctx.progress(0.1, "preparing")
    rgba = img.convert("RGBA")
    binary = settings["color_mode"] == "bw"
    if binary:
        # Our own threshold (vtracer's binary mode has none): dark -> black, the rest white.
        gray = on_white(rgba).convert("L")
        level = settings["threshold"]
        rgba = gray.point(lambda v: 0 if v < level else 255).convert("RGBA")
    png = io.BytesIO()
    rgba.save(png, "PNG", compress_level=1)
    ctx.check_cancelled()
    ctx.progress(0.2, "tracing")
    svg = vtracer.convert_raw_image_to_svg(
        png.getvalue(),
        img_format="png",
        colormode="binary" if binary else "color",
        hierarchical="stacked",
        mode=settings["path_mode"],
        filter_speckle=settings["filter_speckle"],
        color_precision=settings["color_precision"],
        layer_difference=settings["layer_difference"],
        corner_threshold=settings["corner_threshold"],
        length_threshold=settings["length_threshold"],
        max_iterations=settings["max_iterations"],
        splice_threshold=settings["splice_threshold"],
        path_precision=settings["path_precision"],
    )
    ctx.progress(1.0, "done")
    paths = svg.count("<path")
    return FileResult(
        data=svg.encode("utf-8"),
        format="svg",
        meta={"width": img.width, "height": img.height, "paths": paths},
    )


# --- pdf-to-image -----------------------------------------------------------------------------

_PDFIUM_LOCK = threading.RLock()  # pdfium is not thread-safe
PAGES = re.compile(r"^\s*(all|\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*)\s*$", re.IGNORECASE)
POINTS_PER_INCH = 72


@contextmanager
def open_pdf(source: InputFile, tool_id: str) -> Iterator[Any]:
    """The pdfium document of a PDF input, under the pdfium lock; 415 for an image, 422 for an
    encrypted or broken PDF."""
    import pypdfium2 as pdfium

    _require_document(source, "pdf", tool_id)
    with _PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(source.data)
        except pdfium.PdfiumError as error:
            if "password" in str(error).lower():
                raise InvalidImageError(
                    "the PDF is encrypted with a password; remove the protection first",
                    code="PDF_ENCRYPTED",
                ) from None
            raise InvalidImageError(
                f"the PDF cannot be read ({error}); it may be damaged or truncated",
                code="INVALID_PDF",
            ) from None
        try:
            if len(document) == 0:
                raise InvalidImageError("the PDF has no pages", code="INVALID_PDF")
            yield document
        finally:
            document.close()


def parse_pages(spec: str, count: int) -> list[int]:
    """Page numbers (1-based, in order, no repeats) for "all" or "1-3,5"; 400 when a page is
    not in the document."""
    if spec.strip().lower() == "all":
        return list(range(1, count + 1))
    chosen: list[int] = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        start, end = int(first), int(last or first)
        if start < 1 or end < start or end > count:
            raise BadRequestError(
                f"pages {part.strip()!r} is not a range in this {count}-page document "
                "(pages count from 1; a range is low-high)",
                code="PAGE_OUT_OF_RANGE",
                details={"pages": spec, "pageCount": count},
            )
        chosen.extend(n for n in range(start, end + 1) if n not in chosen)
    return chosen


def _page_pixels(document: Any, number: int, dpi: float) -> tuple[int, int]:
    """A page's rendered size at `dpi`: pdfium's page size is as displayed (/Rotate applied)."""
    width, height = document.get_page_size(number - 1)
    factor = dpi / POINTS_PER_INCH
    # pdfium's bitmap is the scaled page size rounded up.
    return max(1, math.ceil(width * factor - 1e-9)), max(1, math.ceil(height * factor - 1e-9))


def render_page(document: Any, number: int, scale: float) -> Image.Image:
    page = document[number - 1]
    try:
        bitmap = page.render(scale=scale, may_draw_forms=False)
        img = bitmap.to_pil()
        img.load()
        return img.convert("RGB") if img.mode not in ("RGB", "RGBA", "L") else img.copy()
    finally:
        page.close()


class PdfToImageSettings(Settings):
    pages = fields.String(
        load_default="all",
        validate=validate.Regexp(PAGES, error='must be "all" or page ranges such as "1-3,5"'),
        metadata={"description": 'pages to render: "all" or numbers and ranges, e.g. "1-3,5"'},
    )
    format = fields.String(
        load_default="png",
        validate=validate.OneOf(PAGE_FORMATS),
        metadata={"description": "page image format: png, jpeg or webp"},
    )
    dpi = fields.Integer(
        load_default=150,
        validate=validate.Range(72, 600),
        metadata={"description": "rendering resolution in dots per inch (72-600)"},
    )
    quality = fields.Integer(
        load_default=90,
        validate=validate.Range(1, 100),
        metadata={"description": "jpeg/webp quality (1-100)"},
    )


def run_pdf_to_image(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> FileResult:
    source = inputs.file
    fmt = format_by_name(settings["format"])
    dpi = settings["dpi"]
    entries: list[tuple[str, bytes]] = []
    with open_pdf(source, "pdf-to-image") as document:
        numbers = parse_pages(settings["pages"], len(document))
        if len(numbers) > ctx.limits.max_frames:
            raise BadRequestError(
                f"{len(numbers)} pages asked for; this server renders at most "
                f"{ctx.limits.max_frames} per call. Choose a range with pages",
                code="TOO_MANY_PAGES",
                details={"pages": len(numbers), "maxPages": ctx.limits.max_frames},
            )
        sizes = [_page_pixels(document, number, dpi) for number in numbers]
        for size in sizes:
            check_output_size(ctx, size)
        total = sum(w * h for w, h in sizes)
        budget = ctx.limits.max_pixels * 4
        if total > budget:
            raise BadRequestError(
                f"the pages would total {total:,} pixels; this server renders at most "
                f"{budget:,} per call. Lower dpi or choose fewer pages",
                code="OUTPUT_TOO_LARGE",
                details={"pixels": total, "maxPixels": budget},
            )
        for index, number in enumerate(numbers):
            ctx.check_cancelled()
            ctx.progress(index / len(numbers), f"page {number}")
            img = render_page(document, number, dpi / POINTS_PER_INCH)
            data = encode_image(img, fmt, quality=settings["quality"], dpi=(dpi, dpi))
            entries.append((f"{source.stem}-p{number}.{fmt.extension}", data))
    ctx.progress(1.0, f"{len(entries)} pages")
    return FileResult(
        data=zip_archive(entries),
        format="zip",
        meta={"pages": numbers, "dpi": dpi, "files": [name for name, _ in entries]},
    )


class PdfInfoSettings(Settings):
    pass


def run_pdf_info(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> dict[str, Any]:
    import pypdfium2 as pdfium

    source = inputs.file
    try:
        with open_pdf(source, "pdf-to-image-info") as document:
            count = len(document)
            metadata = document.get_metadata_dict(skip_empty=True)
            revision = pdfium.raw.FPDF_GetSecurityHandlerRevision(document.raw)
            pages = [
                {"page": n + 1, "width": round(w, 2), "height": round(h, 2)}
                for n, (w, h) in ((n, document.get_page_size(n)) for n in range(count))
            ]
            version = document.get_version()
    except InvalidImageError as error:
        if error.code != "PDF_ENCRYPTED":
            raise
        return {"encrypted": True, "passwordRequired": True, "pageCount": None, "pages": []}
    return {
        "pageCount": count,
        "pages": pages,
        "title": metadata.get("Title"),
        "author": metadata.get("Author"),
        "subject": metadata.get("Subject"),
        "creator": metadata.get("Creator"),
        "producer": metadata.get("Producer"),
        "pdfVersion": f"{version // 10}.{version % 10}" if version else None,
        "encrypted": revision != -1,
        "passwordRequired": False,
    }


class PdfPreviewSettings(Settings):
    page = fields.Integer(
        load_default=1,
        validate=validate.Range(1, 100_000),
        metadata={"description": "the page to show, counting from 1"},
    )
    width = fields.Integer(
        load_default=400,
        validate=validate.Range(16, 2000),
        metadata={"description": "preview width in pixels (16-2000); height keeps the aspect"},
    )
    format = fields.String(
        load_default="png",
        validate=validate.OneOf(PAGE_FORMATS),
        metadata={"description": "preview format: png, jpeg or webp"},
    )


def run_pdf_preview(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    source = inputs.file
    with open_pdf(source, "pdf-to-image-preview") as document:
        count = len(document)
        number = settings["page"]
        if number > count:
            raise BadRequestError(
                f"page {number} asked for; the document has {count}",
                code="PAGE_OUT_OF_RANGE",
                details={"page": number, "pageCount": count},
            )
        points_w, points_h = _page_pixels(document, number, POINTS_PER_INCH)
        width = settings["width"]
        height = max(1, round(points_h * width / points_w))
        check_output_size(ctx, (width, height))
        img = render_page(document, number, width / points_w)
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.LANCZOS)
    return ImageResult(img, format=settings["format"], meta={"page": number, "pageCount": count})


# --- registration -----------------------------------------------------------------------------


PDF_INPUT = FileInput("file", "the PDF document", documents=("pdf",))


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="svg-to-raster",
            name="SVG to Raster",
            description="Render an SVG drawing to PNG, JPEG, WebP, AVIF, TIFF, GIF or HEIF at "
            "its own size, a scale or dpi, or a given width/height, on a transparent or "
            "coloured background. Takes SVG files only. For safety, entity and DOCTYPE "
            "internal-subset declarations are refused (400), and external references (linked "
            "images, files, URLs) are not loaded: only embedded data: URIs render; `meta` "
            "counts removed references.",
            settings=SvgToRasterSettings,
            run=run_svg_to_raster,
            inputs=(FileInput("file", "the SVG drawing", documents=("svg",)),),
            requires=("resvg_py",),
            install="pixmill[svg]",
            example={"format": "png", "width": 512},
        ),
        Tool(
            id="vectorize",
            name="Image to SVG",
            description="Trace a raster image into an SVG of filled paths with VTracer: in "
            "colour (stacked layers) or black and white (threshold on brightness). Returns an "
            f".svg file. Images up to {MAX_VECTORIZE_PIXELS:,} pixels; animations are refused "
            "(trace one frame). Photos trace slowly: lower colorPrecision or raise "
            "filterSpeckle for fewer, larger shapes.",
            settings=VectorizeSettings,
            run=run_vectorize,
            output=OutputKind.FILE,
            heavy=True,
            requires=("vtracer",),
            install="pixmill[vectorize]",
            example={"colorMode": "color", "colorPrecision": 4, "filterSpeckle": 8},
        ),
        Tool(
            id="pdf-to-image",
            section="pdf",  # the seed's URL: /api/v1/tools/pdf/pdf-to-image
            name="PDF to Image",
            description="Render the pages of a PDF (all or ranges like 1-3,5) to PNG, JPEG or "
            "WebP at 72-600 dpi, returned as a ZIP with one file per page named "
            "<stem>-p<page>.<ext> (e.g. report-p1.png). Takes PDF files only; encrypted or "
            "damaged PDFs are refused with 422. Sub-routes: pdf-to-image/info (page count, "
            "sizes, metadata) and pdf-to-image/preview (one page as a small image). Runs "
            "queued (202) with progress per page: 20 A4 pages at 150 dpi take about 15 s.",
            settings=PdfToImageSettings,
            run=run_pdf_to_image,
            inputs=(PDF_INPUT,),
            output=OutputKind.FILE,
            heavy=True,
            requires=("pypdfium2",),
            install="pixmill[pdf]",
            example={"pages": "1", "format": "png", "dpi": 72},
        ),
        Tool(
            id="pdf-to-image-info",
            section="pdf",  # the seed's URL: /api/v1/tools/pdf/pdf-to-image/info
            name="PDF Info",
            description="Describe a PDF without rendering it (POST pdf-to-image/info): page "
            "count, each page's size in points (1/72 inch), title, author, subject, creator, "
            "producer, PDF version and whether it is encrypted. A password-protected PDF "
            "answers encrypted=true, passwordRequired=true and no pages.",
            settings=PdfInfoSettings,
            run=run_pdf_info,
            inputs=(PDF_INPUT,),
            output=OutputKind.JSON,
            route="pdf-to-image/info",
            requires=("pypdfium2",),
            install="pixmill[pdf]",
        ),
        Tool(
            id="pdf-to-image-preview",
            section="pdf",  # the seed's URL: /api/v1/tools/pdf/pdf-to-image/preview
            name="PDF Page Preview",
            description="Render one page of a PDF (POST pdf-to-image/preview) as a small image, "
            "400 pixels wide by default, for a quick look before converting.",
            settings=PdfPreviewSettings,
            run=run_pdf_preview,
            inputs=(PDF_INPUT,),
            route="pdf-to-image/preview",
            requires=("pypdfium2",),
            install="pixmill[pdf]",
            example={"page": 1, "width": 400},
        ),
    ]
