"""Masking warmup with a cosine-shaped mean ramp (the released code's ``warmup_shape=cosine``)."""

import math

from benchmark import MaskingSchedule


class CosineWarmup(MaskingSchedule):
    """Mean 0 -> 1 along a half cosine over the warmup epochs, then 1."""

    def mean(self, progress):
        c = self.cfg
        p = min(max((progress - c.warmup_start) / max(c.warmup_epochs, 1e-9), 0.0), 1.0)
        return min(max(0.5 * (1 - math.cos(math.pi * p)), c.low), c.high)
