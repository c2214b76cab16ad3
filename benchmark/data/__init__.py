"""Training data: the embedded synthetic captioned shapes, and CC12M webdataset shards.

``TrainData.batch(step)`` is a pure function of (seed, step): the sample order and the flips are drawn
from a generator seeded by the step, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "DREAM_BENCH_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "dream-bench"))


# Scene seeds of the synthetic splits: fixed, so every run sees the same data whatever its seed.
SYNTHETIC_SPLITS = {"train": 0, "probe_train": 1, "probe_test": 2}


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 7 + stream)


class SyntheticTrainData:
    """In-memory synthetic scenes; epochs are seeded permutations, flips swap left/right in captions."""

    def __init__(self, n: int, seed: int, image_size: int, hflip: bool = True) -> None:
        from benchmark.data.synthetic import SyntheticShapes, flip_caption

        self.ds = SyntheticShapes(n, seed=SYNTHETIC_SPLITS["train"], image_size=image_size)
        self.n, self.seed, self.hflip, self._flip_caption = n, seed, hflip, flip_caption
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm

    def batch(self, step: int, batch_size: int) -> dict[str, Any]:
        # Sample positions step*B ... step*B+B-1 of the concatenated per-epoch permutations (drop_last).
        per_epoch = self.n // batch_size
        epoch, i = divmod(step, per_epoch)
        idx = self._permutation(epoch)[i * batch_size:(i + 1) * batch_size]
        images = self.ds.images[idx].float() / 127.5 - 1.0
        captions = [self.ds.captions[j] for j in idx.tolist()]
        if self.hflip:
            flip = torch.rand(len(idx), generator=step_generator(self.seed, step, 1)) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            captions = [self._flip_caption(c) if f else c for c, f in zip(captions, flip.tolist())]
        return {"images": images, "captions": captions, "index": idx}


CC12M_HELP = (
    "CC12M is read from webdataset shards in the img2dataset layout ({00000..NNNNN}.tar holding "
    "<key>.jpg/<key>.txt/<key>.json). Make them with: img2dataset --url_list cc12m.tsv --input_format tsv "
    "--url_col url --caption_col caption --output_format webdataset --output_folder /data/cc12m "
    "--image_size 256 --resize_mode center_crop, then pass --set data.root=/data/cc12m or export "
    "DREAM_BENCH_DATA=/data/cc12m."
)


def cc12m_shards(root: str) -> list[str]:
    root = root or os.environ.get("DREAM_BENCH_DATA", "")
    shards = sorted(Path(root).glob("*.tar")) if root else []
    if not shards:
        raise FileNotFoundError(f"no CC12M shards found at {root or '(data.root is empty)'}. {CC12M_HELP}")
    return [str(s) for s in shards]


class CC12MTrainData:
    """Streaming webdataset reader: centre crop + flip (§4.1). Order is not step-addressable, so resume
    restarts the stream with a step-dependent shuffle seed (the standard webdataset trade-off)."""

    def __init__(self, root: str, seed: int, image_size: int, hflip: bool = True, num_workers: int = 8) -> None:
        self.shards = cc12m_shards(root)
        self.seed, self.image_size, self.hflip, self.num_workers = seed, image_size, hflip, num_workers
        self._it = None

    def _stream(self, start_step: int, batch_size: int):
        import webdataset as wds
        from torchvision import transforms as T

        tf = T.Compose([T.Resize(self.image_size, interpolation=T.InterpolationMode.BICUBIC),
                        T.CenterCrop(self.image_size), T.PILToTensor()])
        ds = (wds.WebDataset(self.shards, resampled=True, shardshuffle=False, seed=self.seed + start_step,
                             handler=wds.warn_and_continue)
              .shuffle(1000).decode("pil", handler=wds.warn_and_continue)
              .to_tuple("jpg;png;jpeg", "txt", handler=wds.warn_and_continue)
              .map_tuple(tf, lambda s: s).batched(batch_size, partial=False))
        loader = wds.WebLoader(ds, batch_size=None, num_workers=self.num_workers, pin_memory=torch.cuda.is_available())
        return iter(loader)

    def batch(self, step: int, batch_size: int) -> dict[str, Any]:
        if self._it is None:
            self._it = self._stream(step, batch_size)
        images, captions = next(self._it)
        images = images.float() / 127.5 - 1.0
        if self.hflip:
            flip = torch.rand(len(images), generator=step_generator(self.seed, step, 1)) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return {"images": images, "captions": list(captions)}


def build_train_data(cfg) -> SyntheticTrainData | CC12MTrainData:
    d = cfg.data
    if d.name == "synthetic":
        return SyntheticTrainData(d.n_train, cfg.seed, cfg.model.image_size, d.hflip)
    return CC12MTrainData(d.root, cfg.seed, cfg.model.image_size, d.hflip, d.num_workers)
