"""Linear probe (Table 22, the MAE/MAGE ``main_linprobe`` protocol): BatchNorm without affine + linear head
on frozen, mean-pooled encoder features, LARS (trust 0.001, momentum 0.9, wd 0; weights adapted, biases
not), lr = blr x batch / 256, per-iteration half-cycle cosine after a linear warmup, plain cross-entropy.

Modes (``eval.lp_mode``, written into the record):
* ``fast``: features of centre-crop images are extracted once (the shared feature cache) and the probe trains
  on them without augmentation: anchors-eval §8 expects ~0.5-2 points of difference from the exact protocol.
* ``augmented``: the exact protocol: every iteration re-encodes a batch with RandomResizedCrop(image size,
  scale (``eval.lp_aug_scale`` = 0.2, 1), bicubic) + horizontal flip (MAGE), the evaluation uses centre crops.

The effective batch is ``eval.lp_batch`` (4096); with ``eval.lp_micro_batch`` > 0 it is accumulated from
micro-batches, whose BatchNorm statistics are then per micro-batch (as per GPU in the DDP reference).

On ``data=synthetic`` the labels are the scenes' 48 shape x colour classes (probe-train and probe-test are
disjoint scene seeds); otherwise ImageNet-1K in ImageFolder layout (train -> val).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from benchmark.tasks._features import cached, dataset_features
from benchmark.tasks.base import Task, extract_features
from torch import nn

from benchmark.registry import register_task


def synthetic_probe_split(cfg, split: str):
    from benchmark.data import SYNTHETIC_SPLITS
    from benchmark.data.synthetic import SyntheticShapes

    n = cfg.eval.n_probe_train if split == "probe_train" else cfg.eval.n_probe_test
    return SyntheticShapes(n, seed=SYNTHETIC_SPLITS[split], image_size=cfg.model.image_size)


def synthetic_features(model, cfg, ds, split: str) -> torch.Tensor:
    """Cached centre (= whole) image features of a synthetic split; the key is shared with few-shot."""
    from benchmark.data.synthetic import data_tag

    e = cfg.eval
    return cached(model, f"{data_tag()}-{split}-n{len(ds)}-clean-center{cfg.model.image_size}-pool={e.lp_pool}",
                  lambda: extract_features(model, ds.images, e.lp_pool, e.batch_size))


def load_probe_data(model, cfg) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Fast mode: (train features, train labels, test features, test labels, classes)."""
    e = cfg.eval
    if cfg.data.name == "synthetic":
        tr, te = synthetic_probe_split(cfg, "probe_train"), synthetic_probe_split(cfg, "probe_test")
        return (synthetic_features(model, cfg, tr, "probe_train"), tr.labels["class"],
                synthetic_features(model, cfg, te, "probe_test"), te.labels["class"], len(tr.class_names))
    from benchmark.data.evalsets import imagenet_root, load_imagenet

    root = imagenet_root(cfg)
    out = []
    for split in ("train", "val"):
        ds = load_imagenet(root, split)
        out += [dataset_features(model, ds, cfg.model.image_size, e.lp_pool, e.batch_size, cfg.data.num_workers),
                torch.tensor(ds.labels)]
    return out[0], out[1], out[2], out[3], 1000


def lars_param_groups(head: nn.Module) -> list[dict]:
    """MAE's LARS adapts (trust ratio) and decays only parameters with ndim > 1; timm's Lars adapts a group
    only with wd != 0 or ``always_adapt``, so the weights get ``always_adapt`` and the biases a plain group."""
    weights = [p for p in head.parameters() if p.ndim > 1]
    others = [p for p in head.parameters() if p.ndim <= 1]
    return [{"params": weights, "always_adapt": True}, {"params": others, "always_adapt": False}]


def cosine_lr(it: int, total: int, warm: int, lr: float, min_lr: float = 0.0) -> float:
    """Linear warmup then half-cycle cosine, per iteration (MAE util/lr_sched)."""
    if it < warm:
        return lr * it / warm
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (it - warm) / max(1, total - warm)))


def fit_head(head: nn.Module, batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]], epochs: int,
             iters_per_epoch: int, batch: int, blr: float, warmup_epochs: int, micro_batch: int = 0) -> nn.Module:
    """Train ``head`` with LARS + cosine; ``batches(epoch)`` yields (features, labels) of size ``batch``."""
    from timm.optim import Lars

    lr = blr * batch / 256
    opt = Lars(lars_param_groups(head), lr=lr, momentum=0.9, weight_decay=0.0, trust_coeff=0.001)
    total, warm = epochs * iters_per_epoch, warmup_epochs * iters_per_epoch
    it = 0
    head.train()
    for epoch in range(epochs):
        for x, y in batches(epoch):
            for group in opt.param_groups:
                group["lr"] = cosine_lr(it, total, warm, lr)
            opt.zero_grad()
            step = micro_batch if 0 < micro_batch < len(x) else len(x)
            for i in range(0, len(x), step):  # gradient accumulation: mean CE over the full batch
                loss = nn.functional.cross_entropy(head(x[i:i + step]), y[i:i + step], reduction="sum") / len(x)
                loss.backward()
            opt.step()
            it += 1
    return head.eval()


