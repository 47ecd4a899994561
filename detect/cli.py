"""Entry-point helpers: user errors become one line on stderr and exit status 2; run folders are unique.

Every entry point imports this module, which registers the ``${detect.run_id:}`` resolver the
``hydra.run.dir`` / ``hydra.sweep.dir`` patterns of ``conf/*.yaml`` end with, so two runs started
in the same second get different folders; `run_user_errors` then holds ``.hydra/run.lock`` in the
run folder for the whole run, so no two live runs ever write into one folder.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from hydra.errors import ConfigCompositionException, InstantiationException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from detect.errors import UserError, os_error_message

T = TypeVar("T")

# Set (with HYDRA_FULL_ERROR=1) by `run_cli`; launcher jobs inherit it.
_FORCED = "DETECT_CLI_SET_HYDRA_FULL_ERROR"


def _wants_traceback() -> bool:
    """The user set ``DETECT_TRACEBACK=1``, or ``HYDRA_FULL_ERROR=1`` themselves (not `run_cli`)."""
    if os.environ.get("DETECT_TRACEBACK") == "1":
        return True
    return os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(_FORCED) != "1"


# --------------------------------------------------------------------------- unique run folders

_RUN_ID: str | None = None


def run_id() -> str:
    """This process's run token, ``<pid>-<4 hex digits>``: the same for every call in one process.

    The pid tells apart runs started in the same second on one machine; the random part tells
    apart runs on machines sharing an output folder (and a pid reused after a reboot).
    """
    global _RUN_ID
    if _RUN_ID is None:
        _RUN_ID = f"{os.getpid()}-{secrets.token_hex(2)}"
    return _RUN_ID


# Cached per config too, like Hydra's ``now``: launcher jobs in other processes get the parent's
# value with the rest of the resolver cache, so they agree on the sweep folder.
OmegaConf.register_new_resolver("detect.run_id", run_id, use_cache=True, replace=True)

RUN_LOCK = "run.lock"
_HELD: dict[str, list] = {}  # lock path -> [open file, depth]: nested wrappers re-enter their own lock


def _run_lock_path() -> Path | None:
    """``<run dir>/.hydra/run.lock`` inside a Hydra job that has a run folder, else None."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.output_subdir is None:  # e.g. the generator's ``run.dir: .``: no run folder of its own
        return None
    return Path(hydra_cfg.runtime.output_dir) / str(hydra_cfg.output_subdir) / RUN_LOCK


@contextlib.contextmanager
def own_run_dir() -> Iterator[None]:
    """Hold an exclusive lock on this job's run folder; a `UserError` when another live run holds it.

    The lock is an ``flock`` on ``.hydra/run.lock``: the kernel drops it when its process ends,
    however it ends (SIGKILL included), so a stale file never blocks a later run.
    """
    path = _run_lock_path()
    try:
        import fcntl
    except ImportError:  # Windows: unique folder names still keep runs apart
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    key = str(path)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        f.seek(0)
        owner = " ".join(f.read().split()[-2:])  # "pid N", written by the holder (one line, whatever else is there)
        f.close()
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise UserError(f"{path.parent.parent}: run folder in use by another live run"
                        f"{f' ({owner})' if owner else ''}; give this run its own hydra.run.dir") from None
    f.truncate(0)
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    _HELD[key] = [f, 1]
    try:
        yield
    finally:
        _HELD.pop(key)
        f.close()  # releases the lock; the file stays (deleting it would race a run that opened it)


# --------------------------------------------------------------------------- user paths

def _uses_cache(cfg: DictConfig) -> bool:
    """The run writes into ``cache_dir``: a pipeline stage is configured, or the data is generated into it."""
    if "proposals" in cfg or "classifier" in cfg:
        return True
    target = OmegaConf.select(cfg, "data._target_", default="") or ""
    return str(target).endswith("SyntheticSource")


def check_cache_dir(cfg: Any) -> None:
    """Before any work: ``cache_dir`` must be a folder (or creatable as one), and writable when it holds nothing.

    A read-only folder that already holds caches is allowed (a shared, precomputed cache); a write
    it cannot take still ends as a one-line error naming the file.
    """
    if not isinstance(cfg, DictConfig) or "cache_dir" not in cfg or not _uses_cache(cfg):
        return
    raw = cfg.cache_dir
    if raw is None or not str(raw):
        raise UserError("cache_dir is empty: set cache_dir=<folder> (or the DETECT_CACHE_DIR variable)")
    path = Path(str(raw))
    existing = path
    while not existing.exists() and existing != existing.parent:  # the nearest existing ancestor
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "" if existing == path else f" (in cache_dir {path})"
        raise UserError(f"{existing}: is a file, expected a folder for cache_dir{where}")
    if existing == path:
        if not os.access(path, os.R_OK | os.X_OK):
            raise UserError(f"{path}: cache_dir is not readable (permission denied)")
        if not os.access(path, os.W_OK) and not any(path.iterdir()):
            raise UserError(f"{path}: cache_dir is read-only and empty: nothing can be cached; "
                            "choose a writable cache_dir")
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{existing}: cannot create cache_dir {path} there (permission denied)")


def check_config(cfg: Any, entry: str | None = None) -> None:
    """`detect.schema.validate_config` for a Hydra job's config (the entry point is Hydra's
    ``config_name``, or ``entry``); a config no entry of the schema describes is left alone."""
    if not isinstance(cfg, DictConfig):
        return
    if entry is None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return
        entry = HydraConfig.get().job.config_name
    from detect.schema import ENTRIES, validate_config

    if entry in ENTRIES:
        validate_config(cfg, entry)


def run_user_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point: `UserError` -> ``error: <message>`` and exit 2, no traceback.

    So is an `OSError` naming a path (a folder where a file is expected, a file where a folder is,
    a missing or unreadable file, a read-only folder), raised anywhere in the run:
    ``error: <path>: <problem>``.  Inside a Hydra job it first takes the run folder
    (`own_run_dir`), checks the whole config against its typed schema (`check_config`: types,
    ranges, unknown keys, before any stage) and checks ``cache_dir`` (`check_cache_dir`).

    Set ``HYDRA_FULL_ERROR=1`` (or ``DETECT_TRACEBACK=1``) to see the traceback.
    Any other exception is a bug and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            try:
                with own_run_dir():
                    if args:
                        check_config(args[0])
                        check_cache_dir(args[0])
                    return fn(*args, **kwargs)
            except InstantiationException as exc:
                # hydra.utils.instantiate wraps errors raised by the constructors it calls.
                if isinstance(exc.__cause__, (UserError, OSError)):
                    raise exc.__cause__ from None
                raise
        except UserError as exc:
            if _wants_traceback():
                raise
            _exit_with(str(exc))
        except OSError as exc:
            message = os_error_message(exc)
            if message is None or _wants_traceback():
                raise
            _exit_with(message)

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
    before = {key: os.environ.get(key) for key in ("HYDRA_FULL_ERROR", _FORCED)}
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ[_FORCED] = "1"
    try:
        main()
    except HYDRA_USER_ERRORS as exc:
        _exit_with(one_line(exc))
    except OSError as exc:  # e.g. Hydra cannot create hydra.run.dir (a file is in the way)
        message = os_error_message(exc)
        if message is None:
            raise
        _exit_with(message)
    finally:  # an in-process caller (a test, a notebook) gets its environment back
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
