"""Shared machinery of the dense probes (Table 9), after the DINOv3 evaluation code (anchors-eval.md §4): frozen
patch features, the heads' training loop and one-cycle schedule, the training augmentations, slide inference
and the metrics. Plain PyTorch (no mmseg/mmcv): the anchor itself re-implemented the mmseg pipeline this way.

Conventions: images are uint8 [3, H, W] until they are normalised to the backbone's own input range [-1, 1]
(what the tokenizers take; the anchor's ImageNet mean/std belongs to DINO's inputs); padding happens after
normalisation, with 0 (the mid-gray of [-1, 1]), as mmseg pads after Normalize.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = 255  # mmseg ignore_index
SEG_RATIO_RANGE = (0.5, 2.0)  # DINOv3/mmseg ADE20K: short side = crop x U(0.5, 2.0)
SEG_CAT_MAX_RATIO = 0.75  # RandomCrop(cat_max_ratio=0.75): re-draw (<= 10 times) a crop one class dominates
SEG_SLIDE_STRIDE = 341 / 512  # slide inference: crop 512, stride 341
SEG_WARMUP_START = 1e-6  # WarmupOneCycleLR: linear warmup from lr x 1e-6, then cosine to 0
SEG_BETAS = (0.9, 0.999)
SEG_DROPOUT = 0.1  # LinearHead Dropout2d(0.1)
DEPTH_BETAS = (0.9, 0.99)
DEPTH_DIV_FACTOR = 25.0  # one-cycle start lr = lr / 25 (mmcv / torch OneCycle default)
DEPTH_FINAL_DIV = 1000.0  # DINOv3 NYU: final_div_factor 1000
DEPTH_MOMENTUM = (0.85, 0.95)  # base / max momentum (beta1), cycled inversely to the lr
SIGLOSS_LAMBDA = 0.15  # SigLoss: sqrt(var(g) + 0.15 mean(g)^2)
SIGLOSS_WARMUP = 100  # first 100 iterations: only the 0.15 mean(g)^2 term
SIGLOSS_EPS = 1e-3
NYU_FIXED_CROP = (43, 45, 608, 472)  # (x1, y1, x2, y2): the white border of the NYU frames
NYU_TRAIN_CROP = (416, 544)  # random crop (h, w)
NYU_BRIGHTNESS = (0.75, 1.25)  # ColorAug brightness
EIGEN_CROP = (45, 471, 41, 601)  # (y1, y2, x1, x2) on 480 x 640, rescaled to the GT size


# ---------------------------------------------------------------------------------------------------------
# Frozen features
# ---------------------------------------------------------------------------------------------------------
def token_stride(model_cfg) -> int:
    """Pixels per token side: the pixel patch, or VAE f8 x the latent grouping."""
    return model_cfg.patch_size * (1 if model_cfg.tokenizer == "pixel" else 8)


@contextmanager
def pos_embed_for(backbone: nn.Module, grid: tuple[int, int]):
    """Temporarily resample the encoder's position embedding to a ``grid`` of tokens (bicubic, timm),
    leaving the buffer-token rows as they are. A no-op on the native grid."""
    from timm.layers import resample_abs_pos_embed

    nb, native = backbone.num_buffer, int(round(math.sqrt(backbone.seq_len)))
    if tuple(grid) == (native, native):
        yield
        return
    old = backbone.encoder_pos
    new = resample_abs_pos_embed(old.data, list(grid), [native, native], num_prefix_tokens=nb)
    backbone.encoder_pos = nn.Parameter(new, requires_grad=False)
    try:
        yield
    finally:
        backbone.encoder_pos = old


@torch.no_grad()
def patch_features(model: Any, images: torch.Tensor, layer: int = 0, tokens: str = "image") -> torch.Tensor:
    """Frozen encoder features [B, D, h, w] (fp32) of images in [-1, 1], [B, 3, H, W] with H, W multiples of
    the token stride. ``layer`` 0 = the last block after the final norm, k = the raw output of block k.
    ``tokens`` image: the patch tokens in raster order; image+buffer: each concatenated with the mean buffer token."""
    backbone, device = model.backbone, model.device
    backbone.eval()
    stride = token_stride(model.cfg.model)
    b, _, h, w = images.shape
    if h % stride or w % stride:
        raise ValueError(f"image size {h}x{w} is not a multiple of the token stride {stride}")
    x = images.to(device, torch.float32)
    use_bf16 = device.type == "cuda"  # frozen backbone in bf16 on CUDA; heads and losses stay fp32
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16), pos_embed_for(backbone, (h // stride, w // stride)):
        out = backbone.encode(model.tokenizer.encode(x), return_layers=(layer,) if layer else ())
    feats = (out.tokens if layer == 0 else out.layers[layer]).float()
    nb = backbone.num_buffer
    img = feats[:, nb:]
    if tokens == "image+buffer":
        img = torch.cat([img, feats[:, :nb].mean(1, keepdim=True).expand_as(img)], dim=-1)
    return img.transpose(1, 2).reshape(b, img.shape[-1], h // stride, w // stride)


def feature_dim(model: Any, tokens: str) -> int:
    return model.backbone.cfg.width * (2 if tokens == "image+buffer" else 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> the tokenizers' [-1, 1]."""
    return images.float() / 127.5 - 1.0


