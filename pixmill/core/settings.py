"""Plugin settings: the `Settings` base schema, validation, and JSON Schema export.

A plugin declares its settings as a Marshmallow schema deriving from `Settings`. Python
attributes are snake_case; the wire names (JSON, CLI `--set`, OpenAPI) are their camelCase form,
so `without_enlargement` is sent as `withoutEnlargement`. Unknown fields are refused.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from pixmill.core.errors import SettingsError


def camelcase(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class Settings(Schema):
    """Base of every plugin settings schema: camelCase on the wire, unknown fields refused,
    integers strict (2.5 is refused, not truncated)."""

    class Meta:
        unknown = RAISE

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        if field_obj.data_key is None:
            field_obj.data_key = camelcase(field_name)
        if isinstance(field_obj, fields.Integer):
            # marshmallow truncates 2.5 to 2 unless strict: a width of 2.5 is a client's
            # mistake to report, not to round silently.
            field_obj.strict = True


_HEX_COLOR = r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"
_HEX_COLOR_WITH_ALPHA = r"^#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$"


class Color(fields.String):
    """A colour setting written as hex: `#rgb` or `#rrggbb`, and with `alpha=True` (the default)
    also `#rgba` or `#rrggbbaa`. It stays a string in the settings; `parse_color` reads it."""

    def __init__(self, *, alpha: bool = True, **kwargs: Any) -> None:
        forms = "#rgb, #rgba, #rrggbb or #rrggbbaa" if alpha else "#rgb or #rrggbb"
        check = validate.Regexp(
            _HEX_COLOR_WITH_ALPHA if alpha else _HEX_COLOR,
            error=f"must be a hex colour: {forms}",
        )
        extra = kwargs.pop("validate", None)
        extra_list = [] if extra is None else list(extra) if isinstance(extra, list) else [extra]
        super().__init__(validate=[check, *extra_list], **kwargs)


def parse_color(value: str) -> tuple[int, int, int, int]:
    """A hex colour (`#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa`) as an RGBA tuple."""
    digits = value.lstrip("#")
    if len(digits) in (3, 4):
        digits = "".join(ch * 2 for ch in digits)
    if len(digits) == 6:
        digits += "ff"
    if len(digits) != 8:
        raise ValueError(f"not a hex colour: {value!r}")
    red, green, blue, alpha = (int(digits[i : i + 2], 16) for i in range(0, 8, 2))
    return red, green, blue, alpha


_schemas = threading.local()


def schema_instance(schema_cls: type[Schema]) -> Schema:
    """One instance of `schema_cls` per thread, reused: building a Marshmallow schema costs
    ~100 us on every call, using one ~10 us (an instance is not documented as thread-safe)."""
    cache: dict[type[Schema], Schema] = _schemas.__dict__.setdefault("by_class", {})
    schema = cache.get(schema_cls)
    if schema is None:
        schema = cache[schema_cls] = schema_cls()
    return schema


def validate_settings(schema_cls: type[Schema], raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Load `raw` through the schema: defaults filled in, types coerced, bounds checked.

    Raises `SettingsError` (400 `VALIDATION_ERROR`) with `details["fields"]` mapping each bad
    wire field to its messages.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SettingsError(
            "settings must be a JSON object", details={"fields": {"_schema": ["not an object"]}}
        )
    try:
        loaded = schema_instance(schema_cls).load(dict(raw))
    except ValidationError as exc:
        messages = exc.normalized_messages()
        fields_ = _plain_messages(messages if isinstance(messages, dict) else {"_schema": messages})
        summary = "; ".join(f"{key}: {_first(value)}" for key, value in fields_.items())
        raise SettingsError(f"invalid settings: {summary}", details={"fields": fields_}) from exc
    return dict(loaded)


def _plain_messages(messages: Any) -> Any:
    """Marshmallow's messages with "Unknown field." said plainly, at any depth."""
    if isinstance(messages, dict):
        return {key: _plain_messages(value) for key, value in messages.items()}
    if messages == ["Unknown field."]:
        return ["unknown field"]
    return messages


def parse_settings_json(text: str | None) -> dict[str, Any]:
    """Parse the `settings` form field (a JSON object as text); empty means no settings."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"settings is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            details={"fields": {"settings": ["not valid JSON"]}},
        ) from exc
    if not isinstance(value, dict):
        raise SettingsError(
            'settings must be a JSON object such as {"width": 800}',
            details={"fields": {"settings": ["not a JSON object"]}},
        )
    return value


def normalized_settings(schema_cls: type[Schema], loaded: Mapping[str, Any]) -> dict[str, Any]:
    """The loaded settings dumped back to wire form: equal settings give equal dicts."""
    return dict(schema_instance(schema_cls).dump(loaded))


def schema_name(schema_cls: type[Schema]) -> str:
    return schema_cls.__name__


@cache
def _converter() -> Any:
    plugin = MarshmallowPlugin()
    spec = APISpec("pixmill", "0", "3.1.0", plugins=[plugin])
    plugin.init_spec(spec)
    converter = plugin.converter
    assert converter is not None  # init_spec made it
    converter.add_attribute_function(_callable_default)
    return converter


def _callable_default(self: Any, field: fields.Field, **_: Any) -> dict[str, Any]:
    """The default of a field whose `load_default` is a factory (`list`, a lambda building a
    fresh list), which apispec leaves out: mutable defaults are always factories."""
    default = field.load_default
    if "default" in field.metadata or not callable(default):
        return {}
    return {"default": field._serialize(default(), None, None)}


def to_json_schema(schema_cls: type[Schema]) -> dict[str, Any]:
    """Export a settings schema as self-contained JSON Schema (the OpenAPI 3.1 dialect).

    Nested schemas are inlined rather than referenced, so the result stands on its own in the
    catalogue, the CLI and the OpenAPI document alike.
    """
    converter = _converter()
    converted = _inline_refs(converter.schema2jsonschema(schema_cls()), converter, depth=0)
    converted.setdefault("type", "object")
    if schema_cls.Meta.__dict__.get("unknown", RAISE) == RAISE or issubclass(schema_cls, Settings):
        converted["additionalProperties"] = False
    return dict(converted)


_REF_PREFIX = "#/components/schemas/"


def _inline_refs(node: Any, converter: Any, depth: int) -> Any:
    if depth > 20:  # a self-referencing schema: stop rather than recurse forever
        return {"type": "object"}
    if isinstance(node, list):
        return [_inline_refs(item, converter, depth) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
        target = converter.spec.components.schemas.get(ref[len(_REF_PREFIX) :], {})
        return _inline_refs(dict(target), converter, depth + 1)
    return {key: _inline_refs(value, converter, depth) for key, value in node.items()}


def _first(value: Any) -> str:
    if isinstance(value, list) and value:
        return str(value[0])
    if isinstance(value, dict) and value:
        key, inner = next(iter(value.items()))
        return f"{key}: {_first(inner)}"
    return str(value)
