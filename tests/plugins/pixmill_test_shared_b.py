"""The other of two third-party packages that both declare the tool id "test-shared"."""

from __future__ import annotations

from typing import Any

from pixmill import Context, ImageResult, Inputs, Settings, Tool, hookimpl


def run(ctx: Context, inputs: Inputs, settings: dict[str, Any]) -> ImageResult:
    return ImageResult(inputs.file.open())


@hookimpl
def pixmill_tools() -> list[Tool]:
    return [
        Tool(id="test-shared", name="B", description="from package b", settings=Settings, run=run)
    ]
