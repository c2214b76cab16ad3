"""Real evaluation sets: ImageNet-1K, its robustness variants, and the 14 few-shot sets of Table 3.

Every loader reads a local copy in the data set's own released layout (nothing is downloaded) and returns
an ``EvalSplit``: a ``torch.utils.data.Dataset`` of ``(PIL image, label)`` with ``labels``, ``classes`` and a
``split_hash`` (SHA-256 of the sorted (relative path, label) list) that the tasks write into the record.
Sets without an official split get a seeded per-class split written once as an index file under
``<cache>/splits/`` (its hash goes into the record too). A missing set raises one ``FileNotFoundError``
naming the config key / environment variable, the expected layout and where to get the data.

Roots: ImageNet-1K ``eval.imagenet_root`` / ``$DREAM_BENCH_IMAGENET``; the robustness sets
``eval.robustness_root`` / ``$DREAM_BENCH_ROBUSTNESS``; the few-shot sets ``eval.fewshot_root`` /
``$DREAM_BENCH_FEWSHOT``, one sub-folder per set named by its key (``FEWSHOT_LAYOUTS``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmark.data import cache_root

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


@dataclass
class EvalSplit(torch.utils.data.Dataset):
    """Images from files (optionally cropped to a box, or with a border cut off) or from a uint8 array."""

    name: str
    classes: list[str]
    labels: list[int]
    paths: list[Path] = field(default_factory=list)
    boxes: list[tuple[int, int, int, int]] | None = None  # (left, top, right, bottom), e.g. VOC objects
    border: int = 0  # pixels cut from every side (ObjectNet's 2-px frame)
    array: np.ndarray | None = None  # [N, H, W, 3] uint8 (STL-10's binary files)
    root: Path | None = None  # paths are hashed relative to it
    targets: list[list[int]] | None = None  # multi-label sets (ImageNet-Hard): every accepted class
    transform: Callable | None = None
    split_hash: str = ""

    def __post_init__(self) -> None:
        if not self.split_hash:
            rel = [str(p.relative_to(self.root)) if self.root else str(p) for p in self.paths] or \
                  [str(i) for i in range(len(self.labels))]
            extra = [list(b) for b in self.boxes] if self.boxes else []
            blob = json.dumps([rel, self.labels, extra, self.targets or []], separators=(",", ":"))
            self.split_hash = hashlib.sha256(blob.encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int):
        from PIL import Image

        if self.array is not None:
            return Image.fromarray(self.array[i])
        with Image.open(self.paths[i]) as im:
            img = im.convert("RGB")
        if self.boxes is not None:
            img = img.crop(self.boxes[i])
        if self.border:
            w, h = img.size
            img = img.crop((self.border, self.border, w - self.border, h - self.border))
        return img

    def __getitem__(self, i: int):
        img = self.image(i)
        return (self.transform(img) if self.transform else img), self.labels[i]


def resolve_root(value: str, env: str, key: str, help_text: str) -> Path:
    root = value or os.environ.get(env, "")
    if not root:
        raise FileNotFoundError(f"{key} is empty and ${env} is unset. {help_text}")
    return Path(root)


def _missing(what: str, path: Path, key: str, env: str, help_text: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found at {path} (set {key} or ${env}). {help_text}")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXT and p.is_file())


def _class_folders(root: Path, classes: Sequence[str], class_index: dict[str, int]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for c in classes:
        for p in _images(root / c):
            paths.append(p)
            labels.append(class_index[c])
    return paths, labels


# ------------------------------------------------------------------------------------------------
# ImageNet-1K and the robustness sets (Table 2)
# ------------------------------------------------------------------------------------------------
IMAGENET_HELP = (
    "ImageNet-1K is read in ImageFolder layout: <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG "
    "(val sorted into class folders, e.g. with the valprep.sh script). Get it from https://image-net.org "
    "(ILSVRC2012), then pass --set eval.imagenet_root=/data/imagenet or export DREAM_BENCH_IMAGENET."
)


def imagenet_root(cfg) -> Path:
    root = resolve_root(cfg.eval.imagenet_root, "DREAM_BENCH_IMAGENET", "eval.imagenet_root", IMAGENET_HELP)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise _missing("ImageNet-1K (train/ and val/)", root, "eval.imagenet_root", "DREAM_BENCH_IMAGENET", IMAGENET_HELP)
    return root


def imagenet_wnids(root: Path) -> list[str]:
    """The 1000 class folders in sorted order: the column order of every 1000-way head."""
    return sorted(p.name for p in (root / "train").iterdir() if p.is_dir())


def load_imagenet(root: Path, split: str) -> EvalSplit:
    """ImageFolder semantics: label = index of the wnid among the sorted train folders."""
    wnids = imagenet_wnids(root)
    index = {w: i for i, w in enumerate(wnids)}
    present = [w for w in wnids if (root / split / w).is_dir()]
    paths, labels = _class_folders(root / split, present, index)
    return EvalSplit(f"imagenet/{split}", wnids, labels, paths, root=root)


ROBUSTNESS_HELP = (
    "The robustness sets are read from one folder, each in its released layout: imagenet-a/<wnid>/*.jpg and "
    "imagenet-r/<wnid>/*.jpg (200 wnid folders each; github.com/hendrycks/natural-adv-examples, "
    "github.com/hendrycks/imagenet-r), sketch/<wnid>/*.JPEG (ImageNet-Sketch, github.com/HaohanWang/ImageNet-Sketch), "
    "imagenetv2-matched-frequency-format-val/<int>/*.jpeg, imagenetv2-threshold0.7-format-val/, "
    "imagenetv2-top-images-format-val/ (huggingface.co/datasets/vaishaal/ImageNetV2), "
    "objectnet-1.0/{images/<folder>/*.png, mappings/*.json, mappings/imagenet_to_label_2012_v2} (objectnet.dev), "
    "imagenet-hard/{images/<file>, labels.json (file -> list of IN-1K ids), revision.txt} (export of the HF "
    "dataset taesiri/imagenet-hard, split validation, at the revision written in revision.txt). "
    "Pass --set eval.robustness_root=DIR or export DREAM_BENCH_ROBUSTNESS."
)
ROBUSTNESS_KEYS = ("in_a", "in_r", "in_s", "in_h", "v2_mf", "v2_t7", "v2_top", "objectnet")
IMAGENET_V2_DIRS = {
    "v2_mf": "imagenetv2-matched-frequency-format-val",
    "v2_t7": "imagenetv2-threshold0.7-format-val",
    "v2_top": "imagenetv2-top-images-format-val",
}


def robustness_root(cfg) -> Path:
    return resolve_root(cfg.eval.robustness_root, "DREAM_BENCH_ROBUSTNESS", "eval.robustness_root", ROBUSTNESS_HELP)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise _missing(what, path, "eval.robustness_root", "DREAM_BENCH_ROBUSTNESS", ROBUSTNESS_HELP)
    return path


def load_wnid_subset(root: Path, folder: str, wnids: Sequence[str]) -> tuple[EvalSplit, torch.Tensor]:
    """IN-A / IN-R: 200 wnid folders. Returns the split (labels index the sorted subset) and the boolean
    mask over the model's 1000 columns: ``logits[:, mask]`` keeps the subset's columns in sorted-wnid order,
    so their argmax is the label (hendrycks/imagenet-r eval.py)."""
    d = _need(root / folder, folder)
    subset = sorted(p.name for p in d.iterdir() if p.is_dir())
    unknown = [w for w in subset if w not in set(wnids)]
    if unknown:
        raise ValueError(f"{d}: folders {unknown[:3]} are not ImageNet-1K wnids of the model's head")
    mask = torch.tensor([w in set(subset) for w in wnids])
    paths, labels = _class_folders(d, subset, {w: i for i, w in enumerate(subset)})
    return EvalSplit(folder, subset, labels, paths, root=d), mask


def load_sketch(root: Path, wnids: Sequence[str]) -> EvalSplit:
    d = _need(root / "sketch", "ImageNet-Sketch (sketch/)")
    index = {w: i for i, w in enumerate(wnids)}
    present = sorted(p.name for p in d.iterdir() if p.is_dir())
    paths, labels = _class_folders(d, present, index)
    return EvalSplit("sketch", list(wnids), labels, paths, root=d)


def load_imagenet_v2(root: Path, key: str) -> EvalSplit:
    """Folders are named by the integer class id 0..999: the label is ``int(folder)``, never the position
    of the folder in a lexicographic sort ("0", "1", "10", "100", ...)."""
    d = _need(root / IMAGENET_V2_DIRS[key], IMAGENET_V2_DIRS[key])
    paths, labels = [], []
    for sub in sorted((p for p in d.iterdir() if p.is_dir()), key=lambda p: int(p.name)):
        for p in _images(sub):
            paths.append(p)
            labels.append(int(sub.name))
    return EvalSplit(key, [str(i) for i in range(1000)], labels, paths, root=d)


def objectnet_metadata(mappings: Path) -> tuple[list[str], list[list[int]], dict[str, int]]:
    """(113 ObjectNet class names, their IN-1K column lists, image folder -> class index), from the four
    mapping files shipped with ObjectNet (the wise-ft / CLIP_benchmark reading)."""
    folder_to_label = json.loads((mappings / "folder_to_objectnet_label.json").read_text())
    label_to_folder = {v: k for k, v in folder_to_label.items()}
    on_to_in = json.loads((mappings / "objectnet_to_imagenet_1k.json").read_text())
    pytorch_to_2012 = json.loads((mappings / "pytorch_to_imagenet_2012_id.json").read_text())
    id2012_to_pytorch = {int(v): int(k) for k, v in pytorch_to_2012.items()}
    names_2012 = (mappings / "imagenet_to_label_2012_v2").read_text().splitlines()
    name_to_column = {n.strip(): id2012_to_pytorch[i] for i, n in enumerate(names_2012) if n.strip()}
    classes, columns, folder_index = [], [], {}
    for on_name, in_names in on_to_in.items():
        folder_index[label_to_folder[on_name]] = len(classes)
        classes.append(on_name)
        columns.append([name_to_column[n.strip()] for n in in_names.split(";") if n.strip()])
    return classes, columns, folder_index


def load_objectnet(root: Path) -> tuple[EvalSplit, list[list[int]]]:
    """The 113 ObjectNet classes that overlap IN-1K (images of the others are dropped), 2-px border cut."""
    d = _need(root / "objectnet-1.0", "ObjectNet (objectnet-1.0/)")
    classes, columns, folder_index = objectnet_metadata(_need(d / "mappings", "objectnet-1.0/mappings"))
    paths, labels = [], []
    for folder in sorted(folder_index):
        for p in _images(d / "images" / folder):
            paths.append(p)
            labels.append(folder_index[folder])
    return EvalSplit("objectnet", classes, labels, paths, border=2, root=d), columns


def project_logits(logits: torch.Tensor, columns: list[list[int]]) -> torch.Tensor:
    """ObjectNet: the logit of each ObjectNet class is the max over its mapped IN-1K columns."""
    return torch.stack([logits[:, c].max(1).values for c in columns], dim=1)


def load_imagenet_hard(root: Path) -> tuple[EvalSplit, str]:
    """Multi-label: ``targets[i]`` lists every accepted IN-1K id; a prediction counts if it is any of them."""
    d = _need(root / "imagenet-hard", "ImageNet-Hard (imagenet-hard/)")
    table = json.loads(_need(d / "labels.json", "imagenet-hard/labels.json").read_text())
    revision = (d / "revision.txt").read_text().strip() if (d / "revision.txt").exists() else "unknown"
    files = sorted(table)
    targets = [[int(t) for t in table[f] if int(t) >= 0] for f in files]
    paths = [d / "images" / f for f in files]
    return EvalSplit("imagenet-hard", [str(i) for i in range(1000)], [t[0] for t in targets], paths,
                     root=d, targets=targets), revision


def multilabel_correct(pred: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
    """[N] bool: the top-1 prediction is in the sample's label list (ImageNet-Hard)."""
    width = max(len(t) for t in targets)
    padded = torch.full((len(targets), width), -1, dtype=torch.long)
    for i, t in enumerate(targets):
        padded[i, : len(t)] = torch.tensor(t)
    return (pred[:, None] == padded).any(1)


