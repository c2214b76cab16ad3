"""The training loop: exact resume after a kill, checkpoints, records."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmark import registry
from benchmark.config import build_config
from benchmark.run import execute

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from conftest import small_overrides  # noqa: E402


def make_cfg(tmp_path, objective="dream", **extra):
    over = small_overrides(**{"out": str(tmp_path), "tasks": "", **extra})
    return build_config(objective, overrides=over, objective_defaults=registry.objectives.get(objective).defaults)


def final_state(run_dir):
    ck = torch.load(Path(run_dir) / "checkpoint.pt", weights_only=False)
    return ck["model"], ck["loss_curve"], ck["ema"]


@pytest.mark.parametrize("objective", ["dream", "repa"])
def test_resume_after_interruption_is_exact(tmp_path, objective):
    cfg = make_cfg(tmp_path / "a", objective, **{"train.steps": 12, "train.ckpt_every": 4, "train.log_every": 2})
    full = execute(cfg)
    cfg_b = make_cfg(tmp_path / "b", objective, **{"train.steps": 12, "train.ckpt_every": 4, "train.log_every": 2})
    run_b = execute(cfg_b, stop_after=6)  # dies at step 6: the last checkpoint is at step 4
    assert torch.load(run_b / "checkpoint.pt", weights_only=False)["step"] == 4
    assert json.loads((run_b / "record.json").read_text())["status"] == "interrupted"
    execute(cfg_b, resume=True)
    (ma, ca, ea), (mb, cb, eb) = final_state(full), final_state(run_b)
    assert ca == cb  # the whole loss curve, including the steps before the interruption
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    assert all(torch.equal(x, y) for x, y in zip(ea, eb))
    rec = json.loads((run_b / "record.json").read_text())
    assert rec["status"] == "completed" and rec["attempt"] == 2 and rec["train"]["steps"] == 12


def test_rerun_is_idempotent_and_checkpoint_requires_resume(tmp_path):
    from benchmark.run import RunExistsError

    cfg = make_cfg(tmp_path, **{"train.steps": 4, "train.ckpt_every": 2})
    run = execute(cfg, stop_after=3)
    with pytest.raises(RunExistsError, match="--resume"):
        execute(cfg)
    execute(cfg, resume=True)
    mtime = (run / "checkpoint.pt").stat().st_mtime
    execute(cfg)  # completed: nothing is redone
    assert (run / "checkpoint.pt").stat().st_mtime == mtime


def test_kill_and_resume_through_the_cli(tmp_path):
    """A real SIGKILL after the first checkpoint, then `--resume`: same weights as uninterrupted."""
    args = ["--objective", "dream", "--steps", "30", "--tasks", "none"]
    sets = []
    for k, v in small_overrides(**{"train.ckpt_every": 10, "train.log_every": 5}).items():
        sets += ["--set", f"{k}={v}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ref = subprocess.run([sys.executable, "-m", "benchmark", "run", *args, *sets, "--out", str(tmp_path / "ref")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", "run", *args, *sets, "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(out.glob("*/checkpoint.pt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = list(out.glob("*"))
    step = torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"]
    assert step < 30, "the run finished before it could be killed"
    res = subprocess.run([sys.executable, "-m", "benchmark", "run", *args, *sets, "--out", str(out), "--resume"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stdout
    (ref_dir,) = list((tmp_path / "ref").glob("*"))
    assert ref_dir.name == run_dir.name  # the run id does not depend on the output folder
    (ma, ca, _), (mb, cb, _) = final_state(ref_dir), final_state(run_dir)
    assert ca == cb
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
