"""Data of the dense probes (Table 9): ADE20K semantic segmentation, NYU-Depth-v2 depth, and their
synthetic counterparts (the captioned-shapes scenes' per-pixel class masks and depth maps).

Every dataset yields ``(image, target)``: ``image`` uint8 [3, H, W]; ``target`` int64 [H, W] class
indices (255 = ignored) for segmentation, float32 [H, W] depth in metres (0 = no measurement) for depth.

* ADE20K, ``ADEChallengeData2016`` layout (SceneParsing, 150 classes, 20,210 train / 2,000 val).
  ``reduce_zero_label`` (mmseg / DINOv3): annotation 0 ("other") -> 255 (ignored), k -> k - 1.
* NYU-Depth-v2 in the BTS layout that the DINOv2 / DINOv3 depth evaluations read: split lists
  ``nyu_train.txt`` (the 24,231-pair "sync" list) and ``nyu_test.txt`` (the 654 Eigen test images), one
  pair per line ``<rgb path> <depth path> [focal]`` relative to the root; depth PNGs are uint16 millimetres.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

ADE20K_CLASSES = 150
ADE20K_SPLITS = {"train": "training", "val": "validation"}
ADE20K_SIZES = {"train": 20_210, "val": 2_000}
ADE20K_HELP = (
    "ADE20K is read in the ADEChallengeData2016 layout: <root>/ADEChallengeData2016/images/{training,validation}/"
    "ADE_*.jpg and <root>/ADEChallengeData2016/annotations/{training,validation}/ADE_*.png (root may also be the "
    "ADEChallengeData2016 folder itself). Get it from http://data.csail.mit.edu/places/ADEchallenge/"
    "ADEChallengeData2016.zip (MIT Scene Parsing benchmark), unzip it, then pass --set eval.ade20k_root=/data/ade "
    "or export DREAM_BENCH_ADE20K=/data/ade."
)

NYU_SPLIT_FILES = {"train": "nyu_train.txt", "test": "nyu_test.txt"}
NYU_SIZES = {"train": 24_231, "test": 654}  # BTS/AdaBins "sync" train list; Eigen et al. test split
NYU_DEPTH_SCALE = 1000.0  # depth PNGs store millimetres
NYU_HELP = (
    "NYU-Depth-v2 is read in the BTS layout: <root>/nyu_train.txt (24,231 lines) and <root>/nyu_test.txt (654 lines), "
    "each line '<rgb.jpg> <depth.png> [focal]' relative to <root>, depth PNGs in uint16 millimetres. Build it with "
    "the BTS scripts (github.com/cleinc/bts: utils/download_from_gdrive.py for the 'sync' training set, "
    "utils/extract_official_train_test_set_from_mat.py on nyu_depth_v2_labeled.mat for the test set, and the lists "
    "train_test_inputs/nyudepthv2_{train,test}_files_with_gt.txt), put the lists under the names above, then pass "
    "--set eval.nyu_root=/data/nyu or export DREAM_BENCH_NYU=/data/nyu."
)


def _read_rgb(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im)


def reduce_zero_label(label: torch.Tensor) -> torch.Tensor:
    """mmseg's ``reduce_zero_label``: 0 -> 255 (ignored), k -> k - 1, 255 stays 255."""
    label = label.long()
    out = label - 1
    out[(label == 0) | (label == 255)] = 255
    return out


class ADE20K(torch.utils.data.Dataset):
    """ADE20K SceneParsing (``split`` train | val), labels after ``reduce_zero_label`` (150 classes)."""

    num_classes = ADE20K_CLASSES

    def __init__(self, root: str, split: str = "train", reduce_zero: bool = True) -> None:
        root = root or os.environ.get("DREAM_BENCH_ADE20K", "")
        base = Path(root) if root else None
        if base is not None and (base / "ADEChallengeData2016").is_dir():
            base = base / "ADEChallengeData2016"
        sub = ADE20K_SPLITS[split]
        if base is None or not (base / "images" / sub).is_dir() or not (base / "annotations" / sub).is_dir():
            raise FileNotFoundError(f"ADE20K not found at {root or '(eval.ade20k_root is empty)'}. {ADE20K_HELP}")
        self.images = sorted((base / "images" / sub).glob("*.jpg"))
        ann = base / "annotations" / sub
        self.labels = [ann / (p.stem + ".png") for p in self.images]
        missing = [str(p) for p in self.labels if not p.exists()]
        if not self.images or missing:
            raise FileNotFoundError(
                f"ADE20K at {base}: {len(self.images)} images in images/{sub}, {len(missing)} without an annotation "
                f"(first: {missing[:1]}). {ADE20K_HELP}")
        self.split, self.reduce_zero = split, reduce_zero

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        label = torch.from_numpy(_read_png(self.labels[i]).astype(np.int64))
        return _read_rgb(self.images[i]), reduce_zero_label(label) if self.reduce_zero else label

    @property
    def standard(self) -> bool:
        return len(self) == ADE20K_SIZES[self.split]


