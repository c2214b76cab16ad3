"""Preemption through submitit's LocalExecutor (real subprocess, pickling, USR2 and requeue): the job is
interrupted, checkpoints at a step boundary, is requeued, resumes, and ends with the record of an
uninterrupted run (same loss curve, same weights).

The signal: at the time limit the LocalExecutor's controller (like Slurm's ``--signal=USR2@delay``) sends USR2
to the job's task. A time limit fires after a wall time that depends on the machine's load, so the test sends
that same USR2 to the task itself once the run has passed its first checkpoint (``job._interrupt()`` of
submitit 1.5.4 signals the controller, which does not forward USR2).
"""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from benchmark.config import build_config
from benchmark.run import execute
from benchmark.testing import small_overrides

STEPS = 16


def make_cfg(out: Path):
    over = small_overrides(**{"out": str(out), "tasks": "", "train.steps": STEPS, "train.ckpt_every": 4,
                              "train.log_every": 1, "train.threads": 1})
    return build_config("dream", overrides=over)


def wait_for(pred, timeout: float = 240.0, every: float = 0.05) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(every)
    return False


def test_preempted_job_is_requeued_and_ends_as_an_uninterrupted_run(tmp_path):
    from benchmark.slurm.launch import load_profile, submit_runs

    ref_dir = execute(make_cfg(tmp_path / "ref"))
    cfg = make_cfg(tmp_path / "job")
    run_dir = Path(cfg.out) / ref_dir.name
    prof = load_profile(None, ["timeout_min=10", "signal_delay_s=5", "max_num_timeout=2"])
    job = submit_runs([cfg], "local", prof)[0]
    info = json.loads((run_dir / "job.json").read_text())
    assert info["executor"] == "local" and info["job_id"] == str(job.job_id)

    def progressed() -> bool:
        try:
            return json.loads((run_dir / "record.json").read_text()).get("progress", {}).get("step", 0) >= 4
        except (OSError, ValueError):
            return job.done()

    assert wait_for(progressed), job.stdout()
    assert not job.done(), "the job finished before it could be interrupted"
    os.kill(json.loads((run_dir / "job.json").read_text())["pid"], signal.SIGUSR2)  # the time-limit signal
    assert job.result() == str(run_dir)
    log = job.stdout()
    rec = json.loads((run_dir / "record.json").read_text())
    ref = json.loads((ref_dir / "record.json").read_text())
    stopped = rec["interruptions"][0]["step"]
    assert 4 <= stopped < STEPS
    assert f"stop requested: checkpoint saved at step {stopped}/{STEPS}" in log
    assert f"at step {stopped}/{STEPS}" in log.split("requeueing", 1)[1]  # "resumed from ... at step k"
    assert rec["status"] == "completed" and rec["requeues"] == 1 and rec["attempt"] == 2
    assert rec["train"]["loss_curve"] == ref["train"]["loss_curve"]  # every step, before and after the requeue
    a = torch.load(ref_dir / "checkpoint.pt", weights_only=False)
    b = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == STEPS
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert all(torch.equal(x, y) for x, y in zip(a["ema"], b["ema"]))
    print(f"requeue evidence: interrupted at step {stopped}, resumed at step {stopped}, "
          f"final loss {rec['train']['loss_curve'][-1][1]['total']} == {ref['train']['loss_curve'][-1][1]['total']}")


def test_profile_keys_are_checked():
    from benchmark.slurm.launch import executor_parameters, load_profile

    from benchmark.config import ConfigError

    prof = load_profile("h100x8", ["nodes=4", "partition=big", "additional.mail_type=END"])
    p = executor_parameters(prof)
    assert p["nodes"] == 4 and p["tasks_per_node"] == 8 and p["gpus_per_node"] == 8
    assert p["slurm_partition"] == "big" and p["slurm_additional_parameters"] == {"mail_type": "END"}
    with pytest.raises(ConfigError, match="gpus_per_node"):
        load_profile(None, ["gpus_per_nod=2"])
    with pytest.raises(FileNotFoundError, match="h100x8"):
        load_profile("nope")
