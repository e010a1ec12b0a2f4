"""Built-in code tools: qr-generate, barcode-generate (no file input) and barcode-read.

QR codes are drawn with segno (pure Python, complete QR model 2 including error-correction
choice); linear barcodes and Data Matrix are written and every symbology is read with
zxing-cpp, a maintained C++ decoder with a binary wheel. Data rules of each symbology
(allowed characters, lengths, check digits) are checked in the settings schema, so a wrong
EAN-13 is a 400 naming the rule before anything is drawn.

Written exactly as a third-party plugin would be: helpers on top, `@hookimpl` at the bottom,
registered through the `pixmill` entry point in setup.cfg.
"""

from __future__ import annotations

import re
from typing import Any

import segno
import zxingcpp
from marshmallow import ValidationError, fields, validate, validates_schema
from PIL import Image, ImageDraw

from pixmill import (
    Color,
    Context,
    Extractor,
    FileInput,
    ImageResult,
    InputFile,
    Inputs,
    Settings,
    Tool,
    hookimpl,
    parse_color,
)
from pixmill.core.errors import BadRequestError, ImageTooLargeError
from pixmill.core.imageio import has_alpha
from pixmill.plugins.essentials import RESAMPLE, on_white

# ---------------------------------------------------------------------------------------------
# qr-generate

QR_MAX_SIZE = 4096
QR_MAX_MARGIN = 64
# The largest QR code (version 40, level L) holds 2953 bytes; longer text can never fit.
QR_MAX_DATA = 2953
ERROR_CORRECTION_LEVELS = ("L", "M", "Q", "H")
# Share of the symbol each level can lose and still decode; a logo may cover half of it, so
# the other half is left for real-world damage (glare, print defects).
RECOVERABLE = {"L": 0.07, "M": 0.15, "Q": 0.25, "H": 0.30}
LOGO_MAX_PERCENT = 30
DOT_STYLES = ("square", "rounded", "dots")
CORNER_STYLES = ("square", "rounded", "dots")
FINDER = 7  # a finder pattern is 7x7 modules
# Below this many pixels per module there is no room to round anything: styles draw squares.
MIN_STYLED_MODULE_PX = 4


class QrGenerateSettings(Settings):
    data = fields.String(
        load_default="https://example.com",
        validate=validate.Length(1, QR_MAX_DATA),
        metadata={"description": "the text or URL to encode (1-2953 characters)"},
    )
    size = fields.Integer(
        load_default=512,
        validate=validate.Range(21, QR_MAX_SIZE),
        metadata={
            "description": "width and height of the output in pixels, margin included; "
            "modules are whole pixels and any remainder is light padding"
        },
    )
    margin = fields.Integer(
        load_default=4,
        validate=validate.Range(0, QR_MAX_MARGIN),
        metadata={
            "description": "quiet zone around the code in modules (4 is the standard; "
            "scanners may fail below 2)"
        },
    )
    color_dark = Color(
        load_default="#000000",
        metadata={"description": "colour of the dark modules (#rrggbb or #rrggbbaa)"},
    )
    color_light = Color(
        load_default="#ffffff",
        metadata={
            "description": "background colour (#rrggbb, or #rrggbbaa; #ffffff00 is transparent)"
        },
    )
    error_correction_level = fields.String(
        load_default="M",
        validate=validate.OneOf(ERROR_CORRECTION_LEVELS),
        metadata={
            "description": "share of the code that may be damaged and still read: L 7%, "
            "M 15%, Q 25%, H 30% (higher levels make a denser code)"
        },
    )

    dot_style = fields.String(
        load_default="square",
        validate=validate.OneOf(DOT_STYLES),
        metadata={
            "description": "shape of the data modules: square, rounded (rounded squares) or "
            "dots (circles); needs at least 4 pixels per module, else squares are drawn"
        },
    )
    corner_style = fields.String(
        load_default="square",
        validate=validate.OneOf(CORNER_STYLES),
        metadata={
            "description": "shape of the three corner finder patterns: square, rounded or "
            "dots (a round eye in a rounded frame)"
        },
    )
    logo_size = fields.Integer(
        load_default=20,
        validate=validate.Range(5, LOGO_MAX_PERCENT),
        metadata={
            "description": "width of the optional `logo` file part, in percent of the code's "
            "width (5-30), centred on a light pad. The logo may hide at most half of what the "
            "error correction level recovers (L 7%, M 15%, Q 25%, H 30% of the symbol): a "
            "larger logo is refused with the level it needs, never silently boosted"
        },
    )

    @validates_schema
    def _colours_differ(self, data: dict[str, Any], **kwargs: Any) -> None:
        dark, light = data.get("color_dark"), data.get("color_light")
        if dark is not None and light is not None and parse_color(dark) == parse_color(light):
            raise ValidationError(
                "colorDark and colorLight are the same colour: no scanner could read the code",
                field_name="colorLight",
            )


