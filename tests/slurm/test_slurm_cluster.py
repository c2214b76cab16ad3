"""A real single-node Slurm on localhost (slurm/local_cluster.sh): a 2-point sweep of the tiny preset goes out
as ONE job array, both records complete, `status` shows them, and resubmitting submits nothing.

Skipped, with the reason, when the Slurm binaries are absent or we are not root (CI installs them: .ci/run).
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "slurm" / "local_cluster.sh"
BINARIES = ("slurmctld", "slurmd", "munged", "sbatch", "squeue")
# A smaller-than-tiny model (benchmark.testing.small_overrides) so each array task trains in seconds.
SMALL = ["model.width=64", "model.depth=4", "model.heads=2", "model.buffer_tokens=4", "model.head_width=64",
         "model.head_depth=2", "model.aligner_depth=1", "objective.proj_hidden=64", "objective.embed_dim=32",
         "train.batch_size=16", "data.n_train=256", "eval.samples=0", "schedule.group_size=4", "train.threads=1"]


def _which(b: str) -> str | None:
    return shutil.which(b) or next((p for p in (f"/usr/sbin/{b}", f"/usr/bin/{b}") if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def slurm_cluster():
    missing = [b for b in BINARIES if _which(b) is None]
    if missing:
        pytest.skip(f"Slurm binaries absent ({', '.join(missing)}): apt-get install slurmctld slurmd munge "
                    f"slurm-client (as .ci/run does) to run the real Slurm test")
    if os.geteuid() != 0:
        pytest.skip("starting munged/slurmctld/slurmd on localhost needs root")
    running = subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0
    t0 = time.time()
    if not running:
        r = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
    print(f"slurm cluster {'reused' if running else f'started in {time.time() - t0:.1f}s'}")
    yield
    if not running:  # stop only the daemons this fixture started
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=60)


def sweep_args(out: Path) -> list[str]:
    args = ["sweep", "table15", "--preset", "tiny", "--data", "synthetic", "--steps", "3", "--tasks", "none",
            "--out", str(out), "--executor", "slurm", "--cluster", "local"]
    for s in SMALL:
        args += ["--set", s]
    return args


def test_sweep_array_completes_status_and_resubmit_is_a_noop(slurm_cluster, tmp_path, capsys):
    from benchmark.cli import main
    from benchmark.data import cache_root
    from benchmark.data.text_models import synthetic_text_dir

    synthetic_text_dir(cache_root())  # build the tiny T5 once, not in both array tasks at the same time
    out = tmp_path / "runs"
    t0 = time.time()
    assert main(sweep_args(out)) == 0
    printed = capsys.readouterr().out
    assert "2 runs, 2 to submit" in printed and "submitted array" in printed
    run_dirs = sorted(d for d in out.iterdir() if not d.name.startswith("."))
    assert len(run_dirs) == 2
    job_ids = [json.loads((d / "job.json").read_text())["job_id"] for d in run_dirs]
    arrays = {j.split("_")[0] for j in job_ids}
    assert len(arrays) == 1 and sorted(j.split("_")[1] for j in job_ids) == ["0", "1"], job_ids  # one array

    def states() -> list[str]:
        return [json.loads((d / "record.json").read_text()).get("status") if (d / "record.json").exists()
                else "queued" for d in run_dirs]

    while time.time() - t0 < 300 and any(s not in ("completed", "failed") for s in states()):
        time.sleep(0.5)
    logs = "".join(p.read_text()[-2000:] for p in (out / ".jobs").rglob("*_log.*"))
    assert states() == ["completed", "completed"], logs
    print(f"2-point array sweep on local Slurm: {time.time() - t0:.1f}s to both records completed")
    recs = [json.loads((d / "record.json").read_text()) for d in run_dirs]
    assert sorted(r["config"]["objective"]["clip_pool"] for r in recs) == ["all", "buffer"]  # Table 15's rows
    assert all(r["train"]["steps"] == 3 and r["attempt"] == 1 for r in recs)

    assert main(["status", "--runs", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for d, j in zip(run_dirs, job_ids):
        line = next(ln for ln in lines if ln.startswith(d.name))
        assert "completed" in line and "3/3" in line and j in line and "dream/wm/tiny" in line, lines

    jobs_before = sorted(p.name for p in (out / ".jobs").iterdir())
    assert main(sweep_args(out)) == 0
    printed = capsys.readouterr().out
    assert "0 to submit" in printed and "nothing to submit" in printed
    assert sorted(p.name for p in (out / ".jobs").iterdir()) == jobs_before  # no new job folder
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30).stdout.split()
    assert all(q.split("_")[0] in arrays for q in queue), queue  # at most the finishing array, no new job
