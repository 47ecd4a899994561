"""Entry-point helper: user errors become one line on stderr and exit status 2."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, TypeVar

from hydra.errors import ConfigCompositionException, InstantiationException, OverrideParseException
from omegaconf.errors import MissingMandatoryValue

from detect.errors import UserError

T = TypeVar("T")

# Set (with HYDRA_FULL_ERROR=1) by `run_cli`; launcher jobs inherit it.
_FORCED = "DETECT_CLI_SET_HYDRA_FULL_ERROR"


def _wants_traceback() -> bool:
    """The user set ``DETECT_TRACEBACK=1``, or ``HYDRA_FULL_ERROR=1`` themselves (not `run_cli`)."""
    if os.environ.get("DETECT_TRACEBACK") == "1":
        return True
    return os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(_FORCED) != "1"


def run_user_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point: `UserError` -> ``error: <message>`` and exit 2, no traceback.

    Set ``HYDRA_FULL_ERROR=1`` (or ``DETECT_TRACEBACK=1``) to see the traceback.
    Any other exception is a bug and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            try:
                return fn(*args, **kwargs)
            except InstantiationException as exc:
                # hydra.utils.instantiate wraps errors raised by the constructors it calls.
                if isinstance(exc.__cause__, UserError):
                    raise exc.__cause__ from None
                raise
        except UserError as exc:
            if _wants_traceback():
                raise
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper


# Hydra's own errors that are the user's: an unknown config option or key, a malformed override,
# a mandatory ``???`` value left unset.  (InstantiationException and other OmegaConf errors may be bugs.)
HYDRA_USER_ERRORS = (ConfigCompositionException, OverrideParseException, MissingMandatoryValue)


def run_cli(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` entry point so Hydra's own user errors also end as one ``error: ...`` line, exit 2.

    Hydra prints those itself (several lines, exit 1) unless ``HYDRA_FULL_ERROR=1``, so it is set
    for the call and the errors are caught here.  A user who set ``HYDRA_FULL_ERROR=1`` or
    ``DETECT_TRACEBACK=1`` gets the traceback as before.
    """
    if _wants_traceback():
        main()
        return
    # Hydra then raises instead of printing; the marker (inherited by launcher jobs) tells
    # run_user_errors that the user did not ask for tracebacks.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ[_FORCED] = "1"
    try:
        main()
    except HYDRA_USER_ERRORS as exc:
        _exit_with(one_line(exc))


def one_line(exc: BaseException) -> str:
    """Hydra's multi-line message (plus its OmegaConf cause) on one line; option lists joined by commas."""
    text = str(exc).split("Config search path:")[0]
    if isinstance(exc, OverrideParseException):
        text = f"override {exc.override!r}: {text}"
    if exc.__cause__ is not None and exc.__cause__ is not exc:
        text += "\n" + str(exc.__cause__)
    parts: list[str] = []
    for raw in text.splitlines():
        line = raw.strip().rstrip(".")
        if not line or line.startswith(("full_key:", "object_type=", "reference_type=")):
            continue
        if raw.startswith("\t") and parts:  # an item of "Available options in 'data':"
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
        else:
            parts.append(line)
    return "; ".join(parts)


def _exit_with(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)
