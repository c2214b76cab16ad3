"""Linear monocular depth on frozen encoder features (Table 9, §9.5.4; DINOv3 NYU-Depth-v2 linear protocol).

Head BatchNorm -> 1x1 conv to 256 bins over [0.001, 10] m, "linear" bin normalisation, depth = the weighted sum of
the bin centres, predicted at patch resolution and upsampled to the depth map before the loss; SigLoss (its first
100 iterations only the mean term); AdamW (betas 0.9/0.99, wd 1e-4, clip 35) with a one-cycle schedule (the paper:
38.4k iterations, lr 3e-4, 12.8k warmup); NYU fixed crop + random crop 416x544, brightness, flips. Evaluation: the
full image, flip test-time augmentation, prediction clamped to [0.001, 10], ground truth restricted to (0.001, 10)
and the Eigen crop; RMSE, ARel and δ1-δ3 (fractions) per image, averaged over images.

Resolution (``eval.dense_resolution``, recorded): images are resized so the short side is the resolution (256 px
for the paper models, both sides rounded to the 16-px token stride: 416x544 crops -> 256x336, 480x640 frames ->
256x336) with position embeddings resampled to that grid; the depth maps keep their size. On ``data=synthetic``
the targets are the scenes' depth maps (square images at the model's size: the native grid, no NYU/Eigen crops).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from benchmark.tasks import _dense as D
from benchmark.tasks.base import Task, TaskSettings

from benchmark.data.dense import build_dense_data
from benchmark.registry import register_task
from benchmark.settings import check


@dataclass
class DepthSettings(TaskSettings):
    """The NYU-v2 linear depth probe (§9.5.4, DINOv3's config). ``--set task.depth.<field>=`` (or ``eval.depth_<field>``)."""

    prefix = "depth_"
    lr: float = 3e-4  # §9.5.4 "learning rate of 3e-4"
    iters: int = 38_400  # §9.5.4 "38.4k iterations"
    warmup: int = 12_800  # §9.5.4 "12.8k warm-up steps"
    weight_decay: float = 1e-4  # DINOv3 NYU config (AdamW betas 0.9, 0.99)
    grad_clip: float = 35.0  # DINOv3 NYU config
    bins: int = 256  # DINOv3 NYU config: 256 bins over [min, max] metres
    min: float = 1e-3
    max: float = 10.0

    def validate(self, run) -> None:
        check(self.iters >= 1 and self.lr > 0, "task.depth.iters must be >= 1 and task.depth.lr > 0")
        check(0 <= self.warmup < self.iters, f"task.depth.warmup must be in [0, task.depth.iters), got {self.warmup}")
        check(0 < self.min < self.max and self.bins >= 2, "task.depth.min/max need 0 < min < max and task.depth.bins >= 2")


@register_task("depth")
class Depth(Task):
    """Linear depth probe (NYU-Depth-v2, or the synthetic scenes' depth maps)."""

    Settings = DepthSettings
    version = 1
    higher_is_better = {"rmse": False, "arel": False, "d1": True, "d2": True, "d3": True}
    requires = ("nyu_depth_v2",)

    def run(self, model, cfg) -> dict[str, float]:
        e, device = cfg.eval, model.device
        q = cfg.task_settings("depth")
        res, stride = D.probe_resolution(cfg)
        train, test, data_name = build_dense_data(cfg, "depth")
        nyu = data_name == "nyu_depth_v2"
        lo, hi = q.min, q.max
        torch.manual_seed(cfg.seed)
        head = D.LinearDepthHead(D.feature_dim(model, e.dense_tokens), q.bins, lo, hi).to(device)

        t0 = time.time()
        if e.dense_mode == "fast":
            imgs = torch.stack([train[i][0] for i in range(len(train))])
            x = D.resize_to_stride(D.normalize(imgs), res, stride)
            feats = torch.cat([D.patch_features(model, x[i:i + e.batch_size], e.dense_layer, e.dense_tokens).cpu()
                               for i in range(0, len(x), e.batch_size)])
            depths = torch.stack([train[i][1] for i in range(len(train))])
            batches = ((f.to(device), y.to(device)) for f, y in D.cached_batches(feats, depths, e.dense_batch, cfg.seed))
        else:
            loader = D.infinite_batches(D.DepthTrainSet(train, res, stride, nyu), e.dense_batch, q.iters, cfg.seed,
                                        cfg.data.num_workers)
            batches = ((D.patch_features(model, x, e.dense_layer, e.dense_tokens), y.to(device)) for x, y in loader)

        def loss_fn(pred, gt, it):
            pred = F.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            return D.sig_loss(pred, gt, (gt > lo) & (gt < hi), warmup=it < D.SIGLOSS_WARMUP)

        start = q.lr / D.DEPTH_DIV_FACTOR  # torch/mmcv OneCycle: min lr = start lr / final_div_factor
        curve = D.train_head(head, batches, loss_fn, q.iters, q.lr, q.warmup, D.DEPTH_BETAS,
                             q.weight_decay, start, start / D.DEPTH_FINAL_DIV, q.grad_clip, D.DEPTH_MOMENTUM)
        t_train = time.time() - t0

        # Mean valid training depth: the trivial baseline (computed on <= 500 training maps).
        total, count = 0.0, 0
        for i in range(0, len(train), max(1, len(train) // 500)):
            gt = train[i][1]
            ok = (gt > lo) & (gt < hi)
            total, count = total + float(gt[ok].double().sum()), count + int(ok.sum())
        mean_depth = total / max(count, 1)

        def predict(x):
            pred = head(D.patch_features(model, x, e.dense_layer, e.dense_tokens))
            return pred

        head.eval()
        per_image, per_base = [], []
        with torch.no_grad():
            for imgs, gts in D.eval_groups(test, e.dense_batch):
                x = D.resize_to_stride(D.normalize(imgs).to(device), res, stride)
                size = gts.shape[-2:]
                pred = F.interpolate(predict(x), size=size, mode="bilinear", align_corners=False)
                flipped = F.interpolate(predict(x.flip(-1)), size=size, mode="bilinear", align_corners=False).flip(-1)
                pred = ((pred + flipped) / 2)[:, 0].clamp(lo, hi).cpu()
                for p, gt in zip(pred, gts):
                    ok = (gt > lo) & (gt < hi)
                    if nyu:
                        ok &= D.eigen_mask(*gt.shape)
                    if ok.any():
                        per_image.append(D.depth_metrics(p[ok], gt[ok]))
                        per_base.append(D.depth_metrics(torch.full_like(gt[ok], mean_depth), gt[ok]))

        def mean(rows):
            return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}

        metrics, base = mean(per_image), mean(per_base)
        self._extra = {
            "data": data_name, "standard_split": bool(getattr(train, "standard", False) and getattr(test, "standard", False)),
            "n_train": len(train), "n_test": len(per_image), "mode": e.dense_mode,
            "resolution": D.resolution_note(cfg, res, stride) if not nyu else
            f"short side {res} px, sides rounded to the {stride}-px token stride, position embeddings resampled",
            "layer": "last (after the final norm)" if e.dense_layer == 0 else f"block {e.dense_layer} (raw)",
            "tokens": e.dense_tokens, "iters": q.iters, "lr": q.lr, "warmup": q.warmup,
            "batch": e.dense_batch, "bins": q.bins, "depth_range": [lo, hi], "eigen_crop": nyu, "flip_tta": True,
            "loss_first": curve[0], "loss_last": sum(curve[-20:]) / len(curve[-20:]), "train_s": round(t_train, 2),
            "delta_unit": "fraction", "rmse_unit": "metres (scene units on synthetic data)",
            "baseline": "mean valid training depth", "baseline_depth": mean_depth,
            "baseline_rmse": base["rmse"], "baseline_arel": base["arel"], "baseline_d1": base["d1"],
        }
        return metrics