# ------------------------------------------------------------------------------------------------
# The 14 few-shot sets (Table 3; anchors-eval §1.3)
# ------------------------------------------------------------------------------------------------
FEWSHOT_SETS = ("dtd", "caltech256", "sun397", "food101", "voc2007", "stl10", "flowers", "ucmerced", "eurosat",
                "country211", "resisc45", "dogs", "mit_indoors", "imagenet")
FEWSHOT_LAYOUTS = {
    "dtd": ("dtd/{images/<class>/*.jpg, labels/train1.txt, val1.txt, test1.txt}; train+val / test of partition 1",
            "https://www.robots.ox.ac.uk/~vgg/data/dtd/"),
    "caltech256": ("caltech256/256_ObjectCategories/<NNN.class>/*.jpg; seeded split, 60 train images per class, "
                   "the rest test, 257.clutter dropped", "https://data.caltech.edu/records/nyy15-4j048"),
    "sun397": ("sun397/{SUN397/<letter>/<class>/.../*.jpg, Partitions/ClassName.txt, Training_01.txt, "
               "Testing_01.txt}; split 01", "https://vision.princeton.edu/projects/2010/SUN/"),
    "food101": ("food101/{images/<class>/*.jpg, meta/classes.txt, train.txt, test.txt}",
                "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/"),
    "voc2007": ("voc2007/VOC2007/{JPEGImages, Annotations/*.xml, ImageSets/Main/trainval.txt, test.txt}; one "
                "sample per non-difficult object box, cropped (CLIP_benchmark's VOC2007 cropped)",
                "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/"),
    "stl10": ("stl10/stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin, class_names.txt}",
              "https://cs.stanford.edu/~acoates/stl10/"),
    "flowers": ("flowers/{jpg/image_NNNNN.jpg, imagelabels.mat, setid.mat}; train+val / test",
                "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"),
    "ucmerced": ("ucmerced/Images/<class>/*.tif; seeded split, 80% of each class train",
                 "http://weegee.vision.ucmerced.edu/datasets/landuse.html"),
    "eurosat": ("eurosat/<class>/*.jpg (the RGB release, folder 2750/); seeded split, 80% of each class train",
                "https://github.com/phelber/EuroSAT"),
    "country211": ("country211/{train,valid,test}/<country code>/*.jpg; train+valid / test",
                   "https://github.com/openai/CLIP/blob/main/data/country211.md"),
    "resisc45": ("resisc45/<class>/*.jpg (NWPU-RESISC45); seeded split, 80% of each class train",
                 "https://gcheng-nwpu.github.io/#Datasets"),
    "dogs": ("dogs/{Images/<wnid-breed>/*.jpg, train_list.mat, test_list.mat}",
             "http://vision.stanford.edu/aditya86/ImageNetDogs/"),
    "mit_indoors": ("mit_indoors/{Images/<class>/*.jpg, TrainImages.txt, TestImages.txt}",
                    "https://web.mit.edu/torralba/www/indoor.html"),
    "imagenet": ("ImageNet-1K at eval.imagenet_root (train/ and val/ wnid folders)", "https://image-net.org"),
}
SEEDED_TRAIN = {"caltech256": 60, "ucmerced": 0.8, "eurosat": 0.8, "resisc45": 0.8}  # per class: count or fraction


