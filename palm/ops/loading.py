"""Loading user classes named on the command line as ``package.module:Class``."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from palm.errors import ConfigError

__all__ = ["announce", "load_object"]


def load_object(spec: str) -> Any:
    """The object named by ``'package.module:Name'`` (the current directory is importable)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected 'package.module:Name', got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise ConfigError(f"{module_name!r} has no {attr!r}") from exc
    return obj


def announce(event: str, **fields: Any) -> None:
    """Print one JSON line on stdout saying what is ready where (for supervisors and tests)."""
    print(json.dumps({"event": event, **fields}), flush=True)
