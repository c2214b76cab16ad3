"""Faults during a run (issue 14): a kill inside a checkpoint write, Ctrl-C, a non-finite loss, two writers of one
run folder; and what the readers and `status` make of the folders these leave behind."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.cli import main
from benchmark.records import FAULT_ENV
from benchmark.testing import small_overrides

REPO = Path(__file__).resolve().parents[2]
# log_every does not divide ckpt_every: a checkpoint falls inside a logging window (the window must be saved)
OVER = small_overrides(**{"train.ckpt_every": 2, "train.log_every": 3, "train.threads": 1, "eval.n_probe_train": 64,
                          "eval.n_probe_test": 64, "eval.lp_epochs": 2, "eval.lp_batch": 32, "eval.zeroshot_n": 32,
                          "eval.zeroshot_seeds": 1})
ARGS = ["run", "--objective", "dream", "--steps", "6", "--tasks", "none",
        *[a for k, v in OVER.items() for a in ("--set", f"{k}={v}")]]


def cli(*argv: str, env: dict[str, str] | None = None, wait: bool = True):
    cmd = [sys.executable, "-m", "benchmark", *argv]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600)


def state(run_dir: Path):
    ck = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    return ck["model"], ck["ema"], ck["optimizer"]["state"], json.loads((run_dir / "record.json").read_text())


def assert_same_run(a: Path, b: Path) -> None:
    (ma, ea, oa, ra), (mb, eb, ob, rb) = state(a), state(b)
    assert ra["train"]["loss_curve"] == rb["train"]["loss_curve"]  # every logged window, bit for bit
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert all(torch.equal(x, y) for x, y in zip(ea, eb))
    assert all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (in-process, the same config as the CLI runs below)."""
    out = tmp_path_factory.mktemp("ref")
    assert main([*ARGS, "--out", str(out)]) == 0
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    return run_dir


def test_kill_during_checkpoint_write_then_resume(reference, tmp_path, capsys):
    out = tmp_path / "killed"
    # SIGKILL after the temp file of the 2nd checkpoint (step 4) is written, before its rename
    p = cli(*ARGS, "--out", str(out), env={FAULT_ENV: "kill:checkpoint.pt:2"})
    assert p.returncode == -9, p.stderr[-2000:]
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    assert run_dir.name == reference.name
    assert list(run_dir.glob(".checkpoint.pt.*.tmp")), "the kill left no temp file: the hook did not fire"
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 2  # the resume point
    # status: the record says running, nobody holds the folder -> dead
    assert main(["status", "--runs", str(out)]) == 0
    assert "dead" in capsys.readouterr().out
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert not list(run_dir.glob(".*.tmp")), "temp files of the interrupted write were not removed"
    assert_same_run(reference, run_dir)
    rec = json.loads((run_dir / "record.json").read_text())
    assert rec["status"] == "completed" and "error" not in rec


def test_ctrl_c_ends_with_one_line_and_resumes_exactly(reference, tmp_path):
    out = tmp_path / "int"
    p = cli(*ARGS, "--out", str(out), env={FAULT_ENV: "int:checkpoint.pt:1"})  # Ctrl-C during the step-2 checkpoint
    lines = [line for line in p.stderr.splitlines() if line.strip() and "train:" not in line]
    assert p.returncode == 130, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and len(lines) == 1 and "--resume" in lines[0], p.stderr[-2000:]
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    rec = json.loads((run_dir / "record.json").read_text())
    assert rec["status"] == "interrupted" and rec["progress"]["step"] < 6
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert_same_run(reference, run_dir)


def test_files_follow_the_umask(reference):
    mask = os.umask(0)
    os.umask(mask)
    for name in ("record.json", "checkpoint.pt", "ema.pt"):
        assert stat.S_IMODE((reference / name).stat().st_mode) == 0o666 & ~mask, name


