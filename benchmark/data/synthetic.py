"""Procedurally generated "captioned shapes": the embedded synthetic dataset of dream-bench.

Every image shows a *main* object (one of 6 shapes, 8 colours, size medium or large, at one of 5
positions) and, with probability 0.5, a *second* small object of a different shape, colour and
position drawn behind it, on one of 4 background colours with a mild vertical "floor" gradient.
The caption is a pure function of the discrete scene attributes, e.g.
``"a large red circle at the top left on a gray background, and a small blue square at the
bottom right"``, so a text-to-image model can in principle reproduce the image from its caption.

Each sample comes with labels (``class`` = shape * 8 + colour of the main object: 48 classes;
``shape``, ``color``, ``size``, ``position``, ``background``, ``count``), a per-pixel segmentation
mask (0 = background, 1 + shape index for object pixels) and a depth map (floor from 9 at the top
row to 3 at the bottom row; objects at a constant depth by size, the nearer object wins).

Rendering is vectorised over chunks of scenes: binary shape masks are evaluated at twice the
output resolution on precomputed coordinate grids and 2x2 average-pooled into per-object
coverages, which are then alpha-composited at the output resolution (anti-aliased edges).
``variant`` re-renders the *same* scenes with a distribution shift for robustness evaluation
(segmentation and depth always describe the underlying scene, identical to ``"clean"``).

Sampling is deterministic: scenes are drawn in blocks of ``BLOCK`` from
``numpy.random.Generator(PCG64([seed, block]))``, so identical ``(n, seed)`` give identical scenes,
``sample_scenes(k, seed)`` is a prefix of ``sample_scenes(n, seed)`` for ``k <= n``, and different
seeds give different scenes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

__all__ = [
    "BACKGROUNDS",
    "BACKGROUND_NAMES",
    "CLASS_NAMES",
    "COLORS",
    "COLOR_NAMES",
    "COUNT_NAMES",
    "LABEL_NAMES",
    "OBJECT_DEPTH",
    "OBJECT_SCALE",
    "POSITIONS",
    "POSITION_CENTERS",
    "SECOND_SIZE",
    "SEG_CLASSES",
    "SHAPES",
    "SIZES",
    "VARIANTS",
    "Scene",
    "SceneObject",
    "SyntheticShapes",
    "caption",
    "caption_corpus",
    "data_tag",
    "flip_caption",
    "flip_scene",
    "floor_depth",
    "parse_caption",
    "render",
    "sample_scenes",
    "scene_labels",
    "shape_twin_scenes",
]

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "diamond")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (45, 90, 235),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "cyan": (40, 215, 225),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SIZES: tuple[str, ...] = ("medium", "large")  # main object; the ``size`` label indexes this
SECOND_SIZE = "small"  # the optional second object is always small
# Version 2 (issue 15): objects 1.3-1.5x larger than version 1's 0.09 / 0.14 / 0.20, so the main object covers
# ~19 % of the pixels instead of ~9 % and its shape spans 3-5 of the tiny preset's 4-px tokens, not 2-3.
OBJECT_SCALE: dict[str, float] = {"small": 0.12, "medium": 0.22, "large": 0.30}  # half-size x image width
OBJECT_DEPTH: dict[str, float] = {"small": 4.0, "medium": 2.5, "large": 1.5}
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right", "center")
POSITION_CENTERS: dict[str, tuple[float, float]] = {  # (x, y) in [0, 1], y pointing down
    "top left": (0.29, 0.29),
    "top right": (0.71, 0.29),
    "bottom left": (0.29, 0.71),
    "bottom right": (0.71, 0.71),
    "center": (0.5, 0.5),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (18, 18, 18),
    "gray": (112, 112, 112),
    "brown": (105, 68, 38),
    "navy": (22, 32, 92),
}
BACKGROUND_NAMES: tuple[str, ...] = tuple(BACKGROUNDS)
COUNT_NAMES: tuple[str, ...] = ("one object", "two objects")
CLASS_NAMES: tuple[str, ...] = tuple(f"{c} {s}" for s in SHAPES for c in COLOR_NAMES)
SEG_CLASSES: tuple[str, ...] = ("background", *SHAPES)  # seg value v -> SEG_CLASSES[v]
LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "class": CLASS_NAMES,
    "shape": SHAPES,
    "color": COLOR_NAMES,
    "size": SIZES,
    "position": POSITIONS,
    "background": BACKGROUND_NAMES,
    "count": COUNT_NAMES,
}
VARIANTS: tuple[str, ...] = ("clean", "noise", "sketch", "blur", "jitter", "occlude")

# The scenes' version: every on-disk cache of synthetic images, features or networks trained on them carries it
# (``data_tag()``), so changing a constant below (object scales, colours, ...) never reuses a stale cache. Bump it then.
VERSION = 2
BLOCK = 1024  # scenes per RNG block (sampling) and per chunk (rendering)
MAIN_JITTER = 0.05  # max offset of the main object's centre from its position centre
SECOND_JITTER = 0.03
SECOND_PROB = 0.5  # probability of the second, small object
SCALE_JITTER = 0.1  # object scale = OBJECT_SCALE[size] x U(1 - j, 1 + j)
DEPTH_JITTER = 0.15
FLOOR_FAR, FLOOR_NEAR = 9.0, 3.0  # floor depth at the top / bottom image row
NOISE_STD = 20.0  # "noise": additive Gaussian pixel noise (0-255 scale)
OCCLUDE_FRACTION = 0.2  # "occlude": area fraction of the gray square patch
OCCLUDE_GRAY = 128.0
SKETCH_INK = 0.75  # "sketch": outline colour = object colour x this (keeps white visible)


def data_tag() -> str:
    """``synthetic-v<VERSION>``: the prefix of every cache key of synthetic data."""
    return f"synthetic-v{VERSION}"


def floor_depth(v: np.ndarray | float) -> np.ndarray | float:
    """Depth of the floor at normalised image height ``v`` (0 = top row, 1 = bottom row).

    Inverse depth is linear in the image row, as for a ground plane seen in perspective.
    """
    return 1.0 / (1.0 / FLOOR_FAR + (1.0 / FLOOR_NEAR - 1.0 / FLOOR_FAR) * np.asarray(v))


# --------------------------------------------------------------------------------------------
# Scenes and captions
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str  # "small" | "medium" | "large"
    position: str
    cx: float  # centre in [0, 1] (x right, y down), position centre + jitter
    cy: float
    scale: float  # half-size as a fraction of the image width, OBJECT_SCALE[size] x jitter
    shade: float  # brightness multiplier of the colour (per-object texture variation)
    depth: float  # constant depth of the object's pixels


@dataclass(frozen=True)
class Scene:
    main: SceneObject
    second: SceneObject | None
    background: str

    @property
    def count(self) -> int:
        return 1 if self.second is None else 2

    @property
    def class_index(self) -> int:
        return SHAPES.index(self.main.shape) * len(COLOR_NAMES) + COLOR_NAMES.index(self.main.color)

    @property
    def objects(self) -> tuple[SceneObject, ...]:
        """Back to front (the main object is drawn last, on top)."""
        return (self.main,) if self.second is None else (self.second, self.main)


def _block_scenes(seed: int, block: int) -> list[Scene]:
    rng = np.random.Generator(np.random.PCG64([seed, block]))
    n = BLOCK
    n_s, n_c, n_p = len(SHAPES), len(COLOR_NAMES), len(POSITIONS)
    shape = rng.integers(0, n_s, n)
    color = rng.integers(0, n_c, n)
    size = rng.integers(0, len(SIZES), n)
    pos = rng.integers(0, n_p, n)
    bg = rng.integers(0, len(BACKGROUND_NAMES), n)
    jit = rng.uniform(-MAIN_JITTER, MAIN_JITTER, (n, 2))
    shade = rng.uniform(0.85, 1.05, n)
    djit = rng.uniform(-DEPTH_JITTER, DEPTH_JITTER, n)
    sjit = rng.uniform(1.0 - SCALE_JITTER, 1.0 + SCALE_JITTER, n)
    has2 = rng.random(n) < SECOND_PROB
    shape2 = (shape + rng.integers(1, n_s, n)) % n_s
    color2 = (color + rng.integers(1, n_c, n)) % n_c
    pos2 = (pos + rng.integers(1, n_p, n)) % n_p
    jit2 = rng.uniform(-SECOND_JITTER, SECOND_JITTER, (n, 2))
    shade2 = rng.uniform(0.85, 1.05, n)
    djit2 = rng.uniform(-DEPTH_JITTER, DEPTH_JITTER, n)
    sjit2 = rng.uniform(1.0 - SCALE_JITTER, 1.0 + SCALE_JITTER, n)

    scenes = []
    for i in range(n):
        size_name = SIZES[size[i]]
        px, py = POSITION_CENTERS[POSITIONS[pos[i]]]
        main = SceneObject(
            shape=SHAPES[shape[i]], color=COLOR_NAMES[color[i]], size=size_name,
            position=POSITIONS[pos[i]], cx=float(px + jit[i, 0]), cy=float(py + jit[i, 1]),
            scale=float(OBJECT_SCALE[size_name] * sjit[i]), shade=float(shade[i]),
            depth=float(OBJECT_DEPTH[size_name] + djit[i]),
        )
        second = None
        if has2[i]:
            px, py = POSITION_CENTERS[POSITIONS[pos2[i]]]
            cx, cy = float(px + jit2[i, 0]), float(py + jit2[i, 1])
            # A small object stands on the floor: keep it in front of the floor behind its base
            # (the floor comes as near as 3.0 at the bottom row; always behind the main object).
            scale = float(OBJECT_SCALE[SECOND_SIZE] * sjit2[i])
            base = min(1.0, cy + scale)
            depth = min(OBJECT_DEPTH[SECOND_SIZE] + float(djit2[i]), 0.95 * float(floor_depth(base)))
            second = SceneObject(
                shape=SHAPES[shape2[i]], color=COLOR_NAMES[color2[i]], size=SECOND_SIZE,
                position=POSITIONS[pos2[i]], cx=cx, cy=cy, scale=scale, shade=float(shade2[i]), depth=depth,
            )
        scenes.append(Scene(main=main, second=second, background=BACKGROUND_NAMES[bg[i]]))
    return scenes


def sample_scenes(n: int, seed: int) -> list[Scene]:
    """``n`` random scenes, a deterministic function of ``(n, seed)`` (prefix-stable in ``n``)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out: list[Scene] = []
    for block in range(-(-n // BLOCK)):
        out.extend(_block_scenes(seed, block))
    return out[:n]


def shape_twin_scenes(n_pairs: int, seed: int) -> list[Scene]:
    """``2 * n_pairs`` scenes: ``sample_scenes(n_pairs, seed)`` with, after each, its *shape twin*.

    The twin is the same scene (colours, sizes, positions, jitter, background, second object) with the main object's
    shape replaced by another one, drawn uniformly among the shapes that neither object has: the two captions differ
    in one word, and so do the images, only where the main object is.
    """
    scenes = sample_scenes(n_pairs, seed)
    rng = np.random.Generator(np.random.PCG64([seed, 0x7717]))
    out: list[Scene] = []
    for s, u in zip(scenes, rng.random(n_pairs)):
        taken = {s.main.shape} | ({s.second.shape} if s.second is not None else set())
        free = [x for x in SHAPES if x not in taken]
        out += [s, replace(s, main=replace(s.main, shape=free[int(u * len(free))]))]
    return out


def _where(position: str) -> str:
    return "in the center" if position == "center" else f"at the {position}"


def caption(scene: Scene) -> str:
    """The caption, a function of the discrete attributes only (not of jitter/shade/depth)."""
    m = scene.main
    text = f"a {m.size} {m.color} {m.shape} {_where(m.position)} on a {scene.background} background"
    if scene.second is not None:
        s = scene.second
        text += f", and a {s.size} {s.color} {s.shape} {_where(s.position)}"
    return text


_OBJ = r"a (\w+) (\w+) (\w+) (?:at the|in the) (top left|top right|bottom left|bottom right|center)"
_CAPTION_RE = re.compile(rf"^{_OBJ} on a (\w+) background(?:, and {_OBJ})?$")


def parse_caption(text: str) -> dict[str, str | None]:
    """Inverse of :func:`caption` on the discrete attributes; raises ValueError if malformed.

    Returns keys ``size, color, shape, position, background`` (main object) and
    ``second_size, second_color, second_shape, second_position`` (None without a second object).
    """
    m = _CAPTION_RE.match(text)
    if m is None:
        raise ValueError(f"not a synthetic-shapes caption: {text!r}")
    g = m.groups()
    out = {
        "size": g[0], "color": g[1], "shape": g[2], "position": g[3], "background": g[4],
        "second_size": g[5], "second_color": g[6], "second_shape": g[7], "second_position": g[8],
    }
    checks = [("size", SIZES + (SECOND_SIZE,)), ("color", COLOR_NAMES), ("shape", SHAPES)]
    for key, valid in checks:
        for k in (key, f"second_{key}"):
            if out[k] is not None and out[k] not in valid:
                raise ValueError(f"unknown {key} {out[k]!r} in caption {text!r}")
    if out["background"] not in BACKGROUND_NAMES:
        raise ValueError(f"unknown background {out['background']!r} in caption {text!r}")
    return out


_LR = re.compile(r"\b(left|right)\b")


def flip_caption(text: str) -> str:
    """Swap "left" <-> "right", so a horizontally flipped image keeps a true caption."""
    return _LR.sub(lambda m: "right" if m.group(1) == "left" else "left", text)


def _flip_position(position: str) -> str:
    return flip_caption(position)


def flip_scene(scene: Scene) -> Scene:
    """The mirror image of ``scene`` (all shapes are left-right symmetric)."""

    def flip(o: SceneObject) -> SceneObject:
        return replace(o, position=_flip_position(o.position), cx=1.0 - o.cx)

    return replace(scene, main=flip(scene.main), second=None if scene.second is None else flip(scene.second))


def caption_corpus(n: int = 20000, seed: int = 12345) -> list[str]:
    """Captions of ``n`` scenes (for training the tokenizer)."""
    return [caption(s) for s in sample_scenes(n, seed)]


def scene_labels(scenes: Sequence[Scene]) -> dict[str, torch.Tensor]:
    """int64 labels; every ``labels[k]`` lies in ``range(len(LABEL_NAMES[k]))``.

    ``count`` is the number of objects minus one (0 = one object, 1 = two objects).
    """
    cols: dict[str, list[int]] = {k: [] for k in LABEL_NAMES}
    for s in scenes:
        m = s.main
        cols["class"].append(s.class_index)
        cols["shape"].append(SHAPES.index(m.shape))
        cols["color"].append(COLOR_NAMES.index(m.color))
        cols["size"].append(SIZES.index(m.size))
        cols["position"].append(POSITIONS.index(m.position))
        cols["background"].append(BACKGROUND_NAMES.index(s.background))
        cols["count"].append(s.count - 1)
    return {k: torch.tensor(v, dtype=torch.int64) for k, v in cols.items()}


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
# Shape predicates on offsets normalised by the object's scale; dx is [b,1,W], dy is [b,H,1]
# (x right, y down). All shapes are left-right symmetric (they depend on |dx| or dx**2).
def _circle(dx, dy):
    return dx * dx + dy * dy <= 1.0


def _square(dx, dy):
    return (np.abs(dx) <= 0.85) & (np.abs(dy) <= 0.85)


def _triangle(dx, dy):  # apex up at dy=-1, flat base at dy=0.75 with half-width 1
    return (dy <= 0.75) & (np.abs(dx) <= (dy + 1.0) / 1.75)


def _cross(dx, dy):
    ax, ay = np.abs(dx), np.abs(dy)
    return ((ax <= 0.3) & (ay <= 0.95)) | ((ay <= 0.3) & (ax <= 0.95))


def _ring(dx, dy):
    r2 = dx * dx + dy * dy
    return (r2 <= 1.0) & (r2 >= 0.55**2)


def _diamond(dx, dy):
    return np.abs(dx) + np.abs(dy) <= 1.05


_SHAPE_FNS = (_circle, _square, _triangle, _cross, _ring, _diamond)
_COLOR_ARR = np.array([COLORS[c] for c in COLOR_NAMES], dtype=np.float32)
_BG_ARR = np.array([BACKGROUNDS[b] for b in BACKGROUND_NAMES], dtype=np.float32)
_VARIANT_CODE = {v: i for i, v in enumerate(VARIANTS)}


class _Grid:
    def __init__(self, size: int) -> None:
        hi = 2 * size
        c = ((np.arange(hi, dtype=np.float32) + 0.5) / hi).astype(np.float32)
        self.u = c[None, None, :]  # [1,1,W2]
        self.v = c[None, :, None]  # [1,H2,1]
        rows = np.arange(size, dtype=np.float64) / max(size - 1, 1)
        self.floor_depth = floor_depth(rows).astype(np.float32)  # [H]
        self.floor_light = (0.78 + 0.4 * rows).astype(np.float32)  # brighter nearer (bottom)
        self.floor_add = (14.0 * rows).astype(np.float32)


def _masks(shape: np.ndarray, cx: np.ndarray, cy: np.ndarray, scale: np.ndarray, g: _Grid) -> np.ndarray:
    """Hi-res boolean masks [b, H2, W2]."""
    b = shape.shape[0]
    out = np.zeros((b, g.v.shape[1], g.u.shape[2]), dtype=bool)
    for s in np.unique(shape):
        idx = np.nonzero(shape == s)[0]
        inv = (1.0 / scale[idx]).astype(np.float32)[:, None, None]
        dx = (g.u - cx[idx].astype(np.float32)[:, None, None]) * inv
        dy = (g.v - cy[idx].astype(np.float32)[:, None, None]) * inv
        out[idx] = _SHAPE_FNS[int(s)](dx, dy)
    return out


def _pool(mask: np.ndarray) -> np.ndarray:
    """2x2 average pool of a bool [b,H2,W2] mask -> float32 coverage [b,H,W]."""
    b, h2, w2 = mask.shape
    m = mask.view(np.uint8).reshape(b, h2 // 2, 2, w2 // 2, 2)
    s = m[:, :, 0, :, 0] + m[:, :, 0, :, 1] + m[:, :, 1, :, 0] + m[:, :, 1, :, 1]
    return s.astype(np.float32) * 0.25


def _outline(label: np.ndarray, width: int = 2) -> np.ndarray:
    """Object pixels of a hi-res label map within ``width`` pixels (4-neighbourhood) of another label."""
    edge = np.zeros(label.shape, dtype=bool)
    for d in range(1, width + 1):
        diff = label[:, d:, :] != label[:, :-d, :]
        edge[:, d:, :] |= diff
        edge[:, :-d, :] |= diff
        diff = label[:, :, d:] != label[:, :, :-d]
        edge[:, :, d:] |= diff
        edge[:, :, :-d] |= diff
    # the image border counts as background
    edge[:, :width, :] = True
    edge[:, -width:, :] = True
    edge[:, :, :width] = True
    edge[:, :, -width:] = True
    return edge & (label > 0)


def _hue_matrices(theta: np.ndarray) -> np.ndarray:
    """[b,3,3] rotations about the gray axis (a hue shift by ``theta`` radians)."""
    k = np.full(3, 1.0 / math.sqrt(3.0))
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    kk = np.outer(k, k)
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    return (c * np.eye(3) + s * kx + (1 - c) * kk).astype(np.float32)


def _box_blur(img: np.ndarray, r: int) -> np.ndarray:
    """Box blur with a (2r+1)^2 kernel, edge padding; img [b,3,H,W] float32."""
    k = 2 * r + 1
    p = np.pad(img, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge").astype(np.float64)
    c = np.cumsum(p, axis=2)
    c = np.concatenate([np.zeros_like(c[:, :, :1]), c], axis=2)
    p = c[:, :, k:] - c[:, :, :-k]
    c = np.cumsum(p, axis=3)
    c = np.concatenate([np.zeros_like(c[:, :, :, :1]), c], axis=3)
    return ((c[:, :, :, k:] - c[:, :, :, :-k]) / (k * k)).astype(np.float32)


def _render_chunk(scenes: Sequence[Scene], g: _Grid, size: int, variant: str, rng: np.random.Generator):
    b = len(scenes)
    f32 = np.float32
    m_shape = np.array([SHAPES.index(s.main.shape) for s in scenes])
    m_col = _COLOR_ARR[[COLOR_NAMES.index(s.main.color) for s in scenes]]
    m_shade = np.array([s.main.shade for s in scenes], dtype=f32)
    m_cx = np.array([s.main.cx for s in scenes], dtype=f32)
    m_cy = np.array([s.main.cy for s in scenes], dtype=f32)
    m_scale = np.array([s.main.scale for s in scenes], dtype=f32)
    m_depth = np.array([s.main.depth for s in scenes], dtype=f32)
    bg = _BG_ARR[[BACKGROUND_NAMES.index(s.background) for s in scenes]]
    two = np.nonzero([s.second is not None for s in scenes])[0]
    sec = [scenes[i].second for i in two]

    main_hr = _masks(m_shape, m_cx, m_cy, m_scale, g)
    label_hr = main_hr.view(np.uint8) * np.uint8(2)  # 0 bg, 1 second, 2 main
    s_shape = np.zeros(b, dtype=np.int64)
    s_col = np.zeros((b, 3), dtype=f32)
    s_shade = np.ones(b, dtype=f32)
    s_depth = np.zeros(b, dtype=f32)
    if len(two):
        s_shape[two] = [SHAPES.index(o.shape) for o in sec]
        s_col[two] = _COLOR_ARR[[COLOR_NAMES.index(o.color) for o in sec]]
        s_shade[two] = [o.shade for o in sec]
        s_depth[two] = [o.depth for o in sec]
        sec_hr = _masks(
            s_shape[two],
            np.array([o.cx for o in sec], dtype=f32),
            np.array([o.cy for o in sec], dtype=f32),
            np.array([o.scale for o in sec], dtype=f32),
            g,
        )
        label_hr[two] = np.where(main_hr[two], np.uint8(2), sec_hr.view(np.uint8))

    cov_main = _pool(label_hr == 2)
    cov_sec = _pool(label_hr == 1)

    # segmentation and depth (scene ground truth, identical for every variant)
    seg = np.zeros((b, size, size), dtype=np.uint8)
    is_main = cov_main >= 0.5
    is_sec = (~is_main) & (cov_sec >= 0.5)
    seg[is_main] = np.broadcast_to((m_shape + 1).astype(np.uint8)[:, None, None], seg.shape)[is_main]
    seg[is_sec] = np.broadcast_to((s_shape + 1).astype(np.uint8)[:, None, None], seg.shape)[is_sec]
    depth = np.broadcast_to(g.floor_depth[None, :, None], seg.shape).copy()
    depth = np.where(is_main, m_depth[:, None, None], depth)
    depth = np.where(is_sec, s_depth[:, None, None], depth).astype(f32)

    # colours
    main_rgb = m_col * m_shade[:, None]
    sec_rgb = s_col * s_shade[:, None]
    if variant == "jitter":
        theta = rng.uniform(np.radians(10), np.radians(30), b) * rng.choice([-1.0, 1.0], b)
        gain = 1.0 + rng.uniform(0.1, 0.3, b) * rng.choice([-1.0, 1.0], b)
        mats = _hue_matrices(theta) * gain.astype(f32)[:, None, None]
        main_rgb = np.einsum("bij,bj->bi", mats, main_rgb)
        sec_rgb = np.einsum("bij,bj->bi", mats, sec_rgb)
    main_rgb = np.clip(main_rgb, 0, 255).astype(f32)
    sec_rgb = np.clip(sec_rgb, 0, 255).astype(f32)

    if variant == "sketch":
        edge = _outline(label_hr)
        cov_main = _pool(edge & (label_hr == 2))
        cov_sec = _pool(edge & (label_hr == 1))
        main_rgb, sec_rgb = main_rgb * SKETCH_INK, sec_rgb * SKETCH_INK
        back = np.full((b, 3, size, size), 255.0, dtype=f32)
    else:
        light = g.floor_light[None, None, :, None]
        back = bg[:, :, None, None] * light + g.floor_add[None, None, :, None]
        back = np.broadcast_to(back, (b, 3, size, size))
    cm, cs = cov_main[:, None], cov_sec[:, None]
    img = back * (1.0 - cm - cs) + cm * main_rgb[:, :, None, None] + cs * sec_rgb[:, :, None, None]

    if variant == "noise":
        img = img + rng.normal(0.0, NOISE_STD, img.shape).astype(f32)
    elif variant == "blur":
        img = _box_blur(img, max(1, size // 16))
    elif variant == "occlude":
        side = max(1, round(math.sqrt(OCCLUDE_FRACTION) * size))
        y0 = rng.integers(0, size - side + 1, b)
        x0 = rng.integers(0, size - side + 1, b)
        r = np.arange(size)
        in_y = (r[None] >= y0[:, None]) & (r[None] < (y0 + side)[:, None])
        in_x = (r[None] >= x0[:, None]) & (r[None] < (x0 + side)[:, None])
        patch = (in_y[:, :, None] & in_x[:, None, :])[:, None]
        img = np.where(patch, f32(OCCLUDE_GRAY), img)
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return image, seg, depth


def render(scenes: Sequence[Scene], image_size: int = 32, variant: str = "clean", seed: int = 0) -> dict:
    """Render scenes: ``{"image": uint8 [N,3,H,W], "seg": uint8 [N,H,W], "depth": float32 [N,H,W]}``.

    ``variant`` picks the rendering (see ``VARIANTS``); its randomness (noise, hue shift, patch
    placement) is drawn from ``seed``, deterministically per chunk of ``BLOCK`` scenes.
    ``seg`` and ``depth`` describe the scene and do not depend on ``variant``.
    """
    if variant not in _VARIANT_CODE:
        raise ValueError(f"unknown variant {variant!r}; valid choices: {', '.join(VARIANTS)}")
    image_size = int(image_size)
    if image_size < 4:
        raise ValueError(f"image_size must be >= 4, got {image_size}")
    g = _Grid(image_size)
    n = len(scenes)
    image = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    seg = np.empty((n, image_size, image_size), dtype=np.uint8)
    depth = np.empty((n, image_size, image_size), dtype=np.float32)
    for chunk, start in enumerate(range(0, n, BLOCK)):
        rng = np.random.Generator(np.random.PCG64([int(seed), chunk, _VARIANT_CODE[variant], image_size]))
        sl = slice(start, min(n, start + BLOCK))
        image[sl], seg[sl], depth[sl] = _render_chunk(scenes[sl], g, image_size, variant, rng)
    return {"image": torch.from_numpy(image), "seg": torch.from_numpy(seg), "depth": torch.from_numpy(depth)}


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------
class SyntheticShapes(torch.utils.data.Dataset):
    """``n`` captioned scenes from ``seed``, rendered once into memory.

    Attributes: ``scenes``, ``images`` (uint8 [N,3,H,W]), ``captions``, ``labels``
    (dict of int64 [N], see :func:`scene_labels`), ``seg`` (uint8 [N,H,W]), ``depth``
    (float32 [N,H,W]), ``class_names`` (48), ``label_names`` (label key -> value names).
    The same ``(n, seed)`` gives the same scenes for every ``variant``.
    """

    def __init__(self, n: int, seed: int = 0, image_size: int = 32, variant: str = "clean",
                 shape_twins: bool = False) -> None:
        if variant not in _VARIANT_CODE:
            raise ValueError(f"unknown variant {variant!r}; valid choices: {', '.join(VARIANTS)}")
        if shape_twins and n % 2:
            raise ValueError(f"shape_twins needs an even number of scenes, got {n}")
        self.n, self.seed, self.image_size, self.variant = int(n), int(seed), int(image_size), variant
        self.scenes = shape_twin_scenes(self.n // 2, self.seed) if shape_twins else sample_scenes(self.n, self.seed)
        out = render(self.scenes, image_size=self.image_size, variant=variant, seed=self.seed)
        self.images: torch.Tensor = out["image"]
        self.seg: torch.Tensor = out["seg"]
        self.depth: torch.Tensor = out["depth"]
        self.captions: list[str] = [caption(s) for s in self.scenes]
        self.labels: dict[str, torch.Tensor] = scene_labels(self.scenes)
        self.class_names: list[str] = list(CLASS_NAMES)
        self.label_names: dict[str, list[str]] = {k: list(v) for k, v in LABEL_NAMES.items()}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} samples")
        return {"image": self.images[i], "caption": self.captions[i], "label": int(self.labels["class"][i]), "index": i}
