"""Masked self-distillation: the pooled features of a masked view regress those of the full view."""

from dataclasses import dataclass

import torch.nn.functional as F

from benchmark import Capabilities, Objective, ObjectiveSettings, check


@dataclass
class MaskedDistillSettings(ObjectiveSettings):
    distill_weight: float = 1.0  # the hyperparameter: weight of the distillation loss in the total

    def validate(self, run) -> None:
        check(self.distill_weight > 0, f"objective.distill_weight must be > 0, got {self.distill_weight}")


class MaskedDistill(Objective):
    """Pooled encoder features of the masked image match (stop-gradient) those of the full image."""

    Settings = MaskedDistillSettings
    capabilities = Capabilities()  # an encoder only: no decoder, no text
    defaults = {"schedule.name": "uni", "schedule.low": 0.0, "schedule.high": 0.75}

    def losses(self, batch, backbone, mask, progress):
        student = backbone.encode(batch["tokens"], mask.mask).pool("all")
        teacher = backbone.encode(batch["tokens"]).pool("all").detach()
        loss = F.mse_loss(student, teacher)
        return {"total": self.cfg.distill_weight * loss, "distill": loss}
