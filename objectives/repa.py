"""REPA baseline (Alg. 2, Table 20), adapted to masked modelling (§9.4.2): FLUID plus an alignment of
the visible tokens at encoder layer ``repa_layer`` to a frozen teacher's patch features of the full image.

L = L_diff + 0.5 * mean over visible tokens of (1 - cos(MLP(h_i), y_i)) (the released code's form;
REPA's -cos differs by a constant).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from benchmark.models.teacher import Teacher
from benchmark.objectives.base import Capabilities, Objective, generative_loss
from benchmark.objectives.fluid import FX_MAR, DiffusionSettings
from torch import nn

from benchmark.registry import register_objective
from benchmark.settings import check, choice, paper


@dataclass
class RepaSettings(DiffusionSettings):
    repa_weight: float = 0.5  # Table 20 "Weight on REPA loss"
    repa_layer: int = paper(8, 6)  # official block 8 (DINOv2-B); paper layer 6 (CLIP-L), §4.3, Tables 7, 8
    repa_teacher: str = paper("dinov2_b", "clip_l")  # dinov2_b | clip_l | tiny (random frozen stand-in)
    repa_teacher_path: str = field(default="", metadata={"run_id": False})  # local weights; env DREAM_BENCH_REPA_TEACHER
    repa_proj_dim: int = 2048

    def validate(self, run) -> None:
        super().validate(run)
        choice("objective.repa_teacher", self.repa_teacher, ("dinov2_b", "clip_l", "tiny"))
        check(1 <= self.repa_layer <= run.encoder_depth, f"objective.repa_layer must be in [1, {run.encoder_depth}]")
        check(self.repa_weight >= 0, f"objective.repa_weight must be >= 0, got {self.repa_weight}")
        check(self.diff_weight > 0 or self.repa_weight > 0, "objective.diff_weight and repa_weight are both 0: no loss")


@register_objective("repa")
class REPA(Objective):
    """FLUID + alignment of encoder tokens to a frozen teacher (Alg. 2)."""

    Settings = RepaSettings
    capabilities = Capabilities(decoder=True, text_conditioned=True, t5=True, teacher=True)
    defaults = {**FX_MAR, "train.weight_decay": 0.02}  # Table 20

    def __init__(self, cfg, backbone):
        super().__init__(cfg, backbone)
        grid = int(backbone.seq_len**0.5)
        image_size = backbone.cfg.image_size
        # Kept out of the module tree: frozen, not checkpointed, not in the EMA or the optimizer.
        self.__dict__["teacher"] = Teacher(cfg.repa_teacher, grid, image_size, cfg.repa_teacher_path)
        d, h = backbone.cfg.width, cfg.repa_proj_dim
        self.projector = nn.Sequential(nn.Linear(d, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(),
                                       nn.Linear(h, self.teacher.dim))

    def align_loss(self, enc, images: torch.Tensor, any_visible: bool = True) -> torch.Tensor:
        teacher = self.teacher.to(images.device)
        target = teacher(images)  # [B, L, Dt], full image
        h = enc.layers[self.cfg.repa_layer][:, enc.num_buffer:]  # visible tokens (padded) at the layer
        valid = enc.valid[:, enc.num_buffer:]
        if not any_visible:  # known on the host (the mask's plan): every token masked
            return h.new_zeros(())
        target = torch.gather(target, 1, enc.ids_keep.unsqueeze(-1).expand(-1, -1, target.shape[-1]))
        cos = F.cosine_similarity(self.projector(h).float(), target.float(), dim=-1)
        return ((1 - cos) * valid).sum() / valid.sum()

    def may_skip_parameters(self) -> bool:  # DDP's find_unused_parameters only when a gate can skip a branch
        return self.gated()

    def losses(self, batch, backbone, mask, progress):
        c = self.cfg
        enc = backbone.encode(batch.tokens, mask, return_layers=(c.repa_layer,))
        repa = self.align_loss(enc, batch.images, mask.any_visible)
        diff = generative_loss(backbone, batch, enc, mask)  # γ gate: in the mask's host plan
        return {"total": c.diff_weight * diff + c.repa_weight * repa, "diff": diff, "repa": repa}
