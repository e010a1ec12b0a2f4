"""Throwaway virtual environments for tests that install packages for real.

`overlay_venv` makes a new environment whose interpreter also sees the current environment's
packages (pixmill, pytest, pip, ...) through a `.pth` file, after its own. Whatever a test
installs into it stays in it, so the environment running the tests never changes.

`python -m venv --system-site-packages` is not the same thing: run from inside a virtual
environment it exposes the *base* interpreter's packages, not this environment's.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

DEFAULT_TIMEOUT_S = 120.0


def overlay_venv(root: Path, *, with_pip: bool = False, timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Create the environment at `root`; return its python. Without its own pip (the
    default), `python -m pip` runs this environment's pip but installs into the new one."""
    command = [sys.executable, "-m", "venv", str(root)]
    if not with_pip:
        command.insert(3, "--without-pip")
    subprocess.run(command, check=True, timeout=timeout)
    python = root / "bin" / "python"
    own_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    ).stdout.strip()
    parent_site = sysconfig.get_paths()["purelib"]
    (Path(own_site) / "pixmill_parent_env.pth").write_text(
        f"import site; site.addsitedir({parent_site!r})\n"
    )
    return python