def make_head(dim: int, classes: int, generator: torch.Generator) -> nn.Module:
    head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, classes))
    nn.init.trunc_normal_(head[1].weight, std=0.01, generator=generator)
    nn.init.zeros_(head[1].bias)
    return head


def train_probe(ftr: torch.Tensor, ytr: torch.Tensor, classes: int, epochs: int, batch: int, blr: float,
                warmup_epochs: int, seed: int = 0, micro_batch: int = 0) -> nn.Module:
    """Fast mode: the probe on fixed features (drop_last batches of a seeded permutation per epoch)."""
    g = torch.Generator().manual_seed(seed)
    head = make_head(ftr.shape[1], classes, g)
    batch = min(batch, len(ftr))
    iters = max(1, len(ftr) // batch)

    def batches(epoch: int):
        perm = torch.randperm(len(ftr), generator=g)
        for i in range(iters):
            idx = perm[i * batch:(i + 1) * batch]
            yield ftr[idx], ytr[idx]

    return fit_head(head, batches, epochs, iters, batch, blr, warmup_epochs, micro_batch)


class _Augmented(torch.utils.data.Dataset):
    """uint8 images (a tensor, or an EvalSplit of PIL images) under RandomResizedCrop + flip."""

    def __init__(self, images, labels, size: int, scale: float) -> None:
        from torchvision.transforms import v2 as T

        self.images, self.labels = images, labels
        self.tf = T.Compose([T.RandomResizedCrop(size, scale=(scale, 1.0), interpolation=T.InterpolationMode.BICUBIC,
                                                 antialias=True), T.RandomHorizontalFlip(), T.PILToTensor()])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = self.images[i] if isinstance(self.images, torch.Tensor) else self.images.image(i)
        return self.tf(img), int(self.labels[i])


def train_probe_augmented(model, cfg, train_images, train_labels, classes: int) -> nn.Module:
    """Augmented mode: features of freshly augmented crops at every iteration (frozen encoder, no grad)."""
    e = cfg.eval
    g = torch.Generator().manual_seed(cfg.seed)
    ds = _Augmented(train_images, train_labels, cfg.model.image_size, e.lp_aug_scale)
    batch = min(e.lp_batch, len(ds))
    iters = max(1, len(ds) // batch)
    torch.manual_seed(cfg.seed)  # the crops and flips draw from the global RNG in the loader's main process
    head = None

    def batches(epoch: int):
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True,
                                             generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch),
                                             num_workers=cfg.data.num_workers)
        for x, y in loader:
            yield extract_features(model, x, e.lp_pool, e.batch_size), y

    dim = extract_features(model, ds[0][0][None], e.lp_pool).shape[1]
    head = make_head(dim, classes, g)
    return fit_head(head, batches, e.lp_epochs, iters, batch, e.lp_blr, e.lp_warmup_epochs, e.lp_micro_batch)


@register_task("lp")
class LinearProbe(Task):
    """Linear probe on frozen mean-pooled encoder features (Table 22)."""

    version = 2  # 2: LARS trust ratio on the weights (v1 used timm's Lars with wd 0, i.e. plain momentum SGD)
    higher_is_better = {"top1": True, "top5": True}
    requires = ("imagenet",)

    def run(self, model, cfg) -> dict[str, float]:
        e = cfg.eval
        if e.lp_mode == "fast":
            ftr, ytr, fte, yte, classes = load_probe_data(model, cfg)
            head = train_probe(ftr, ytr, classes, e.lp_epochs, e.lp_batch, e.lp_blr, e.lp_warmup_epochs, cfg.seed,
                               e.lp_micro_batch)
            n_train = len(ftr)
        else:
            if cfg.data.name == "synthetic":
                tr, te = synthetic_probe_split(cfg, "probe_train"), synthetic_probe_split(cfg, "probe_test")
                head = train_probe_augmented(model, cfg, tr.images, tr.labels["class"], len(tr.class_names))
                fte, yte, classes = synthetic_features(model, cfg, te, "probe_test"), te.labels["class"], len(tr.class_names)
                n_train = len(tr)
            else:
                from benchmark.data.evalsets import imagenet_root, load_imagenet

                root = imagenet_root(cfg)
                tr, te = load_imagenet(root, "train"), load_imagenet(root, "val")
                head = train_probe_augmented(model, cfg, tr, tr.labels, 1000)
                fte = dataset_features(model, te, cfg.model.image_size, e.lp_pool, e.batch_size, cfg.data.num_workers)
                yte, classes, n_train = torch.tensor(te.labels), 1000, len(tr)
        with torch.no_grad():
            logits = head(fte)
        top5 = logits.topk(min(5, classes), dim=1).indices
        self._extra = {"mode": e.lp_mode, "pool": e.lp_pool, "n_train": n_train, "n_test": len(fte),
                       "classes": classes, "data": cfg.data.name, "epochs": e.lp_epochs, "batch": e.lp_batch,
                       "micro_batch": e.lp_micro_batch, "blr": e.lp_blr,
                       "augmentation": "none (cached centre crops)" if e.lp_mode == "fast"
                       else f"RandomResizedCrop scale ({e.lp_aug_scale}, 1) + flip"}
        return {
            "top1": 100.0 * (top5[:, 0] == yte).float().mean().item(),
            "top5": 100.0 * (top5 == yte[:, None]).any(1).float().mean().item(),
            "chance": 100.0 / classes,
        }

