"""End-to-end fine-tuning (Table 23; MAE/MAGE ``main_finetune``) with timm's pieces.

Model: the trained encoder (a copy; the run's weights are untouched) -> mean pool (``eval.lp_pool``) -> a fresh
LayerNorm (MAE's ``fc_norm`` of the global-pool path) -> Linear head (trunc-normal std 2e-5). Stochastic depth
rises linearly to ``task.ft.drop_path`` (0.2) over the encoder blocks. AdamW (0.9, 0.999), wd 0.05 except on
1-D parameters, the buffer tokens and the position embedding; layer-wise lr decay 0.75 (BEiT): the buffer
tokens, the input projection (and its LayerNorm) and the encoder position embedding are layer 0, block k is
layer k + 1, the final norm, fc_norm and head get scale 1. lr = blr x batch / 256, per-iteration warmup + cosine
to min_lr 1e-6. Training transform: timm ``create_transform`` (RandomResizedCrop (0.08, 1), flip, RandAugment
``rand-m9-mstd0.5-inc1``, no random erasing), timm ``Mixup`` (mixup 0.8, cutmix 1.0, label smoothing 0.1) with
``SoftTargetCrossEntropy``. Evaluation: bicubic resize + centre crop (crop_pct 1.0 at 256 px, as MAGE).

The fine-tuned classifier is kept per (checkpoint, ft settings) in memory and on disk under
``<cache>/ft/`` so ``robustness`` reuses it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass

import torch
from benchmark.tasks.base import Task, TaskSettings
from torch import nn

from benchmark.registry import register_task
from benchmark.settings import check

_MEMORY: dict[str, nn.Module] = {}


@dataclass
class FineTuneSettings(TaskSettings):
    """Table 23 (MAE/MAGE ``main_finetune``). ``--set task.ft.<field>=`` (or the older ``eval.ft_<field>``)."""

    prefix = "ft_"
    epochs: int = 50  # Table 23
    warmup_epochs: int = 5  # Table 23
    blr: float = 2.5e-4  # Table 23 "Base learning rate"; lr = blr x batch / 256
    min_lr: float = 1e-6  # MAE/MAGE main_finetune --min_lr
    batch: int = 1024  # Table 23
    micro_batch: int = 0  # > 0: gradient accumulation of micro-batches up to batch
    weight_decay: float = 0.05  # Table 23
    beta2: float = 0.999  # Table 23 "Optimizer momentum" (0.9, 0.999)
    layer_decay: float = 0.75  # Table 23 "Layer-wise LR decay"
    smoothing: float = 0.1  # Table 23 "Label smoothing"
    randaug: str = "rand-m9-mstd0.5-inc1"  # Table 23 "RandAug (9, 0.5)" (timm string of MAE/MAGE)
    mixup: float = 0.8  # Table 23 "Mixup"
    cutmix: float = 1.0  # Table 23 "CutMix"
    reprob: float = 0.0  # Table 23 "Random erase"
    drop_path: float = 0.2  # Table 23 "Drop path"
    n_train: int = 0  # synthetic only: fine-tuning scenes (0 = eval.n_probe_train)

    def validate(self, run) -> None:
        check(self.micro_batch >= 0, f"task.ft.micro_batch must be >= 0, got {self.micro_batch}")
        check(self.epochs >= 1 and 0 <= self.warmup_epochs <= self.epochs,
              "task.ft.epochs >= 1, 0 <= task.ft.warmup_epochs <= task.ft.epochs")
        check(0 < self.layer_decay <= 1, f"task.ft.layer_decay must be in (0, 1], got {self.layer_decay}")
        check(0 <= self.drop_path < 1 and 0 <= self.smoothing < 1, "task.ft.drop_path and task.ft.smoothing must be in [0, 1)")


class FineTuneModel(nn.Module):
    """Encoder + global pool + fc_norm + linear head; ``forward`` takes uint8 images [B, 3, H, W]."""

    def __init__(self, backbone: nn.Module, tokenizer: nn.Module, classes: int, pool: str, drop_path: float) -> None:
        super().__init__()
        from timm.layers import DropPath

        enc = copy.deepcopy(backbone)
        if getattr(enc, "with_decoder", False):  # only the encoder is fine-tuned
            for name in ("decoder_embed", "mask_token", "decoder_pos", "decoder_proj_ln", "decoder_blocks",
                         "decoder_norm", "diffusion_pos", "text_proj", "text_pos", "text_proj_ln", "aligner_blocks",
                         "null_text", "head"):
                if hasattr(enc, name):
                    delattr(enc, name)
        self.encoder, self.pool = enc, pool
        self._tokenizer = [tokenizer]  # frozen and shared with the run: not a submodule (not trained, not saved)
        depth = len(enc.encoder_blocks)
        for i, blk in enumerate(enc.encoder_blocks):  # stochastic depth, linear in depth (timm / MAE)
            rate = drop_path * i / max(1, depth - 1)
            blk.drop_path1 = DropPath(rate) if rate > 0 else nn.Identity()
            blk.drop_path2 = DropPath(rate) if rate > 0 else nn.Identity()
        width = enc.encoder_norm.normalized_shape[0]
        self.fc_norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward_float(self, x: torch.Tensor) -> torch.Tensor:
        """x: float images in [-1, 1]."""
        with torch.no_grad():
            tokens = self._tokenizer[0].encode(x, generator=torch.Generator(device=x.device).manual_seed(0))
        return self.head(self.fc_norm(self.encoder.encode(tokens).pool(self.pool)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_float(images.float() / 127.5 - 1.0)


def layer_id(name: str, num_layers: int) -> int:
    """BEiT/MAE ``get_layer_id_for_vit`` with DREAM's extra layer-0 parameters (anchors-eval §2.2)."""
    if name.startswith(("encoder.buffer", "encoder.encoder_pos", "encoder.z_proj")):  # z_proj and z_proj_ln
        return 0
    if name.startswith("encoder.encoder_blocks."):
        return int(name.split(".")[2]) + 1
    return num_layers


