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
from benchmark.settings import Settings, check


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
    t5_null_valid: torch.Tensor | None = None  # [1, T] T5("")'s padding mask (model.text_pad_mask)
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
    that share one drawn ratio (official: the per-GPU batch); ``num_groups`` local groups.

    The plan (``plan()``, made on the host where the mask is drawn, before the step) holds everything the
    step branches on or is shaped by, so the forward and backward never read a device value:
    ``keep``/``keep_valid`` the visible positions (padded to the longest row), ``diff_index``/``diff_weight``
    the tokens of the diffusion loss and their weights, ``participate`` the CLIP loss's samples, and the
    host flags ``padded``/``diffuse``/``contrast``/``any_visible``."""

    mask: torch.Tensor
    ratio: torch.Tensor  # [B] drawn ratios
    group: torch.Tensor  # [B] long
    num_groups: int
    global_fraction: torch.Tensor | None = None  # host [B_global] masked fraction of the whole (DDP) micro-batch
    keep: torch.Tensor | None = None  # [B, V] long: visible positions in raster order, padded rows point anywhere
    keep_valid: torch.Tensor | None = None  # [B, V] bool: False on padding
    diff_index: torch.Tensor | None = None  # [N] long: flat b * L + l of the tokens the diffusion loss reads
    diff_weight: torch.Tensor | None = None  # [N] float: 1 / (G · masked tokens of the group · diffusion_batch_mul)
    participate: torch.Tensor | None = None  # [B] bool: masked fraction <= ϕ (samples of the CLIP loss)
    diff_t: torch.Tensor | None = None  # [mul · N] diffusion steps and noise [mul · N, C] of the diffusion rows,
    diff_noise: torch.Tensor | None = None  # drawn before the forward (DreamModel); None: the head draws them
    planned: bool = False
    padded: bool = False  # some row has fewer visible tokens than the longest: attention needs a key mask
    any_visible: bool = True  # some sample keeps a visible token
    diffuse: bool = False  # some group reaches γ: the decoder and the diffusion loss run
    contrast: bool = False  # some sample of the global batch is within ϕ: the CLIP loss runs

    @property
    def masked_fraction(self) -> torch.Tensor:
        return self.mask.float().mean(1)

    def plan(self, gamma: float | None, phi: float | None, mul: int = 1) -> Masking:
        """The host plan of this (CPU) mask for the gates γ (None: no diffusion loss) and ϕ (None: no CLIP loss)."""
        mask = self.mask.cpu()
        b, n = mask.shape
        n_vis = (~mask).sum(1)
        v = int(n_vis.max()) if b else 0
        # Visible positions first (stable: in raster order), then the masked ones; keep the first v.
        keep = torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, :v]
        keep_valid = torch.arange(v)[None] < n_vis[:, None]
        out = replace(self, keep=keep, keep_valid=keep_valid, planned=True, padded=not bool(keep_valid.all()),
                      any_visible=v > 0)
        frac = mask.float().mean(1)
        if gamma is not None:
            rows = diffusion_rows(replace(self, mask=mask, group=self.group.cpu()), gamma)
            g = self.num_groups
            n_masked_group = torch.zeros(g).index_add_(0, self.group.cpu(), mask.float().sum(1))
            w = (1.0 / (g * n_masked_group[self.group.cpu()] * mul))[:, None].expand_as(rows)[rows]
            out.diff_index, out.diff_weight = rows.flatten().nonzero().flatten(), w
            out.diffuse = bool(rows.any())
        if phi is not None:
            out.participate = frac <= phi + 1e-9  # ϕ: maximum masking for the CLIP loss
            glob = self.global_fraction if self.global_fraction is not None else frac
            out.contrast = bool((glob <= phi + 1e-9).any())  # decided globally: the loss all-gathers under DDP
        return out

    def to(self, device: torch.device) -> Masking:
        """Every tensor on ``device`` in one go (pinned, non-blocking to a GPU); host flags stay on the host."""
        def move(t):
            if not isinstance(t, torch.Tensor) or t.device == device:
                return t
            if device.type == "cuda" and t.device.type == "cpu":
                t = t.pin_memory()
            return t.to(device, non_blocking=True)

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self) if f.name != "global_fraction"})


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

    def plan(self, mask: Masking, backbone: nn.Module) -> Masking:
        """Host side, before the step: the mask's plan for this objective's gates (``objective.gamma`` for a
        decoder, ``objective.phi`` for a CLIP head). Override when an objective gates on something else."""
        gamma = getattr(self.cfg, "gamma", None) if self.capabilities.decoder else None
        phi = getattr(self.cfg, "phi", None) if self.capabilities.clip_text else None
        return mask.plan(gamma, phi, backbone.cfg.diffusion_batch_mul)

    def may_skip_parameters(self) -> bool:
        """Whether a step can leave parameters without a gradient (DDP then needs ``find_unused_parameters``, an
        extra pass over the graph): a γ gate above 0 can skip the decoder on a rank, a ϕ gate the CLIP tower while
        the decoder trains. True by default (a plugin's losses may skip anything); the built-ins use ``gated``."""
        return True

    def gated(self) -> bool:
        """The built-ins' rule: only a γ gate above 0 or a CLIP loss beside a decoder skips parameters."""
        c = self.capabilities
        return (c.decoder and getattr(self.cfg, "gamma", 0.0) > 0) or (c.decoder and c.clip_text)

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
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """MAR diffusion loss on masked tokens only, gated per group (§3.2, released code).

    L = (1/G) * sum over groups g with masked fraction >= gamma of mean_{masked tokens of g} loss.
    Normalising by all G groups (not only the qualifying ones) reproduces the released code under DDP,
    where each GPU zeroes its loss below gamma and gradients are averaged over all GPUs.
    Each token gets ``diffusion_batch_mul`` independent (t, noise) draws without recomputing z.
    The tokens and weights come from the mask's host plan (``Masking.plan``): no device value is read.
    """
    if not mask.diffuse:
        return z.new_zeros(())
    mul = backbone.cfg.diffusion_batch_mul
    idx = mask.diff_index
    zr, xr = z.reshape(-1, z.shape[-1])[idx], target.reshape(-1, target.shape[-1])[idx]
    zr, xr, w = zr.repeat(mul, 1), xr.repeat(mul, 1), mask.diff_weight.repeat(mul)
    extra = {} if mask.diff_t is None or generator is not None else {"t": mask.diff_t, "noise": mask.diff_noise}
    per_row = backbone.head(xr.float(), zr, generator=generator, **extra)  # z stays in the autocast dtype
    return (per_row * w).sum()


def generative_loss(backbone: nn.Module, batch: Batch, enc, mask: Masking, conditional: bool = True) -> torch.Tensor:
    """Text aligner -> decoder -> diffusion loss (Alg. 1 lines 11-13). Skips the decoder entirely when
    no group qualifies (the released loop would produce 0/0 there). ``conditional=False`` (MAR) feeds
    the null condition to every sample: aligned once and broadcast over the batch."""
    if not mask.diffuse:
        return batch.tokens.new_zeros(())
    pad_mask = backbone.cfg.text_pad_mask
    if conditional:  # a dropped caption takes the null condition and its padding mask (as the sampler's null half)
        t5 = backbone.condition(batch.t5, batch.caption_drop, batch.t5_null)
        valid = backbone.condition_valid(batch.t5_valid, batch.caption_drop, batch.t5_null_valid) if pad_mask else None
    else:  # [1, T, d]: one row for the whole batch
        t5 = backbone.null_condition(batch.t5_null, 1)
        valid = backbone.null_valid(batch.t5_null_valid, 1, t5.shape[1]) if pad_mask else None
    text = backbone.align_text(t5, valid)
    z = backbone.decode(enc, text, valid)
    return diffusion_loss(backbone, z, batch.tokens, mask)


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
