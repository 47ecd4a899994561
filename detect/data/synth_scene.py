"""Scenes of the synthetic dataset: shape classes, textures, cluttered backgrounds, one image at a time.

`render_sample(params, split, index)` draws one image and its annotation from a
``numpy`` Generator seeded by ``(seed, split, index)`` only, so image ``i`` is
the same whatever the split size, and files are reproducible byte for byte.
`detect.data.synth` explains the design and writes the files.

Geometry: every shape is a set of polygons in local coordinates ``[-1, 1]^2``
(y down), mapped to the image by ``center + A @ (u, v)`` with
``A = rotate . shear . scale``; textures are functions of ``(u, v)``, so they
turn, shear and shrink with the object.  Pixel centres sit at integer
coordinates (OpenCV's convention); boxes are inclusive 0-based pixel indices.
"""

from __future__ import annotations

import colorsys
import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from detect.data.synth import GeneratorParams

# An object counts as truncated / occluded when it loses more than this share of its area.
_FLAG_TOLERANCE = 0.03

TEXTURES = ("stripes", "checker", "dots", "shaded")


# --------------------------------------------------------------------------- shapes

def _ngon(n: int, radius: float = 1.0, cx: float = 0.0, cy: float = 0.0, phase: float = -math.pi / 2) -> np.ndarray:
    a = phase + np.arange(n) * (2 * math.pi / n)
    return np.stack([cx + radius * np.cos(a), cy + radius * np.sin(a)], 1)


def _star(points: int, inner: float) -> np.ndarray:
    outer = _ngon(2 * points)
    outer[1::2] *= inner
    return outer


def _cross(arm: float) -> np.ndarray:
    a = arm
    return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1],
                     [-a, a], [-1, a], [-1, -a], [-a, -a]], float)


def _square(half: float) -> np.ndarray:
    return np.array([[-half, -half], [half, -half], [half, half], [-half, half]], float)


# Shape families in local coordinates [-1, 1]^2 (y down): polygons with fill 1 (solid) or 0 (hole),
# drawn in order.  A circle is a 40-gon: smooth at the <= 170 px sizes drawn here.
SHAPES: dict[str, tuple[tuple[np.ndarray, int], ...]] = {
    "disc": ((_ngon(40), 1),),
    "ring": ((_ngon(40), 1), (_ngon(40, 0.55), 0)),
    "triangle": ((np.array([[0.0, -1.0], [1.0, 0.85], [-1.0, 0.85]]), 1),),
    "star": ((_star(5, 0.45), 1),),
    "cross": ((_cross(0.3), 1),),
    "crescent": ((_ngon(40), 1), (_ngon(40, 0.8, 0.45, -0.2), 0)),
    "frame": ((_square(1.0), 1), (_square(0.5), 0)),
    "hexagon": ((_ngon(6, phase=0.0), 1),),
    # Distractor-only families (no class uses them).
    "arrow": ((np.array([[-1, -0.25], [0.2, -0.25], [0.2, -0.7], [1, 0], [0.2, 0.7], [0.2, 0.25],
                         [-1, 0.25]], float), 1),),
    "bar": ((_square(1.0), 1),),
    "half_disc": ((np.concatenate([_ngon(40)[10:31], [[0.0, 0.0]]]), 1),),
}
DISTRACTOR_SHAPES = ("arrow", "bar", "half_disc", "blob")


@dataclass(frozen=True)
class ObjectClass:
    """One class: a shape family, a texture and the mean hue (degrees) its colours are drawn around."""

    synset: str
    name: str
    shape: str
    texture: str
    hue: float


# Each shape in <= 2 classes, each texture in 3, hue means 30 degrees apart (less than 2 * hue_std):
# no single cue separates the classes.  Synsets are made up (n9xxxxxxx is not a WordNet id).
CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("n90000001", "striped_disc", "disc", "stripes", 0.0),
    ObjectClass("n90000002", "checkered_disc", "disc", "checker", 180.0),
    ObjectClass("n90000003", "dotted_ring", "ring", "dots", 30.0),
    ObjectClass("n90000004", "shaded_ring", "ring", "shaded", 210.0),
    ObjectClass("n90000005", "striped_triangle", "triangle", "stripes", 60.0),
    ObjectClass("n90000006", "dotted_triangle", "triangle", "dots", 240.0),
    ObjectClass("n90000007", "checkered_star", "star", "checker", 90.0),
    ObjectClass("n90000008", "shaded_star", "star", "shaded", 270.0),
    ObjectClass("n90000009", "dotted_cross", "cross", "dots", 120.0),
    ObjectClass("n90000010", "striped_crescent", "crescent", "stripes", 300.0),
    ObjectClass("n90000011", "checkered_frame", "frame", "checker", 150.0),
    ObjectClass("n90000012", "shaded_hexagon", "hexagon", "shaded", 330.0),
)