def layer_decay_groups(model: FineTuneModel, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW parameter groups with ``lr_scale`` = decay^(num_layers - layer id); no decay on 1-D params,
    the buffer tokens and the position embedding (MAE ``no_weight_decay``: pos_embed, cls_token)."""
    num_layers = len(model.encoder.encoder_blocks) + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim == 1 or name in ("encoder.buffer", "encoder.encoder_pos")
        lid = layer_id(name, num_layers)
        g = groups.setdefault((lid, no_decay), {"params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay,
                                                "lr_scale": layer_decay ** (num_layers - lid), "layer": lid})
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


def _ft_key(cfg, ckpt: str) -> str:
    e = cfg.eval
    ft = {f"ft_{k}": v for k, v in asdict(cfg.task_settings("ft")).items() if k != "name"}  # the cache key of eval.ft_*
    keys = ft | {"pool": e.lp_pool, "seed": cfg.seed,
                                                                        "data": cfg.data.name, "n_probe_train": e.n_probe_train}
    return ckpt + "-" + hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]


class _Train(torch.utils.data.Dataset):
    def __init__(self, images, labels, transform) -> None:
        self.images, self.labels, self.tf = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from torchvision.transforms.functional import to_pil_image

        img = to_pil_image(self.images[i]) if isinstance(self.images, torch.Tensor) else self.images.image(i)
        return self.tf(img), int(self.labels[i])


def training_data(cfg):
    """(train images (uint8 tensor or EvalSplit), labels, classes, class names)."""
    if cfg.data.name == "synthetic":
        from benchmark.data import SYNTHETIC_SPLITS
        from benchmark.data.synthetic import SyntheticShapes

        ds = SyntheticShapes(cfg.task_settings("ft").n_train or cfg.eval.n_probe_train, seed=SYNTHETIC_SPLITS["probe_train"],
                             image_size=cfg.model.image_size)
        return ds.images, ds.labels["class"], len(ds.class_names), list(ds.class_names)
    from benchmark.data.evalsets import imagenet_root, load_imagenet

    tr = load_imagenet(imagenet_root(cfg), "train")
    return tr, tr.labels, 1000, tr.classes


def _patch_timm_posterize() -> None:
    """timm's PosterizeIncreasing reaches 0 bits at magnitude 10 (reachable with mstd 0.5); Pillow >= 11 rejects
    bits=0 where older Pillow returned a black image, which is what the reference runs saw: restore that."""
    import timm.data.auto_augment as aa

    original = aa.posterize
    if getattr(original, "_dream_bench", False):
        return

    def posterize(img, bits_to_keep, **kwargs):
        if bits_to_keep <= 0:
            return img.point(lambda _: 0)
        return original(img, bits_to_keep, **kwargs)

    posterize._dream_bench = True
    for name, fn in list(aa.NAME_TO_OP.items()):
        if fn is original:
            aa.NAME_TO_OP[name] = posterize
    aa.posterize = posterize


def finetune(model, cfg) -> tuple[FineTuneModel, dict]:
    """Fine-tune (or fetch the cached result for this checkpoint and these settings)."""
    from benchmark.tasks._features import checkpoint_hash
    from benchmark.tasks.lp import cosine_lr
    from timm.data import Mixup, create_transform
    from timm.loss import SoftTargetCrossEntropy

    from benchmark.data import cache_root
    from benchmark.records import atomic_torch_save

    e = cfg.eval
    s = cfg.task_settings("ft")
    key = _ft_key(cfg, checkpoint_hash(model))
    images, labels, classes, names = training_data(cfg)
    net = FineTuneModel(model.backbone, model.tokenizer, classes, e.lp_pool, s.drop_path).to(model.device)
    batch = min(s.batch, len(labels))
    iters = max(1, len(labels) // batch)
    info = {"key": key, "classes": classes, "class_names": names, "n_train": len(labels), "batch": batch,
            "iters": iters * s.epochs}
    path = cache_root() / "ft" / f"{key}.pt"
    if key in _MEMORY:
        return _MEMORY[key], info
    if path.exists():
        net.load_state_dict(torch.load(path, map_location=model.device, weights_only=True))
        _MEMORY[key] = net.eval()
        return net, info
    torch.manual_seed(cfg.seed)
    _patch_timm_posterize()
    tf = create_transform(cfg.model.image_size, is_training=True, auto_augment=s.randaug or None,
                          interpolation="bicubic", re_prob=s.reprob, re_mode="pixel", re_count=1,
                          mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # -> [-1, 1], the tokenizer's range
    mix = Mixup(mixup_alpha=s.mixup, cutmix_alpha=s.cutmix, prob=1.0, switch_prob=0.5, mode="batch",
                label_smoothing=s.smoothing, num_classes=classes) if s.mixup > 0 or s.cutmix > 0 else None
    criterion = SoftTargetCrossEntropy() if mix else nn.CrossEntropyLoss(label_smoothing=s.smoothing)
    groups = layer_decay_groups(net, s.weight_decay, s.layer_decay)
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=0.0,
                            betas=(0.9, s.beta2))
    lr = s.blr * batch / 256
    total, warm = s.epochs * iters, s.warmup_epochs * iters
    loader = torch.utils.data.DataLoader(_Train(images, labels, tf), batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=cfg.data.num_workers,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    net.train()
    it, losses = 0, []
    for _ in range(s.epochs):
        for x, y in loader:
            x, y = x.to(model.device), y.to(model.device)
            if mix is not None and len(x) % 2 == 0:  # timm's batch mixup needs an even batch
                x, y = mix(x, y)
            elif mix is not None:
                y = nn.functional.one_hot(y, classes).float()
            cur = cosine_lr(it, total, warm, lr, s.min_lr)
            for g in opt.param_groups:
                g["lr"] = cur * g["lr_scale"]
            opt.zero_grad()
            micro = s.micro_batch if 0 < s.micro_batch < len(x) else len(x)
            total_loss = 0.0
            for i in range(0, len(x), micro):  # accumulation: mean loss over the full batch
                loss = criterion(net.forward_float(x[i:i + micro]), y[i:i + micro]) * (len(x[i:i + micro]) / len(x))
                loss.backward()
                total_loss += loss.item()
            opt.step()
            losses.append(total_loss)
            it += 1
    net.eval()
    info["loss_first_last"] = [losses[0], losses[-1]] if losses else []
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(net.state_dict(), path)
    _MEMORY[key] = net
    return net, info


@torch.no_grad()
def predict_logits(net: nn.Module, images, batch_size: int, device, size: int, workers: int = 0) -> torch.Tensor:
    """Logits of uint8 images (a tensor) or of an EvalSplit (eval transform: bicubic resize + centre crop)."""
    net.eval()
    if isinstance(images, torch.Tensor):
        return torch.cat([net(images[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)])
    from benchmark.data.evalsets import eval_transform

    images.transform = eval_transform(size)
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, num_workers=workers)
    return torch.cat([net(x.to(device)).float().cpu() for x, _ in loader])


def test_data(cfg):
    if cfg.data.name == "synthetic":
        from benchmark.data import SYNTHETIC_SPLITS
        from benchmark.data.synthetic import SyntheticShapes

        ds = SyntheticShapes(cfg.eval.n_probe_test, seed=SYNTHETIC_SPLITS["probe_test"], image_size=cfg.model.image_size)
        return ds.images, ds.labels["class"]
    from benchmark.data.evalsets import imagenet_root, load_imagenet

    val = load_imagenet(imagenet_root(cfg), "val")
    return val, torch.tensor(val.labels)


@register_task("ft")
class FineTune(Task):
    """Top-1 (%) after end-to-end fine-tuning (Table 23) on ImageNet-1K (synthetic: the 48 classes)."""

    Settings = FineTuneSettings
    version = 1
    higher_is_better = {"top1": True}

    def run(self, model, cfg) -> dict[str, float]:
        e = cfg.eval
        s = cfg.task_settings("ft")
        net, info = finetune(model, cfg)
        images, labels = test_data(cfg)
        logits = predict_logits(net, images, e.batch_size, model.device, cfg.model.image_size, cfg.data.num_workers)
        self._extra = {k: v for k, v in info.items() if k != "class_names"} | {
            "epochs": s.epochs, "blr": s.blr, "layer_decay": s.layer_decay, "drop_path": s.drop_path,
            "mixup": s.mixup, "cutmix": s.cutmix, "smoothing": s.smoothing, "randaug": s.randaug,
            "n_test": len(labels), "data": cfg.data.name, "pool": e.lp_pool}
        top1 = 100.0 * (logits.argmax(1) == labels).float().mean().item()
        return {"top1": top1, "chance": 100.0 / info["classes"]}


