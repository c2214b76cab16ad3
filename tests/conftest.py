"""Shared fixtures: an isolated cache (the tiny T5 is built once per session) and plugin autoload off."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    old = {k: os.environ.get(k) for k in ("DREAM_BENCH_CACHE", "TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE")}
    os.environ.update({"DREAM_BENCH_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads; on a loaded machine two threads are many times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
