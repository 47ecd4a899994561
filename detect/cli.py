"""Entry-point helper: user errors become one line on stderr and exit status 2."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

from hydra.errors import InstantiationException

from detect.errors import UserError

T = TypeVar("T")


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
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("DETECT_TRACEBACK") == "1":
                raise
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper
