"""CLIP baseline (§4.3, §9.4.3, Table 18): the encoder trained with the contrastive loss only, no masking.
CLIP-M (Table 5, Fig. 7) is ``--objective clip --schedule wm``: samples masked more than phi are
excluded from the loss, as in DREAM."""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.models.text import ClipHead
from benchmark.objectives.base import Capabilities, Objective, ObjectiveSettings, contrastive_loss, mask_range

from benchmark.registry import register_objective
from benchmark.settings import check, choice, paper


@dataclass
class ClipSettings(ObjectiveSettings):
    """The contrastive head: CLIP text tower, projection, temperature, and which tokens/layer it reads."""

    clip_weight: float = 1.0  # weight of the CLIP loss (Table 18: the only loss)
    phi: float = 0.75  # ϕ, Table 21 "Maximum masking for CLIP loss" 75%: more masked samples are no queries
    clip_layer: int = 0  # encoder block whose output feeds the CLIP loss; 0 = last (after norm), Table 16
    clip_pool: str = "all"  # all | buffer | image (Table 15)
    clip_filter: str = paper("official", "symmetric")  # official (asymmetric, released code) | symmetric (DESIGN §3)
    image_proj: str = paper("mlp", "none")  # mlp (official post_mlp_stablerep) | linear | none (paper: mean pool only)
    proj_hidden: int = 1024  # ssl_mlp_dim
    embed_dim: int = 256  # CLIP embedding size (official 256)
    clip_context: int = 77  # §3.1: OpenAI CLIP tokenizer, 77 tokens
    clip_text_width: int = 512
    clip_text_layers: int = 12
    clip_text_heads: int = 8
    clip_text_act: str = paper("gelu", "quick_gelu")  # gelu (official) | quick_gelu ("following StableRep")
    # official (xavier Linear, N(0,1) token embedding, released code) | open_clip (StableRep's canonical CLIP init)
    clip_init: str = paper("official", "open_clip")
    logit_scale_init: float = 2.659260036932778  # log(1/0.07)
    logit_scale_max: float = paper(0.0, 4.6052)  # 0 = no clamp (official); StableRep clamps to ln(100)

    def validate(self, run) -> None:
        choice("objective.clip_pool", self.clip_pool, ("all", "buffer", "image"))
        choice("objective.clip_filter", self.clip_filter, ("official", "symmetric"))
        choice("objective.image_proj", self.image_proj, ("mlp", "linear", "none"))
        choice("objective.clip_text_act", self.clip_text_act, ("gelu", "quick_gelu"))
        choice("objective.clip_init", self.clip_init, ("official", "open_clip"))
        check(0 <= self.phi <= 1, f"objective.phi must be in [0, 1], got {self.phi}")
        check(self.clip_weight >= 0, f"objective.clip_weight must be >= 0, got {self.clip_weight}")
        check(0 <= self.clip_layer <= run.encoder_depth, f"objective.clip_layer must be in [0, {run.encoder_depth}]")
        low = mask_range(run)[0]
        check(self.clip_weight == 0 or low <= self.phi + 1e-9,
              f"the CLIP loss can never be active: schedule {run.schedule.name!r} masks at least {low:g} > "
              f"objective.phi={self.phi:g}; lower schedule.low or raise objective.phi")
        if type(self) is ClipSettings:  # CLIP's only loss
            check(self.clip_weight > 0, "objective.clip_weight must be > 0: it weights CLIP's only loss")


@register_objective("clip")
class CLIP(Objective):
    """Contrastive image-text loss (InfoNCE, learnable temperature) on the pooled encoder output."""

    Settings = ClipSettings
    capabilities = Capabilities(clip_text=True)
    defaults = {"schedule.name": "none", "train.weight_decay": 0.02}  # Table 18

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

    def may_skip_parameters(self) -> bool:  # DDP's find_unused_parameters only when a gate can skip a branch
        return self.gated()

    def losses(self, batch, backbone, mask, progress):
        layers = (self.cfg.clip_layer,) if self.cfg.clip_layer else ()
        enc = backbone.encode(batch.tokens, mask, return_layers=layers)
        clip = self.clip_loss(batch, enc, mask)
        return {"total": self.cfg.clip_weight * clip, "clip": clip, "logit_scale": self.clip.logit_scale.detach()}
