"""Masking-ratio schedules (§3.3, §8.1, §9.4): FX, UNI, CD, WM, and NONE for the CLIP baseline.

``progress`` is fractional epochs (Alg. 1: s = e + i/|D|). All Gaussian schedules draw from a normal
truncated to [low, high] (truncation, not clamping: DESIGN §3) by inverse-CDF sampling in float64 with
a torch.Generator, so a checkpointed generator state reproduces the draws exactly on resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from benchmark.registry import register_schedule
from benchmark.settings import Settings, check, paper


def truncated_normal(n: int, mean: float, sigma: float, low: float, high: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws of N(mean, sigma^2) truncated to [low, high] (float64, CPU)."""
    ndtr, ndtri = torch.special.ndtr, torch.special.ndtri
    a = ndtr(torch.tensor((low - mean) / sigma, dtype=torch.float64))
    b = ndtr(torch.tensor((high - mean) / sigma, dtype=torch.float64))
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    x = mean + sigma * ndtri(a + u * (b - a))
    return x.clamp(low, high)  # only guards rounding at the bounds


@dataclass
class MaskingSettings(Settings):
    """The fields of the built-in schedules (one family, so that Table 4 swaps only the schedule). The values are
    Table 21's (DREAM); an objective's ``defaults`` may change them (MAR/FLUID/REPA: FX, σ 0.25 on [0.7, 1])."""

    sigma: float = 0.45  # σ: official 0.45 (and the ablations); DREAM's main results 0.55 (§3.3, DREAM.recipes)
    low: float = 0.0  # Table 21 "Masking ratio (min)"
    high: float = 1.0  # Table 21 "Masking ratio (max)"
    mean: float = 1.0  # FX centre (§8.1, §9.4.4)
    warmup_epochs: float = 36.0  # Table 21 "Masking warmup epochs"
    warmup_start: float = 0.0
    # samples sharing one ratio: official = per-GPU batch 64; paper 1 ("samples that have > 50% masked")
    group_size: int = paper(64, 1)

    def validate(self, run) -> None:
        check(self.sigma > 0, f"schedule.sigma must be > 0, got {self.sigma}")
        check(0 <= self.low < self.high <= 1, f"schedule bounds need 0 <= low < high <= 1, got [{self.low}, {self.high}]")
        check(self.warmup_epochs >= 0 and self.warmup_start >= 0, "schedule warmup epochs must be >= 0")
        check(self.group_size >= 1, f"schedule.group_size must be >= 1, got {self.group_size}")


class MaskingSchedule:
    """``sample(n, progress, generator) -> ratios in [0, 1]``, one per group of samples. A schedule with
    parameters of its own declares ``Settings``, a dataclass subclassing ``MaskingSettings``."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type[MaskingSettings]] = MaskingSettings

    def __init__(self, cfg: MaskingSettings) -> None:
        self.cfg = cfg

    def mean(self, progress: float) -> float:
        raise NotImplementedError

    def sample(self, n: int, progress: float, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.cfg
        return truncated_normal(n, self.mean(progress), c.sigma, c.low, c.high, generator)

    def _ramp(self, progress: float, start: float, end: float) -> float:
        """Linear ramp start -> end over [warmup_start, warmup_start + warmup_epochs], then constant."""
        c = self.cfg
        if c.warmup_epochs <= 0:
            p = 1.0 if progress >= c.warmup_start else 0.0
        else:
            p = min(max((progress - c.warmup_start) / c.warmup_epochs, 0.0), 1.0)
        mu = start + (end - start) * p
        return min(max(mu, c.low), c.high)  # the released code clamps the mean to the bounds


@register_schedule("fx")
class Fixed(MaskingSchedule):
    """FX: truncated Gaussian centred at ``mean`` (1.0). MAR/FLUID: sigma 0.25 on [0.7, 1] (§9.4.4)."""

    def mean(self, progress: float) -> float:
        return min(max(self.cfg.mean, self.cfg.low), self.cfg.high)


@register_schedule("uni")
class Uniform(MaskingSchedule):
    """UNI: uniform on [low, high] (§8.1), the high-variance limit."""

    def mean(self, progress: float) -> float:
        return (self.cfg.low + self.cfg.high) / 2

    def sample(self, n: int, progress: float, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return self.cfg.low + (self.cfg.high - self.cfg.low) * u


@register_schedule("cd")
class Cooldown(MaskingSchedule):
    """CD: mean 1 -> 0 linearly over the warmup epochs, then fixed at 0 (§8.1)."""

    def mean(self, progress: float) -> float:
        return self._ramp(progress, 1.0, 0.0)


@register_schedule("wm")
class Warmup(MaskingSchedule):
    """WM (Masking Warmup, §3.3): mean 0 -> 1 linearly over the warmup epochs (36), then fixed at 1."""

    def mean(self, progress: float) -> float:
        return self._ramp(progress, 0.0, 1.0)


@register_schedule("none")
class NoMask(MaskingSchedule):
    """No masking: the CLIP baseline (§9.4.3)."""

    def mean(self, progress: float) -> float:
        return 0.0

    def sample(self, n: int, progress: float, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.float64)


def make_mask(ratios: torch.Tensor, group_size: int, batch: int, seq_len: int,
              generator: torch.Generator | None = None, device: torch.device | str = "cpu",
              rows: slice | None = None) -> tuple:
    """Per-group ratios -> boolean mask [B, L] with ceil(L * r) masked tokens in a random order per sample
    (MAR: ``num_masked = ceil(seq_len * ratio)``, fully random order). Returns (mask, ratio, group).
    ``rows``: only those rows of the batch (the random draws are still those of the whole batch, so a DDP
    rank gets its rows of the global mask without sorting the others')."""
    group = torch.arange(batch) // group_size
    r = ratios[group]
    num_masked = torch.ceil(seq_len * r - 1e-9).long().clamp(0, seq_len)
    noise = torch.rand(batch, seq_len, generator=generator)
    if rows is not None:
        noise, group, r, num_masked = noise[rows], group[rows], r[rows], num_masked[rows]
    order = noise.argsort(dim=1)
    rank = order.argsort(dim=1)  # rank of each position in the random order
    mask = rank < num_masked[:, None]
    return mask.to(device), r.float().to(device), group.to(device)