def fewshot_help(key: str) -> str:
    layout, url = FEWSHOT_LAYOUTS[key]
    return (f"Few-shot set {key!r} is read from <eval.fewshot_root or $DREAM_BENCH_FEWSHOT>/{layout}. "
            f"Get it from {url}.")


def _fs_need(path: Path, key: str) -> Path:
    if not path.exists():
        raise _missing(f"few-shot set {key!r} ({path.name})", path, "eval.fewshot_root", "DREAM_BENCH_FEWSHOT",
                       fewshot_help(key))
    return path


def seeded_split(key: str, paths: list[Path], labels: list[int], root: Path, rule: float | int,
                 seed: int) -> tuple[list[int], list[int], str]:
    """Per-class seeded split written once as an index file; returns (train idx, test idx, file hash)."""
    out = cache_root() / "splits" / f"{key}-seed{seed}.json"
    rel = [str(p.relative_to(root)) for p in paths]
    if out.exists():
        data = json.loads(out.read_text())
        if sorted(data["train"] + data["test"]) == sorted(rel):
            pos = {r: i for i, r in enumerate(rel)}
            return [pos[r] for r in data["train"]], [pos[r] for r in data["test"]], \
                hashlib.sha256(out.read_bytes()).hexdigest()[:16]
    rng = random.Random(seed)
    train, test = [], []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        rng.shuffle(idx)
        k = rule if isinstance(rule, int) else int(round(rule * len(idx)))
        k = min(k, len(idx) - 1)  # keep at least one test image per class
        train += sorted(idx[:k])
        test += sorted(idx[k:])
    blob = json.dumps({"set": key, "seed": seed, "rule": rule, "train": [rel[i] for i in train],
                       "test": [rel[i] for i in test]}, indent=0).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(out)
    return train, test, hashlib.sha256(blob).hexdigest()[:16]