class NYUDepthV2(torch.utils.data.Dataset):
    """NYU-Depth-v2 (``split`` train | test) from the split lists; depth in metres, 0 = missing."""

    def __init__(self, root: str, split: str = "train") -> None:
        root = root or os.environ.get("DREAM_BENCH_NYU", "")
        base = Path(root) if root else None
        lst = base / NYU_SPLIT_FILES[split] if base is not None else None
        if lst is None or not lst.is_file():
            raise FileNotFoundError(f"NYU-Depth-v2 split list not found at {lst or '(eval.nyu_root is empty)'}. {NYU_HELP}")
        self.pairs: list[tuple[Path, Path]] = []
        for line in lst.read_text().splitlines():
            parts = line.split()
            if len(parts) < 2 or parts[1] == "None":  # BTS lists mark frames without depth with "None"
                continue
            self.pairs.append((base / parts[0].lstrip("/"), base / parts[1].lstrip("/")))
        missing = [str(p) for pair in self.pairs for p in pair if not p.exists()]
        if not self.pairs or missing:
            raise FileNotFoundError(
                f"NYU-Depth-v2 at {base}: {len(self.pairs)} pairs in {lst.name}, {len(missing)} missing files "
                f"(first: {missing[:1]}). {NYU_HELP}")
        self.split = split

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, depth = self.pairs[i]
        d = _read_png(depth).astype(np.float32) / NYU_DEPTH_SCALE
        return _read_rgb(rgb), torch.from_numpy(d)

    @property
    def standard(self) -> bool:
        return len(self) == NYU_SIZES[self.split]


class SyntheticDense(torch.utils.data.Dataset):
    """The synthetic scenes as a dense data set: ``target`` = ``seg`` (7 classes: background + 6 shapes, no
    ignored pixels) or ``depth`` (floor 3-9, objects 1.35-4.15, all inside the probes' (0.001, 10) range)."""

    def __init__(self, n: int, seed: int, image_size: int, target: str) -> None:
        from benchmark.data.synthetic import SEG_CLASSES, SyntheticShapes

        if target not in ("seg", "depth"):
            raise ValueError(f"target must be 'seg' or 'depth', got {target!r}")
        ds = SyntheticShapes(n, seed=seed, image_size=image_size)
        self.images = ds.images
        self.targets = ds.seg.long() if target == "seg" else ds.depth.float()
        self.num_classes = len(SEG_CLASSES)
        self.class_names = list(SEG_CLASSES)
        self.standard = False

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.targets[i]


def build_dense_data(cfg, task: str) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, str]:
    """(train set, test set, name) of a dense task (``seg`` | ``depth``) for ``cfg.data.name``."""
    e = cfg.eval
    if cfg.data.name == "synthetic":
        from benchmark.data import SYNTHETIC_SPLITS

        size = cfg.model.image_size
        tr = SyntheticDense(e.dense_n_train, SYNTHETIC_SPLITS["probe_train"], size, task)
        te = SyntheticDense(e.dense_n_test, SYNTHETIC_SPLITS["probe_test"], size, task)
        return tr, te, "synthetic"
    if task == "seg":
        return ADE20K(e.ade20k_root, "train"), ADE20K(e.ade20k_root, "val"), "ade20k"
    return NYUDepthV2(e.nyu_root, "train"), NYUDepthV2(e.nyu_root, "test"), "nyu_depth_v2"
