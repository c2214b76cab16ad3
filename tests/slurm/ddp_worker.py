"""One rank of the DDP equivalence test (also run as the 1-process reference): trains a few steps of a small
model and saves the loss curve and the gradients seen by the optimizer at every step.

Usage: RANK=r WORLD_SIZE=W MASTER_ADDR=127.0.0.1 MASTER_PORT=p python ddp_worker.py OUT_DIR OBJECTIVE...
Writes OUT_DIR/OBJECTIVE/result.pt (rank 0).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from benchmark.testing import small_overrides


def row_keyed_draws() -> None:
    """Replace the diffusion head's (t, noise) draws from the per-rank global RNG by a fixed function of
    each row's target, so a row gets the same draws whichever rank holds it (the comparison then isolates
    what DDP must preserve: data slicing, masks, caption dropout, the all-gathered contrastive loss,
    the 1/G normalisation and gradient averaging)."""
    from benchmark.models.diffusion_head import DiffusionHead

    def forward(self, target, z, weight=None, generator=None, t=None, noise=None):
        q = torch.round(target.detach() * 1000).long()
        t = (q * torch.arange(1, q.shape[1] + 1)).sum(1).abs() % self.num_steps
        noise = torch.sin(target.detach() * 7.0 + torch.arange(target.shape[1]) * 1.3)
        loss = self.train_diffusion.training_losses(self.net, target, t, z, noise)
        return loss if weight is None else loss * weight

    DiffusionHead.forward = forward


def run(objective: str, out: str, steps: int = 3) -> None:
    from benchmark import distributed
    from benchmark.config import build_config
    from benchmark.train import train

    over = small_overrides(objective, **{"out": out, "tasks": "", "train.steps": steps, "train.log_every": 1,
                              "train.ckpt_every": 100, "train.threads": 1, "model.diffusion_batch_mul": 1,
                              "train.batch_size": 16, "schedule.group_size": 4, "train.caption_dropout": 0.5})
    if objective == "dream":  # uniform ratios: groups on both sides of γ (diffusion) and ϕ (CLIP) occur
        over["schedule.name"] = "uni"
    cfg = build_config(objective, overrides=over)
    grads: list[dict[str, torch.Tensor]] = []

    def hook(opt, args, kwargs):
        grads.append({id(p): p.grad.detach().clone() for g in opt.param_groups for p in g["params"]
                      if p.grad is not None})

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(hook)
    comps = train(cfg, Path(out) / f"rank{distributed.rank()}", None)
    handle.remove()
    names = {id(p): n for n, p in comps.model.named_parameters()}
    named = [{names[k]: v for k, v in step.items()} for step in grads]
    ck = torch.load(Path(out) / "rank0" / "checkpoint.pt", weights_only=False) if distributed.is_main() else None
    if distributed.is_main():
        torch.save({"grads": named, "curve": ck["loss_curve"]}, Path(out) / "result.pt")


if __name__ == "__main__":
    from benchmark import distributed

    distributed.setup("gloo")
    row_keyed_draws()
    for obj in sys.argv[2:]:
        run(obj, str(Path(sys.argv[1]) / obj))
    distributed.cleanup()
