"""DREAM (Alg. 1, Table 21): L = L_diff + λ L_clip on one encoder-decoder, with Masking Warmup.

The CLIP loss uses the samples whose mask ratio <= ϕ (0.75), the diffusion loss the groups whose ratio
>= γ (0.5). Text enters only the decoder; the encoder is aligned to text through the CLIP loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.objectives.base import Capabilities, check_diffusion_active, generative_loss
from benchmark.objectives.clip import CLIP, ClipSettings

from benchmark.registry import register_objective
from benchmark.settings import check


@dataclass
class DreamSettings(ClipSettings):
    clip_weight: float = 0.005  # λ, Table 21 "Weight on CLIP loss"
    diff_weight: float = 1.0
    gamma: float = 0.5  # γ, Table 21 "Minimum masking for diffusion loss" 50%
    # ϕ (Table 21, 75%) and the CLIP head's fields: ClipSettings

    def validate(self, run) -> None:
        super().validate(run)
        check(0 <= self.gamma <= 1, f"objective.gamma must be in [0, 1], got {self.gamma}")
        check(self.diff_weight >= 0, f"objective.diff_weight must be >= 0, got {self.diff_weight}")
        check_diffusion_active(self, run)
        check(self.clip_weight > 0 or self.diff_weight > 0, "objective.clip_weight and diff_weight are both 0: no loss")


@register_objective("dream")
class DREAM(CLIP):
    """Diffusion loss + λ · CLIP loss with Masking Warmup (Alg. 1)."""

    Settings = DreamSettings
    capabilities = Capabilities(decoder=True, text_conditioned=True, t5=True, clip_text=True)
    # Table 21; the WM schedule's own defaults are Table 21's (σ 0.45 official, bounds [0, 1], warmup 36 epochs)
    defaults = {"schedule.name": "wm", "train.weight_decay": 0.04}
    recipes = {"paper": {"schedule.sigma": 0.55}}  # σ of the main results (§3.3, §4)

    def losses(self, batch, backbone, mask, progress):
        c = self.cfg
        layers = (c.clip_layer,) if c.clip_layer else ()
        enc = backbone.encode(batch.tokens, mask, return_layers=layers)
        clip = self.clip_loss(batch, enc, mask)
        diff = generative_loss(backbone, batch, enc, mask)  # γ gate: in the mask's host plan
        total = c.diff_weight * diff + c.clip_weight * clip
        return {"total": total, "diff": diff, "clip": clip, "logit_scale": self.clip.logit_scale.detach()}
