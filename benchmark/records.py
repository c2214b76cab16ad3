"""Run records (one JSON per run, DESIGN §5) and atomic file writes."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

SCHEMA = 1
REPO_ROOT = Path(__file__).resolve().parent.parent


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file, never half
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except Exception:
        return None


def provenance() -> dict[str, Any]:
    from benchmark import __version__

    device = "cpu"
    if torch.cuda.is_available():
        device = f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return {
        "git_sha": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain")),
        "package_version": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "device": device, "cpu_threads": torch.get_num_threads(), "hostname": platform.node(),
        "argv": sys.argv, "started": now(), "finished": None,
    }


class RunRecord:
    """The record of one run, rewritten atomically on every change."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = path, data

    @classmethod
    def create(cls, run_dir: Path, run_id: str, cfg_dict: dict[str, Any], plugins: dict[str, Any]) -> RunRecord:
        path = run_dir / "record.json"
        if path.exists():  # a resumed or re-run job keeps its history (attempts, metrics of other tasks)
            rec = cls.load(path)
            rec.data["attempt"] = rec.data.get("attempt", 1) + 1
            rec.data["status"] = "running"
            rec.data["config"] = cfg_dict
            rec.data["provenance"]["argv"] = sys.argv
            rec.save()
            return rec
        data = {
            "schema": SCHEMA, "run_id": run_id, "status": "running", "attempt": 1,
            "objective": cfg_dict["objective"]["name"], "schedule": cfg_dict["schedule"]["name"],
            "preset": cfg_dict["preset"], "recipe": cfg_dict["recipe"], "data": cfg_dict["data"]["name"],
            "seed": cfg_dict["seed"], "config": cfg_dict, "plugins": plugins, "provenance": provenance(),
            "train": {}, "tasks": {}, "metrics": {}, "higher_is_better": {}, "timings": {},
        }
        rec = cls(path, data)
        rec.save()
        return rec

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        return cls(Path(path), json.loads(Path(path).read_text()))

    def save(self) -> None:
        atomic_write_bytes(self.path, (json.dumps(self.data, indent=1, default=_jsonable) + "\n").encode())

    def set_task(self, name: str, version: int, metrics: dict[str, float], higher: dict[str, bool],
                 seconds: float, extra: dict[str, Any] | None = None) -> None:
        self.data["metrics"][name] = metrics
        self.data["higher_is_better"][name] = higher
        self.data["tasks"][name] = {"version": version, "status": "completed", **(extra or {})}
        self.data["timings"][f"{name}_s"] = round(seconds, 2)
        self.save()

    def finish(self, status: str = "completed", error: str | None = None) -> None:
        self.data["status"] = status
        self.data["provenance"]["finished"] = now()
        if error:
            self.data["error"] = error
        self.save()


def _jsonable(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
