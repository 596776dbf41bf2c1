"""Exception types raised by robustscope.

Every error a user can cause derives from :class:`RobustscopeError`, so the
command line can print it as one readable message instead of a traceback.
"""

from __future__ import annotations


class RobustscopeError(Exception):
    """Base class for errors that robustscope reports to the user."""


class InputError(RobustscopeError, ValueError):
    """Invalid input data, located by file, row, column and value.

    Parameters
    ----------
    message
        What is wrong, in one sentence.
    path, row, column, value
        Where the problem is. ``row`` counts data rows from 1, after the header.
    hint
        What the user can do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: object | None = None,
        row: int | None = None,
        column: str | None = None,
        value: object | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.row = row
        self.column = column
        self.value = value
        self.hint = hint
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}")
        if row is not None:
            parts.append(f"row {row}")
        if column is not None:
            parts.append(f"column {column!r}")
        location = ", ".join(parts)
        text = f"{location}: {message}" if location else message
        if value is not None:
            shown = repr(value)
            if len(shown) > 120:
                shown = shown[:117] + "..."
            text += f" (value: {shown})"
        if hint:
            text += f". {hint}"
        super().__init__(text)


class SpecError(RobustscopeError, ValueError):
    """Invalid model specification file or option."""


class ConflictError(InputError):
    """Two rows give different results for the same cell."""


class DiagnosticsFailed(RobustscopeError):
    """A fit did not pass the convergence thresholds."""
