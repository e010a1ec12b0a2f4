"""The harness for plugin authors (fixtures, sample images, conformance checks)."""
