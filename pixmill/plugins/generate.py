"""placeholder"""

from pixmill import hookimpl


@hookimpl
def pixmill_tools() -> list:
    return []
