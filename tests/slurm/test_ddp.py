"""DDP on CPU (gloo): 2 processes give the losses and gradients of 1 process on the same global batch."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OBJECTIVES = ("dream", "clip")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{world size: {objective: rank 0's result}} for 1 and 2 processes."""
    out = tmp_path_factory.mktemp("ddp")
    return {w: launch(out / f"w{w}", w) for w in (1, 2)}


def launch(out: Path, world: int) -> dict:
    """Start ``world`` ranks as torchrun would (env:// variables), wait, return rank 0's results."""
    port = str(free_port())
    procs = []
    for r in range(world):
        env = {**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), *OBJECTIVES], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return {o: torch.load(out / o / "result.pt", weights_only=False) for o in OBJECTIVES}


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_two_ranks_equal_one_process(results, objective):
    one, two = results[1][objective], results[2][objective]
    assert len(one["grads"]) == len(two["grads"]) == 3
    for step, (g1, g2) in enumerate(zip(one["grads"], two["grads"])):
        assert g1.keys() == g2.keys()
        for name in g1:
            scale = g1[name].abs().max().item() + 1e-12
            err = (g1[name] - g2[name]).abs().max().item()
            assert err <= 1e-4 * scale + 1e-6, (step, name, err, scale)
    c1, c2 = one["curve"], two["curve"]
    assert [s for s, _ in c1] == [s for s, _ in c2] == [1, 2, 3]
    for (_, l1), (_, l2) in zip(c1, c2):
        for k in ("total", "clip", "diff", "mask_ratio", "grad_norm"):
            if k in l1:
                assert l2[k] == pytest.approx(l1[k], rel=1e-4, abs=1e-6), k
    if objective == "dream":  # the run exercised both losses and the γ gate on the sliced groups
        assert any(l["diff"] > 0 for _, l in c1) and any(l["clip"] > 0 for _, l in c1)