def resize_to_stride(x: torch.Tensor, short: int, stride: int) -> torch.Tensor:
    """Bilinear resize of [B, 3, H, W] so the short side is ``short``, both sides rounded to the token stride."""
    h, w = x.shape[-2:]
    s = short / min(h, w)
    size = (max(stride, round(h * s / stride) * stride), max(stride, round(w * s / stride) * stride))
    if size == (h, w):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------------------
# Heads and losses
# ---------------------------------------------------------------------------------------------------------
class LinearSegHead(nn.Module):
    """DINOv3 LinearHead: Dropout2d(0.1) -> BatchNorm (affine) -> 1x1 conv; logits at patch resolution."""

    def __init__(self, dim: int, classes: int, dropout: float = SEG_DROPOUT) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.bn = nn.BatchNorm2d(dim)
        self.conv = nn.Conv2d(dim, classes, 1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(self.dropout(feats)))


class LinearDepthHead(nn.Module):
    """DINOv3 depth LinearHead: BatchNorm -> 1x1 conv to ``bins`` logits; FeaturesToDepth with the "linear"
    normalisation w = (relu(x) + 0.1) / sum(relu(x) + 0.1) and depth = sum w x bin centres."""

    def __init__(self, dim: int, bins: int = 256, min_depth: float = 1e-3, max_depth: float = 10.0) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(dim)
        self.conv = nn.Conv2d(dim, bins, 1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)
        self.register_buffer("centres", torch.linspace(min_depth, max_depth, bins), persistent=False)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        w = torch.relu(self.conv(self.bn(feats))) + 0.1
        w = w / w.sum(1, keepdim=True)
        return (w * self.centres[None, :, None, None]).sum(1, keepdim=True)  # [B, 1, h, w]


def sig_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, warmup: bool = False) -> torch.Tensor:
    """Scale-invariant log loss (AdaBins/BinsFormer SigLoss): g = log(pred + eps) - log(gt + eps) on valid pixels,
    sqrt(var(g) + 0.15 mean(g)^2) (unbiased variance, as torch.var); during warm-up only sqrt(0.15 mean(g)^2)."""
    g = torch.log(pred[valid] + SIGLOSS_EPS) - torch.log(gt[valid] + SIGLOSS_EPS)
    if warmup:
        return torch.sqrt(SIGLOSS_LAMBDA * g.mean() ** 2)
    return torch.sqrt(torch.var(g) + SIGLOSS_LAMBDA * g.mean() ** 2)


def one_cycle(it: int, total: int, warmup: int, peak: float, start: float, end: float) -> float:
    """Linear warmup start -> peak over ``warmup`` iterations, then cosine peak -> end (WarmupOneCycleLR)."""
    if it < warmup:
        return start + (peak - start) * it / warmup
    pct = (it - warmup) / max(1, total - warmup)
    return end + (peak - end) * (1 + math.cos(math.pi * pct)) / 2


