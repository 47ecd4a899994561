"""One image through the detector: proposals -> each member's scores -> average -> class-wise NMS.

``detect.run`` runs these steps stage by stage over a whole split (with caches in between);
``detect.predict``, `detect.Detector` and ``detect.export`` run them image by image.  Both go
through the functions here and the per-image pieces they call, so the same image gives the
same detections either way (``tests/test_predict.py`` checks it against ``detections.txt``):

* proposals: each source's ``source(image)`` normalised by `proposals.cache.as_boxes_scores`
  (what `proposals.extract` caches), merged by `proposals.merge.merge_proposals` (what
  `proposals.merge.merge_split` runs per image);
* members: `detect.members.region_scorer` (what `detect.members.score_member` streams a split
  through) and `detect.members.post_scores` (SVMs, box regression);
* ensemble: `region_detections` (average + `detect.postprocess.image_detections`), and over a
  split `split_detections` (the per-class cap), both called by `detect.pipeline`.

Boxes are float xyxy pixels of the decoded image throughout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from classifier.bbox_reg import BboxRegressor
from classifier.svm import SvmModel
from detect.ensemble import EnsembleSettings
from detect.members import ScoreImage, post_scores
from detect.postprocess import average_member_scores, cap_per_class, image_detections
from eval.submission import Submission
from proposals.cache import as_boxes_scores
from proposals.merge import merge_proposals

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (D, 4) xyxy, scores (D,), labels (D,) in 1..C


@dataclass(frozen=True)
class MergeSettings:
    """How the sources' boxes become the classified set (``proposals.merge.*``)."""

    iou: float
    max_per_image: int | None
    order: str = "priority"
    snap_iou: float | None = None


def source_proposals(image: np.ndarray, sources: Mapping[str, Any],
                     seconds: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Each source's float32 ``(N_s, 4)`` xyxy boxes on ``image`` ``(H, W, 3)`` uint8 RGB, in ``sources`` order.

    ``sources`` is ordered as `detect.proposal_stage.build_sources` orders it (MultiBox first);
    each call's wall time is added to ``seconds[name]``.
    """
    out = {}
    for name, source in sources.items():
        t0 = time.perf_counter()
        out[name] = as_boxes_scores(source(image))[0]
        if seconds is not None:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
    return out


def merged_proposals(per_source: Mapping[str, np.ndarray], merge: MergeSettings) -> np.ndarray:
    """The classified proposals of one image: float32 ``(P, 4)`` xyxy (`proposals.merge.merge_proposals`)."""
    return merge_proposals(list(per_source.values()), iou_threshold=merge.iou, max_boxes=merge.max_per_image,
                           order=merge.order, snap_iou=merge.snap_iou)[0]


@dataclass
class Member:
    """One ensemble member at inference: its per-image scorer and optional post-classifiers.

    ``member(image, boxes (R, 4))`` -> ``(scores float32 (R, C + 1), refined (R, C, 4) xyxy or None)``.
    """

    name: str
    score_image: ScoreImage
    svm: SvmModel | None = None
    bbox_reg: BboxRegressor | None = None

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        scores, features, _ = self.score_image(image, boxes)
        if self.svm is None and self.bbox_reg is None:
            return scores, None
        return post_scores(scores, features, boxes, width=image.shape[1], height=image.shape[0], svm=self.svm,
                           bbox_reg=self.bbox_reg)


def region_detections(member_boxes: Sequence[np.ndarray], member_scores: Sequence[np.ndarray],
                      settings: EnsembleSettings) -> Detections:
    """The ensemble's detections of one image from its members' outputs on the same R regions.

    ``member_boxes[m]``: ``(R, 4)`` xyxy regions, or ``(R, C, 4)`` per-class boxes after box
    regression (averaged over members); ``member_scores[m]``: ``(R, C + 1)`` (averaged,
    `average_member_scores`).  Then class-wise NMS, score threshold and per-image cap
    (`detect.postprocess.image_detections`).  Returns ``(boxes float32 (D, 4) xyxy, scores
    float32 (D,), labels int64 (D,) in 1..C)``, by descending score.
    """
    scores = average_member_scores(member_scores)
    boxes = np.mean(list(member_boxes), axis=0)
    return image_detections(boxes, scores, nms_iou=settings.nms_iou, score_threshold=settings.score_threshold,
                            max_per_image=settings.max_per_image, box_voting_iou=settings.box_voting_iou)


def split_detections(per_image: Sequence[Detections], image_indices: Sequence[int], *,
                     max_per_class: int) -> Submission:
    """The detections of a split as one `Submission`: images' `region_detections` concatenated in order,
    then each class's ``max_per_class`` best kept (R-CNN's split-level cap).  ``image_indices[i]``:
    the 1-based image index of ``per_image[i]``."""
    parts = [(np.full(len(s), index, np.int64), lab, s, b) for (b, s, lab), index in zip(per_image, image_indices)]
    image_index = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    class_id = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    score = np.concatenate([p[2] for p in parts]).astype(np.float64) if parts else np.zeros(0)
    boxes = np.concatenate([p[3] for p in parts]).astype(np.float64) if parts else np.zeros((0, 4))
    keep = cap_per_class(score, class_id, max_per_class=max_per_class)
    return Submission(image_index[keep], class_id[keep], score[keep], boxes[keep], np.arange(len(keep)) + 1)


@dataclass
class ImageResult:
    """`detect_image`'s output: the detections, the number of classified proposals, seconds per stage."""

    boxes: np.ndarray  # float32 (D, 4) xyxy
    scores: np.ndarray  # float32 (D,)
    labels: np.ndarray  # int64 (D,) in 1..C
    num_proposals: int
    seconds: dict[str, float] = field(default_factory=dict)


def score_regions(image: np.ndarray, boxes: np.ndarray, members: Sequence[Member], settings: EnsembleSettings,
                  seconds: dict[str, float]) -> Detections:
    """Each member's scores of ``boxes`` on ``image`` -> average -> NMS (`region_detections`)."""
    member_scores, member_boxes = [], []
    for member in members:
        t0 = time.perf_counter()
        scores, refined = member(image, boxes)
        seconds[member.name] = seconds.get(member.name, 0.0) + time.perf_counter() - t0
        member_scores.append(scores)
        member_boxes.append(refined if refined is not None else boxes)
    t0 = time.perf_counter()
    out = region_detections(member_boxes, member_scores, settings)
    seconds["ensemble"] = seconds.get("ensemble", 0.0) + time.perf_counter() - t0
    return out


def detect_image(
    image: np.ndarray, *, sources: Mapping[str, Any], members: Sequence[Member], merge: MergeSettings,
    settings: EnsembleSettings, per_source: Mapping[str, np.ndarray] | None = None,
    seconds: dict[str, float] | None = None,
) -> ImageResult:
    """Detections of one ``(H, W, 3)`` uint8 RGB image: proposals of every source, merged, scored by
    every member, averaged, class-wise NMS.

    ``per_source``: the sources' boxes when they were computed elsewhere (proposal worker
    processes); ``seconds``: stage times already measured for this image (added to).
    """
    seconds = dict(seconds or {})
    if per_source is None:
        per_source = source_proposals(image, sources, seconds)
    t0 = time.perf_counter()
    boxes = merged_proposals(per_source, merge)
    seconds["merge"] = seconds.get("merge", 0.0) + time.perf_counter() - t0
    b, s, lab = score_regions(image, boxes, members, settings, seconds)
    return ImageResult(b, s, lab, len(boxes), seconds)
