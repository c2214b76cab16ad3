"""Helpers for tests of the suite and of third-party plugins: a smaller-than-tiny model on the same code paths, and
CC12M shards in the img2dataset layout written on the spot."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def small_overrides(objective: str = "dream", **extra: object) -> dict[str, str]:
    """`--set` overrides for a smaller-than-tiny model (fast loop tests; same code paths as every preset). The
    objective's fields are set only where ``objective``'s settings have them (e.g. no CLIP head for MAR)."""
    from benchmark.config import plugin_class

    fields = plugin_class("objective", objective).Settings.field_names()
    base = {"model.width": "64", "model.depth": "4", "model.heads": "2", "model.buffer_tokens": "4",
            "model.head_width": "64", "model.head_depth": "2", "model.aligner_depth": "1",
            "objective.proj_hidden": "64", "objective.embed_dim": "32", "train.batch_size": "16",
            "data.n_train": "256", "eval.samples": "0", "schedule.group_size": "4"}
    base = {k: v for k, v in base.items() if not k.startswith("objective.") or k.split(".")[1] in fields}
    base.update({k: str(v) for k, v in extra.items()})
    return base


CORRUPT = "000100002"  # the key write_img2dataset_shards truncates (sample 2 of shard 1)


def write_img2dataset_shards(root: Path, n_shards: int = 4, per_shard: int = 5, height: int = 32,
                             width: int = 48) -> dict[str, str]:
    """``{00000..}.tar`` with <key>.jpg/.txt/.json as img2dataset writes them; sample 2 of shard 1 has a
    truncated JPEG. Returns {key: caption} of the readable samples."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    good = {}
    for s in range(n_shards):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"{s:04d}{i:05d}"
                # smooth content (JPEG keeps it to a few grey levels), distinct per sample and asymmetric
                yy, xx = np.mgrid[0:height, 0:width]
                img = np.stack([(xx * 5 + s * 40) % 256, (yy * 7 + i * 50) % 256, (xx + yy) * 2 % 256], -1)
                img = (img + rng.integers(0, 3, img.shape)).clip(0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=95)
                jpg = buf.getvalue()
                caption = f"a picture number {i} of shard {s}"
                if key == CORRUPT:
                    jpg = jpg[:40]  # truncated: PIL cannot decode it
                else:
                    good[key] = caption
                files = {f"{key}.jpg": jpg, f"{key}.txt": caption.encode(),
                         f"{key}.json": json.dumps({"key": key, "status": "success"}).encode()}
                for name, data in files.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return good
