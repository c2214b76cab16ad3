"""Distributed helpers. Single-process runs never touch torch.distributed.

DDP layout (issue 6): one process per GPU, set up from the environment that submitit
(``TorchDistributedEnvironment().export()``) or torchrun exports (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT). Every rank draws the *global* batch's randomness (masks, caption dropout) from the step-seeded
generators and keeps its rows ``shard(n)``, so W processes compute what one process computes on the global
batch. Only rank 0 writes records and checkpoints.

Stop requests (preemption, time limit): a signal handler calls ``request_stop()``; the training loop asks a
``StopPoll`` once per step (under DDP an asynchronous all-reduce on a CPU (gloo) group whose result is read one
step later, so all ranks stop after the same step and no step waits on a collective or on the GPU), saves a
checkpoint and returns; the job then requeues itself.
"""

from __future__ import annotations

import os
import threading

import torch
import torch.distributed as dist

_STOP = threading.Event()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def setup(backend: str | None = None) -> bool:
    """Join the process group described by the environment (env:// init); True when world size > 1.

    NCCL on CUDA (each process on GPU ``LOCAL_RANK``), gloo on CPU (tests, CPU clusters)."""
    if is_dist():
        return world_size() > 1
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return False
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    dist.init_process_group(backend or ("nccl" if cuda else "gloo"), init_method="env://")
    return True


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()


def shard(n: int, r: int | None = None, w: int | None = None) -> slice:
    """Rows of rank ``r`` in a global batch of ``n``: [r·n/W, (r+1)·n/W)."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    if n % w:
        from benchmark.config import ConfigError

        raise ConfigError(f"the global (micro-)batch {n} must be divisible by the world size {w}")
    per = n // w
    return slice(r * per, (r + 1) * per)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average logged scalars over ranks (one all-reduce): the per-rank diffusion loss is normalised by the
    local groups, so its mean over ranks is the one-process value on the global batch."""
    if not is_dist() or world_size() == 1 or not values:
        return values
    keys = list(values)  # the same insertion order on every rank (the loop logs the same keys)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return {k: float(v) / world_size() for k, v in zip(keys, t.tolist())}


def any_over_ranks(flag: bool) -> bool:
    """True when ``flag`` is true on any rank (every rank must call it: it is a collective)."""
    if not is_dist() or world_size() == 1:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank (a list of one without DDP)."""
    if not is_dist() or world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_dist() and world_size() > 1:
        dist.barrier()


def _collective_device() -> torch.device:
    if is_dist() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------- batch norm over the global batch
class GatheredBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """SyncBatchNorm where DDP refuses ``nn.SyncBatchNorm`` (CPU, gloo): the statistics of the global batch
    from an all-gather with gradients, so values and gradients equal one process's BatchNorm on the global
    batch. Outside DDP training it is a plain BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_dist() and world_size() > 1):
            return super().forward(x)
        xs = all_gather_with_grad(x)
        dims = [0, *range(2, x.dim())]
        mean, var = xs.mean(dims), xs.var(dims, unbiased=False)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                n = xs.numel() / xs.shape[1]
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / max(n - 1, 1), alpha=m)
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def sync_batchnorm(module: torch.nn.Module, cuda: bool) -> torch.nn.Module:
    """BatchNorm layers -> batch statistics over all ranks, in place, sharing parameters and buffers:
    ``nn.SyncBatchNorm`` on CUDA (the official recipe's SyncBN), ``GatheredBatchNorm`` on CPU."""
    if cuda:
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(child, GatheredBatchNorm):
            new = GatheredBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            sync_batchnorm(child, cuda)
    return module


# ---------------------------------------------------------------- stop requests (preemption, time limit)
def request_stop(signum: int | None = None, frame=None) -> None:
    """Signal-handler compatible: ask the training loop to checkpoint and return after the current step."""
    _STOP.set()


def stop_requested() -> bool:
    return _STOP.is_set()


def clear_stop() -> None:
    _STOP.clear()


def should_stop() -> bool:
    """The loop's once-per-step check, agreed by all ranks."""
    return any_over_ranks(_STOP.is_set())


class StopPoll:
    """The loop's once-per-step stop check without a blocking collective: each call starts an asynchronous
    all-reduce (MAX) of this rank's flag on a gloo group (host memory: it never waits for the GPU) and returns
    the result of the previous call's, which has had a whole step to arrive. All ranks call it at every step, so
    they agree and stop after the same step (one step after the request; immediately without DDP)."""

    def __init__(self) -> None:
        self.pending: tuple | None = None
        self.group = None

    def __call__(self) -> bool:
        if not is_dist() or world_size() == 1:
            return _STOP.is_set()
        if self.group is None:  # a collective too: every rank creates it at its first poll
            self.group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
        stop = self.close()
        flag = torch.tensor([1.0 if _STOP.is_set() else 0.0])
        self.pending = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True), flag)
        return stop

    def close(self) -> bool:
        """Wait for the all-reduce in flight (before the process group goes away); True if it asked to stop."""
        if self.pending is None:
            return False
        work, flag = self.pending
        self.pending = None
        work.wait()
        return bool(flag[0] > 0)  # a CPU tensor: no device sync


class stop_on_sigint:
    """While training (main thread only): the first SIGINT asks for a stop at the next step boundary (a resumable
    checkpoint is written), a second one raises KeyboardInterrupt. ``restore()`` puts the old handler back."""

    def __init__(self) -> None:
        import signal
        import threading

        self.old, self.fired = None, False
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if _STOP.is_set():
            raise KeyboardInterrupt
        print("\ninterrupt: stopping after this step with a checkpoint (Ctrl-C again to abort)", flush=True)
        self.fired = True
        request_stop()

    def restore(self) -> None:
        import signal

        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
            self.old = None
        if self.fired:  # the stop was ours: the next run in this process starts clean
            clear_stop()


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0, keeping the autograd graph (as open_clip does).

    The backward of ``torch.distributed.nn.all_gather`` sums the gradients over ranks, so with every rank
    computing the same global loss and DDP averaging, the net gradient is that of the global loss.
    """
    if not is_dist() or world_size() == 1:
        return x
    import torch.distributed.nn as dist_nn

    return torch.cat(dist_nn.all_gather(x.contiguous()), dim=0)
