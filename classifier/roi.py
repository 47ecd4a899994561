"""``classifier.mode=roi``: Fast R-CNN style region classification on a shared feature map.

Warp mode (R-CNN, the 2014 entry) runs the whole network once per region.  RoI mode
runs the trunk once per image and pools every region from that map (Girshick,
"Fast R-CNN", ICCV 2015)::

    image, short side resized to image_size
      -> trunk: stem .. inception4e                  (1, C4e, ~H/16, ~W/16)   once per image
      -> torchvision.ops.roi_align(P x P, 1/16)      (R, C4e, P, P)           per region
      -> maxpool4 (3x3/2, ceil) -> 5a -> 5b          (R, C5b, ceil(P/2)^2)
      -> head: average pool, dropout, linear         (R, C + 1) logits

Geometry: inception4e has nominal stride 16 (`classifier.googlenet.LAYER_STRIDES`), so a
region in resized-image pixels maps onto the 4e map with ``spatial_scale = 1/16``.  The
default pool size ``P`` is the side of the 4e map of one warped window,
``map_sizes(input_size)[16]`` (14 at the paper's 224 px, 4 at 64 px), so the layers after
the pooling see exactly the shapes they see in warp mode (maxpool4 -> 7x7 at 224 px) and
one set of weights serves both modes.  With ``aligned=True`` pixel ``x`` sits at map
coordinate ``x/16 - 0.5``, so map cell ``j`` is centred on pixel ``16 j + 8``.  For a box
covering a whole ``input_size`` square image each of the P x P bins is then exactly one
map cell, and with ``sampling_ratio=1`` its one sample lands on the cell centre: RoI
mode reproduces the full-window forward pass exactly (`tests/test_roi.py` pins this).
A smaller ``pool_size`` makes the per-region layers cheaper (5a/5b run on a
``ceil(P/2)``-square map) at some cost in spatial detail.

The per-region part (maxpool4 .. linear, ~8% of a window's multiply-adds at 224 px:
Table 1's 5a + 5b + linear rows) is what RoI mode pays per region, against the whole
network per region in warp mode.

The auxiliary heads (after 4a and 4d) are not used in this mode: those layers run per
image, before there are regions to classify.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import clip_boxes_to_image, roi_align

from classifier.googlenet import LAYER_STRIDES, map_sizes
from classifier.score import ImageScores, resolve_device, stream_scores
from classifier.warp import context_boxes, normalise_image, valid_regions
from detect.data.record import DetectionDataset
from detect.errors import ConfigError


# Last trunk layer computed once per image; the layers from TAIL_START on run per region.
SHARED_UNTIL = "inception4e"
TAIL_START = "maxpool4"


class RoIClassifier(nn.Module):
    """A region classifier that shares the trunk over all regions of an image.

    Args:
        backbone: a classifier with the trunk API (`classifier.googlenet.TrunkAPI`), as
            `classifier.factory.build_classifier` returns.  RoI mode adds no parameters:
            ``backbone.state_dict()`` is the whole model, interchangeable with warp mode's.
        pool_size: side ``P`` of the ``roi_align`` output; None = ``map_sizes(backbone.input_size)[16]``
            (the 4e map of one warped window; see the module docstring).
        sampling_ratio: bilinear samples per bin side (Detectron uses 2; 1 = the bin centre).

    ``forward(images (B, 3, H, W), rois (R, 5))``, rows ``(batch_index, x1, y1, x2, y2)`` in
    pixels of ``images`` -> logits ``(R, num_classes)``.
    """

    def __init__(self, backbone: nn.Module, *, pool_size: int | None = None, sampling_ratio: int = 2) -> None:
        super().__init__()
        if pool_size is None:
            pool_size = map_sizes(backbone.input_size)[16]
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigError(f"classifier roi pool_size must be a positive integer or null, got {pool_size!r}")
        if not isinstance(sampling_ratio, int) or sampling_ratio < 1:
            raise ConfigError(f"classifier roi sampling_ratio must be a positive integer, got {sampling_ratio!r}")
        self.backbone = backbone
        self.pool_size = pool_size
        self.sampling_ratio = sampling_ratio
        self.spatial_scale = 1.0 / LAYER_STRIDES[SHARED_UNTIL]

    @property
    def num_classes(self) -> int:
        return int(self.backbone.num_classes)

    @property
    def input_size(self) -> int:
        """The backbone's window size (sets the default pool size and the context padding scale)."""
        return int(self.backbone.input_size)

    def image_features(self, images: Tensor) -> Tensor:
        """Shared stride-16 map ``(B, C4e, ~H/16, ~W/16)`` of normalised images ``(B, 3, H, W)``."""
        return self.backbone.trunk(images, until=SHARED_UNTIL)

    def pool(self, features: Tensor, rois: Tensor) -> Tensor:
        """``(R, C4e, P, P)`` features of ``rois (R, 5)`` (batch index, xyxy image pixels)."""
        return roi_align(features, rois.to(features.dtype), output_size=self.pool_size,
                         spatial_scale=self.spatial_scale, sampling_ratio=self.sampling_ratio, aligned=True)

    def tail(self, pooled: Tensor) -> Tensor:
        """The per-region layers maxpool4 .. inception5b: ``(R, C5b, ceil(P/2), ceil(P/2))``."""
        return self.backbone.trunk(pooled, start=TAIL_START)

    def region_logits(self, features: Tensor, rois: Tensor) -> Tensor:
        """Logits ``(R, num_classes)`` of ``rois`` on shared ``features``."""
        return self.backbone.head(self.tail(self.pool(features, rois)))

    def forward(self, images: Tensor, rois: Tensor) -> Tensor:
        return self.region_logits(self.image_features(images), rois)


