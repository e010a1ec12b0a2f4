"""Definitions with ids or sections the API cannot route."""

from __future__ import annotations

from typing import Any

from pixmill import Context, ImageResult, Inputs, Settings, Tool, hookimpl


def run(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    return ImageResult(inputs.file.open())


def tool(tool_id: str, section: str = "image") -> Tool:
    return Tool(
        id=tool_id, name=tool_id, description="d", settings=Settings, run=run, section=section
    )


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        tool("Bad_ID"),
        tool("double--hyphen"),
        tool("-leading"),
        tool("trailing-"),
        tool("has space"),
        tool(""),
        tool("test-wrong-section", section="video"),
        tool("test-good-id"),
    ]
