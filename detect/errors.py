"""User-facing errors.

A `UserError` is a problem with the user's input (a file, a config key, a
submission line).  Entry points print its message as one line and exit with
status 2, without a traceback; every other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import errno
import numbers
import os
from pathlib import Path


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


# OS errors at a user's path: what each means, in the user's terms.
_OS_PROBLEMS = {
    "IsADirectoryError": "is a folder, expected a file",
    "FileNotFoundError": "no such file or folder",
    "PermissionError": "permission denied",
    "FileExistsError": "already exists",
}


def os_error_message(exc: OSError) -> str | None:
    """``<path>: <problem>`` for an `OSError` that names a path, else None (not the user's: keep the traceback).

    ``NotADirectoryError`` names the file that stands where a folder is expected (the first
    component of the path that is not a folder), not only the full path it was reached through.
    """
    filename = getattr(exc, "filename", None)
    if filename is None:
        return None
    path = os.fsdecode(filename) if isinstance(filename, (str, bytes, os.PathLike)) else str(filename)
    if isinstance(exc, NotADirectoryError) or exc.errno == errno.ENOTDIR:
        blocker = _first_non_folder(Path(path))
        if blocker is not None and str(blocker) != path:
            return f"{blocker}: is a file, expected a folder (in the path {path})"
        return f"{path}: is a file, expected a folder"
    if isinstance(exc, FileExistsError) and Path(path).exists() and not Path(path).is_dir():
        return f"{path}: is a file, expected a folder"
    problem = _OS_PROBLEMS.get(type(exc).__name__) or exc.strerror or type(exc).__name__
    if exc.errno == errno.EROFS:
        problem = "read-only file system"
    elif exc.errno == errno.ENOSPC:
        problem = "no space left on the device"
    second = getattr(exc, "filename2", None)
    return f"{path}: {problem}" + (f" (-> {os.fsdecode(second)})" if second is not None else "")


def _first_non_folder(path: Path) -> Path | None:
    """The first ancestor of ``path`` (or itself) that exists and is not a folder."""
    for part in reversed([path, *path.parents]):
        if part.exists() and not part.is_dir():
            return part
    return None


def _a(what: str) -> str:
    return ("an " if what[:1].lower() in "aeiou" else "a ") + what


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a `Path` when it is an existing, readable file; else a one-line `UserError`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected {_a(what)}")
    if not path.exists():
        blocker = _first_non_folder(path.parent)
        if blocker is not None:
            raise UserError(f"{blocker}: is a file, expected a folder (in the path of the {what} {path})")
        raise UserError(f"{path}: {what} not found")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: {what} is not readable (permission denied)")
    return path


def require_folder(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    """``path`` as a `Path` when it is an existing, readable folder; else a one-line `DataError`."""
    path = Path(path)
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise DataError(f"{path}: {what} is not readable (permission denied)")
        return path
    if path.exists():
        raise DataError(f"{path}: {what} is a file, expected a folder")
    blocker = _first_non_folder(path)
    if blocker is not None:
        raise DataError(f"{blocker}: is a file, expected a folder (in the path of the {what} {path})")
    raise DataError(f"{path}: {what} does not exist{hint}")


def read_user_file(path: str | os.PathLike, what: str, *, text: bool = True,
                   error: type[UserError] = DataError) -> str | bytes:
    """The contents of a user's file (UTF-8 text, or bytes); one-line ``error`` for what can go wrong.

    Not found, a folder, a file where a folder is expected on the way, no read permission,
    not UTF-8 text: each names the path and the problem.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        blocker = _first_non_folder(path.parent)
        if blocker is not None:
            raise error(f"{blocker}: is a file, expected a folder (in the path of the {what} {path})") from None
        raise error(f"{path}: {what} not found") from None
    except NotADirectoryError:
        raise error(f"{_first_non_folder(path) or path}: is a file, expected a folder "
                    f"(in the path of the {what} {path})") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, expected {_a(what)}") from None
    except PermissionError:
        raise error(f"{path}: {what} is not readable (permission denied)") from None
    if not text:
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from None