def test_non_finite_loss_fails_the_run_in_one_line(tmp_path, capsys):
    # exp(1e4) overflows the CLIP logit scale: the first logged window is inf/nan
    argv = [*ARGS, "--out", str(tmp_path), "--set", "objective.logit_scale_init=1e4", "--set", "train.log_every=1"]
    rc = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "train:" not in line]
    assert rc == 1 and len(err) == 1 and "non-finite loss at step 1" in err[0] and "clip=" in err[0], err
    (run_dir,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    assert str(run_dir / "error.log") in err[0] and "Traceback" in (run_dir / "error.log").read_text()
    rec = json.loads((run_dir / "record.json").read_text())
    assert rec["status"] == "failed" and "non-finite loss at step 1" in rec["error"]


def test_two_runs_of_one_folder(reference, tmp_path):
    """Started together: one trains, the other refuses naming it (or, if the first already ended, finds it
    completed); never two writers, and the record is one complete run."""
    out = tmp_path / "two"
    procs = [cli(*ARGS, "--out", str(out), wait=False) for _ in range(2)]
    res = [(p.wait(timeout=600), p.communicate()) for p in procs]
    codes = sorted(rc for rc, _ in res)
    assert codes in ([0, 0], [0, 2]), [(rc, err[-1500:]) for rc, (_, err) in res]
    for rc, (_, err) in res:
        if rc == 2:
            assert "is in use (run on host" in err and "pid" in err and len(err.strip().splitlines()) == 1, err
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    assert json.loads((run_dir / "record.json").read_text())["status"] == "completed"
    assert_same_run(reference, run_dir)


def test_two_evals_of_one_run_keep_both(reference):
    procs = [cli("eval", "--run", str(reference), "--tasks", t, wait=False) for t in ("lp/synthetic", "zeroshot/synthetic")]
    res = [(p.wait(timeout=600), p.communicate()[1]) for p in procs]
    assert all(rc == 0 for rc, _ in res), [err[-1500:] for _, err in res]
    rec = json.loads((reference / "record.json").read_text())
    assert {"lp/synthetic", "zeroshot/synthetic"} <= set(rec["metrics"]), list(rec["metrics"])
    assert "top1" in rec["metrics"]["lp/synthetic"]


def test_synthetic_result_never_under_a_real_name(reference, capsys):
    """`lp` on a synthetic run without ImageNet is the stand-in, stored as lp/synthetic; the table marks it."""
    assert main(["eval", "--run", str(reference), "--tasks", "lp"]) == 0
    rec = json.loads((reference / "record.json").read_text())
    assert "lp" not in rec["metrics"] and "lp/synthetic" in rec["metrics"]
    assert rec["tasks"]["lp/synthetic"]["data"] == "synthetic stand-in"
    capsys.readouterr()
    assert main(["table", "4", "--runs", str(reference.parent), "--format", "json"]) == 0
    table = json.loads(capsys.readouterr().out)
    cell = next(r for r in table["rows"] if r["row"] == "WM")["cells"]["LP"]
    assert cell["metric"] == "lp/synthetic.top1" and cell["other"] and cell["delta"] is None


def test_corrupt_record_is_skipped_with_one_warning(reference, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    os.symlink(reference, runs / reference.name)
    for name, text in [("truncated", '{"run_id": "x", "status": "compl'), ("foreign", '{"status": "completed"}'),
                       ("list", "[1, 2]")]:
        (runs / name).mkdir()
        (runs / name / "record.json").write_text(text)
    for argv in (["table", "2", "--runs", str(runs)], ["status", "--runs", str(runs)]):
        assert main(argv) == 0
        cap = capsys.readouterr()
        warnings = [line for line in cap.err.splitlines() if line.startswith("warning: skipped")]
        assert len(warnings) == 3 and all(str(runs) in w for w in warnings), cap.err
        assert "3 unreadable record(s)" in cap.out and reference.name in cap.out  # counted, and the good run shown
