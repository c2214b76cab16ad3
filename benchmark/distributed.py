"""Distributed helpers. Single-process runs never touch torch.distributed."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0, keeping the autograd graph (as open_clip does).

    The backward of ``torch.distributed.nn.all_gather`` sums the gradients over ranks, so with every rank
    computing the same global loss and DDP averaging, the net gradient is that of the global loss.
    """
    if not is_dist() or world_size() == 1:
        return x
    import torch.distributed.nn as dist_nn

    return torch.cat(dist_nn.all_gather(x.contiguous()), dim=0)
