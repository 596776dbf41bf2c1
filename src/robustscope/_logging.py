"""The package logger.

Library code logs through ``logging.getLogger("robustscope")`` and its
children; it never prints. The command line attaches a handler.
"""

from __future__ import annotations

import logging

LOGGER_NAME = "robustscope"


def get_logger(name: str | None = None) -> logging.Logger:
    """Return the package logger or one of its children (``robustscope.<name>``)."""
    if not name:
        return logging.getLogger(LOGGER_NAME)
    if name.startswith(LOGGER_NAME):
        return logging.getLogger(name)
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())