def _subset(name: str, classes: list[str], paths: list[Path], labels: list[int], idx: list[int], root: Path,
            split_hash: str = "") -> EvalSplit:
    return EvalSplit(name, classes, [labels[i] for i in idx], [paths[i] for i in idx], root=root,
                     split_hash=split_hash)


def _folder_set(key: str, d: Path, seed: int) -> tuple[EvalSplit, EvalSplit]:
    classes = sorted(p.name for p in d.iterdir() if p.is_dir())
    if key == "caltech256":
        classes = [c for c in classes if not c.startswith("257.")]  # 257.clutter is not a class
    paths, labels = _class_folders(d, classes, {c: i for i, c in enumerate(classes)})
    tr, te, h = seeded_split(key, paths, labels, d, SEEDED_TRAIN[key], seed)
    return (_subset(f"{key}/train", classes, paths, labels, tr, d, h),
            _subset(f"{key}/test", classes, paths, labels, te, d, h))


def _list_set(key: str, images: Path, train_files: list[str], test_files: list[str],
              classes: list[str], class_of: Callable[[str], str]) -> tuple[EvalSplit, EvalSplit]:
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for split, files in (("train", train_files), ("test", test_files)):
        paths = [images / f for f in files]
        out.append(EvalSplit(f"{key}/{split}", classes, [index[class_of(f)] for f in files], paths, root=images))
    return out[0], out[1]


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def load_fewshot(key: str, root: Path | None, seed: int = 0, imagenet: Path | None = None) -> tuple[EvalSplit, EvalSplit]:
    """(support pool = train split, query pool = test split) of one of the 14 sets."""
    if key not in FEWSHOT_SETS:
        raise ValueError(f"unknown few-shot set {key!r}; valid: {', '.join(FEWSHOT_SETS)}")
    if key == "imagenet":
        if imagenet is None:
            raise FileNotFoundError(IMAGENET_HELP)
        return load_imagenet(imagenet, "train"), load_imagenet(imagenet, "val")
    if root is None:
        raise FileNotFoundError(f"eval.fewshot_root is empty and $DREAM_BENCH_FEWSHOT is unset. {fewshot_help(key)}")
    d = _fs_need(root / key, key)
    if key in ("caltech256", "ucmerced", "eurosat", "resisc45"):
        sub = {"caltech256": "256_ObjectCategories", "ucmerced": "Images"}.get(key)
        return _folder_set(key, _fs_need(d / sub, key) if sub else d, seed)
    if key == "dtd":
        lab = _fs_need(d / "labels", key)
        train = _lines(lab / "train1.txt") + _lines(lab / "val1.txt")
        test = _lines(lab / "test1.txt")
        classes = sorted(p.name for p in (d / "images").iterdir() if p.is_dir())
        return _list_set(key, d / "images", train, test, classes, lambda f: f.split("/")[0])
    if key == "food101":
        meta = _fs_need(d / "meta", key)
        classes = _lines(meta / "classes.txt")
        return _list_set(key, d / "images", [f + ".jpg" for f in _lines(meta / "train.txt")],
                         [f + ".jpg" for f in _lines(meta / "test.txt")], classes, lambda f: f.split("/")[0])
    if key == "sun397":
        parts = _fs_need(d / "Partitions", key)
        classes = _lines(parts / "ClassName.txt")  # "/a/abbey", "/a/apartment_building/outdoor", ...
        strip = [f.lstrip("/") for f in _lines(parts / "Training_01.txt")], \
            [f.lstrip("/") for f in _lines(parts / "Testing_01.txt")]
        return _list_set(key, d / "SUN397", strip[0], strip[1], classes, lambda f: "/" + f.rsplit("/", 1)[0])
    if key == "mit_indoors":
        classes = sorted(p.name for p in _fs_need(d / "Images", key).iterdir() if p.is_dir())
        return _list_set(key, d / "Images", _lines(_fs_need(d / "TrainImages.txt", key)),
                         _lines(_fs_need(d / "TestImages.txt", key)), classes, lambda f: f.split("/")[0])
    if key == "country211":
        classes = sorted(p.name for p in _fs_need(d / "train", key).iterdir() if p.is_dir())
        index = {c: i for i, c in enumerate(classes)}
        splits = []
        for name, subs in (("train", ("train", "valid")), ("test", ("test",))):
            paths, labels = [], []
            for s in subs:
                if (d / s).is_dir():
                    p, y = _class_folders(d / s, [c for c in classes if (d / s / c).is_dir()], index)
                    paths += p
                    labels += y
            splits.append(EvalSplit(f"{key}/{name}", classes, labels, paths, root=d))
        return splits[0], splits[1]
    if key == "flowers":
        from scipy.io import loadmat

        labels = loadmat(_fs_need(d / "imagelabels.mat", key))["labels"].ravel().astype(int) - 1
        ids = loadmat(_fs_need(d / "setid.mat", key))
        classes = [str(i) for i in range(int(labels.max()) + 1)]
        out = []
        for name, sets in (("train", ("trnid", "valid")), ("test", ("tstid",))):
            nums = sorted(int(i) for s in sets for i in ids[s].ravel())
            out.append(EvalSplit(f"{key}/{name}", classes, [int(labels[i - 1]) for i in nums],
                                 [d / "jpg" / f"image_{i:05d}.jpg" for i in nums], root=d))
        return out[0], out[1]
    if key == "dogs":
        from scipy.io import loadmat

        classes = sorted(p.name for p in _fs_need(d / "Images", key).iterdir() if p.is_dir())
        out = []
        for name in ("train", "test"):
            m = loadmat(_fs_need(d / f"{name}_list.mat", key))
            files = [str(np.asarray(f).ravel()[0]) for f in m["file_list"].ravel()]
            labels = [int(v) - 1 for v in m["labels"].ravel()]  # 1-based in the release
            out.append(EvalSplit(f"{key}/{name}", classes, labels, [d / "Images" / f for f in files], root=d))
        return out[0], out[1]
    if key == "stl10":
        b = _fs_need(d / "stl10_binary", key)
        classes = _lines(b / "class_names.txt")
        out = []
        for name in ("train", "test"):
            x = np.fromfile(_fs_need(b / f"{name}_X.bin", key), dtype=np.uint8).reshape(-1, 3, 96, 96)
            x = np.ascontiguousarray(x.transpose(0, 3, 2, 1))  # stored column-major: -> [N, H, W, 3]
            y = np.fromfile(b / f"{name}_y.bin", dtype=np.uint8).astype(int) - 1  # 1-based
            out.append(EvalSplit(f"{key}/{name}", classes, y.tolist(), array=x,
                                 split_hash=hashlib.sha256(y.tobytes()).hexdigest()[:16]))
        return out[0], out[1]
    if key == "voc2007":
        return _voc_cropped(_fs_need(d / "VOC2007", key))
    raise AssertionError(key)


VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def _voc_cropped(d: Path) -> tuple[EvalSplit, EvalSplit]:
    """VOC2007 made single-label: one sample per non-difficult object, the image cropped to its box."""
    out = []
    for name, list_file in (("train", "trainval.txt"), ("test", "test.txt")):
        paths, labels, boxes = [], [], []
        for img_id in _lines(_fs_need(d / "ImageSets" / "Main" / list_file, "voc2007")):
            tree = ET.parse(d / "Annotations" / f"{img_id}.xml")
            for obj in tree.getroot().iter("object"):
                if obj.findtext("difficult", "0").strip() == "1":
                    continue
                bb = obj.find("bndbox")
                box = tuple(int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
                paths.append(d / "JPEGImages" / f"{img_id}.jpg")
                labels.append(VOC_CLASSES.index(obj.findtext("name").strip()))
                boxes.append((box[0] - 1, box[1] - 1, box[2], box[3]))  # VOC boxes are 1-based, inclusive
        out.append(EvalSplit(f"voc2007/{name}", list(VOC_CLASSES), labels, paths, boxes=boxes, root=d))
    return out[0], out[1]


def eval_transform(size: int):
    """Resize (bicubic) the short side and centre-crop to the model's input size, uint8 CHW (no normalisation:
    the tokenizer maps to its own range)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.PILToTensor()])