def _hard_distractor_pairs(classes: tuple[ObjectClass, ...]) -> list[tuple[str, str]]:
    """(class shape, texture) pairs that no class uses: look like objects, are not."""
    used = {(c.shape, c.texture) for c in classes}
    return [(s, t) for s in dict.fromkeys(c.shape for c in classes) for t in TEXTURES if (s, t) not in used]


def _blob(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(6, 11))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = rng.uniform(0.45, 1.0, n)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)


def _polygons(shape: str, rng: np.random.Generator) -> tuple[tuple[np.ndarray, int], ...]:
    return ((_blob(rng), 1),) if shape == "blob" else SHAPES[shape]


# --------------------------------------------------------------------------- rendering

def _affine(half_w: float, half_h: float, rotation_deg: float, shear: float) -> np.ndarray:
    """2x2 map from local shape coordinates to image pixel offsets: rotate . shear . scale."""
    t = math.radians(rotation_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([half_w, half_h])


def _extent(polys, a: np.ndarray) -> tuple[float, float, float, float]:
    """(min x, min y, max x, max y) of the solid polygons mapped by ``a`` around the origin."""
    pts = np.concatenate([p for p, fill in polys if fill]) @ a.T
    return pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()


def _rasterize(polys, a: np.ndarray, center: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Anti-aliased coverage in [0, 1] of the shape on its own canvas, and the canvas origin (x0, y0).

    Pixel ``(row, col)`` of the canvas is image pixel ``(y0 + row, x0 + col)``;
    pixel centres sit at integer coordinates (OpenCV's convention).
    """
    x_lo, y_lo, x_hi, y_hi = _extent(polys, a)
    x0, y0 = int(math.floor(center[0] + x_lo)) - 1, int(math.floor(center[1] + y_lo)) - 1
    x1, y1 = int(math.ceil(center[0] + x_hi)) + 2, int(math.ceil(center[1] + y_hi)) + 2
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for poly, fill in polys:
        pts = poly @ a.T + center - (x0, y0)
        # 4 fractional bits: sub-pixel vertex positions, so tiny shapes keep their form.
        cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], 255 * fill, lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0, x0, y0


@dataclass(frozen=True)
class _Crop:
    """The part of a rasterized shape that lies inside the image."""

    alpha: np.ndarray  # (h, w) float32 coverage
    rows: slice
    cols: slice
    full_area: int  # pixels with coverage >= 0.5 on the whole canvas
    area: int  # ... inside the image


def _crop(alpha: np.ndarray, x0: int, y0: int, height: int, width: int) -> _Crop | None:
    ch, cw = alpha.shape
    r0, r1 = max(y0, 0), min(y0 + ch, height)
    c0, c1 = max(x0, 0), min(x0 + cw, width)
    full_area = int((alpha >= 0.5).sum())
    if r1 <= r0 or c1 <= c0 or full_area == 0:
        return None
    inside = alpha[r0 - y0:r1 - y0, c0 - x0:c1 - x0]
    return _Crop(inside, slice(r0, r1), slice(c0, c1), full_area, int((inside >= 0.5).sum()))


def _texture(texture: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mix weight in [0, 1] between the two colours at local coordinates ``(u, v)``.

    Periods are relative to the object (2.5-5 across it), so the pattern shrinks
    with the object and fades into a flat mean colour on the smallest ones.
    """
    angle = rng.uniform(0, math.pi)
    ca, sa = math.cos(angle), math.sin(angle)
    pu, pv = u * ca + v * sa, -u * sa + v * ca
    periods = rng.uniform(2.5, 5.0)
    if texture == "stripes":
        wave = np.sin(math.pi * periods * pu + rng.uniform(0, 2 * math.pi))
        return np.clip(0.5 + 2.0 * wave, 0.0, 1.0)
    if texture == "checker":
        wave = np.sin(math.pi * periods * pu + rng.uniform(0, 2 * math.pi)) * np.sin(
            math.pi * periods * pv + rng.uniform(0, 2 * math.pi))
        return np.clip(0.5 + 4.0 * wave, 0.0, 1.0)
    if texture == "dots":
        cells = periods / 2.0 * 1.5  # dot lattice cells per unit length
        fu = (pu * cells + rng.uniform(0, 1)) % 1.0 - 0.5
        fv = (pv * cells + rng.uniform(0, 1)) % 1.0 - 0.5
        radius = rng.uniform(0.22, 0.32)
        return np.clip(0.5 + 8.0 * (radius - np.hypot(fu, fv)), 0.0, 1.0)
    if texture == "shaded":
        return np.clip(0.5 + 0.5 * pu, 0.0, 1.0)
    raise ValueError(f"unknown texture {texture!r}")


def _hsv(hue_deg: float, sat: float, val: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb((hue_deg / 360.0) % 1.0, sat, val), np.float32) * 255.0


def _colour_pair(rng: np.random.Generator, hue: float) -> tuple[np.ndarray, np.ndarray]:
    """A saturated colour and a darker or lighter partner for the texture."""
    c1 = _hsv(hue, rng.uniform(0.4, 1.0), rng.uniform(0.45, 1.0))
    if rng.random() < 0.5:
        c2 = c1 * rng.uniform(0.15, 0.5)
    else:
        c2 = c1 + (255.0 - c1) * rng.uniform(0.5, 0.85)
    return c1, c2


def _paint(image: np.ndarray, crop: _Crop, a: np.ndarray, center: np.ndarray, texture: str,
           colours: tuple[np.ndarray, np.ndarray], opacity: float, rng: np.random.Generator) -> None:
    """Composite a textured, lit shape over ``image`` (float32 (H, W, 3)) in place."""
    ys = np.arange(crop.rows.start, crop.rows.stop, dtype=np.float32) - center[1]
    xs = np.arange(crop.cols.start, crop.cols.stop, dtype=np.float32) - center[0]
    inv = np.linalg.inv(a).astype(np.float32)
    u = inv[0, 0] * xs[None, :] + inv[0, 1] * ys[:, None]
    v = inv[1, 0] * xs[None, :] + inv[1, 1] * ys[:, None]
    t = _texture(texture, u, v, rng)[..., None]
    c1, c2 = colours
    colour = c1 + (c2 - c1) * t
    # A soft light gradient across the object, as under real illumination.
    light_angle = rng.uniform(0, 2 * math.pi)
    colour *= (1.0 + rng.uniform(0.0, 0.25) * (u * math.cos(light_angle) + v * math.sin(light_angle)))[..., None]
    alpha = (crop.alpha * opacity)[..., None]
    region = image[crop.rows, crop.cols]
    region *= 1.0 - alpha
    region += alpha * colour


# --------------------------------------------------------------------------- one image

@dataclass
class SampleObject:
    class_index: int  # 0-based into CLASSES
    box: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax: inclusive 0-based pixel indices
    truncated: bool
    occluded: bool


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    objects: list[SampleObject]
    negative: bool
    write_xml: bool  # False for the negatives that get no XML file at all
    distractors: int


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    # crc32, not hash(): Python salts str hashes per process.
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode("utf-8")), index]))


