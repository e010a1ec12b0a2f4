"""Plugin settings: the `Settings` base, validation, JSON parsing, JSON Schema export, and a
contract walk over every definition the real registry holds.

The walk takes no shortcuts: each tool and extractor runs once, through `execute`, on small
real images, with every file input it declares; a definition the walk cannot exercise fails.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from marshmallow import ValidationError, fields, missing, validate, validates_schema

from pixmill import Color, Settings, parse_color
from pixmill.core.contracts import Extractor, Source, Tool
from pixmill.core.errors import SettingsError
from pixmill.core.plugin_host import BUILTIN_PACKAGE, Registry, load_registry
from pixmill.core.settings import (
    camelcase,
    normalized_settings,
    parse_settings_json,
    to_json_schema,
    validate_settings,
)


class Inner(Settings):
    top_left = fields.Integer(load_default=0, metadata={"description": "corner"})


class SampleSettings(Settings):
    max_width = fields.Integer(
        load_default=800,
        validate=validate.Range(1, 16384),
        metadata={"description": "widest result in pixels"},
    )
    fit_mode = fields.String(
        load_default="cover",
        validate=validate.OneOf(["cover", "contain", "fill"]),
        metadata={"description": "how to fit"},
    )
    keep_icc_profile = fields.Boolean(load_default=True, metadata={"description": "keep ICC"})
    jpeg_quality_level = fields.Float(
        load_default=None,
        allow_none=True,
        validate=validate.Range(0.5, 100),
        metadata={"description": "quality"},
    )
    explicit = fields.String(
        data_key="X-Explicit", load_default="as-is", metadata={"description": "wire name kept"}
    )
    box = fields.Nested(Inner, load_default=None, metadata={"description": "nested"})

    @validates_schema
    def _contain_needs_width(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("fit_mode") == "fill" and data.get("max_width") == 1:
            raise ValidationError("fill needs a width above 1")


# --- the Settings base ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("python", "wire"),
    [
        ("width", "width"),
        ("max_width", "maxWidth"),
        ("keep_icc_profile", "keepIccProfile"),
        ("a_b_c", "aBC"),
        ("x2_y", "x2Y"),
    ],
)
def test_camelcase(python: str, wire: str) -> None:
    assert camelcase(python) == wire


def test_wire_names_are_camelcase_and_python_names_snake_case() -> None:
    loaded = validate_settings(
        SampleSettings,
        {"maxWidth": 640, "fitMode": "contain", "keepIccProfile": False, "jpegQualityLevel": 70},
    )
    assert loaded == {
        "max_width": 640,
        "fit_mode": "contain",
        "keep_icc_profile": False,
        "jpeg_quality_level": 70.0,
        "explicit": "as-is",
        "box": None,
    }
    # An explicit data_key is left alone; nested schemas get camelCase too.
    loaded = validate_settings(SampleSettings, {"X-Explicit": "kept", "box": {"topLeft": 3}})
    assert loaded["explicit"] == "kept" and loaded["box"] == {"top_left": 3}


def test_defaults_fill_in_what_is_not_sent() -> None:
    assert validate_settings(SampleSettings, None) == validate_settings(SampleSettings, {})
    assert validate_settings(SampleSettings, {})["max_width"] == 800


@pytest.mark.parametrize(
    "raw", [{"max_width": 10}, {"bogus": 1}, {"maxwidth": 10}, {"box": {"top_left": 1}}]
)
def test_unknown_fields_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(SettingsError) as caught:
        validate_settings(SampleSettings, raw)
    error = caught.value
    assert error.status == 400 and error.code == "VALIDATION_ERROR"
    [(name, messages)] = error.details["fields"].items()
    if name == "box":  # nested: the unknown field is named inside the nested object
        assert list(messages) == ["top_left"]
        assert messages["top_left"][0].lower().rstrip(".") == "unknown field"
    else:
        assert name == next(iter(raw)) and messages == ["unknown field"]
        assert f"{name}: unknown field" in error.message


def test_validation_errors_name_every_bad_wire_field() -> None:
    with pytest.raises(SettingsError) as caught:
        validate_settings(
            SampleSettings,
            {"maxWidth": 0, "fitMode": "stretch", "keepIccProfile": "perhaps", "extra": 1},
        )
    error = caught.value
    fields_ = error.details["fields"]
    assert set(fields_) == {"maxWidth", "fitMode", "keepIccProfile", "extra"}
    assert all(isinstance(messages, list) and messages for messages in fields_.values())
    assert "greater than or equal to 1" in fields_["maxWidth"][0]
    assert "cover, contain, fill" in fields_["fitMode"][0]
    assert fields_["keepIccProfile"] == ["Not a valid boolean."]
    assert fields_["extra"] == ["unknown field"]
    assert error.message.startswith("invalid settings: ")
    assert all(name in error.message for name in fields_)
    json.dumps(error.details)  # the details go out as the error body as they are


def test_wrong_types_and_schema_level_errors() -> None:
    with pytest.raises(SettingsError) as caught:
        validate_settings(SampleSettings, {"maxWidth": "wide"})
    assert caught.value.details["fields"] == {"maxWidth": ["Not a valid integer."]}
    with pytest.raises(SettingsError) as caught:
        validate_settings(SampleSettings, {"fitMode": "fill", "maxWidth": 1})
    assert caught.value.details["fields"] == {"_schema": ["fill needs a width above 1"]}
    assert validate_settings(SampleSettings, {"maxWidth": 12})["max_width"] == 12


@pytest.mark.parametrize("bad", [2.5, "12", 12.0])
def test_integers_are_strict_never_truncated(bad: Any) -> None:
    with pytest.raises(SettingsError) as caught:
        validate_settings(SampleSettings, {"maxWidth": bad})
    assert caught.value.details["fields"] == {"maxWidth": ["Not a valid integer."]}


@pytest.mark.parametrize("raw", [[1, 2], "maxWidth=3", 7, True])
def test_settings_that_are_not_an_object_are_refused(raw: Any) -> None:
    with pytest.raises(SettingsError) as caught:
        validate_settings(SampleSettings, raw)
    assert caught.value.details == {"fields": {"_schema": ["not an object"]}}
    assert caught.value.message == "settings must be a JSON object"


# --- the settings form field --------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t"])
def test_empty_settings_text_means_no_settings(text: str | None) -> None:
    assert parse_settings_json(text) == {}


def test_settings_text_is_parsed_as_a_json_object() -> None:
    assert parse_settings_json('{"maxWidth": 10, "fitMode": "fill"}') == {
        "maxWidth": 10,
        "fitMode": "fill",
    }


@pytest.mark.parametrize(
    ("text", "where"),
    [("{maxWidth: 10}", "line 1 column 2"), ('{"a": 1,\n}', "line 2 column 1"), ("{", "column 2")],
)
def test_invalid_json_says_where(text: str, where: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings_json(text)
    assert caught.value.message.startswith("settings is not valid JSON: ")
    assert where in caught.value.message
    assert caught.value.details == {"fields": {"settings": ["not valid JSON"]}}
    assert caught.value.status == 400


@pytest.mark.parametrize("text", ["[1, 2]", "3", '"text"', "null", "true"])
def test_json_that_is_not_an_object_is_refused(text: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings_json(text)
    assert caught.value.details == {"fields": {"settings": ["not a JSON object"]}}
    assert '{"width": 800}' in caught.value.message


# --- JSON Schema export --------------------------------------------------------------------------


def test_json_schema_uses_wire_names_defaults_enums_and_bounds() -> None:
    schema = to_json_schema(SampleSettings)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    properties = schema["properties"]
    assert set(properties) == {
        "maxWidth",
        "fitMode",
        "keepIccProfile",
        "jpegQualityLevel",
        "X-Explicit",
        "box",
    }
    assert properties["maxWidth"]["type"] == "integer"
    assert properties["maxWidth"]["default"] == 800
    assert (properties["maxWidth"]["minimum"], properties["maxWidth"]["maximum"]) == (1, 16384)
    assert properties["fitMode"]["enum"] == ["cover", "contain", "fill"]
    assert properties["fitMode"]["default"] == "cover"
    assert properties["keepIccProfile"]["type"] == "boolean"
    assert properties["jpegQualityLevel"]["minimum"] == 0.5
    assert properties["maxWidth"]["description"] == "widest result in pixels"
    json.dumps(schema)


def test_json_schema_of_an_empty_settings_schema() -> None:
    class Nothing(Settings):
        pass

    schema = to_json_schema(Nothing)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema.get("properties", {}) == {}


# --- normalized settings -------------------------------------------------------------------------


def test_normalized_settings_are_equal_for_equal_settings() -> None:
    variants = [
        {},
        {"maxWidth": 800},
        {"maxWidth": 800, "fitMode": "cover"},
        {"keepIccProfile": "true", "X-Explicit": "as-is"},
    ]
    normalized = [
        normalized_settings(SampleSettings, validate_settings(SampleSettings, raw))
        for raw in variants
    ]
    assert all(item == normalized[0] for item in normalized)
    assert all(json.dumps(item) == json.dumps(normalized[0]) for item in normalized)
    assert normalized[0]["maxWidth"] == 800 and "max_width" not in normalized[0]
    different = normalized_settings(
        SampleSettings, validate_settings(SampleSettings, {"maxWidth": 801})
    )
    assert different != normalized[0]


def test_normalized_settings_load_back_to_the_same_settings() -> None:
    loaded = validate_settings(SampleSettings, {"fitMode": "fill", "box": {"topLeft": 2}})
    wire = normalized_settings(SampleSettings, loaded)
    assert validate_settings(SampleSettings, wire) == loaded


# --- the contract every registered definition keeps ----------------------------------------------

REGISTRY = load_registry()
TOOLS = sorted(REGISTRY.tools)
EXTRACTORS = sorted(REGISTRY.extractors)
SOURCES = sorted(REGISTRY.sources)
DEFINITIONS: list[Tool | Extractor | Source] = [
    *REGISTRY.tools.values(),
    *REGISTRY.extractors.values(),
    *REGISTRY.sources.values(),
]


def _definition_id(definition: Tool | Extractor | Source) -> str:
    return f"{definition.kind.value}:{definition.id}"


def test_the_real_registry_loads_without_errors() -> None:
    assert REGISTRY.errors == []
    assert {"resize"} <= set(TOOLS)
    assert all(p.loaded for p in REGISTRY.plugins if p.package == BUILTIN_PACKAGE)


@pytest.mark.parametrize("definition", DEFINITIONS, ids=_definition_id)
def test_every_schema_exports_and_every_example_validates(
    definition: Tool | Extractor | Source,
) -> None:
    schema = to_json_schema(definition.settings)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    json.dumps(schema)
    instance = definition.settings()
    wire_names = {field.data_key or name for name, field in instance.fields.items()}
    assert set(schema.get("properties", {})) == wire_names
    assert all(name == camelcase(name.replace("-", "_")) or "-" in name for name in wire_names)
    loaded = validate_settings(definition.settings, definition.example)
    wire = normalized_settings(definition.settings, loaded)
    json.dumps(wire)
    assert validate_settings(definition.settings, wire) == loaded  # what a client would resend
    if isinstance(definition, Extractor) and definition.output_schema is not None:
        json.dumps(to_json_schema(definition.output_schema))
    with pytest.raises(SettingsError) as caught:
        validate_settings(definition.settings, {**definition.example, "notARealSetting": 1})
    assert caught.value.details["fields"]["notARealSetting"] == ["unknown field"]


BUILTIN_PLUGINS = {p.name for p in REGISTRY.plugins if p.builtin}


@pytest.mark.parametrize(
    "definition",
    [d for d in DEFINITIONS if REGISTRY.owner(d) in BUILTIN_PLUGINS],
    ids=_definition_id,
)
def test_builtin_settings_document_every_field(definition: Tool | Extractor | Source) -> None:
    # House rule for built-ins: every field has a default and a description.
    properties = to_json_schema(definition.settings).get("properties", {})
    for name, field in definition.settings().fields.items():
        wire = field.data_key or name
        assert properties[wire].get("description"), f"{definition.id}.{wire} has no description"
        assert field.load_default is not missing, f"{definition.id}.{wire} has no default"


def test_the_walk_covers_every_registered_definition(registry: Registry) -> None:
    # The conftest registry (what the other tests use) holds exactly what was walked here.
    assert sorted(registry.tools) == TOOLS
    assert sorted(registry.extractors) == EXTRACTORS
    assert sorted(registry.sources) == SOURCES


class _ColorSettings(Settings):
    fill = Color(load_default="#fff")
    ink = Color(alpha=False, load_default="#000000")


@pytest.mark.parametrize(
    ("text", "rgba"),
    [
        ("#fff", (255, 255, 255, 255)),
        ("#0f08", (0, 255, 0, 136)),
        ("#102030", (16, 32, 48, 255)),
        ("#10203040", (16, 32, 48, 64)),
    ],
)
def test_color_field_and_parser(text: str, rgba: tuple[int, int, int, int]) -> None:
    loaded = validate_settings(_ColorSettings, {"fill": text})
    assert loaded["fill"] == text
    assert parse_color(loaded["fill"]) == rgba


@pytest.mark.parametrize("bad", ["fff", "#ff", "#fffff", "#gggggg", "red", "#fff#", ""])
def test_color_field_refuses_non_hex(bad: str) -> None:
    with pytest.raises(SettingsError) as caught:
        validate_settings(_ColorSettings, {"fill": bad})
    assert "hex colour" in caught.value.details["fields"]["fill"][0]


def test_color_without_alpha_refuses_alpha_forms() -> None:
    with pytest.raises(SettingsError):
        validate_settings(_ColorSettings, {"ink": "#000000ff"})
    assert to_json_schema(_ColorSettings)["properties"]["ink"]["pattern"].startswith("^#")


class _FactoryDefaults(Settings):
    tags = fields.List(fields.String(), load_default=list)
    stops = fields.List(fields.String(), load_default=lambda: ["#000", "#fff"])
    documented = fields.List(fields.String(), load_default=list, metadata={"default": ["x"]})


def test_factory_defaults_appear_in_the_json_schema() -> None:
    properties = to_json_schema(_FactoryDefaults)["properties"]
    assert properties["tags"]["default"] == []
    assert properties["stops"]["default"] == ["#000", "#fff"]
    assert properties["documented"]["default"] == ["x"]  # an explicit one wins
