"""Write docs/tools.md from the installed built-in plugins' schemas.

Run after changing a built-in tool's settings: `.venv/bin/python scripts/gen_tool_docs.py`.
tests/test_docs.py fails when docs/tools.md is out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pixmill.core.catalogue import describe
from pixmill.core.plugin_host import BUILTIN_PACKAGE, Registry, load_registry

TARGET = Path(__file__).resolve().parent.parent / "docs" / "tools.md"


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _type(prop: dict[str, Any]) -> str:
    kind = prop.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(k for k in kind if k != "null")
    return str(kind)


def _allowed(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return ", ".join(f"`{v}`" for v in prop["enum"] if v is not None)
    if "minimum" in prop or "maximum" in prop:
        return f"{prop.get('minimum', '')} to {prop.get('maximum', '')}"
    return ""


def _json_text(value: Any) -> str:
    """A setting's value as JSON text (what `--set` and the REST API take); strings bare."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _default(prop: dict[str, Any]) -> str:
    value = prop.get("default")
    return "none" if value is None else f"`{_json_text(value)}`"


def _set_option(name: str, value: Any) -> str:
    option = f"--set {name}={_json_text(value)}"
    if isinstance(value, dict | list) or " " in option[6:]:
        option = f"--set '{name}={_json_text(value)}'"
    return option


def render(registry: Registry) -> str:
    builtin = {
        item_id
        for info in registry.plugins
        if info.package == BUILTIN_PACKAGE
        for item_id in (*info.tools, *info.extractors, *info.sources)
    }
    lines = [
        "# Built-in tools, extractors and sources",
        "",
        "Generated from the plugins' settings schemas by `scripts/gen_tool_docs.py`; do not edit.",
        "The same information is served at `GET /api/v1/tools`, in the OpenAPI document and by",
        "`pixmill tools show <id>`. Setting names are the wire names (JSON, `--set`).",
        "",
    ]
    definitions = [*registry.catalogue(), *sorted(registry.sources.values(), key=lambda s: s.id)]
    for definition in definitions:
        if definition.id not in builtin:
            continue
        entry = describe(definition)
        where = (
            f"`POST {entry['endpoint']}`, output: {entry['output']}"
            if "endpoint" in entry
            else f"`pixmill fetch {entry['id']}`"
        )
        lines += [f"## {entry['id']} ({entry['kind']})", "", f"{entry['description']}", ""]
        lines += [f"{where}. Plugin: `{registry.owner(definition)}`.", ""]
        props = entry["settingsSchema"].get("properties", {})
        if props:
            lines += [
                "| setting | type | allowed | default | description |",
                "| --- | --- | --- | --- | --- |",
            ]
            for name, prop in props.items():
                cells = [f"`{name}`", _type(prop), _allowed(prop), _default(prop)]
                cells.append(prop.get("description"))
                lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
            lines.append("")
        if entry["example"]:
            pairs = " ".join(_set_option(k, v) for k, v in entry["example"].items())
            command = "fetch" if entry["kind"] == "source" else "run"
            target = "" if command == "fetch" else " photo.jpg"
            lines += [f"Example: `pixmill {command} {entry['id']}{target} {pairs}`", ""]
    return "\n".join(lines)


def main() -> int:
    TARGET.write_text(render(load_registry()))
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