def train_head(head: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
               loss_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], iters: int, lr: float, warmup: int,
               betas: tuple[float, float], weight_decay: float, lr_start: float, lr_end: float,
               grad_clip: float = math.inf, momentum: tuple[float, float] | None = None) -> list[float]:
    """AdamW on the head, one-cycle lr (and beta1 cycled base <-> max when ``momentum``), fp32. ``batches``
    yields (features [B, D, h, w], targets); returns the loss curve (every iteration)."""
    opt = torch.optim.AdamW(head.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
    head.train()
    curve = []
    for it in range(iters):
        feats, target = next(batches)
        for group in opt.param_groups:
            group["lr"] = one_cycle(it, iters, warmup, lr, lr_start, lr_end)
            if momentum is not None:  # OneCycle: momentum falls to base during warmup, rises back to max after
                beta1 = one_cycle(it, iters, warmup, momentum[0], momentum[1], momentum[1])
                group["betas"] = (beta1, group["betas"][1])
        loss = loss_fn(head(feats.float()), target, it)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if math.isfinite(grad_clip):
            torch.nn.utils.clip_grad_norm_(head.parameters(), grad_clip)
        opt.step()
        curve.append(float(loss.detach()))
    return curve


# ---------------------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def slide_inference(predict: Callable[[torch.Tensor], torch.Tensor], img: torch.Tensor, channels: int, crop: int,
                    stride: int) -> torch.Tensor:
    """mmseg/DINOv3 slide inference: ``predict`` maps a [B, 3, c, c] window to [B, channels, c, c]; overlapping
    windows are averaged. Windows at the border are shifted inwards so every window lies inside the image."""
    b, _, h, w = img.shape
    rows = max(h - crop + stride - 1, 0) // stride + 1
    cols = max(w - crop + stride - 1, 0) // stride + 1
    out = img.new_zeros(b, channels, h, w)
    count = img.new_zeros(1, 1, h, w)
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, h), min(c * stride + crop, w)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            out[:, :, y1:y2, x1:x2] += predict(img[:, :, y1:y2, x1:x2])
            count[:, :, y1:y2, x1:x2] += 1
    return out / count


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------
def confusion(pred: torch.Tensor, label: torch.Tensor, classes: int, ignore: int = IGNORE) -> torch.Tensor:
    """[classes, classes] counts (rows = ground truth, columns = prediction), ignored pixels dropped."""
    keep = label != ignore
    idx = label[keep].long() * classes + pred[keep].long()
    return torch.bincount(idx, minlength=classes * classes).reshape(classes, classes)


def seg_metrics(conf: torch.Tensor) -> dict[str, float]:
    """mmseg semantics on a data-set-level confusion matrix (percent): mIoU = nanmean over classes of I/U
    (classes with an empty union are NaN, so excluded), aAcc = sum I / sum label, mAcc = nanmean of I / label."""
    conf = conf.double()
    inter = conf.diag()
    label, pred = conf.sum(1), conf.sum(0)
    union = label + pred - inter
    iou = inter / union  # 0/0 -> nan
    acc = inter / label
    return {"miou": 100 * float(torch.nanmean(iou)), "pixacc": 100 * float(inter.sum() / label.sum()),
            "macc": 100 * float(torch.nanmean(acc))}


def eigen_mask(h: int, w: int) -> torch.Tensor:
    """Eigen crop (y 45:471, x 41:601 of 480x640), rescaled to an h x w map."""
    y1, y2, x1, x2 = EIGEN_CROP
    m = torch.zeros(h, w, dtype=torch.bool)
    m[int(y1 / 480 * h):int(y2 / 480 * h), int(x1 / 640 * w):int(x2 / 640 * w)] = True
    return m


