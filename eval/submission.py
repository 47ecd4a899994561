"""ILSVRC DET submission files: ``<image_index> <class_id> <confidence> <xmin> <ymin> <xmax> <ymax>``.

One detection per line, whitespace separated; image index 1-based in the split
list's order, class id 1-based as in ``map_det.txt``.  Blank lines and lines
whose first non-blank character is ``#`` are skipped (the official devkit has
no comments; skipping them is harmless and lets tools annotate files).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detect import atomic
from detect.data.record import outside_image
from detect.errors import UserError, read_user_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    """Parallel arrays, one entry per detection, in file order.

    image_index int64 ``(D,)`` (1-based), class_id int64 ``(D,)`` (1-based),
    score float64 ``(D,)``, boxes float64 ``(D, 4)`` xyxy, line int64 ``(D,)``
    (1-based line number in the file, for error messages).
    """

    image_index: np.ndarray
    class_id: np.ndarray
    score: np.ndarray
    boxes: np.ndarray
    line: np.ndarray

    def __len__(self) -> int:
        return len(self.score)


def _first_bad_line(path: Path, lines: list[str], numbers: list[int]) -> None:
    """Raise a one-line `UserError` for the first malformed line (slow path, only on error)."""
    for text, lineno in zip(lines, numbers):
        parts = text.split()
        if len(parts) != 7:
            raise UserError(f"{path}:{lineno}: expected 7 columns '<image_index> <class_id> <confidence> "
                            f"<xmin> <ymin> <xmax> <ymax>', got {len(parts)}")
        for name, value in zip(("image_index", "class_id"), parts[:2]):
            try:
                int(value)
            except ValueError:
                raise UserError(f"{path}:{lineno}: {name} {value!r} is not an integer") from None
        for name, value in zip(("confidence", "xmin", "ymin", "xmax", "ymax"), parts[2:]):
            try:
                float(value)
            except ValueError:
                raise UserError(f"{path}:{lineno}: {name} {value!r} is not a number") from None
    raise UserError(f"{path}: cannot parse the file")  # unreachable unless numpy and Python disagree


def read_submission(path: Path | str) -> Submission:
    """Parse a submission file. Raises `UserError` ("FILE:LINE: problem") on any malformed line."""
    path = Path(path)
    raw = read_user_file(path, "submission file", error=UserError)
    lines, numbers = [], []
    for lineno, text in enumerate(raw.splitlines(), 1):
        stripped = text.strip()
        if stripped and not stripped.startswith("#"):
            lines.append(stripped)
            numbers.append(lineno)
    if not lines:
        empty = np.zeros((0,), np.int64)
        return Submission(empty, empty.copy(), np.zeros((0,), np.float64), np.zeros((0, 4), np.float64), empty.copy())
    try:
        table = np.loadtxt(io.StringIO("\n".join(lines)), dtype=np.float64, ndmin=2)
    except ValueError:
        _first_bad_line(path, lines, numbers)
    if table.shape[1] != 7:
        _first_bad_line(path, lines, numbers)
    line = np.asarray(numbers, np.int64)
    ids = table[:, :2]
    not_int = np.nonzero(ids != np.round(ids))[0]
    if len(not_int):
        raise UserError(f"{path}:{line[not_int[0]]}: image_index and class_id must be integers")
    score = table[:, 2]
    bad = np.nonzero(~np.isfinite(table[:, 2:]).all(1))[0]
    if len(bad):
        what = "confidence" if not np.isfinite(score[bad[0]]) else "box coordinate"
        raise UserError(f"{path}:{line[bad[0]]}: {what} is NaN or infinite")
    return Submission(
        image_index=ids[:, 0].astype(np.int64),
        class_id=ids[:, 1].astype(np.int64),
        score=score.copy(),
        boxes=table[:, 3:7].copy(),
        line=line,
    )


def validate_submission(
    sub: Submission, *, path: Path | str, num_images: int, num_classes: int,
    image_sizes: np.ndarray | None = None, listed: np.ndarray | None = None,
) -> dict[str, int]:
    """Check ids against the split; count (and log) boxes the devkit accepts but that cannot match.

    Args:
        image_sizes: optional int ``(num_images, 2)`` ``(width, height)`` by image index - 1,
            to count boxes extending outside their image.
        listed: optional bool ``(num_images,)`` by image index - 1: the split list holds that
            index (a list's indices may have gaps, e.g. R-CNN's val1/val2 halves of val).
    Returns:
        counts ``{"inverted_boxes": n, "out_of_image_boxes": n}``.
    Raises:
        UserError naming the file and the first offending line.
    """
    bad = np.nonzero((sub.image_index < 1) | (sub.image_index > num_images))[0]
    if len(bad):
        raise UserError(f"{path}:{sub.line[bad[0]]}: image index {sub.image_index[bad[0]]} "
                        f"is out of range 1..{num_images}")
    if listed is not None:
        bad = np.nonzero(~np.asarray(listed, bool)[sub.image_index - 1])[0]
        if len(bad):
            raise UserError(f"{path}:{sub.line[bad[0]]}: image index {sub.image_index[bad[0]]} is not in the "
                            f"split list ({int(np.sum(listed))} images with indices 1..{num_images}, with gaps)")
    bad = np.nonzero((sub.class_id < 1) | (sub.class_id > num_classes))[0]
    if len(bad):
        raise UserError(f"{path}:{sub.line[bad[0]]}: unknown class id {sub.class_id[bad[0]]} "
                        f"(classes are 1..{num_classes})")
    b = sub.boxes
    inverted = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    counts = {"inverted_boxes": int(inverted.sum()), "out_of_image_boxes": 0}
    if image_sizes is not None and len(b):
        wh = image_sizes[sub.image_index - 1]
        outside = outside_image(b, wh[:, 0], wh[:, 1])  # the readers' image extent [0, W] x [0, H]
        counts["out_of_image_boxes"] = int((outside & ~inverted).sum())
    if counts["inverted_boxes"]:
        log.warning("%s: %d inverted boxes (xmax < xmin or ymax < ymin) accepted as the devkit does; "
                    "inverted by more than a pixel, a box cannot match",
                    path, counts["inverted_boxes"])
    if counts["out_of_image_boxes"]:
        log.warning("%s: %d boxes extend outside their image; accepted as the devkit does (not clipped)",
                    path, counts["out_of_image_boxes"])
    if len(sub) == 0:
        log.warning("%s: no detections; every AP is 0", path)
    return counts


def write_submission(
    path: Path | str, image_index: np.ndarray, class_id: np.ndarray, score: np.ndarray, boxes: np.ndarray
) -> None:
    """Write detections atomically in the ILSVRC format (boxes xyxy, 2 decimals; scores 6 digits)."""
    buf = io.StringIO()
    for i, c, s, b in zip(image_index, class_id, score, np.asarray(boxes, np.float64)):
        buf.write(f"{int(i)} {int(c)} {float(s):.6f} {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f}\n")
    atomic.write_text(path, buf.getvalue())
