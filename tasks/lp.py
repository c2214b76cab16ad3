"""Linear probe (Table 22, MAE/MAGE protocol): BatchNorm without affine + linear head on frozen,
mean-pooled encoder features, LARS, per-iteration cosine schedule with linear warmup.

Mode ``fast``: features of centre-crop images are extracted once and the probe trains on them (no
augmentation); the record says so. On ``data=synthetic`` the labels are the scenes' 48 shape x colour
classes (probe-train and probe-test splits are disjoint scene seeds); otherwise ImageNet-1K in
ImageFolder layout.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from benchmark.registry import register_task
from tasks.base import Task, extract_features

IMAGENET_HELP = (
    "ImageNet-1K is read in ImageFolder layout: <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG "
    "(val sorted into class folders, e.g. with the valprep.sh script). Get it from https://image-net.org "
    "(ILSVRC2012), then pass --set eval.imagenet_root=/data/imagenet or export DREAM_BENCH_IMAGENET."
)


def load_probe_data(model, cfg) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(train features, train labels, test features, test labels, classes)."""
    e = cfg.eval
    if cfg.data.name == "synthetic":
        from benchmark.data import SYNTHETIC_SPLITS
        from benchmark.data.synthetic import SyntheticShapes

        size = cfg.model.image_size
        tr = SyntheticShapes(e.n_probe_train, seed=SYNTHETIC_SPLITS["probe_train"], image_size=size)
        te = SyntheticShapes(e.n_probe_test, seed=SYNTHETIC_SPLITS["probe_test"], image_size=size)
        ftr = extract_features(model, tr.images, e.lp_pool, e.batch_size)
        fte = extract_features(model, te.images, e.lp_pool, e.batch_size)
        return ftr, tr.labels["class"], fte, te.labels["class"], len(tr.class_names)
    root = e.imagenet_root or os.environ.get("DREAM_BENCH_IMAGENET", "")
    if not root or not (Path(root) / "train").is_dir() or not (Path(root) / "val").is_dir():
        raise FileNotFoundError(f"ImageNet not found at {root or '(eval.imagenet_root is empty)'}. {IMAGENET_HELP}")
    from torchvision import datasets
    from torchvision import transforms as T

    size = cfg.model.image_size
    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.PILToTensor()])
    out = []
    for split in ("train", "val"):
        ds = datasets.ImageFolder(str(Path(root) / split), transform=tf)
        loader = torch.utils.data.DataLoader(ds, batch_size=e.batch_size, num_workers=cfg.data.num_workers)
        feats, labels = [], []
        for x, y in loader:
            feats.append(extract_features(model, x, e.lp_pool, e.batch_size))
            labels.append(y)
        out += [torch.cat(feats), torch.cat(labels)]
    return out[0], out[1], out[2], out[3], 1000


def train_probe(ftr: torch.Tensor, ytr: torch.Tensor, classes: int, epochs: int, batch: int, blr: float,
                warmup_epochs: int, seed: int = 0) -> nn.Module:
    """BN(affine=False) + Linear (trunc-normal 0.01), LARS (momentum 0.9, wd 0), lr = blr x batch / 256,
    cosine decay per iteration after a linear warmup (Table 22)."""
    from timm.optim import Lars

    g = torch.Generator().manual_seed(seed)
    dim = ftr.shape[1]
    head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, classes))
    nn.init.trunc_normal_(head[1].weight, std=0.01, generator=g)
    nn.init.zeros_(head[1].bias)
    batch = min(batch, len(ftr))
    lr = blr * batch / 256
    opt = Lars(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    iters_per_epoch = max(1, len(ftr) // batch)
    total, warm = epochs * iters_per_epoch, warmup_epochs * iters_per_epoch
    it = 0
    head.train()
    for _ in range(epochs):
        perm = torch.randperm(len(ftr), generator=g)
        for i in range(iters_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            cur = lr * it / warm if it < warm else lr * 0.5 * (1 + math.cos(math.pi * (it - warm) / max(1, total - warm)))
            for group in opt.param_groups:
                group["lr"] = cur
            loss = nn.functional.cross_entropy(head(ftr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            it += 1
    return head.eval()


@register_task("lp")
class LinearProbe(Task):
    """Linear probe on frozen mean-pooled encoder features (Table 22)."""

    version = 1
    higher_is_better = {"top1": True, "top5": True}
    requires = ("imagenet",)

    def run(self, model, cfg) -> dict[str, float]:
        e = cfg.eval
        ftr, ytr, fte, yte, classes = load_probe_data(model, cfg)
        head = train_probe(ftr, ytr, classes, e.lp_epochs, e.lp_batch, e.lp_blr, e.lp_warmup_epochs, cfg.seed)
        with torch.no_grad():
            logits = head(fte)
        top5 = logits.topk(min(5, classes), dim=1).indices
        self._extra = {"mode": e.lp_mode, "pool": e.lp_pool, "n_train": len(ftr), "n_test": len(fte),
                       "classes": classes, "data": cfg.data.name}
        return {
            "top1": 100.0 * (top5[:, 0] == yte).float().mean().item(),
            "top5": 100.0 * (top5 == yte[:, None]).any(1).float().mean().item(),
            "chance": 100.0 / classes,
        }

    def extra(self):
        return getattr(self, "_extra", {})
