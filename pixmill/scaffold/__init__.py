"""`pixmill plugin new NAME`: a complete, installable plugin package from templates.

The templates under `template/` are plain files with `{{placeholders}}` (not `.py`, so
neither linters nor pytest mistake them for pixmill's own code); a path component
`__module__` becomes the plugin's import name. Nothing is ever overwritten: the target
directory must not exist or must be empty.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from pixmill import __version__
from pixmill.core.contracts import ID_PATTERN
from pixmill.core.errors import BadRequestError, ConflictError

TEMPLATE_SUFFIX = ".tmpl"
MODULE_PLACEHOLDER = "__module__"
DIST_PREFIX = "pixmill-"
_DIST_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
NAME_RULES = (
    "a plugin name is a distribution name in lowercase kebab-case, e.g. 'pixmill-sepia': "
    "letters, digits and single hyphens, starting with a letter. It gives the module "
    "'pixmill_sepia', the entry-point (plugin) name 'sepia' and the tool id 'sepia'; the "
    "'pixmill-' prefix is recommended (the plugin name and tool id drop it)"
)


class ScaffoldError(BadRequestError):
    code = "BAD_PLUGIN_NAME"


@dataclass(frozen=True)
class PluginNames:
    """Every name the package uses, derived from the one the author chose."""

    dist_name: str  # pixmill-sepia: what pip installs and PyPI lists
    module: str  # pixmill_sepia: what Python imports
    plugin_name: str  # sepia: the entry-point name, shown by `pixmill plugins`
    tool_id: str  # sepia: the tool's id in the catalogue and URLs

    @property
    def class_name(self) -> str:
        return "".join(part.capitalize() for part in self.tool_id.split("-"))

    @property
    def const_name(self) -> str:
        return self.tool_id.replace("-", "_").upper()

    @property
    def title(self) -> str:
        return " ".join(part.capitalize() for part in self.tool_id.split("-"))

    def substitutions(self) -> dict[str, str]:
        return {
            "dist_name": self.dist_name,
            "module": self.module,
            "plugin_name": self.plugin_name,
            "tool_id": self.tool_id,
            "class_name": self.class_name,
            "const_name": self.const_name,
            "title": self.title,
            "description": f"{self.title}: tone an image towards a colour.",
            "pixmill_version": __version__,
        }


def names_for(name: str) -> PluginNames:
    """The names derived from `name`, or `ScaffoldError` saying what a valid name looks like."""
    if not _DIST_NAME.match(name):
        raise ScaffoldError(f"{name!r} is not a valid plugin name: {NAME_RULES}")
    if name == "pixmill":
        raise ScaffoldError(f"'pixmill' is pixmill itself: {NAME_RULES}")
    short = name.removeprefix(DIST_PREFIX)
    module = name.replace("-", "_")
    if not short or not ID_PATTERN.match(short):
        raise ScaffoldError(f"{name!r} leaves no tool id after 'pixmill-': {NAME_RULES}")
    if keyword.iskeyword(module) or not module.isidentifier():
        raise ScaffoldError(
            f"{name!r} would give the module name {module!r}, a Python keyword; "
            f"try 'pixmill-{name}'"
        )
    return PluginNames(
        dist_name=name, module=module, plugin_name=short.replace("-", "_"), tool_id=short
    )


def create_plugin(name: str, directory: Path | None = None) -> tuple[PluginNames, list[Path]]:
    """Write the package for `name` into `directory` (default `./NAME`); return its names and
    the files written. Refuses a non-empty directory (409 `DIRECTORY_NOT_EMPTY`)."""
    names = names_for(name)
    target = (directory if directory is not None else Path(name)).resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConflictError(
            f"{target} already exists and is not an empty directory; pixmill never overwrites "
            "files: choose another --directory or remove it",
            code="DIRECTORY_NOT_EMPTY",
            details={"directory": str(target)},
        )
    template = resources.files("pixmill.scaffold").joinpath("template")
    planned = list(_plan(template, target, names.module))
    written = []
    target.mkdir(parents=True, exist_ok=True)
    substitutions = names.substitutions()
    for source, destination in planned:
        destination.parent.mkdir(parents=True, exist_ok=True)
        text = source.read_text(encoding="utf-8")
        for key, value in substitutions.items():
            text = text.replace("{{" + key + "}}", value)
        # "x": fail rather than overwrite, even if a file appeared since the check above.
        with destination.open("x", encoding="utf-8") as out:
            out.write(text)
        written.append(destination)
    return names, written


def _plan(node: Traversable, target: Path, module: str) -> list[tuple[Traversable, Path]]:
    planned = []
    for child in sorted(node.iterdir(), key=lambda item: item.name):
        name = child.name.replace(MODULE_PLACEHOLDER, module)
        if child.is_dir():
            if child.name == "__pycache__":
                continue
            planned.extend(_plan(child, target / name, module))
        elif child.name.endswith(TEMPLATE_SUFFIX):
            planned.append((child, target / name.removesuffix(TEMPLATE_SUFFIX)))
    return planned
