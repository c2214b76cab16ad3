"""``python -m benchmark status [--runs DIR]``: one line per run, read from the run directories only.

A run directory holds ``record.json`` (written by the run) and, for submitted runs, ``job.json`` (written at
submission and when the job starts). States: queued (submitted, not started), running, requeued n times
(preempted or timed out, checkpointed, waiting to resume), completed, failed (with the last error line),
interrupted. For Slurm jobs one ``squeue`` call (when the command exists) tells a queued or running job that
has left the queue ("lost": cancelled or killed without a record update). A "running" record whose folder lock
is free has no live writer: it shows as "dead" (killed, out of disk or memory) and continues with ``--resume``.
A record.json that cannot be read is skipped with a one-line warning naming it; no Slurm binaries are needed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from benchmark.records import RecordError, lock_holder, read_record, warn_skipped

ACTIVE = ("queued", "running", "requeued")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_state(run_dir: Path) -> str:
    """none | queued | running | requeued | completed | failed | interrupted."""
    rec = _read(run_dir / "record.json")
    if rec:
        return rec.get("status", "running")
    return "queued" if (run_dir / "job.json").exists() else "none"


def squeue_jobs() -> dict[str, str] | None:
    """{job id (array tasks as A_i): Slurm state} from one squeue call; None without Slurm."""
    if shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=20,
                             check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return dict(line.split(None, 1) for line in out.splitlines() if " " in line)


def run_status(run_dir: Path, queue: dict[str, str] | None = None) -> dict[str, Any]:
    rec, job = _read(run_dir / "record.json"), _read(run_dir / "job.json")
    state = record_state(run_dir)
    cfg = rec.get("config", {})
    row = {"run_id": rec.get("run_id", run_dir.name), "objective": rec.get("objective", "?"),
           "schedule": rec.get("schedule", "?"), "preset": rec.get("preset", "?"), "state": state,
           "job_id": job.get("job_id", "-"), "executor": job.get("executor", "-"), "requeues": rec.get("requeues", 0),
           "progress": "", "error": rec.get("error", "")}
    steps = rec.get("train", {}).get("steps") or rec.get("progress", {}).get("total") \
        or cfg.get("train", {}).get("steps")
    done = rec.get("progress", {}).get("step")
    if state == "completed":
        done = steps
    if steps:
        row["progress"] = f"{done or 0}/{steps}"
    if state == "running" and job.get("executor") != "slurm" and lock_holder(run_dir) is None:
        row["state"] = "dead"  # nobody holds the folder: the writer was killed without updating its record
    if state in ACTIVE and queue is not None and job.get("executor") == "slurm":
        slurm_state = queue.get(str(job.get("job_id")))
        if slurm_state is None:
            row["state"] = "lost"  # the job left the queue without finishing the record
        elif state == "queued" or slurm_state == "PENDING":
            row["state"] = "queued" if state != "requeued" else "requeued"
    return row


def describe(row: dict[str, Any]) -> str:
    s = row["state"]
    if s == "requeued" or (s == "running" and row["requeues"]):
        s = f"{s} (requeued {row['requeues']} time{'s' if row['requeues'] != 1 else ''})"
    if s == "failed" and row["error"]:
        s = f"failed: {row['error'].splitlines()[-1][:100]}"
    if s == "lost":
        s = "lost (job left the queue without finishing)"
    if s == "dead":
        s = "dead (its process is gone; continue with --resume)"
    return s


def collect(runs: str | Path, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    runs = Path(runs)
    dirs = sorted(d for d in runs.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and ((d / "record.json").exists() or (d / "job.json").exists())) if runs.exists() else []
    good = []
    for d in dirs:
        try:
            if (d / "record.json").exists():
                read_record(d / "record.json")
            good.append(d)
        except RecordError as e:
            warn_skipped(d / "record.json", e)
            if skipped is not None:
                skipped.append(str(d / "record.json"))
    dirs = good
    queue = squeue_jobs() if any(_read(d / "job.json").get("executor") == "slurm" for d in dirs) else None
    return [run_status(d, queue) for d in dirs]


def format_status(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no runs\n"
    head = ("run id", "objective/schedule/preset", "state", "progress", "job")
    table = [(r["run_id"], f"{r['objective']}/{r['schedule']}/{r['preset']}", describe(r), r["progress"] or "-",
              r["job_id"] if r["executor"] in ("-", "slurm") else f"{r['job_id']} ({r['executor']})") for r in rows]
    widths = [max(len(str(x[i])) for x in [head, *table]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *table]]
    return "\n".join(lines) + "\n"


def status_command(runs: str | Path) -> int:
    skipped: list[str] = []
    print(format_status(collect(runs, skipped)), end="")
    if skipped:
        print(f"({len(skipped)} unreadable record(s) skipped: {', '.join(skipped)})")
    return 0
