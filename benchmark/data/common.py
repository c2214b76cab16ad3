"""What every data module shares (imported by the submodules, so that none imports the package ``benchmark.data``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

CACHE_ENV = "DREAM_BENCH_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "dream-bench"))


# Scene seeds of the synthetic splits: fixed, so every run sees the same data whatever its seed.
SYNTHETIC_SPLITS = {"train": 0, "probe_train": 1, "probe_test": 2}


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 7 + stream)
