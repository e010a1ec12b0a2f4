"""The pixmill core: plugin host, contracts, settings, image I/O, execution, storage, config.

`pixmill.core` never imports `pixmill.server`, `pixmill.cli` or `pixmill.plugins`: the server,
the CLI and every plugin (built-in or third-party) stand on it, not the other way round.
"""
