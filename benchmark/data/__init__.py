"""Training data: the embedded synthetic captioned shapes, and CC12M webdataset shards.

``TrainData.batch(step)`` is a pure function of (seed, step): the sample order and the flips are drawn
from a generator seeded by the step, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmark.data.common import CACHE_ENV, SYNTHETIC_SPLITS, cache_root, step_generator  # noqa: F401 (re-exported)


class SyntheticTrainData:
    """In-memory synthetic scenes; epochs are seeded permutations, flips swap left/right in captions.

    ``shape_twins``: scenes come in pairs that differ only in the main object's shape (``shape_twin_scenes``); the
    permutation moves pairs, so both twins are in the same batch, flipped alike.
    """

    def __init__(self, n: int, seed: int, image_size: int, hflip: bool = True, shape_twins: bool = False) -> None:
        from benchmark.data.synthetic import SyntheticShapes, flip_caption

        self.group = 2 if shape_twins else 1
        n -= n % self.group
        self.ds = SyntheticShapes(n, seed=SYNTHETIC_SPLITS["train"], image_size=image_size, shape_twins=shape_twins)
        self.n, self.seed, self.hflip, self._flip_caption = n, seed, hflip, flip_caption
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            perm = torch.randperm(self.n // self.group, generator=g)
            # Each group (a scene, or a pair of twins) stays together: its members are consecutive indices.
            self._perm = (perm[:, None] * self.group + torch.arange(self.group)).flatten()
            self._perm_epoch = epoch
        return self._perm

    def batch(self, step: int, batch_size: int) -> dict[str, Any]:
        # Sample positions step*B ... step*B+B-1 of the concatenated per-epoch permutations (drop_last).
        if batch_size % self.group:
            raise ValueError(f"data.shape_twins needs an even train.batch_size, got {batch_size}")
        per_epoch = self.n // batch_size
        epoch, i = divmod(step, per_epoch)
        idx = self._permutation(epoch)[i * batch_size:(i + 1) * batch_size]
        images = self.ds.images[idx].float() / 127.5 - 1.0
        captions = [self.ds.captions[j] for j in idx.tolist()]
        if self.hflip:
            flip = torch.rand(len(idx) // self.group, generator=step_generator(self.seed, step, 1)) < 0.5
            flip = flip.repeat_interleave(self.group)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            captions = [self._flip_caption(c) if f else c for c, f in zip(captions, flip.tolist())]
        return {"images": images, "captions": captions, "index": idx}


from benchmark.data.cc12m import CC12M_HELP, CC12MTrainData, cache_settings, cc12m_shards  # noqa: E402,F401  (re-exported)


def build_train_data(cfg) -> SyntheticTrainData | CC12MTrainData:
    d = cfg.data
    if d.name == "synthetic":
        return SyntheticTrainData(d.n_train, cfg.seed, cfg.model.image_size, d.hflip, d.shape_twins)
    return CC12MTrainData(d.root, cfg.seed, cfg.model.image_size, d.hflip, d.num_workers, shards=d.shards,
                          cached=d.cached, cache_dir=d.cache_dir, shuffle_buffer=d.shuffle_buffer,
                          resampled=d.resampled, expect=cache_settings(cfg) if d.cached else None,
                          holdout=d.holdout)
