"""The objective plugin contract and the two losses the built-ins share.

An objective is an ``nn.Module``: the modules it owns (CLIP text tower, projectors) ride along with the
backbone through DDP, EMA and checkpoints. The training loop is the only place objectives, schedules
and the backbone meet: ``losses(batch, backbone, mask, progress) -> {"total": ..., ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.distributed import all_gather_with_grad
from benchmark.settings import Settings, check


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


@dataclass(frozen=True)
class Capabilities:
    """What a trained model can do, declared by its objective and read by the loop, the sampler and the tasks."""

    decoder: bool = False  # trains the decoder + diffusion head: it can generate (fid, clip_score, sample grid)
    text_conditioned: bool = False  # the decoder reads captions (CFG applies); False: the null condition only
    t5: bool = False  # the loop feeds frozen T5 features (captions, or T5("") as the null condition)
    clip_text: bool = False  # owns a CLIP text tower ``self.clip`` (models.text.ClipHead): zero-shot, SAD
    teacher: bool = False  # a frozen teacher reads the raw images (so no feature cache)

    @property
    def needs(self) -> frozenset[str]:
        return frozenset(k for k in ("decoder", "t5", "clip_text", "teacher") if getattr(self, k))


@dataclass
class ObjectiveSettings(Settings):
    """The fields of an objective without hyperparameters; a plugin subclasses it with its own."""


def mask_range(run: Any) -> tuple[float, float]:
    """(min, max) masking ratio the run's schedule can draw (``none`` masks nothing): the settings' validate()
    refuses a gated loss that could never be active (a diffusion loss needs a group masked >= gamma, a CLIP loss a
    sample masked <= phi) instead of training a run whose loss stays 0 and calling it completed (issue 14)."""
    s = run.schedule
    return (0.0, 0.0) if s.name == "none" else (float(getattr(s, "low", 0.0)), float(getattr(s, "high", 1.0)))


def check_diffusion_active(settings: Any, run: Any) -> None:
    top = mask_range(run)[1]
    check(settings.diff_weight == 0 or top >= settings.gamma - 1e-9,
          f"the diffusion loss can never be active: schedule {run.schedule.name!r} masks at most {top:g} < "
          f"objective.gamma={settings.gamma:g}; raise schedule.high or lower objective.gamma")


class Objective(nn.Module):
    """Base class. Subclasses declare ``Settings`` (their fields), ``capabilities``, ``defaults`` and implement
    ``losses``.

    Settings: a dataclass subclassing ObjectiveSettings; ``--set objective.<field>=`` is checked against it.
    capabilities: what the model can do (``Capabilities``); ``needs`` (the older spelling, a subset of
        {"decoder", "t5", "clip_text", "teacher"}) is derived from it, or it from ``needs``.
    defaults: overrides of the other sections this objective implies (its table in the paper), e.g.
        {"train.weight_decay": 0.04, "schedule.name": "wm"}; users' flags still win.
    recipes: per recipe, more overrides (e.g. DREAM: {"paper": {"schedule.sigma": 0.55}}).
    """

    name: ClassVar[str] = ""
    Settings: ClassVar[type[ObjectiveSettings]] = ObjectiveSettings
    capabilities: ClassVar[Capabilities] = Capabilities()
    needs: ClassVar[frozenset[str]] = frozenset()
    defaults: ClassVar[dict[str, Any]] = {}
    recipes: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "capabilities" not in cls.__dict__ and "needs" in cls.__dict__:  # a plugin written against `needs`
            n = cls.__dict__["needs"]
            cls.capabilities = Capabilities(decoder="decoder" in n, text_conditioned="decoder" in n and "t5" in n,
                                            t5="t5" in n, clip_text="clip_text" in n, teacher="teacher" in n)
        cls.needs = cls.capabilities.needs

    def __init__(self, cfg: ObjectiveSettings, backbone: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg  # this objective's Settings

    def losses(self, batch: dict[str, Any], backbone: nn.Module, mask: Masking,
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


def generative_loss(backbone: nn.Module, batch: dict[str, Any], enc, mask: Masking, gamma: float,
                    conditional: bool = True) -> torch.Tensor:
    """Text aligner -> decoder -> diffusion loss (Alg. 1 lines 11-13). Skips the decoder entirely when
    no group qualifies (the released loop would produce 0/0 there). ``conditional=False`` (MAR) feeds
    the null condition to every sample."""
    if not bool(diffusion_rows(mask, gamma).any()):
        return batch["tokens"].new_zeros(())
    b = batch["tokens"].shape[0]
    pad_mask = backbone.cfg.text_pad_mask
    if conditional:  # a dropped caption takes the null condition and its padding mask (as the sampler's null half)
        t5 = backbone.condition(batch["t5"], batch.get("caption_drop"), batch.get("t5_null"))
        valid = backbone.condition_valid(batch.get("t5_valid"), batch.get("caption_drop"),
                                         batch.get("t5_null_valid")) if pad_mask else None
    else:
        t5 = backbone.null_condition(batch.get("t5_null"), b)
        valid = backbone.null_valid(batch.get("t5_null_valid"), b, t5.shape[1]) if pad_mask else None
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
