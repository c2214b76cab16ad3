"""The synthetic reference network: the embedded default's stand-in for Inception (FID) and CLIP (CLIP score).

A small CNN trained once on synthetic captioned shapes to predict the main object's shape (6) and colour
(8); its pooled penultimate features (``dim``) feed the Fréchet distance ``fd_ref``, its two heads the
caption ``agreement``. Trained deterministically on a scene seed no other split uses, checked on the
held-out ``probe_test`` scenes, cached under ``cache_root()/reference/<hash of the recipe>.pt`` so every
run and every task share one network. Reported under its own names, never as FID / CLIP score.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from benchmark.data.synthetic import VERSION as SYNTHETIC_VERSION

REFERENCE_SEED = 101  # scene seed of the reference network's training scenes (disjoint from SYNTHETIC_SPLITS)


@dataclass(frozen=True)
class RefRecipe:
    image_size: int = 32
    n_train: int = 6144
    epochs: int = 4
    batch: int = 128
    lr: float = 3e-3
    width: int = 32  # channels of the first stage; doubled twice
    seed: int = 0
    version: int = 2  # bump when the architecture or the training changes
    data_version: int = SYNTHETIC_VERSION  # the scenes it is trained on and checked against

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


DEFAULT_RECIPE = RefRecipe()  # what the tasks use (tests swap in a smaller one)


class RefNet(nn.Module):
    """conv stages (stride 2) -> global average pool -> features -> shape and colour heads.
    Input: uint8-range floats [N, 3, H, W] in [0, 255] (what clean-fid hands a feature extractor)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()

        def stage(i: int, o: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        w = width
        self.body = nn.Sequential(*stage(3, w, 1), *stage(w, 2 * w, 2), *stage(2 * w, 2 * w, 1),
                                  *stage(2 * w, 4 * w, 2), *stage(4 * w, 4 * w, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dim = 4 * w
        self.shape_head = nn.Linear(self.dim, 6)
        self.color_head = nn.Linear(self.dim, 8)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x / 127.5 - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # clean-fid calls the extractor: features
        return self.features(x)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.shape_head(f).argmax(1), self.color_head(f).argmax(1)


def _train(recipe: RefRecipe) -> tuple[RefNet, dict]:
    from benchmark.data import SYNTHETIC_SPLITS
    from benchmark.data.synthetic import SyntheticShapes

    torch.manual_seed(recipe.seed)
    g = torch.Generator().manual_seed(recipe.seed)
    ds = SyntheticShapes(recipe.n_train, seed=REFERENCE_SEED, image_size=recipe.image_size)
    x, ys, yc = ds.images.float(), ds.labels["shape"], ds.labels["color"]
    net = RefNet(recipe.width)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=1e-4)
    steps = recipe.epochs * (len(x) // recipe.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=steps)
    net.train()
    for _ in range(recipe.epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(len(x) // recipe.batch):
            idx = perm[i * recipe.batch:(i + 1) * recipe.batch]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5  # shapes are left-right symmetric: labels unchanged
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            f = net.features(xb)
            loss = (nn.functional.cross_entropy(net.shape_head(f), ys[idx])
                    + nn.functional.cross_entropy(net.color_head(f), yc[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    te = SyntheticShapes(1024, seed=SYNTHETIC_SPLITS["probe_test"], image_size=recipe.image_size)
    with torch.no_grad():
        ps, pc = net.predict(te.images.float())
    acc = {"shape_acc": float((ps == te.labels["shape"]).float().mean() * 100),
           "color_acc": float((pc == te.labels["color"]).float().mean() * 100),
           "both_acc": float(((ps == te.labels["shape"]) & (pc == te.labels["color"])).float().mean() * 100)}
    return net, acc


def load_reference(recipe: RefRecipe | None = None, image_size: int | None = None) -> tuple[RefNet, dict]:
    """The cached reference network for ``recipe`` (trained on first use, ~10 s on 2 CPU cores) and its
    facts: recipe hash and held-out accuracies (percent) of shape, colour and both. ``image_size``: trained on
    scenes of the generator's resolution, since a network trained at 32 px misjudges 16-px images."""
    from benchmark.data import cache_root
    from benchmark.records import atomic_torch_save

    recipe = recipe or DEFAULT_RECIPE
    if image_size is not None:
        recipe = replace(recipe, image_size=int(image_size))
    path = Path(cache_root()) / "reference" / f"refnet-{recipe.key()}.pt"
    if path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=False)
        net = RefNet(recipe.width)
        net.load_state_dict(blob["state"])
        return net.eval().requires_grad_(False), blob["info"]
    net, acc = _train(recipe)
    info = {"hash": recipe.key(), "recipe": asdict(recipe), "held_out": acc, "dim": net.dim}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"state": net.state_dict(), "info": info}, path)
    return net.eval().requires_grad_(False), info
