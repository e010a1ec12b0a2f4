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


MAIN_INPUT_ENTRY = {
    "name": "file",
    "description": "the image to process",
    "multiple": False,
    "required": True,
    "documents": [],
}


def _example_files(inputs: list[dict[str, Any]]) -> str:
    """The file arguments of a `pixmill run` example: the main file(s), then --file parts."""
    words = []
    for item in inputs:
        if not item["required"]:
            continue
        if item["name"] != "file":
            words.append(f"--file {item['name']}={item['name']}.png")
        elif "pdf" in item["documents"]:
            words.append("document.pdf")
        elif "svg" in item["documents"]:
            words.append("drawing.svg")
        else:
            words.append("a.jpg b.jpg" if item["multiple"] else "photo.jpg")
    return "".join(f" {word}" for word in words)


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
        if getattr(definition, "requires", ()):
            lines += [f"Needs an optional dependency: `pip install '{definition.install}'`.", ""]
        inputs = entry.get("inputs", [])
        if inputs and inputs != [MAIN_INPUT_ENTRY]:
            described = [
                f"`{item['name']}`"
                + (" (several)" if item["multiple"] else "")
                + ("" if item["required"] else " (optional)")
                + (f" (also {', '.join(item['documents'])})" if item["documents"] else "")
                + f": {item['description']}"
                for item in inputs
            ]
            lines += ["File parts: " + "; ".join(described) + ".", ""]
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
            target = "" if command == "fetch" else _example_files(entry.get("inputs", []))
            lines += [f"Example: `pixmill {command} {entry['id']}{target} {pairs}`", ""]
    return "\n".join(lines)


def main() -> int:
    TARGET.write_text(render(load_registry()))
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