def resize_shape(height: int, width: int, *, image_size: int, max_size: int | None) -> tuple[int, int]:
    """``(new_height, new_width)``: short side ``image_size``, long side at most ``max_size`` (None: no cap)."""
    if not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"classifier roi image_size must be a positive integer, got {image_size!r}")
    if max_size is not None and (not isinstance(max_size, int) or max_size < image_size):
        raise ConfigError(f"classifier roi max_size must be null or an integer >= image_size, got {max_size!r}")
    s = image_size / min(height, width)
    if max_size is not None and max(height, width) * s > max_size:
        s = max_size / max(height, width)
    return max(1, round(height * s)), max(1, round(width * s))


def resize_image_and_boxes(
    image: np.ndarray, boxes: np.ndarray, *, image_size: int, max_size: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``image (H, W, 3)`` uint8 per `resize_shape` and scale ``boxes (N, 4)`` xyxy with it.

    Per-axis factors (``W'/W``, ``H'/H``), so the image edges map to the new edges.
    Returns ``(resized (H', W', 3) uint8, float64 (N, 4) xyxy in resized pixels)``.
    """
    import cv2

    h, w = image.shape[:2]
    nh, nw = resize_shape(h, w, image_size=image_size, max_size=max_size)
    if (nh, nw) != (h, w):
        # INTER_AREA when shrinking avoids aliasing; it blurs when enlarging, where LINEAR does not
        interp = cv2.INTER_AREA if nh * nw < h * w else cv2.INTER_LINEAR
        image = cv2.resize(image, (nw, nh), interpolation=interp)
    scale = np.array([nw / w, nh / h, nw / w, nh / h])
    return image, np.asarray(boxes, np.float64).reshape(-1, 4) * scale


def image_to_tensor(image: np.ndarray, *, pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> Tensor:
    """``(H, W, 3)`` uint8 RGB -> ``(1, 3, H, W)`` float32, normalised as warp mode's windows."""
    x = normalise_image(image, pixel_mean=pixel_mean, pixel_std=pixel_std)
    return torch.from_numpy(x).permute(2, 0, 1)[None].contiguous()


def region_rois(boxes: np.ndarray, *, height: int, width: int, input_size: int, context_pad: float,
                batch_index: int = 0) -> Tensor:
    """``roi_align`` rows ``(N, 5)`` = ``(batch_index, x1, y1, x2, y2)`` for ``boxes (N, 4)`` xyxy
    in the pixels of a ``height x width`` image.

    Boxes get warp mode's context (`classifier.warp.context_boxes`: ``context_pad`` px on
    each side of an ``input_size`` window) and are then clipped to the image: context
    beyond the border is dropped (warp mode fills it with the mean pixel, which has no
    counterpart on a feature map).
    """
    big = torch.from_numpy(context_boxes(boxes, input_size=input_size, context_pad=context_pad)).float()
    big = clip_boxes_to_image(big, (height, width))
    return torch.cat([torch.full((len(big), 1), float(batch_index)), big], dim=1)


def score_regions_roi(
    model: RoIClassifier,
    image: np.ndarray,
    boxes: np.ndarray,
    *,
    batch_size: int,
    image_size: int,
    max_size: int | None,
    context_pad: float,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    device: str | torch.device = "cpu",
    amp: bool = False,
    channels_last: bool = False,
    features: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Softmax class probabilities of every region of one image, RoI mode.

    Args:
        model: the RoI classifier (put in eval mode here).
        image: ``(H, W, 3)`` uint8 RGB.
        boxes: ``(R, 4)`` xyxy regions in ``image`` pixels.
        batch_size: regions per pass of the per-region layers.
        image_size, max_size: the image is resized to short side ``image_size``
            (long side at most ``max_size``) before the trunk; boxes with it.
        context_pad: px of context per side at the window scale, as in warp mode (`region_rois`).
        pixel_mean, pixel_std: RGB normalisation in ``[0, 1]`` units.
        device, amp, channels_last, features: as `classifier.score.score_regions`
            (features: the pooled 5b vector of each region).

    Returns:
        float32 ``(R, C + 1)`` (column 0 = background); with ``features`` also ``(R, D)``.
        Rows match ``boxes``; degenerate regions (zero size, NaN, outside the image) are
        not classified and get ``[1, 0, ..., 0]`` (features 0), as in warp mode.
    """
    scores, feats, _ = _score_roi(model, image, boxes, batch_size=batch_size, image_size=image_size,
                                  max_size=max_size, context_pad=context_pad, pixel_mean=pixel_mean,
                                  pixel_std=pixel_std, device=device, amp=amp, channels_last=channels_last,
                                  features=features)
    return (scores, feats) if features else scores


def _score_roi(model, image, boxes, *, batch_size, image_size, max_size, context_pad, pixel_mean, pixel_std,
               device, amp, channels_last, features) -> tuple[np.ndarray, np.ndarray | None, int]:
    if batch_size < 1:
        raise ConfigError(f"classifier score batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ok = np.flatnonzero(valid_regions(boxes, width=image.shape[1], height=image.shape[0]))
    scores = np.zeros((len(boxes), model.num_classes), np.float32)
    scores[:, 0] = 1.0
    feature_array = np.zeros((len(boxes), int(model.backbone.feature_dim)), np.float32) if features else None
    if len(ok) == 0:
        return scores, feature_array, len(boxes)
    resized, scaled = resize_image_and_boxes(image, boxes[ok], image_size=image_size, max_size=max_size)
    h, w = resized.shape[:2]
    rois = region_rois(scaled, height=h, width=w, input_size=model.input_size, context_pad=context_pad).to(dev)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp and dev.type == "cuda" else contextlib.nullcontext()
    was_training = model.training
    model.to(dev, memory_format=memory_format).eval()  # same layout whether trained here or loaded (score.py)
    probs, feats = [], []
    try:
        with torch.inference_mode(), autocast:
            x = image_to_tensor(resized, pixel_mean=pixel_mean, pixel_std=pixel_std)
            shared = model.image_features(x.to(dev).contiguous(memory_format=memory_format))
            for a in range(0, len(rois), batch_size):
                fmap = model.tail(model.pool(shared, rois[a : a + batch_size]))
                probs.append(torch.softmax(model.backbone.head(fmap).float(), dim=1).cpu())
                if features:
                    feats.append(torch.flatten(model.backbone.avgpool(fmap), 1).float().cpu())
    finally:
        model.train(was_training)
    scores[ok] = torch.cat(probs).numpy()
    if features:
        feature_array[ok] = torch.cat(feats).numpy()
    return scores, feature_array, len(boxes) - len(ok)


def score_dataset_roi(
    model: RoIClassifier,
    dataset: DetectionDataset,
    proposals: Sequence[np.ndarray],
    *,
    batch_size: int,
    image_size: int,
    max_size: int | None,
    context_pad: float,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    device: str | torch.device = "cpu",
    amp: bool = False,
    channels_last: bool = False,
    features: bool = False,
) -> Iterator[ImageScores]:
    """RoI-mode `classifier.score.score_dataset`: yield `ImageScores` per record, in order.

    ``proposals[i]`` is the ``(P_i, 4)`` xyxy array of record ``i``; other arguments as
    `score_regions_roi`.  Skipped degenerate regions are counted in a warning at the end.
    """
    score_image = partial(_score_roi, model, batch_size=batch_size, image_size=image_size, max_size=max_size,
                          context_pad=context_pad, pixel_mean=pixel_mean, pixel_std=pixel_std, device=device,
                          amp=amp, channels_last=channels_last, features=features)
    yield from stream_scores(dataset, proposals, score_image, desc="classifier: score (roi)")


__all__ = [
    "RoIClassifier",
    "image_to_tensor",
    "region_rois",
    "resize_image_and_boxes",
    "resize_shape",
    "score_dataset_roi",
    "score_regions_roi",
]
