"""FLUID baseline (§4.3, §9.4.4, Table 19): MAR encoder-decoder with the text only in the decoder.

Loss: the diffusion loss on masked tokens. Masking: FX, truncated Gaussian centred at 1.0, sigma 0.25,
bounded to [0.7, 1.0]. In the released code FLUID is the DREAM class with CLIP weight 0.
"""

from __future__ import annotations

from benchmark.objectives.base import Objective, generative_loss

from benchmark.registry import register_objective

FX_MAR = {"schedule.name": "fx", "schedule.sigma": 0.25, "schedule.low": 0.7, "schedule.high": 1.0,
          "schedule.mean": 1.0}  # Table 19: masking ratio min 0.7, max 1.0, std 0.25


@register_objective("fluid")
class Fluid(Objective):
    """Text-conditioned MAR: diffusion loss on masked tokens, text only in the decoder."""

    needs = frozenset({"decoder", "t5"})
    defaults = {**FX_MAR, "train.weight_decay": 0.02, "objective.gamma": 0.0}  # Table 19

    def losses(self, batch, backbone, mask, progress):
        enc = backbone.encode(batch.tokens, mask)
        diff = generative_loss(backbone, batch, enc, mask)  # γ gate: in the mask's host plan
        return {"total": self.cfg.diff_weight * diff, "diff": diff}
