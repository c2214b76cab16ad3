"""`python -m benchmark genref`: the FID / CLIP-score reference folders of Table 2 and their clean-fid statistics.

* CC12M-50K: the first ``data.holdout`` (50,000) pairs of the held-out CC12M shards (``data.holdout``, kept out
  of every run trained with it) -> ``<out>/cc12m/captions.txt`` + ``<out>/cc12m/images/000000.png ...``.
* MS-COCO-30K: 30,000 images of COCO 2014 val (a seeded draw), one caption each (the image's first by
  annotation id), from ``<coco>/annotations/captions_val2014.json`` and ``<coco>/val2014/`` -> ``<out>/coco/...``.

Images are centre-cropped and resized to 256 (ADM's ``center_crop_arr``) and written as PNG. With clean-fid's
Inception weights (``eval.inception_path`` / $DREAM_BENCH_INCEPTION) the reference statistics are computed into
the data cache exactly as ``fid`` looks them up; without them ``fid`` computes them on its first use.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from benchmark.data.cc12m import CC12M_HOLDOUT, cc12m_shards, center_crop_arr, heldout_pairs

COCO_SAMPLES = 30_000  # MS-COCO-30K
COCO_CAPTIONS = "annotations/captions_val2014.json"
COCO_IMAGES = "val2014"
IMAGE_SIZE = 256  # the reference images' side (Table 2's protocol)


def _write(folder: Path, items) -> int:
    """Write (uint8 [3, S, S] image, caption) pairs as images/NNNNNN.png + captions.txt; atomically replaces."""
    from torchvision.io import write_png

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    captions = []
    for i, (img, cap) in enumerate(items):
        write_png(img, str(tmp / "images" / f"{i:06d}.png"))
        captions.append(" ".join(cap.split()))  # one line per caption
    (tmp / "captions.txt").write_text("\n".join(captions) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return len(captions)


def build_cc12m(root: str, out: Path, n: int = CC12M_HOLDOUT, shards: str = "", size: int = IMAGE_SIZE) -> int:
    pairs = ((s["image"], s["caption"]) for s in heldout_pairs(cc12m_shards(root, shards), n, size))
    return _write(Path(out) / "cc12m", pairs)


def build_coco(coco_root: str, out: Path, n: int = COCO_SAMPLES, seed: int = 0, size: int = IMAGE_SIZE) -> int:
    from PIL import Image

    root = Path(coco_root)
    ann_path = root / COCO_CAPTIONS
    if not ann_path.is_file() or not (root / COCO_IMAGES).is_dir():
        raise FileNotFoundError(f"COCO 2014 val not found under {root}: expected {COCO_CAPTIONS} and {COCO_IMAGES}/ "
                                f"(https://cocodataset.org: val2014.zip, annotations_trainval2014.zip)")
    ann = json.loads(ann_path.read_text())
    files = {im["id"]: im["file_name"] for im in ann["images"]}
    first: dict[int, str] = {}
    for a in sorted(ann["annotations"], key=lambda a: a["id"]):
        first.setdefault(a["image_id"], a["caption"])
    ids = sorted(i for i in files if i in first)
    if len(ids) < n:
        raise ValueError(f"COCO-{n}: only {len(ids)} captioned images in {ann_path}")
    pick = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))[:n]]

    def items():
        for i in pick:
            with Image.open(root / COCO_IMAGES / files[i]) as im:
                arr = center_crop_arr(im.convert("RGB"), size)
            yield torch.from_numpy(arr.copy()).permute(2, 0, 1), first[i]
    return _write(Path(out) / "coco", items())


def reference_statistics(folder: Path, inception_path: str = "", mode: str = "clean", device: str = "cpu") -> str:
    """clean-fid statistics of ``folder/images`` into the data cache, under the key ``fid`` reads; their hash."""
    from benchmark.tasks.fid import inception_extractor, reference_stats

    net = inception_extractor(inception_path, device)
    return reference_stats(Path(folder) / "images", net, {"net": "inception-2015-12-05 (clean-fid)"}, mode, None,
                           device)[2]


def genref_command(args) -> int:
    out = Path(args.out)
    built = []
    if args.cc12m:
        n = build_cc12m(args.cc12m, out, args.holdout, args.shards)
        print(f"genref: CC12M-{n}: {out / 'cc12m'} (the first {n} pairs of the shards held out by "
              f"--set data.holdout={args.holdout}; train with that setting so they stay out of training)")
        built.append(out / "cc12m")
    if args.coco:
        n = build_coco(args.coco, out, args.coco_n, args.seed)
        print(f"genref: MS-COCO-{n}: {out / 'coco'}")
        built.append(out / "coco")
    if not built:
        from benchmark.config import ConfigError

        raise ConfigError("genref: pass --cc12m SHARDS_ROOT and/or --coco COCO_ROOT")
    for folder in built:
        try:
            h = reference_statistics(folder, args.inception_path, args.fid_mode)
            print(f"genref: clean-fid statistics of {folder.name}: {h}")
        except FileNotFoundError as e:
            print(f"genref: no statistics yet for {folder.name} ({str(e).split('. ')[0]}); fid computes them on first use")
    print(f"use them with: --set eval.gen_root={out} (or export DREAM_BENCH_GEN_REF={out})")
    return 0
