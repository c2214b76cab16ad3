"""Masking warmup with a cosine-shaped mean ramp (the released code's ``warmup_shape=cosine``)."""

import math
from dataclasses import dataclass

from benchmark import MaskingSchedule, MaskingSettings, check


@dataclass
class CosineWarmupSettings(MaskingSettings):
    final_mean: float = 1.0  # the parameter: the mean masking ratio the ramp ends at

    def validate(self, run) -> None:
        super().validate(run)
        check(0 < self.final_mean <= 1, f"schedule.final_mean must be in (0, 1], got {self.final_mean}")


class CosineWarmup(MaskingSchedule):
    """Mean 0 -> final_mean along a half cosine over the warmup epochs, then final_mean."""

    Settings = CosineWarmupSettings

    def mean(self, progress):
        c = self.cfg
        p = min(max((progress - c.warmup_start) / max(c.warmup_epochs, 1e-9), 0.0), 1.0)
        return min(max(c.final_mean * 0.5 * (1 - math.cos(math.pi * p)), c.low), c.high)
