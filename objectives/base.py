"""The objective plugin contract and the two losses the built-ins share.

An objective is an ``nn.Module``: the modules it owns (CLIP text tower, projectors) ride along with the
backbone through DDP, EMA and checkpoints. The training loop is the only place objectives, schedules
and the backbone meet: ``losses(batch, backbone, mask, progress) -> {"total": ..., ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.distributed import all_gather_with_grad


@dataclass
class Batch:
    """One (micro-)batch as the objectives see it, already on the device. ``tokens`` is always there; the
    rest is filled when the objective ``needs`` it (t5: text-conditioned decoder, clip_ids: CLIP text tower,
    images: a REPA teacher). Captions stay on the host (``prepare_batch``): strings never enter the step."""

    tokens: torch.Tensor  # [B, L, C] image tokens (VAE latents or pixel patches)
    images: torch.Tensor | None = None  # [B, 3, H, W] in [-1, 1] (raw-image input only)
    t5: torch.Tensor | None = None  # [B, T, d_t5] float32 frozen T5 features of the captions
    t5_valid: torch.Tensor | None = None  # [B, T] bool, False on padding
    t5_null: torch.Tensor | None = None  # [1, T, d_t5] T5("") (the official CFG null condition)
    caption_drop: torch.Tensor | None = None  # [B] bool: caption replaced by the null condition (CFG)
    clip_ids: torch.Tensor | None = None  # [B, 77] CLIP BPE token ids

    def __getitem__(self, key: str) -> torch.Tensor:  # plugins written against the former dict batch
        value = getattr(self, key, None)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None)
        return default if value is None else value

    def to(self, device: torch.device) -> Batch:
        """Every tensor on ``device``: from pinned host memory without blocking when the target is a GPU."""
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None or t.device == device:
                return t
            if device.type == "cuda" and t.device.type == "cpu":
                t = t.pin_memory()
            return t.to(device, non_blocking=True)

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})


@dataclass
class Masking:
    """One training step's mask. ``mask`` [B, L] bool (True = masked); ``group`` [B] ids of the samples
    that share one drawn ratio (official: the per-GPU batch); ``num_groups`` local groups."""

    mask: torch.Tensor
    ratio: torch.Tensor  # [B] drawn ratios
    group: torch.Tensor  # [B] long
    num_groups: int

    @property
    def masked_fraction(self) -> torch.Tensor:
        return self.mask.float().mean(1)


class Objective(nn.Module):
    """Base class. Subclasses set ``needs`` and ``defaults`` and implement ``losses``.

    needs: subset of {"decoder", "t5", "clip_text", "teacher"}: what the loop must build and feed.
    defaults: config overrides this objective implies (its table in the paper), e.g.
        {"train.weight_decay": 0.04, "schedule.name": "wm"}; users' flags still win.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, cfg, backbone: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg  # the ObjectiveConfig section

    def losses(self, batch: Batch, backbone: nn.Module, mask: Masking,
               progress: float) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # Objectives with a contrastive head expose it as ``self.clip`` (a models.text.ClipHead): the model's
    # own image/text embeddings for zero-shot and Semantically Aligned Decoding.


def diffusion_rows(mask: Masking, gamma: float) -> torch.Tensor:
    """[B, L] bool: masked tokens of the samples whose group has masked fraction >= gamma (§3.2)."""
    frac = mask.masked_fraction
    zeros = torch.zeros(mask.num_groups, device=frac.device)
    group_frac = zeros.index_add(0, mask.group, frac) / zeros.index_add(0, mask.group, torch.ones_like(frac))
    return mask.mask & (group_frac >= gamma - 1e-9)[mask.group][:, None]


def diffusion_loss(backbone: nn.Module, z: torch.Tensor, target: torch.Tensor, mask: Masking,
                   gamma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """MAR diffusion loss on masked tokens only, gated per group (§3.2, released code).

    L = (1/G) * sum over groups g with masked fraction >= gamma of mean_{masked tokens of g} loss.
    Normalising by all G groups (not only the qualifying ones) reproduces the released code under DDP,
    where each GPU zeroes its loss below gamma and gradients are averaged over all GPUs.
    Each token gets ``diffusion_batch_mul`` independent (t, noise) draws without recomputing z.
    """
    rows = diffusion_rows(mask, gamma)
    if not bool(rows.any()):
        return z.new_zeros(())
    g = mask.num_groups
    n_masked_group = torch.zeros(g, device=z.device).index_add_(0, mask.group, mask.mask.float().sum(1))
    mul = backbone.cfg.diffusion_batch_mul
    w = (1.0 / (g * n_masked_group[mask.group] * mul))[:, None].expand_as(rows)[rows]
    zr, xr = z[rows], target[rows]
    zr, xr, w = zr.repeat(mul, 1), xr.repeat(mul, 1), w.repeat(mul)
    per_row = backbone.head(xr.float(), zr.float(), generator=generator)
    return (per_row * w).sum()


def generative_loss(backbone: nn.Module, batch: Batch, enc, mask: Masking, gamma: float,
                    conditional: bool = True) -> torch.Tensor:
    """Text aligner -> decoder -> diffusion loss (Alg. 1 lines 11-13). Skips the decoder entirely when
    no group qualifies (the released loop would produce 0/0 there). ``conditional=False`` (MAR) feeds
    the null condition to every sample."""
    if not bool(diffusion_rows(mask, gamma).any()):
        return batch["tokens"].new_zeros(())
    b = batch["tokens"].shape[0]
    if conditional:
        t5 = backbone.condition(batch["t5"], batch.get("caption_drop"), batch.get("t5_null"))
        valid = batch.get("t5_valid") if backbone.cfg.text_pad_mask else None
    else:
        t5, valid = backbone.null_condition(batch.get("t5_null"), b), None
    text = backbone.align_text(t5, valid)
    z = backbone.decode(enc, text, valid)
    return diffusion_loss(backbone, z, batch["tokens"], mask, gamma)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
                     participate: torch.Tensor | None = None, mode: str = "official") -> torch.Tensor:
    """Symmetric InfoNCE (Eq. 2) with a learnable temperature over the global batch.

    ``image``/``text`` are L2-normalised [B, E]; they are all-gathered across ranks with gradients.
    ``participate`` [B] bool marks samples with mask ratio <= phi. Non-participants are no queries;
    as negatives they are removed from the text->image direction, and in ``official`` mode (the
    released code) their texts stay negatives for image->text; ``symmetric`` removes them both ways.
    Returns (1/|P|) sum_{i in P} (CE_i2t(i) + CE_t2i(i)) / 2.
    """
    image, text = all_gather_with_grad(image), all_gather_with_grad(text)
    n = image.shape[0]
    if participate is None:
        participate = torch.ones(n, dtype=torch.bool, device=image.device)
    else:
        participate = all_gather_with_grad(participate.float()).bool()
    sim = scale * image.float() @ text.float().t()  # [i, j] = s(image_i, text_j)
    neg = torch.finfo(sim.dtype).min / 4
    keep = participate[None, :]
    logits_t2i = sim.t().masked_fill(~keep, neg)  # rows: texts, columns: images
    logits_i2t = sim if mode == "official" else sim.masked_fill(~keep, neg)
    labels = torch.arange(n, device=image.device)
    per = (F.cross_entropy(logits_i2t, labels, reduction="none")
           + F.cross_entropy(logits_t2i, labels, reduction="none")) / 2
    p = participate.float()
    return (per * p).sum() / p.sum().clamp_min(1.0)
