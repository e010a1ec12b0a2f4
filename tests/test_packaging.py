"""What a plain `pip install pixmill` brings is enough to import every module of pixmill.

Module-level imports must come from the standard library, pixmill itself or a distribution in
`install_requires`. Optional dependencies (OpenCV, pypdfium2, resvg, vtracer) are imported
inside the functions that use them, behind a tool's `requires`, so a missing extra makes a tool
unavailable instead of keeping its whole plugin from loading. The test environment installs
every extra, so only this check notices an optional module imported at the top of a file.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pixmill"
# Shipped for plugin authors' test suites, which bring pytest and their own test tools.
TEST_ONLY = ("testing",)


def base_requirements() -> set[str]:
    """Normalised names of the distributions pixmill requires without any extra."""
    names = set()
    for requirement in importlib.metadata.requires("pixmill") or []:
        name, _, marker = requirement.partition(";")
        if "extra ==" in marker:
            continue
        names.add(_normalise(re.split(r"[<>=!~\[ ]", name.strip(), maxsplit=1)[0]))
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level_imports(path: Path) -> set[str]:
    """Modules a file imports at module level (not inside functions, where optional
    dependencies are imported on use)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_every_module_level_import_is_installed_by_a_plain_install() -> None:
    provided = base_requirements()
    distributions = importlib.metadata.packages_distributions()
    missing: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in TEST_ONLY or "templates" in relative.parts:
            continue
        for module in sorted(top_level_imports(path)):
            if module in sys.stdlib_module_names or module in ("pixmill", "__future__"):
                continue
            owners = {_normalise(name) for name in distributions.get(module, [module])}
            if not owners & provided:
                missing.append(f"{relative}: {module} (from {', '.join(sorted(owners))})")
    assert missing == [], "not in install_requires: " + "; ".join(missing)


def test_the_check_sees_requirements_and_imports() -> None:
    # The two halves of the check above, on things known to be there.
    assert {"flask", "pillow", "numpy", "segno"} <= base_requirements()
    assert "pypdfium2" not in base_requirements()  # an extra only
    assert "flask" in top_level_imports(PACKAGE / "server" / "app.py")
    assert "cv2" not in top_level_imports(PACKAGE / "plugins" / "vision.py")
