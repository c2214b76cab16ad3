"""CLIP baseline (§4.3, §9.4.3, Table 18): the encoder trained with the contrastive loss only, no masking.
CLIP-M (Table 5, Fig. 7) is ``--objective clip --schedule wm``: samples masked more than phi are
excluded from the loss, as in DREAM."""

from __future__ import annotations

from benchmark.models.text import ClipHead
from benchmark.objectives.base import Objective, contrastive_loss

from benchmark.registry import register_objective


@register_objective("clip")
class CLIP(Objective):
    """Contrastive image-text loss (InfoNCE, learnable temperature) on the pooled encoder output."""

    needs = frozenset({"clip_text"})
    defaults = {"schedule.name": "none", "train.weight_decay": 0.02, "objective.clip_weight": 1.0}

    def __init__(self, cfg, backbone):
        super().__init__(cfg, backbone)
        self.clip = ClipHead(cfg, backbone.cfg.width)

    def clip_loss(self, batch, enc, mask):
        c = self.cfg
        # ϕ gate: mask.participate (masked fraction <= ϕ) and mask.contrast (any participant on any rank, decided
        # on the host where the global mask is drawn: the loss all-gathers under DDP) come from the mask's plan
        if not mask.contrast:
            return enc.tokens.new_zeros(())
        image = self.clip.embed_image(enc.pool(c.clip_pool, c.clip_layer))
        text = self.clip.embed_text(batch.clip_ids)
        return contrastive_loss(image, text, self.clip.scale(), mask.participate, c.clip_filter)

    def losses(self, batch, backbone, mask, progress):
        layers = (self.cfg.clip_layer,) if self.cfg.clip_layer else ()
        enc = backbone.encode(batch.tokens, mask, return_layers=layers)
        clip = self.clip_loss(batch, enc, mask)
        return {"total": self.cfg.clip_weight * clip, "clip": clip, "logit_scale": self.clip.logit_scale.detach()}