def depth_metrics(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """One image's metrics on its valid pixels (1-D tensors): RMSE, ARel = mean |gt - pred| / gt, δk = fraction
    of max(gt / pred, pred / gt) < 1.25^k."""
    pred, gt = pred.double(), gt.double()
    ratio = torch.maximum(gt / pred, pred / gt)
    return {"rmse": float(torch.sqrt(((gt - pred) ** 2).mean())), "arel": float(((gt - pred).abs() / gt).mean()),
            **{f"d{k}": float((ratio < 1.25**k).double().mean()) for k in (1, 2, 3)}}


# ---------------------------------------------------------------------------------------------------------
# Training augmentation (per sample; torch's global RNG, seeded per DataLoader worker)
# ---------------------------------------------------------------------------------------------------------
def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def resize_pair(img: torch.Tensor, target: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear image (uint8 kept), nearest target, as mmseg's Resize."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img, target
    im = F.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False)[0].round().clamp(0, 255)
    tg = F.interpolate(target[None, None].float(), size=size, mode="nearest")[0, 0].to(target.dtype)
    return im.to(torch.uint8), tg


def random_crop(img: torch.Tensor, target: torch.Tensor, size: tuple[int, int], cat_max_ratio: float = 1.0,
                ignore: int = IGNORE) -> tuple[torch.Tensor, torch.Tensor]:
    """mmseg RandomCrop: a uniform crop (the whole side when it is shorter); with ``cat_max_ratio`` < 1 re-drawn up
    to 10 times until no single (non-ignored) class covers ``cat_max_ratio`` of it (or the crop has one class)."""
    h, w = img.shape[-2:]
    ch, cw = min(size[0], h), min(size[1], w)
    for _ in range(10 if cat_max_ratio < 1 else 1):
        y = int(torch.randint(0, h - ch + 1, ()))
        x = int(torch.randint(0, w - cw + 1, ()))
        t = target[y:y + ch, x:x + cw]
        if cat_max_ratio >= 1:
            break
        _, cnt = torch.unique(t[t != ignore], return_counts=True)
        if len(cnt) > 1 and cnt.max() / cnt.sum() < cat_max_ratio:
            break
    return img[:, y:y + ch, x:x + cw], t


def photometric_distortion(img: torch.Tensor) -> torch.Tensor:
    """mmseg PhotoMetricDistortion on uint8 RGB: each step with probability 0.5: brightness + U(-32, 32), contrast
    x U(0.5, 1.5) (first or last, at random), saturation x U(0.5, 1.5), hue + U(-18, 18) degrees/2 (OpenCV
    units). Saturation and hue use torchvision's HSV-equivalent adjustments."""
    import torchvision.transforms.v2.functional as TF

    x = img.float()
    if torch.rand(()) < 0.5:
        x = (x + _uniform(-32, 32)).clamp(0, 255)
    contrast_first = bool(torch.randint(0, 2, ()))
    if contrast_first and torch.rand(()) < 0.5:
        x = (x * _uniform(0.5, 1.5)).clamp(0, 255)
    x = x.round().to(torch.uint8)
    if torch.rand(()) < 0.5:
        x = TF.adjust_saturation(x, _uniform(0.5, 1.5))
    if torch.rand(()) < 0.5:
        x = TF.adjust_hue(x, _uniform(-18, 18) / 180)  # OpenCV hue spans 0..180
    if not contrast_first and torch.rand(()) < 0.5:
        x = (x.float() * _uniform(0.5, 1.5)).clamp(0, 255).round().to(torch.uint8)
    return x


class SegTrainSet(torch.utils.data.Dataset):
    """The anchor's ADE20K training pipeline at crop side ``crop``: short side = crop x U(0.5, 2), RandomCrop
    (cat_max_ratio 0.75), hflip 0.5, PhotoMetricDistortion, normalise, pad to crop x crop (image 0, label 255)."""

    def __init__(self, ds, crop: int) -> None:
        self.ds, self.crop = ds, crop

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, label = self.ds[i]
        h, w = img.shape[-2:]
        s = self.crop * _uniform(*SEG_RATIO_RANGE) / min(h, w)
        img, label = resize_pair(img, label, (max(1, round(h * s)), max(1, round(w * s))))
        img, label = random_crop(img, label, (self.crop, self.crop), SEG_CAT_MAX_RATIO)
        if torch.rand(()) < 0.5:
            img, label = img.flip(-1), label.flip(-1)
        x = normalize(photometric_distortion(img))
        ph, pw = self.crop - x.shape[-2], self.crop - x.shape[-1]
        x = F.pad(x, (0, pw, 0, ph), value=0.0)
        label = F.pad(label, (0, pw, 0, ph), value=IGNORE)
        return x, label.long()


class DepthTrainSet(torch.utils.data.Dataset):
    """The anchor's NYU training pipeline: NYU fixed crop and random crop 416 x 544 (``nyu``), brightness x U(0.75,
    1.25), hflip 0.5; then the image (not the depth map) is resized so its short side is ``short`` (multiples of the
    token stride): the prediction is upsampled to the depth map's size before the loss."""

    def __init__(self, ds, short: int, stride: int, nyu: bool) -> None:
        self.ds, self.short, self.stride, self.nyu = ds, short, stride, nyu

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, depth = self.ds[i]
        if self.nyu:
            x1, y1, x2, y2 = NYU_FIXED_CROP
            img, depth = img[:, y1:y2, x1:x2], depth[y1:y2, x1:x2]
            img, depth = random_crop(img, depth, NYU_TRAIN_CROP)
        x = img.float() * _uniform(*NYU_BRIGHTNESS)
        if torch.rand(()) < 0.5:
            x, depth = x.flip(-1), depth.flip(-1)
        x = x.clamp(0, 255) / 127.5 - 1.0
        return resize_to_stride(x[None], self.short, self.stride)[0], depth.float()


def infinite_batches(train_set, batch: int, iters: int, seed: int, num_workers: int = 0) -> Iterator:
    """``iters`` batches drawn with replacement (a seeded sampler; worker RNGs derive from the same seed)."""
    g = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(train_set, replacement=True, num_samples=iters * batch, generator=g)
    return iter(torch.utils.data.DataLoader(train_set, batch_size=batch, sampler=sampler, num_workers=num_workers,
                                            drop_last=True, generator=g, pin_memory=torch.cuda.is_available()))


def cached_batches(feats: torch.Tensor, targets: torch.Tensor, batch: int, seed: int) -> Iterator:
    """Fast mode: random batches of cached (un-augmented) features and their targets, forever."""
    g = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randint(0, len(feats), (min(batch, len(feats)),), generator=g)
        yield feats[idx], targets[idx]


@torch.no_grad()
def features_of(model: Any, images_uint8: torch.Tensor, layer: int, tokens: str, batch: int = 256) -> torch.Tensor:
    """Patch features of a stack of equally sized uint8 images, in batches, on the CPU."""
    return torch.cat([patch_features(model, normalize(images_uint8[i:i + batch]), layer, tokens).cpu()
                      for i in range(0, len(images_uint8), batch)])


def eval_groups(ds, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, targets) stacks of consecutive samples of equal size (batch 1 for data sets of mixed sizes)."""
    imgs, tgts = [], []
    for i in range(len(ds)):
        img, tgt = ds[i]
        if imgs and (len(imgs) == batch or img.shape != imgs[0].shape):
            yield torch.stack(imgs), torch.stack(tgts)
            imgs, tgts = [], []
        imgs.append(img)
        tgts.append(tgt)
    if imgs:
        yield torch.stack(imgs), torch.stack(tgts)


def probe_resolution(cfg) -> tuple[int, int]:
    """(resolution in px, token stride); the resolution must be a multiple of the stride."""
    from benchmark.config import ConfigError

    res = cfg.eval.dense_resolution or cfg.model.image_size
    stride = token_stride(cfg.model)
    if res % stride:
        raise ConfigError(f"eval.dense_resolution={res} must be a multiple of the token stride {stride}")
    if cfg.eval.dense_mode == "fast" and cfg.data.name != "synthetic":
        raise ConfigError("eval.dense_mode=fast caches every training feature map in memory and skips the anchor's "
                          "augmentation: it is for data.name=synthetic only; use eval.dense_mode=full")
    return res, stride


def resolution_note(cfg, res: int, stride: int) -> str:
    native = cfg.model.image_size // stride
    grid = res // stride
    how = "the native token grid" if grid == native else f"position embeddings resampled (bicubic) from {native}x{native}"
    return f"{res} px windows -> {grid}x{grid} tokens ({how})"
