"""What keeps a training step off the GPU's critical path: host syncs and graph breaks.

``SyncDetector`` is a ``TorchDispatchMode`` that records every aten op that forces the host to wait for the
device (a value read back: ``.item()``, ``bool(t)``, ``int(t)``; a data-dependent output shape: ``nonzero``,
boolean-mask indexing, ``masked_select``, ``unique``; a copy from a device to the host). It works on CPU, where
no op actually waits, so the count a CPU test sees is the count a GPU step would pay. ``graph_breaks`` counts
the breaks ``torch._dynamo`` would make in a function. Both are what ``bench train`` prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# ops whose output (value or shape) is only known once the device has computed their input
SYNC_OPS = {
    aten._local_scalar_dense.default,  # .item(), bool(t), int(t), float(t), t.tolist() element reads
    aten.is_nonzero.default,
    aten.nonzero.default, aten.nonzero_static.default if hasattr(aten, "nonzero_static") else None,
    aten.masked_select.default, aten.equal.default,
    aten._unique2.default, aten.unique_consecutive.default, aten.unique_dim.default,
    aten.repeat_interleave.Tensor, aten.bincount.default,
} - {None}
INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
COPY_OPS = {aten._to_copy.default, aten.copy_.default}


def _is_bool_index(indices: Any) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in (indices or ()))


class SyncDetector(TorchDispatchMode):
    """Counts ops that force a device->host sync while active: ``with SyncDetector() as d: ...; d.count``.

    ``d.ops`` is a Counter of the offending op names (``aten.index.Tensor[bool]`` for boolean-mask indexing,
    ``copy device->host`` for a read-back copy). ``repeat_interleave`` with ``output_size`` and
    ``nonzero_static`` are sync-free and not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    @property
    def count(self) -> int:
        return sum(self.ops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = None
        if func in SYNC_OPS:
            sync_free = (func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is not None) or \
                func.__name__.startswith("nonzero_static")
            name = None if sync_free else str(func)
        elif func in INDEX_OPS and _is_bool_index(args[1] if len(args) > 1 else kwargs.get("indices")):
            name = f"{func}[bool]"
        elif func in COPY_OPS:
            src = args[1] if func is aten.copy_.default else args[0]
            dst = args[0].device if func is aten.copy_.default else kwargs.get("device")
            if isinstance(src, torch.Tensor) and src.device.type != "cpu" and dst is not None \
                    and torch.device(dst).type == "cpu":
                name = "copy device->host"
        if name:
            self.ops[name] += 1
        return func(*args, **kwargs)


def count_syncs(fn: Callable[[], Any]) -> tuple[int, Counter[str]]:
    """(number of syncing ops, their names) while running ``fn()`` (forward and backward if fn runs both)."""
    with SyncDetector() as d:
        fn()
    return d.count, d.ops


def graph_breaks(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, list[str]]:
    """(graph-break count, reasons) of ``fn(*args)`` under ``torch._dynamo.explain`` (nothing is compiled)."""
    import torch._dynamo

    torch._dynamo.reset()
    ex = torch._dynamo.explain(fn)(*args, **kwargs)
    reasons = [str(getattr(b, "reason", b)).splitlines()[0] for b in ex.break_reasons]
    torch._dynamo.reset()
    return ex.graph_break_count, reasons


class RecompileCounter:
    """Counts dynamo compilations (frames compiled) while active, from dynamo's own counters."""

    def __enter__(self) -> RecompileCounter:
        from torch._dynamo.utils import counters

        self._counters = counters
        self.start = sum(counters["stats"].get(k, 0) for k in ("unique_graphs",))
        return self

    @property
    def graphs(self) -> int:
        return sum(self._counters["stats"].get(k, 0) for k in ("unique_graphs",)) - self.start

    def __exit__(self, *exc) -> None:
        return None
