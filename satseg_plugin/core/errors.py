"""Errors the engine raises: each message says what went wrong and what to do next.

The Processing layer turns :class:`SatSegError` into ``QgsProcessingException`` unchanged, so the text
here is exactly what a QGIS user reads in the log panel.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Optional, Sequence

__all__ = [
    "SatSegError",
    "InputError",
    "check_settings",
    "OutputError",
    "CanceledError",
    "MissingDependencyError",
    "DeviceError",
    "CheckpointError",
]


class SatSegError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(SatSegError, ValueError):
    """An input or parameter value cannot be used.

    Args:
        message: what is wrong and how to fix it.
        parameter: the name of the parameter at fault (e.g. ``"STRIDE_X"``), if one is.
    """

    def __init__(self, message: str, parameter: Optional[str] = None) -> None:
        self.parameter = parameter
        text = f"{parameter}: {message}" if parameter else message
        super().__init__(text)


class OutputError(SatSegError, OSError):
    """An output cannot be written where it was asked to be (exists, not writable, disk full)."""

    def __init__(self, message: str, parameter: Optional[str] = None) -> None:
        self.parameter = parameter
        text = f"{parameter}: {message}" if parameter else message
        super().__init__(text)


class CanceledError(SatSegError):
    """The user canceled the run; nothing half-written was left behind."""

    def __init__(self, message: str = "Canceled by the user; previous outputs were left as they were.") -> None:
        super().__init__(message)


class MissingDependencyError(SatSegError, ImportError):
    """A Python package SatSeg needs is not importable by QGIS's interpreter.

    Args:
        package: the name pip installs (``faiss-cpu``), not the import name.
        command: the exact command that installs it for the running interpreter.
        reason: the original import error text.
    """

    def __init__(self, package: str, command: str, reason: str = "") -> None:
        self.package = package
        self.command = command
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"SatSeg needs the Python package '{package}', which QGIS's Python cannot import{detail}. "
            "In QGIS desktop, SatSeg > Install Python packages… installs it into SatSeg's own folder without "
            f"touching system packages. Or install it with:\n    {command}\nthen restart QGIS. (Where pip "
            "refuses with 'externally-managed-environment', as on Debian 12, use the SatSeg menu entry.)"
        )


class DeviceError(SatSegError):
    """The requested compute device is not available."""


class CheckpointError(SatSegError):
    """A SatSeg model file cannot be used: missing, damaged, not a SatSeg model, too new or of the wrong kind.

    Args:
        message: what is wrong with the file and what to do (the message names the file).
        path: the model file at fault, if known.
    """

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        self.path = path
        super().__init__(message)


def _non_finite(value: Any) -> bool:
    """Whether ``value`` is a real number (or holds one) that is NaN or infinite; bools and text never are."""
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return not math.isfinite(value)
    return False


def check_settings(checks: Iterable[Sequence[Any]], prefix: str = "must be ") -> None:
    """Raise :class:`InputError` for the first failed check of a settings object's ``validate``.

    A value that is NaN or infinite (or a list or tuple holding one) fails whatever its check says: ``inf``
    passes ``> 0`` and NaN fails every comparison in a way that may read as a range error, so both are refused
    first with a message that says a finite number is needed.

    Args:
        checks: ``(parameter, ok, requirement)`` or ``(parameter, ok, requirement, value)`` tuples; the message
            is ``prefix + requirement`` followed by ``, got <value>`` when a value is given.
        prefix: put before every requirement.
    """
    for parameter, ok, requirement, *value in checks:
        if value and _non_finite(value[0]):
            raise InputError(f"must be a finite number, got {value[0]}.", parameter)
        if not ok:
            raise InputError(f"{prefix}{requirement}" + (f", got {value[0]}." if value else "."), parameter)
