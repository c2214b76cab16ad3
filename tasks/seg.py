"""Linear semantic segmentation on frozen encoder features (Table 9, §9.5.3; DINOv3 ADE20K linear protocol).

Head Dropout2d(0.1) -> BatchNorm -> 1x1 conv on the last layer's normed patch tokens, logits upsampled to the label
size, cross-entropy ignoring 255 (ADE20K with ``reduce_zero_label``: 150 classes); AdamW with a linear-warmup +
cosine one-cycle schedule (the paper: 40k iterations, lr 1e-4, 1.5k warmup; ``task.seg.recipe=dinov3``: lr 1e-3);
slide-window inference; mIoU / pixel accuracy / mean accuracy from one data-set-level confusion matrix.

Resolution (``eval.dense_resolution``, recorded): the paper models see a 16x16 token grid at 256 px; the default
feeds 256-px crops (resize short side 256 x U(0.5, 2), crop 256; eval: short side 256, slide 256 / stride 171),
i.e. the anchor's 512-px pipeline at half scale on the native grid. 512 resamples the position embeddings to 32x32.
On ``data=synthetic`` the classes are the scenes' 7 mask values (background + 6 shapes), nothing ignored.
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
from benchmark.settings import check, choice

SEG_LR = {"paper": 1e-4, "dinov3": 1e-3}  # §9.5.3 "learning rate of 1e-4"; DINOv3 ADE20K linear config 1e-3


@dataclass
class SegSettings(TaskSettings):
    """The ADE20K linear probe's schedule (§9.5.3). ``--set task.seg.<field>=`` (or ``eval.seg_<field>``)."""

    prefix = "seg_"
    recipe: str = "paper"  # paper: lr 1e-4 (§9.5.3) | dinov3: lr 1e-3 (DINOv3 ADE20K linear config)
    lr: float = 0.0  # 0 = from recipe
    iters: int = 40_000  # §9.5.3 "trained for 40k iterations"
    warmup: int = 1_500  # §9.5.3 "1.5k warm-up steps"
    weight_decay: float = 1e-3  # DINOv3 config (AdamW betas 0.9, 0.999, no clipping)

    def validate(self, run) -> None:
        choice("task.seg.recipe", self.recipe, tuple(SEG_LR))
        check(self.iters >= 1 and self.lr >= 0, "task.seg.iters must be >= 1 and task.seg.lr >= 0")
        check(0 <= self.warmup < self.iters, f"task.seg.warmup must be in [0, task.seg.iters), got {self.warmup}")


@register_task("seg")
class Segmentation(Task):
    """Linear segmentation probe (ADE20K, or the synthetic scenes' masks)."""

    Settings = SegSettings
    version = 1
    higher_is_better = {"miou": True, "pixacc": True, "macc": True}
    requires = ("ade20k",)

    def run(self, model, cfg) -> dict[str, float]:
        e, device = cfg.eval, model.device
        g = cfg.task_settings("seg")
        res, stride = D.probe_resolution(cfg)
        train, test, data_name = build_dense_data(cfg, "seg")
        classes = train.num_classes
        lr = g.lr or SEG_LR[g.recipe]
        torch.manual_seed(cfg.seed)  # head init, dropout, augmentation
        head = D.LinearSegHead(D.feature_dim(model, e.dense_tokens), classes).to(device)

        t0 = time.time()
        if e.dense_mode == "fast":
            feats = D.features_of(model, torch.stack([train[i][0] for i in range(len(train))]), e.dense_layer,
                                  e.dense_tokens, e.batch_size)
            labels = torch.stack([train[i][1] for i in range(len(train))])
            batches = ((f.to(device), y.to(device)) for f, y in D.cached_batches(feats, labels, e.dense_batch, cfg.seed))
        else:
            loader = D.infinite_batches(D.SegTrainSet(train, res), e.dense_batch, g.iters, cfg.seed,
                                        cfg.data.num_workers)
            batches = ((D.patch_features(model, x, e.dense_layer, e.dense_tokens), y.to(device)) for x, y in loader)

        def loss_fn(logits, label, it):
            logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
            return F.cross_entropy(logits, label, ignore_index=D.IGNORE)

        curve = D.train_head(head, batches, loss_fn, g.iters, lr, g.warmup, D.SEG_BETAS, g.weight_decay,
                             lr * D.SEG_WARMUP_START, 0.0)
        t_train = time.time() - t0

        # Majority class of the training labels: the trivial baseline (computed on <= 500 training maps).
        counts = torch.zeros(classes, dtype=torch.long)
        for i in range(0, len(train), max(1, len(train) // 500)):
            y = train[i][1]
            counts += torch.bincount(y[y != D.IGNORE].flatten(), minlength=classes)[:classes]
        majority = int(counts.argmax())

        head.eval()
        conf = torch.zeros(classes, classes, dtype=torch.long)
        conf_base = torch.zeros_like(conf)
        window = round(res * D.SEG_SLIDE_STRIDE)

        def predict(x):
            logits = head(D.patch_features(model, x, e.dense_layer, e.dense_tokens))
            return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

        with torch.no_grad():
            for imgs, labels in D.eval_groups(test, e.dense_batch):
                x = D.normalize(imgs).to(device)
                h, w = x.shape[-2:]
                if min(h, w) != res:  # eval: short side = the window side
                    s = res / min(h, w)
                    x = F.interpolate(x, size=(max(res, round(h * s)), max(res, round(w * s))), mode="bilinear",
                                      align_corners=False)
                logits = D.slide_inference(predict, x, classes, res, window)
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
                conf += D.confusion(logits.argmax(1).cpu(), labels, classes)
                conf_base += D.confusion(torch.full_like(labels, majority), labels, classes)

        metrics = D.seg_metrics(conf)
        base = D.seg_metrics(conf_base)
        self._extra = {
            "data": data_name, "standard_split": bool(getattr(train, "standard", False) and getattr(test, "standard", False)),
            "n_train": len(train), "n_test": len(test), "classes": classes, "mode": e.dense_mode,
            "resolution": D.resolution_note(cfg, res, stride), "slide": f"window {res}, stride {window}",
            "layer": "last (after the final norm)" if e.dense_layer == 0 else f"block {e.dense_layer} (raw)",
            "tokens": e.dense_tokens, "iters": g.iters, "lr": lr, "recipe": g.recipe, "warmup": g.warmup,
            "batch": e.dense_batch, "loss_first": curve[0], "loss_last": sum(curve[-20:]) / len(curve[-20:]),
            "train_s": round(t_train, 2), "baseline": "majority class of the training labels",
            "baseline_class": majority, "baseline_miou": base["miou"], "baseline_pixacc": base["pixacc"],
            "metrics_unit": "percent",
        }
        return metrics

