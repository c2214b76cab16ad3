"""Masked self-distillation: the pooled features of a masked view regress those of the full view."""

import torch.nn.functional as F

from benchmark import Objective


class MaskedDistill(Objective):
    """Pooled encoder features of the masked image match (stop-gradient) those of the full image."""

    needs = frozenset()
    defaults = {"schedule.name": "uni", "schedule.low": 0.0, "schedule.high": 0.75}

    def losses(self, batch, backbone, mask, progress):
        student = backbone.encode(batch["tokens"], mask.mask).pool("all")
        teacher = backbone.encode(batch["tokens"]).pool("all").detach()
        loss = F.mse_loss(student, teacher)
        return {"total": loss, "distill": loss}
