"""MAR baseline (§4.3, Table 19), re-implemented without class conditioning: the decoder sees only the
null condition (no caption), so it is an unconditional masked autoregressive model over latents."""

from __future__ import annotations

from benchmark.objectives.base import Capabilities, Objective, generative_loss
from benchmark.objectives.fluid import FX_MAR, DiffusionSettings

from benchmark.registry import register_objective


@register_objective("mar")
class MAR(Objective):
    """Unconditional MAR: diffusion loss on masked tokens, null condition only."""

    Settings = DiffusionSettings
    capabilities = Capabilities(decoder=True, t5=True)  # T5 only for the empty-caption null condition
    defaults = {**FX_MAR, "train.weight_decay": 0.02}  # Table 19

    def may_skip_parameters(self) -> bool:  # DDP's find_unused_parameters only when a gate can skip a branch
        return self.gated()

    def losses(self, batch, backbone, mask, progress):
        enc = backbone.encode(batch.tokens, mask)
        diff = generative_loss(backbone, batch, enc, mask, conditional=False)  # γ gate: in the mask's host plan
        return {"total": self.cfg.diff_weight * diff, "diff": diff}
