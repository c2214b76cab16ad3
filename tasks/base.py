"""The task plugin contract and helpers shared by the tasks (feature extraction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from benchmark.settings import Settings


@dataclass
class TaskSettings(Settings):
    """A task's own fields, set with ``--set task.<task>.<field>=``. ``prefix``: the older spelling
    ``eval.<prefix><field>`` (e.g. ``eval.ft_epochs``) still reaches them."""

    prefix: ClassVar[str] = ""


class Task:
    """``run(model, cfg) -> {metric: float}``. ``model`` is a ``benchmark.train.Components`` holding the
    trained backbone + objective (EMA weights when ``eval.use_ema``), the tokenizer and text encoders.
    Bump ``version`` whenever the protocol changes: tables refuse to mix versions.

    A task may be asked for with a variant, ``--tasks fid/coco``: the runner builds ``Task(variant="coco")``
    and stores the metrics under the full name ``fid/coco`` (the tables' ``fid/coco.fid``)."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type[TaskSettings]] = TaskSettings  # read it in run() as cfg.task_settings(self.name)
    version: ClassVar[int] = 1
    higher_is_better: ClassVar[dict[str, bool]] = {}
    requires: ClassVar[tuple[str, ...]] = ()  # dataset keys; a missing one raises a clear error

    def __init__(self, variant: str | None = None) -> None:
        self.variant = variant
        self._extra: dict[str, Any] = {}  # filled by run(); returned by extra()

    def applies(self, model: Any, cfg: Any) -> str | None:
        """None when the task can evaluate this model, else why not (e.g. no decoder to generate with): the
        runner records the task as not applicable instead of failing a trained run."""
        return None

    def run(self, model: Any, cfg: Any) -> dict[str, float]:
        raise NotImplementedError

    def extra(self) -> dict[str, Any]:
        """Extra facts stored beside the metrics in ``record["tasks"][name]`` (mode, sample counts)."""
        return getattr(self, "_extra", {})  # a plugin overriding __init__ may skip super().__init__


def objectives_with(capability: str) -> str:
    """The registered objectives declaring ``capability`` (for messages: "needs a CLIP text tower (clip, dream)")."""
    from benchmark import registry

    return ", ".join(n for n in registry.objectives.names() if getattr(registry.objectives.get(n).capabilities, capability))


def no_decoder_reason(model: Any) -> str | None:
    """``Task.applies`` for generation tasks: None when the objective trained a decoder to generate with."""
    return None if model.objective.capabilities.decoder else "the objective trains no decoder to generate with"


@torch.no_grad()
def extract_features(model: Any, images: torch.Tensor, pool: str = "all", batch_size: int = 256) -> torch.Tensor:
    """Mean-pooled encoder output (§3.4) for uint8 images [N, 3, H, W], no masking, eval mode. The SD-VAE
    tokenizer samples its posterior (as in training); a generator seeded per batch makes that deterministic."""
    backbone, device = model.backbone, model.device
    backbone.eval()
    feats = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).float() / 127.5 - 1.0
        tokens = model.tokenizer.encode(x, generator=torch.Generator(device=device).manual_seed(i))
        feats.append(backbone.encode(tokens).pool(pool).float().cpu())
    return torch.cat(feats)
