"""User-facing errors.

A `UserError` is a problem with the user's input (a file, a config key, a
submission line).  Entry points print its message as one line and exit with
status 2, without a traceback; every other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import numbers


class UserError(Exception):
    """Bad input from the user. The message names the file/line/key and the problem."""


class DataError(UserError):
    """Unreadable or inconsistent dataset files (images, annotations, lists)."""


class ConfigError(UserError):
    """A config value that cannot work (wrong type, out of range, unknown option)."""


def config_int(key: str, value: object, *, low: int | None = None) -> int:
    """``value`` as an ``int``, else a one-line `ConfigError` naming ``key``.

    Strings, bools and floats are refused rather than coerced, so
    ``ensemble.size=abc`` or ``seed=1.5`` never runs with a silently different number.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{key} must be an integer{_bound(low)}, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{key} must be an integer{_bound(low)}, got {value!r}")
    return int(value)


def config_float(key: str, value: object, *, low: float | None = None) -> float:
    """``value`` (a real number: not a bool, a string or NaN) as a ``float``, else a `ConfigError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        raise ConfigError(f"{key} must be a number{_bound(low)}, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{key} must be a number{_bound(low)}, got {value!r}")
    return float(value)


def _bound(low: float | None) -> str:
    return "" if low is None else f" >= {low}"
