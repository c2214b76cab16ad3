"""The feature cache shared by the representation tasks (few-shot, zero-shot, fast linear probe, robustness).

Frozen-encoder features are extracted once per (checkpoint, data set, split, transform, pooling, mask) and
kept in memory for the process and on disk under ``<cache>/features/<checkpoint hash>/``
(``$DREAM_BENCH_CACHE``, default ``~/.cache/dream-bench``). The checkpoint hash is a SHA-256 over the
encoder's weights, so a retrained or differently-EMA'd model never reads stale features; the anchors do
the same (lgssl, SynCLR ``cache_features``, CLIP_benchmark ``feature_root``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import torch

from benchmark.data import cache_root
from benchmark.records import atomic_torch_save

_MEMORY: dict[tuple[str, str], torch.Tensor] = {}
_HASHES: dict[int, tuple[int, str]] = {}


def checkpoint_hash(model: Any) -> str:
    """SHA-256 (16 hex digits) of the encoder weights and the CLIP image projection, if any."""
    modules = [model.backbone]
    if model.objective.capabilities.clip_text:
        modules.append(model.objective.clip)
    version = sum(int(p._version) for m in modules for p in m.parameters())  # changes on in-place updates
    key = id(model.model)
    if key in _HASHES and _HASHES[key][0] == version:
        return _HASHES[key][1]
    h = hashlib.sha256()
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            if name.startswith(("decoder", "text_", "aligner", "head.", "diffusion_pos", "mask_token", "null_text")):
                continue  # the generative half does not change encoder features
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest = h.hexdigest()[:16]
    _HASHES[key] = (version, digest)
    return digest


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def cached(model: Any, key: str, compute: Callable[[], torch.Tensor], disk: bool = True) -> torch.Tensor:
    """Return ``compute()`` for ``key`` (e.g. ``"synthetic-probe_train-n4096-center32-pool=all"``),
    computed once per checkpoint. ``key`` must name everything the features depend on besides the weights."""
    ck = checkpoint_hash(model)
    mem_key = (ck, key)
    if mem_key in _MEMORY:
        return _MEMORY[mem_key]
    path = cache_root() / "features" / ck / f"{_slug(key)}.pt"
    if disk and path.exists():
        feats = torch.load(path, map_location="cpu", weights_only=True)
    else:
        feats = compute().float().cpu()
        if disk:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(feats, path)
    _MEMORY[mem_key] = feats
    return feats


def clear_memory() -> None:
    _MEMORY.clear()
    _HASHES.clear()


def dataset_features(model: Any, split: Any, image_size: int, pool: str, batch_size: int, workers: int = 0,
                     key: str | None = None) -> torch.Tensor:
    """Cached features of an ``EvalSplit`` under the eval transform (bicubic resize + centre crop)."""
    from benchmark.tasks.base import extract_features

    from benchmark.data.evalsets import eval_transform

    def compute() -> torch.Tensor:
        split.transform = eval_transform(image_size)
        loader = torch.utils.data.DataLoader(split, batch_size=batch_size, num_workers=workers)
        return torch.cat([extract_features(model, x, pool, batch_size) for x, _ in loader])

    key = key or f"{split.name}-{split.split_hash}-center{image_size}-pool={pool}"
    return cached(model, key, compute)
