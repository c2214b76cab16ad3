"""DREAM (Alg. 1, Table 21): L = L_diff + λ L_clip on one encoder-decoder, with Masking Warmup.

The CLIP loss uses the samples whose mask ratio <= ϕ (0.75), the diffusion loss the groups whose ratio
>= γ (0.5). Text enters only the decoder; the encoder is aligned to text through the CLIP loss.
"""

from __future__ import annotations

from benchmark.objectives.base import generative_loss
from benchmark.objectives.clip import CLIP

from benchmark.registry import register_objective


@register_objective("dream")
class DREAM(CLIP):
    """Diffusion loss + λ · CLIP loss with Masking Warmup (Alg. 1)."""

    needs = frozenset({"decoder", "t5", "clip_text"})
    defaults = {  # Table 21
        "schedule.name": "wm", "schedule.sigma": 0.45, "schedule.low": 0.0, "schedule.high": 1.0,
        "schedule.warmup_epochs": 36.0, "train.weight_decay": 0.04, "objective.clip_weight": 0.005,
        "objective.gamma": 0.5, "objective.phi": 0.75,
    }

    def losses(self, batch, backbone, mask, progress):
        c = self.cfg
        layers = (c.clip_layer,) if c.clip_layer else ()
        enc = backbone.encode(batch.tokens, mask, return_layers=layers)
        clip = self.clip_loss(batch, enc, mask)
        diff = generative_loss(backbone, batch, enc, mask)  # γ gate: in the mask's host plan
        total = c.diff_weight * diff + c.clip_weight * clip
        return {"total": total, "diff": diff, "clip": clip, "logit_scale": self.clip.logit_scale.detach()}
