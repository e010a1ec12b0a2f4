"""The harness for plugin authors (fixtures, sample images, conformance checks).

`pixmill.testing.pytest_plugin` holds the pytest fixtures (registered automatically through
the `pytest11` entry point); the functions below work without pytest too.
"""

from pixmill.testing.conformance import (
    ConformanceError,
    ConformanceReport,
    assert_conforms,
    check_plugin,
)
from pixmill.testing.harness import Harness, registry_for
from pixmill.testing.images import sample_images
from pixmill.testing.similarity import assert_similar, ssim

__all__ = [
    "ConformanceError",
    "ConformanceReport",
    "Harness",
    "assert_conforms",
    "assert_similar",
    "check_plugin",
    "registry_for",
    "sample_images",
    "ssim",
]