def _pixels_from_modules(
    rows: list[list[bool]], dark: tuple[int, ...], light: tuple[int, ...]
) -> Image.Image:
    """A one-pixel-per-module image of `rows` (True = dark) in the given RGBA colours."""
    height, width = len(rows), len(rows[0])
    translucent = dark[3] < 255 or light[3] < 255
    mode = "RGBA" if translucent else "RGB"
    dark_px = bytes(dark if translucent else dark[:3])
    light_px = bytes(light if translucent else light[:3])
    raw = b"".join(dark_px if cell else light_px for row in rows for cell in row)
    return Image.frombytes(mode, (width, height), raw)


def run_qr_generate(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    level = settings["error_correction_level"]
    logo = inputs.get("logo")
    if logo is not None:
        _check_logo_fits(settings["logo_size"], level)
    try:
        # boost_error=False: the level asked for is the level drawn (segno raises it by default
        # whenever the data fits, which would make the setting meaningless).
        qr = segno.make_qr(settings["data"], error=level.lower(), boost_error=False)
    except segno.DataOverflowError as exc:
        raise BadRequestError(
            f"the data does not fit in a QR code at error correction level "
            f"{level} ({exc}); shorten it or choose a lower level",
            code="DATA_TOO_LONG",
            details={"field": "data", "length": len(settings["data"])},
        ) from exc
    margin = settings["margin"]
    modules = qr.symbol_size(border=margin)[0]
    size = settings["size"]
    if size < modules:
        raise BadRequestError(
            f"size {size} is smaller than the {modules} modules this code needs (margin "
            f"included): use a size of at least {modules}",
            code="SIZE_TOO_SMALL",
            details={"field": "size", "minimum": modules},
        )
    dark, light = parse_color(settings["color_dark"]), parse_color(settings["color_light"])
    rows = [[bool(cell & 1) for cell in row] for row in qr.matrix_iter(border=margin)]
    scale = size // modules
    styled = scale >= MIN_STYLED_MODULE_PX and (
        settings["dot_style"] != "square" or settings["corner_style"] != "square"
    )
    if styled:
        code = _styled_modules(rows, margin, scale, dark, light, settings)
    else:
        code = _pixels_from_modules(rows, dark, light).resize(
            (modules * scale, modules * scale), Image.Resampling.NEAREST
        )
    if logo is not None:
        _paste_logo(code, logo.open(), settings["logo_size"], light)
    if code.size[0] == size:
        return ImageResult(code, format="png")
    # Whole-pixel modules scan best; the remainder becomes light padding, split evenly.
    canvas = Image.new(code.mode, (size, size), light if code.mode == "RGBA" else light[:3])
    offset = (size - code.size[0]) // 2
    canvas.paste(code, (offset, offset))
    return ImageResult(canvas, format="png")


def _check_logo_fits(logo_percent: int, level: str) -> None:
    covered = (logo_percent / 100) ** 2
    if covered <= RECOVERABLE[level] / 2:
        return
    enough = [name for name in ERROR_CORRECTION_LEVELS if covered <= RECOVERABLE[name] / 2]
    advice = (
        f"use errorCorrectionLevel {enough[0]} or a smaller logoSize"
        if enough
        else "use a smaller logoSize"
    )
    raise BadRequestError(
        f"a logo {logo_percent}% wide hides {covered:.1%} of the code, more than half of what "
        f"level {level} recovers ({RECOVERABLE[level]:.0%}): {advice}",
        code="LOGO_TOO_LARGE",
        details={"field": "logoSize", "levels": enough},
    )


def _in_finder(x: int, y: int, margin: int, modules: int) -> bool:
    """Whether module (x, y) of the bordered matrix belongs to one of the 3 finder patterns."""
    inner = modules - 2 * margin
    cx, cy = x - margin, y - margin
    near_left, near_top = cx < FINDER, cy < FINDER
    near_right, near_bottom = cx >= inner - FINDER, cy >= inner - FINDER
    return (near_left and near_top) or (near_right and near_top) or (near_left and near_bottom)


def _styled_modules(
    rows: list[list[bool]],
    margin: int,
    scale: int,
    dark: tuple[int, ...],
    light: tuple[int, ...],
    settings: dict[str, Any],
) -> Image.Image:
    """The code drawn module by module: data modules and finder patterns in their styles."""
    modules = len(rows)
    translucent = dark[3] < 255 or light[3] < 255
    mode = "RGBA" if translucent else "RGB"
    fill, background = (dark, light) if translucent else (dark[:3], light[:3])
    img = Image.new(mode, (modules * scale, modules * scale), background)
    draw = ImageDraw.Draw(img)
    dot_style = settings["dot_style"]
    for y, row in enumerate(rows):
        for x, cell in enumerate(row):
            if not cell or _in_finder(x, y, margin, modules):
                continue
            box = (x * scale, y * scale, (x + 1) * scale - 1, (y + 1) * scale - 1)
            if dot_style == "dots":
                draw.ellipse(box, fill=fill)
            elif dot_style == "rounded":
                draw.rounded_rectangle(box, radius=scale * 0.35, fill=fill)
            else:
                draw.rectangle(box, fill=fill)
    inner = modules - 2 * margin
    for fx, fy in ((0, 0), (inner - FINDER, 0), (0, inner - FINDER)):
        _draw_finder(draw, (margin + fx) * scale, (margin + fy) * scale, scale, fill, background,
                     settings["corner_style"])  # fmt: skip
    return img


def _draw_finder(
    draw: ImageDraw.ImageDraw,
    left: int,
    top: int,
    scale: int,
    fill: tuple[int, ...],
    background: tuple[int, ...],
    style: str,
) -> None:
    """A finder pattern: a 7-module frame, a 1-module light ring, a 3-module eye."""
    outer = (left, top, left + FINDER * scale - 1, top + FINDER * scale - 1)
    ring = (left + scale, top + scale, left + 6 * scale - 1, top + 6 * scale - 1)
    eye = (left + 2 * scale, top + 2 * scale, left + 5 * scale - 1, top + 5 * scale - 1)
    if style == "square":
        draw.rectangle(outer, fill=fill)
        draw.rectangle(ring, fill=background)
        draw.rectangle(eye, fill=fill)
        return
    draw.rounded_rectangle(outer, radius=scale * 2, fill=fill)
    draw.rounded_rectangle(ring, radius=scale, fill=background)
    if style == "dots":
        draw.ellipse(eye, fill=fill)
    else:
        draw.rounded_rectangle(eye, radius=scale, fill=fill)


def _paste_logo(
    code: Image.Image, logo: Image.Image, logo_percent: int, light: tuple[int, ...]
) -> None:
    """The logo, fitted in a centred square `logo_percent` of the code wide, on a light pad
    (so its edge never reads as modules)."""
    side = code.width * logo_percent // 100
    pad = max(2, side // 10)
    fitted = logo.convert("RGBA")
    fitted.thumbnail((side - 2 * pad, side - 2 * pad), RESAMPLE)
    left = (code.width - side) // 2
    backing = Image.new("RGBA", (side, side), light)
    backing.alpha_composite(fitted, ((side - fitted.width) // 2, (side - fitted.height) // 2))
    if code.mode == "RGBA":
        code.alpha_composite(backing, (left, left))
    else:
        code.paste(backing.convert("RGB"), (left, left), backing)


# ---------------------------------------------------------------------------------------------
# barcode-generate

BARCODE_TYPES = ("code128", "ean13", "upca", "code39", "itf14", "datamatrix")
BARCODE_FORMATS = {
    "code128": zxingcpp.BarcodeFormat.Code128,
    "ean13": zxingcpp.BarcodeFormat.EAN13,
    "upca": zxingcpp.BarcodeFormat.UPCA,
    "code39": zxingcpp.BarcodeFormat.Code39,
    "itf14": zxingcpp.BarcodeFormat.ITF14,
    "datamatrix": zxingcpp.BarcodeFormat.DataMatrix,
}
CODE39_ALPHABET = re.compile(r"^[0-9A-Z \-.$/+%]+$")
# Code 128 as drawn here: printable ASCII, which every reader decodes the same way.
PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]+$")
DIGITS = re.compile(r"^[0-9]+$")
MAX_LINEAR_TEXT = 80
MAX_DATAMATRIX_TEXT = 1500


def gs1_check_digit(digits: str) -> int:
    """The GS1 mod-10 check digit of `digits` (EAN-13, UPC-A and ITF-14 share it)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10


def _check_gs1(text: str, name: str, length: int) -> None:
    """`length - 1` digits (the check digit is added) or `length` with a correct check digit."""
    if not DIGITS.match(text) or len(text) not in (length - 1, length):
        raise ValidationError(
            f"{name} takes {length - 1} digits (the check digit is added) or {length} digits "
            f"ending in a correct check digit; got {len(text)} character(s)",
            field_name="text",
        )
    if len(text) == length:
        expected = gs1_check_digit(text[:-1])
        if int(text[-1]) != expected:
            raise ValidationError(
                f"{name} check digit is wrong: {text[:-1]} must end in {expected}, not "
                f"{text[-1]} (GS1 mod-10 checksum)",
                field_name="text",
            )


def check_barcode_text(kind: str, text: str) -> None:
    """Raise `ValidationError` naming the rule `text` breaks for symbology `kind`."""
    if kind == "ean13":
        _check_gs1(text, "EAN-13", 13)
    elif kind == "upca":
        _check_gs1(text, "UPC-A", 12)
    elif kind == "itf14":
        _check_gs1(text, "ITF-14", 14)
    elif kind == "code39":
        if not CODE39_ALPHABET.match(text):
            raise ValidationError(
                "Code 39 takes upper-case letters, digits, space and - . $ / + % only",
                field_name="text",
            )
    elif kind == "code128" and not PRINTABLE_ASCII.match(text):
        raise ValidationError(
            "Code 128 takes printable ASCII characters only (space to ~)",
            field_name="text",
        )
    if kind != "datamatrix" and len(text) > MAX_LINEAR_TEXT:
        raise ValidationError(
            f"a linear barcode holds at most {MAX_LINEAR_TEXT} characters; use datamatrix for "
            "longer text",
            field_name="text",
        )


class BarcodeGenerateSettings(Settings):
    text = fields.String(
        load_default="PIXMILL-128",
        validate=validate.Length(1, MAX_DATAMATRIX_TEXT),
        metadata={
            "description": "what to encode; ean13 takes 12 digits (13 with a correct check "
            "digit), upca 11 (or 12), itf14 13 (or 14), code39 A-Z 0-9 space - . $ / + %, "
            "code128 printable ASCII, datamatrix any text"
        },
    )
    type = fields.String(
        load_default="code128",
        validate=validate.OneOf(BARCODE_TYPES),
        metadata={"description": "the symbology: " + ", ".join(BARCODE_TYPES)},
    )
    scale = fields.Integer(
        load_default=3,
        validate=validate.Range(1, 8),
        metadata={"description": "pixels per narrowest bar (or Data Matrix module)"},
    )
    include_text = fields.Boolean(
        load_default=True,
        metadata={
            "description": "print the human-readable text under a linear barcode (ignored "
            "for datamatrix)"
        },
    )

    @validates_schema
    def _text_fits_symbology(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "text" in data and "type" in data:
            check_barcode_text(data["type"], data["text"])


def run_barcode_generate(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    kind = settings["type"]
    try:
        barcode = zxingcpp.create_barcode(settings["text"], BARCODE_FORMATS[kind])
    except ValueError as exc:
        # Rules the schema cannot know, such as Data Matrix capacity for this text.
        raise BadRequestError(
            f"{kind} cannot encode this text: {exc}", details={"field": "text"}
        ) from exc
    bitmap = barcode.to_image(
        scale=settings["scale"], add_hrt=settings["include_text"] and kind != "datamatrix"
    )
    height, width = bitmap.shape[:2]
    if width * height > ctx.limits.max_pixels:
        raise ImageTooLargeError(
            f"the barcode would be {width}x{height} pixels; use a smaller scale",
            details={"width": width, "height": height},
        )
    return ImageResult(Image.fromarray(bitmap).convert("L"), format="png")


# ---------------------------------------------------------------------------------------------
# barcode-read

READABLE_FORMATS = {
    "qrcode": zxingcpp.BarcodeFormat.QRCode,
    "microqrcode": zxingcpp.BarcodeFormat.MicroQRCode,
    "datamatrix": zxingcpp.BarcodeFormat.DataMatrix,
    "aztec": zxingcpp.BarcodeFormat.Aztec,
    "pdf417": zxingcpp.BarcodeFormat.PDF417,
    "maxicode": zxingcpp.BarcodeFormat.MaxiCode,
    "ean13": zxingcpp.BarcodeFormat.EAN13,
    "ean8": zxingcpp.BarcodeFormat.EAN8,
    "upca": zxingcpp.BarcodeFormat.UPCA,
    "upce": zxingcpp.BarcodeFormat.UPCE,
    "code128": zxingcpp.BarcodeFormat.Code128,
    "code39": zxingcpp.BarcodeFormat.Code39,
    "code93": zxingcpp.BarcodeFormat.Code93,
    "codabar": zxingcpp.BarcodeFormat.Codabar,
    "itf": zxingcpp.BarcodeFormat.ITF,
    "databar": zxingcpp.BarcodeFormat.DataBar,
}


def _format_slug(fmt: zxingcpp.BarcodeFormat) -> str:
    """The lower-case wire name of a decoded format ("QR Code" -> "qrcode")."""
    return re.sub(r"[^a-z0-9]", "", str(fmt).lower())


class BarcodeReadSettings(Settings):
    formats = fields.List(
        fields.String(validate=validate.OneOf(tuple(READABLE_FORMATS))),
        load_default=list,
        validate=validate.Length(0, len(READABLE_FORMATS)),
        metadata={
            "description": "only look for these symbologies (empty: all). One of "
            + ", ".join(READABLE_FORMATS)
            + ". A UPC-A is reported as an EAN-13 with a leading 0 unless upca is asked for"
        },
    )


class Point(Settings):
    x = fields.Integer(required=True, metadata={"description": "pixels from the left edge"})
    y = fields.Integer(required=True, metadata={"description": "pixels from the top edge"})


class CodePosition(Settings):
    top_left = fields.Nested(Point, required=True, metadata={"description": "top-left corner"})
    top_right = fields.Nested(Point, required=True, metadata={"description": "top-right corner"})
    bottom_right = fields.Nested(
        Point, required=True, metadata={"description": "bottom-right corner"}
    )
    bottom_left = fields.Nested(
        Point, required=True, metadata={"description": "bottom-left corner"}
    )


class DecodedCode(Settings):
    format = fields.String(
        required=True, metadata={"description": "symbology, e.g. qrcode, ean13, code128"}
    )
    text = fields.String(required=True, metadata={"description": "the decoded content"})
    position = fields.Nested(
        CodePosition,
        required=True,
        metadata={"description": "corners of the code in the upright image, in pixels"},
    )
    orientation = fields.Integer(
        required=True, metadata={"description": "rotation of the code in degrees"}
    )


class BarcodeReadOutput(Settings):
    codes = fields.List(
        fields.Nested(DecodedCode),
        required=True,
        metadata={"description": "every code found, in reading order; empty when none"},
    )
    count = fields.Integer(required=True, metadata={"description": "how many codes were found"})


def _point(point: zxingcpp.Point) -> dict[str, int]:
    return {"x": int(point.x), "y": int(point.y)}


def _readable(image: InputFile) -> Image.Image:
    """The upright first frame as 8-bit grey, transparency flattened onto white."""
    img = image.open_first_frame()  # reading a code needs one picture; the first will do
    if img.mode.startswith("I") or img.mode == "F":
        img = img.point(lambda value: value / 256)
    if has_alpha(img):
        # Dark bars on a transparent background must stay dark on light, not on black.
        img = on_white(img)
    return img.convert("L")


def extract_barcodes(ctx: Context, image: InputFile, settings: dict[str, Any]) -> dict[str, Any]:
    # An empty set of formats means every format to zxing-cpp.
    wanted = zxingcpp.BarcodeFormats([READABLE_FORMATS[name] for name in settings["formats"]])
    found = zxingcpp.read_barcodes(_readable(image), formats=wanted)
    codes = []
    for barcode in found:
        text = barcode.text
        fmt = barcode.format
        if fmt == zxingcpp.BarcodeFormat.UPCA and len(text) == 13 and text.startswith("0"):
            text = text[1:]  # zxing-cpp reports UPC-A in its EAN-13 form
        position = barcode.position
        codes.append(
            {
                "format": _format_slug(fmt),
                "text": text,
                "position": {
                    "topLeft": _point(position.top_left),
                    "topRight": _point(position.top_right),
                    "bottomRight": _point(position.bottom_right),
                    "bottomLeft": _point(position.bottom_left),
                },
                "orientation": int(barcode.orientation),
            }
        )
    return {"codes": codes, "count": len(codes)}


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(
            id="qr-generate",
            name="QR Code Generator",
            description="Draw a QR code for a text or URL: size, quiet-zone margin, dark and "
            "light colours (translucent allowed), error correction level, module and corner "
            "styles, and an optional logo (the `logo` file part). Without a logo it takes no "
            "file: send the settings as a JSON body. Output PNG.",
            settings=QrGenerateSettings,
            run=run_qr_generate,
            inputs=(
                FileInput(
                    "logo",
                    "an optional logo for the middle of the code (see logoSize)",
                    required=False,
                ),
            ),
            example={
                "data": "https://example.com",
                "size": 512,
                "margin": 4,
                "colorDark": "#1e3a8a",
                "colorLight": "#ffffff",
                "errorCorrectionLevel": "Q",
            },
        ),
        Tool(
            id="barcode-generate",
            name="Barcode Generator",
            description="Draw a Code 128, EAN-13, UPC-A, Code 39, ITF-14 or Data Matrix "
            "barcode. The text is checked against the symbology's rules (characters, length, "
            "check digit) first. Takes no file: send the settings as a JSON body. Output PNG.",
            settings=BarcodeGenerateSettings,
            run=run_barcode_generate,
            inputs=(),
            example={"text": "400638133393", "type": "ean13", "scale": 3, "includeText": True},
        ),
    ]


@hookimpl
def pixmill_extractors() -> list[Extractor]:
    return [
        Extractor(
            id="barcode-read",
            name="Barcode Reader",
            description="Find and decode every barcode in an image: QR, Micro QR, Data "
            "Matrix, Aztec, PDF417, MaxiCode, EAN-13/8, UPC-A/E, Code 128/39/93, Codabar, ITF "
            "and DataBar (zxing-cpp), with each code's corners. An animation is read from its "
            "first frame.",
            settings=BarcodeReadSettings,
            extract=extract_barcodes,
            output_schema=BarcodeReadOutput,
            example={"formats": []},
        ),
    ]
