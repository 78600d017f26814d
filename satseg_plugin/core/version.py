"""SatSeg's version, read from the plugin's ``metadata.txt`` (the one place it is written)."""

from __future__ import annotations

import configparser
import os

__all__ = ["__version__"]


def _read_version() -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(os.path.join(os.path.dirname(os.path.dirname(__file__)), "metadata.txt"), encoding="utf-8")
    return parser.get("general", "version", fallback="0+unknown")


__version__ = _read_version()
