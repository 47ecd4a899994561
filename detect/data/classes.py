"""Class lists: ILSVRC ``map_det.txt``, the official devkit's ``meta_det.mat``, plain name lists."""

from __future__ import annotations

from pathlib import Path

from detect.data.record import ClassList
from detect.errors import DataError, read_user_file

# The DET challenge has 200 classes; meta_det.mat also lists their WordNet ancestors after them.
ILSVRC_DET_NUM_CLASSES = 200


def read_map_det(path: Path) -> ClassList:
    """Read lines ``<synset> <class_id> <name>`` (name may contain spaces); ids must be 1..C."""
    path = Path(path)
    entries: dict[int, tuple[str, str]] = {}
    lines = read_user_file(path, "class list").splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 2:
            raise DataError(f"{path}:{lineno}: expected '<synset> <class_id> <name>', got {line.strip()!r}")
        synset, id_text = parts[0], parts[1]
        name = parts[2].strip() if len(parts) == 3 else synset
        try:
            class_id = int(id_text)
        except ValueError:
            raise DataError(f"{path}:{lineno}: class id {id_text!r} is not an integer") from None
        if class_id in entries:
            raise DataError(f"{path}:{lineno}: class id {class_id} listed twice")
        entries[class_id] = (synset, name)
    return _class_list_from_ids(entries, path)


def _class_list_from_ids(entries: dict[int, tuple[str, str]], path: Path) -> ClassList:
    if not entries:
        raise DataError(f"{path}: class list is empty")
    expected = list(range(1, len(entries) + 1))
    if sorted(entries) != expected:
        missing = sorted(set(expected) - set(entries))
        raise DataError(f"{path}: class ids must be 1..{len(entries)} without gaps (missing {missing[:5]})")
    synsets = tuple(entries[i][0] for i in expected)
    if len(set(synsets)) != len(synsets):
        raise DataError(f"{path}: a synset is listed twice")
    return ClassList(synsets=synsets, names=tuple(entries[i][1] for i in expected))


def read_meta_det(path: Path) -> ClassList:
    """Read the official devkit's ``meta_det.mat`` (the first 200 synsets are the DET classes).

    The id field is ``ILSVRC2015_DET_ID`` in the 2015 devkit and ``ILSVRC2014_DET_ID``
    in the 2013/2014 ones; both are accepted.
    """
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except FileNotFoundError:
        raise DataError(f"{path}: meta_det.mat not found") from None
    except Exception as exc:  # scipy raises several unrelated types for broken files
        raise DataError(f"{path}: cannot read MATLAB file ({exc})") from None
    if "synsets" not in mat:
        raise DataError(f"{path}: no 'synsets' variable")
    entries: dict[int, tuple[str, str]] = {}
    for synset in list(mat["synsets"]):
        class_id = None
        for field in ("ILSVRC2015_DET_ID", "ILSVRC2014_DET_ID", "ILSVRC2013_DET_ID"):
            if hasattr(synset, field):
                class_id = int(getattr(synset, field))
                break
        if class_id is None:
            raise DataError(f"{path}: synsets have no ILSVRC20xx_DET_ID field")
        if 1 <= class_id <= ILSVRC_DET_NUM_CLASSES:
            entries[class_id] = (str(synset.WNID), str(synset.name))
    return _class_list_from_ids(entries, path)


def read_class_list(map_det: Path | None, meta_det: Path | None) -> ClassList:
    """`map_det.txt` when it exists, else `meta_det.mat`; a one-line error when neither does."""
    if map_det is not None and Path(map_det).exists():
        return read_map_det(map_det)
    if meta_det is not None and Path(meta_det).exists():
        return read_meta_det(meta_det)
    raise DataError(f"no class list: neither {map_det} nor {meta_det} exists")


def class_list_from_names(names, key: str = "data.classes") -> ClassList:
    """A class list (ids 1..C in list order) from the names a config gives, e.g. VOC's ``data.classes``.

    A name listed twice would make two class ids for one name (the second never receives an
    object, so every score changes): refused, like an empty list.
    """
    if isinstance(names, str) or names is None:
        raise DataError(f"{key} must be a list of class names, e.g. {key}=[cat,dog], got {names!r}")
    names = [str(n).strip() for n in names]
    if not names:
        raise DataError(f"{key} is empty: list the class names, e.g. {key}=[cat,dog]")
    first: dict[str, int] = {}
    for position, name in enumerate(names, 1):
        if not name:
            raise DataError(f"{key}: entry {position} is an empty name")
        if name in first:
            raise DataError(f"{key} lists {name!r} twice (entries {first[name]} and {position})")
        first[name] = position
    return ClassList(synsets=tuple(names), names=tuple(names))
