"""``images=`` of ``python -m detect.predict``: a file, a folder (recursive), a glob, or a list file.

Which files are images is decided by decoding them (`detect.data.image_io.load_rgb` sniffs the
bytes; the extension is never trusted), so every file a folder holds is an input and the ones
that do not decode are skipped with their reason.  Hidden files and folders (``.name``) are left
out.  A list file (``.txt`` / ``.lst``) names one path per line, relative to the list's folder;
blank lines and ``# comments`` are skipped.  What cannot give a single input (a missing path, a
glob that matches nothing, an empty folder or list) is a one-line `UserError`.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, Sequence

from detect.errors import ConfigError, UserError, read_user_file

LIST_SUFFIXES = (".txt", ".lst")


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def folder_files(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder``, recursively, in sorted path order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, folder))


def _list_entries(list_file: Path) -> list[Path]:
    entries = []
    for line in read_user_file(list_file, "image list", error=UserError).splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        path = Path(os.path.expanduser(text))
        entries.append(path if path.is_absolute() else list_file.parent / path)
    return entries


def _expand(spec: str) -> list[Path]:
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        files = folder_files(path)
        if not files:
            raise UserError(f"{path}: no files in this folder (images=)")
        return files
    if path.is_file():
        if path.suffix.lower() in LIST_SUFFIXES:
            entries = _list_entries(path)
            if not entries:
                raise UserError(f"{path}: the image list names no file")
            # A listed folder is expanded; a listed file that is missing is skipped later, with its reason.
            return [f for e in entries for f in (folder_files(e) if e.is_dir() else [e])]
        return [path]
    if glob.has_magic(spec):
        matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True))
        files = [f for m in matches for f in (folder_files(m) if m.is_dir() else [m])]
        if not files:
            raise UserError(f"{spec}: no file matches this pattern (images=)")
        return files
    if path.exists():  # a socket, a device...
        raise UserError(f"{path}: not a file or folder (images=)")
    raise UserError(f"{path}: no such file or folder (images=)")


def collect_images(images: str | Sequence[str]) -> list[Path]:
    """The input files of ``images`` (one spec, or a list of them), in order, each once."""
    specs: Iterable[str] = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    specs = [str(s) for s in specs]
    if not specs or any(not s.strip() for s in specs):
        raise ConfigError("images= is empty: give an image file, a folder, a glob or a list file")
    seen: set[Path] = set()
    out = []
    for spec in specs:
        for path in _expand(spec):
            key = Path(os.path.abspath(path))
            if key not in seen:
                seen.add(key)
                out.append(path)
    return out