def _image_size(rng: np.random.Generator, p: GeneratorParams) -> tuple[int, int]:
    long_side = int(rng.integers(p.image_long_side[0], p.image_long_side[1] + 1))
    short_side = max(8, int(round(long_side * rng.uniform(*p.image_aspect))))
    if rng.random() < p.portrait_prob:
        return short_side, long_side
    return long_side, short_side


def _background(rng: np.random.Generator, p: GeneratorParams, height: int, width: int) -> np.ndarray:
    """Float32 (H, W, 3) cluttered background: gradient, colour noise, blobs, textured patches, lines."""
    muted = lambda: _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95))  # noqa: E731
    c0, c1 = muted(), muted()
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle))
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
    image = c0 + (c1 - c0) * ramp[..., None]
    # Low-frequency colour noise: a coarse random grid upsampled.
    grid = rng.normal(0.0, 18.0, (height // 24 + 2, width // 24 + 2, 3)).astype(np.float32)
    image += cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    short = min(height, width)
    layers = (["blob"] * int(rng.integers(p.clutter_blobs[0], p.clutter_blobs[1] + 1))
              + ["texture"] * int(rng.integers(p.clutter_textures[0], p.clutter_textures[1] + 1))
              + ["line"] * int(rng.integers(p.clutter_lines[0], p.clutter_lines[1] + 1)))
    for kind in (layers[i] for i in rng.permutation(len(layers))):
        center = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        if kind == "line":
            half_len = rng.uniform(0.1, 0.6) * max(height, width)
            a = _affine(half_len, rng.uniform(0.4, 1.5), rng.uniform(0, 180), 0.0)
            polys, texture, opacity = SHAPES["bar"], "shaded", rng.uniform(0.5, 1.0)
            colours = (muted(), muted())
        else:
            size = rng.uniform(0.1, 0.9 if kind == "blob" else 0.6) * short
            aspect = math.exp(rng.uniform(-0.7, 0.7))
            a = _affine(size * math.sqrt(aspect) / 2, size / math.sqrt(aspect) / 2, rng.uniform(0, 360), 0.0)
            shape = "blob" if kind == "texture" or rng.random() < 0.5 else "disc"
            polys = _polygons(shape, rng)
            if kind == "blob":
                texture, opacity, colours = "shaded", rng.uniform(0.3, 0.9), (muted(), muted())
            else:
                texture, opacity = TEXTURES[int(rng.integers(0, 3))], rng.uniform(0.5, 1.0)
                colours = _colour_pair(rng, rng.uniform(0, 360))
        alpha, x0, y0 = _rasterize(polys, a, center)
        crop = _crop(alpha, x0, y0, height, width)
        if crop is not None:
            _paint(image, crop, a, center, texture, colours, opacity, rng)
    return image


def _sample_geometry(rng: np.random.Generator, p: GeneratorParams, short: int) -> np.ndarray:
    """Shape matrix: log-uniform size (fraction of the short side) and aspect ratio, rotation, shear."""
    size = math.exp(rng.uniform(math.log(p.object_scale[0]), math.log(p.object_scale[1]))) * short
    aspect = math.exp(rng.uniform(-math.log(p.max_aspect), math.log(p.max_aspect)))
    return _affine(size * math.sqrt(aspect) / 2, size / math.sqrt(aspect) / 2,
                   rng.uniform(-p.max_rotation, p.max_rotation), rng.uniform(-p.max_shear, p.max_shear))


def _sample_center(rng: np.random.Generator, p: GeneratorParams, extent, height: int, width: int,
                   annotated: bool) -> np.ndarray:
    """Centre fully inside the image, or (``truncation_prob``) sticking out across one border."""
    x_lo, y_lo, x_hi, y_hi = extent
    ext_w, ext_h = x_hi - x_lo, y_hi - y_lo

    def inside(lo, hi, size):
        return rng.uniform(-lo, size - 1 - hi) if size - 1 - hi > -lo else rng.uniform(0, size - 1)

    cx, cy = inside(x_lo, x_hi, width), inside(y_lo, y_hi, height)
    if annotated and rng.random() < p.truncation_prob:
        out = rng.uniform(0.1, 0.6)  # share of the extent beyond the border
        side = int(rng.integers(0, 4))
        if side == 0:
            cx = -out * ext_w - x_lo
        elif side == 1:
            cx = width - 1 + out * ext_w - x_hi
        elif side == 2:
            cy = -out * ext_h - y_lo
        else:
            cy = height - 1 + out * ext_h - y_hi
    return np.array([cx, cy])


def render_sample(p: GeneratorParams, split: str, index: int) -> Sample:
    """Draw image ``index`` (1-based) of ``split``: pixels, annotated objects and flags."""
    rng = _image_rng(p.seed, split, index)
    width, height = _image_size(rng, p)
    short = min(width, height)
    classes = CLASSES[:p.num_classes]
    negative = rng.random() < p.negative_fraction
    # Some negatives have no XML at all, which ILSVRC allows.
    write_xml = not (negative and rng.random() < p.missing_xml_fraction)
    weights = np.asarray(p.objects_per_image) / sum(p.objects_per_image)
    n_objects = 0 if negative else 1 + int(rng.choice(len(weights), p=weights))
    n_distractors = int(rng.integers(p.distractors[0], p.distractors[1] + 1))
    hard_pairs = _hard_distractor_pairs(classes)

    image = _background(rng, p, height, width)
    items = [int(c) for c in rng.integers(0, len(classes), n_objects)] + [-1] * n_distractors
    items = [items[i] for i in rng.permutation(len(items))]

    # owner: index of the annotated object on top at each pixel (-1 background, -2 distractor).
    owner = np.full((height, width), -1, np.int32)
    placed: list[dict] = []  # annotated objects: class, box, areas
    n_placed_distractors = 0
    for item in items:
        if item >= 0:
            shape, texture = classes[item].shape, classes[item].texture
            colours = _colour_pair(rng, classes[item].hue + rng.normal(0.0, p.hue_std))
        else:
            if hard_pairs and rng.random() < p.hard_distractor_prob:
                shape, texture = hard_pairs[int(rng.integers(0, len(hard_pairs)))]
            else:
                shape = DISTRACTOR_SHAPES[int(rng.integers(0, len(DISTRACTOR_SHAPES)))]
                texture = TEXTURES[int(rng.integers(0, len(TEXTURES)))]
            colours = _colour_pair(rng, rng.uniform(0, 360))
        polys = _polygons(shape, rng)
        a = _sample_geometry(rng, p, short)
        extent = _extent(polys, a)
        for _ in range(p.placement_tries):
            center = _sample_center(rng, p, extent, height, width, annotated=item >= 0)
            alpha, x0, y0 = _rasterize(polys, a, center)
            crop = _crop(alpha, x0, y0, height, width)
            if crop is None or crop.area == 0:
                continue
            solid = crop.alpha >= 0.5
            if item >= 0:
                if crop.area < p.min_visible_fraction * crop.full_area:
                    continue
                rows, cols = np.nonzero(solid)
                box = (crop.cols.start + int(cols.min()), crop.rows.start + int(rows.min()),
                       crop.cols.start + int(cols.max()), crop.rows.start + int(rows.max()))
                if min(box[2] - box[0], box[3] - box[1]) + 1 < p.min_box_side:
                    continue
            # Would this cover too much of an object placed before?
            covered = owner[crop.rows, crop.cols][solid]
            lost = np.bincount(covered[covered >= 0], minlength=len(placed)) if placed else []
            if any(o["visible"] - n < p.min_visible_fraction * o["full_area"] for o, n in zip(placed, lost)):
                continue
            for o, n in zip(placed, lost):
                o["visible"] -= int(n)
            _paint(image, crop, a, center, texture, colours, 1.0, rng)
            if item >= 0:
                owner[crop.rows, crop.cols][solid] = len(placed)
                placed.append(dict(class_index=item, box=box, full_area=crop.full_area, area=crop.area,
                                   visible=crop.area))
            else:
                owner[crop.rows, crop.cols][solid] = -2
                n_placed_distractors += 1
            break

    noise = rng.uniform(*p.noise_std)
    image += rng.normal(0.0, 1.0, image.shape).astype(np.float32) * noise
    if rng.random() < p.blur_prob:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.0))
    objects = [
        SampleObject(
            class_index=o["class_index"],
            box=o["box"],
            truncated=o["area"] < (1.0 - _FLAG_TOLERANCE) * o["full_area"],
            occluded=o["visible"] < (1.0 - _FLAG_TOLERANCE) * o["area"],
        )
        for o in placed
    ]
    return Sample(np.clip(np.rint(image), 0, 255).astype(np.uint8), objects, negative, write_xml,
                  n_placed_distractors)


def class_mask(class_index: int, size: int = 64) -> np.ndarray:
    """Canonical ``(size, size)`` bool mask of a class's shape (no rotation, shear or aspect change)."""
    a = _affine(size / 2 - 2, size / 2 - 2, 0.0, 0.0)
    alpha, x0, y0 = _rasterize(SHAPES[CLASSES[class_index].shape], a, np.array([size / 2 - 0.5] * 2))
    crop = _crop(alpha, x0, y0, size, size)
    out = np.zeros((size, size), bool)
    out[crop.rows, crop.cols] = crop.alpha >= 0.5
    return out
