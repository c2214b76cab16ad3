"""FLUID baseline (§4.3, §9.4.4, Table 19): MAR encoder-decoder with the text only in the decoder.

Loss: the diffusion loss on masked tokens. Masking: FX, truncated Gaussian centred at 1.0, sigma 0.25,
bounded to [0.7, 1.0]. In the released code FLUID is the DREAM class with CLIP weight 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.objectives.base import Capabilities, Objective, ObjectiveSettings, check_diffusion_active, generative_loss

from benchmark.registry import register_objective
from benchmark.settings import check

FX_MAR = {"schedule.name": "fx", "schedule.sigma": 0.25, "schedule.low": 0.7, "schedule.high": 1.0,
          "schedule.mean": 1.0}  # Table 19: masking ratio min 0.7, max 1.0, std 0.25


@dataclass
class DiffusionSettings(ObjectiveSettings):
    """The diffusion loss of the MAR family (MAR, FLUID, REPA)."""

    diff_weight: float = 1.0
    gamma: float = 0.0  # γ: minimum group masking ratio for the diffusion loss; MAR/FLUID/REPA: every group

    def validate(self, run) -> None:
        check(0 <= self.gamma <= 1, f"objective.gamma must be in [0, 1], got {self.gamma}")
        check(self.diff_weight >= 0, f"objective.diff_weight must be >= 0, got {self.diff_weight}")
        check_diffusion_active(self, run)
        if type(self) is DiffusionSettings:  # MAR's and FLUID's only loss
            check(self.diff_weight > 0, "objective.diff_weight must be > 0: it weights the only loss")


@register_objective("fluid")
class Fluid(Objective):
    """Text-conditioned MAR: diffusion loss on masked tokens, text only in the decoder."""

    Settings = DiffusionSettings
    capabilities = Capabilities(decoder=True, text_conditioned=True, t5=True)
    defaults = {**FX_MAR, "train.weight_decay": 0.02}  # Table 19

    def may_skip_parameters(self) -> bool:  # DDP's find_unused_parameters only when a gate can skip a branch
        return self.gated()

    def losses(self, batch, backbone, mask, progress):
        enc = backbone.encode(batch.tokens, mask)
        diff = generative_loss(backbone, batch, enc, mask)  # γ gate: in the mask's host plan
        return {"total": self.cfg.diff_weight * diff, "diff": diff}
