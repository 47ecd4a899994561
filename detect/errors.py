"""User-facing errors.

A `UserError` is a problem with the user's input (a file, a config key, a
submission line).  Entry points print its message as one line and exit with
status 2, without a traceback; every other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user. The message names the file/line/key and the problem."""


class DataError(UserError):
    """Unreadable or inconsistent dataset files (images, annotations, lists)."""


class ConfigError(UserError):
    """A config value that cannot work (wrong type, out of range, unknown option)."""
