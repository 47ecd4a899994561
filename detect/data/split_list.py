"""Split lists: ``<image_name> [<index or label>]`` per line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from detect.errors import DataError, read_user_file

# ILSVRC per-class training lists (train_<N>.txt) carry a label (1 positive, 0 partial,
# -1 negative) in the second column, every other list the 1-based image index.
_PER_CLASS_LIST = re.compile(r"^train_\d+$")


@dataclass(frozen=True)
class SplitEntry:
    name: str
    index: int  # 1-based ILSVRC image index (line position when the list has none)
    label: int | None  # per-class lists only


def escapes_root(name: str) -> bool:
    """True when ``name``, a path relative to a dataset folder, could leave it: absolute, ``..`` or a NUL byte."""
    return PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts or "\x00" in name


def read_split_list(path: Path, split: str) -> list[SplitEntry]:
    """Parse a split list; names must be unique and must stay inside the dataset."""
    path = Path(path)
    lines = read_user_file(path, f"split list (split {split!r})").splitlines()
    per_class = bool(_PER_CLASS_LIST.match(split))
    entries: list[SplitEntry] = []
    seen_names: dict[str, int] = {}
    seen_index: dict[int, int] = {}
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) > 2:
            raise DataError(f"{path}:{lineno}: expected '<image_name> [<index>]', got {line.strip()!r}")
        name = parts[0]
        if escapes_root(name):
            raise DataError(f"{path}:{lineno}: image name {name!r} escapes the dataset root")
        if name in seen_names:
            raise DataError(f"{path}:{lineno}: duplicate image {name!r} (first on line {seen_names[name]})")
        seen_names[name] = lineno
        number = None
        if len(parts) == 2:
            try:
                number = int(parts[1])
            except ValueError:
                raise DataError(f"{path}:{lineno}: second column {parts[1]!r} is not an integer") from None
        if per_class:
            if number is not None and number not in (-1, 0, 1):
                raise DataError(f"{path}:{lineno}: label must be 1, 0 or -1, got {number}")
            entries.append(SplitEntry(name, len(entries) + 1, number))
            continue
        index = len(entries) + 1 if number is None else number
        if index < 1:
            raise DataError(f"{path}:{lineno}: image index must be >= 1, got {index}")
        if index in seen_index:
            raise DataError(f"{path}:{lineno}: duplicate image index {index} (first on line {seen_index[index]})")
        seen_index[index] = lineno
        entries.append(SplitEntry(name, index, None))
    if not entries:
        raise DataError(f"{path}: split {split!r} is empty")
    return entries
