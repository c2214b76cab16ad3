"""Run records (one JSON per run, DESIGN §5), atomic file writes and the run folder's lock.

A run folder has one writer at a time: ``run`` holds an exclusive lock on ``<run_dir>/.lock`` for its whole
life, ``eval`` a shared one (several evaluations at once, none while the run trains); both merge the record
under a short ``.record.lock`` so that concurrent evaluations never drop each other's metrics. The locks are
``flock``s: they die with their process, so a killed run leaves no stale lock (``status`` reads them to tell a
live run from a dead one). Atomic writes go through ``.<name>.*.tmp`` files; ``clean_temp_files`` removes those
of an interrupted writer when the next one takes the folder. Files get the user's umask (not mkstemp's 0600).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import pickle
import platform
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA = 1
REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE, RECORD_LOCK = ".lock", ".record.lock"
# Test hook (tests/reliability): "kill:<file name>:<n>" SIGKILLs this process on the n-th write of that file,
# after its temp file is written and before the rename -- what a node failure mid-checkpoint leaves behind;
# "int:<file name>:<n>" sends SIGINT there instead (Ctrl-C at a known point of training).
FAULT_ENV = "DREAM_BENCH_FAULT"
_fault_counts: dict[str, int] = {}


class RecordError(ValueError):
    """A record.json that is unreadable, truncated or not a run record (one line naming the file)."""


class CheckpointError(ValueError):
    """A checkpoint.pt / ema.pt that cannot be read (truncated or corrupt)."""


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load`` of a checkpoint; CheckpointError (one line naming the file and the fix) when it is damaged."""
    import torch

    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, ImportError, AttributeError, pickle.UnpicklingError) as e:
        why = str(e).splitlines()[0][:120] if str(e) else "truncated"
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: {why}); start the run over with --force") from None
    if not isinstance(ck, dict) or "model" not in ck:
        raise CheckpointError(f"{path} is not a dream-bench checkpoint; start the run over with --force")
    return ck


class RunLockedError(RuntimeError):
    """The run folder is held by another process (one line naming the holder)."""


def _mode() -> int:
    """0o666 under the user's umask: what open() would create (mkstemp makes 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fault_point(path: Path) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec.startswith(("kill:", "int:")):
        return
    kind, name, n = spec.split(":")
    if path.name == name:
        _fault_counts[name] = _fault_counts.get(name, 0) + 1
        if _fault_counts[name] == int(n):
            os.kill(os.getpid(), signal.SIGKILL if kind == "kill" else signal.SIGINT)


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _fault_point(path)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file, never half
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(Path(path), lambda f: f.write(data))


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    _atomic(Path(path), lambda f: torch.save(obj, f))


def clean_temp_files(run_dir: Path) -> list[str]:
    """Remove the temp files an interrupted atomic write left (call while holding the folder's lock)."""
    removed = []
    for p in Path(run_dir).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p.name)
    return removed


# ---------------------------------------------------------------- the run folder's lock
def _holder_text(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f"{info.get('command', '?')} on host {info.get('host', '?')}, pid {info.get('pid', '?')}, "
                f"since {info.get('since', '?')}")
    except (OSError, ValueError, AttributeError):
        return "another process"


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the run folder's lock (one phrase), or None when nobody does (a "running" record is then dead)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            held = _holder_text(path)
            os.close(fd)
            return held
    os.close(fd)
    return None


class RunLock:
    """``with RunLock(run_dir, "run"):`` exclusive (``run``) or shared (``eval``) ownership of a run folder;
    a second writer raises RunLockedError naming the holder. Released when the process exits, however."""

    current: Path | None = None  # the run folder this process works in (named by the CLI's crash line)

    def __init__(self, run_dir: Path, command: str = "run", shared: bool = False) -> None:
        self.run_dir, self.command, self.shared, self.fd = Path(run_dir), command, shared, None

    def __enter__(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, _mode())
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(f"run folder {self.run_dir} is in use ({_holder_text(path)}); wait for it to end "
                                 f"or stop that process") from None
        self.fd = fd
        info = {"command": self.command, "host": socket.gethostname(), "pid": os.getpid(), "since": now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        RunLock.current = self.run_dir
        if not self.shared:  # the only writer: any temp file is an interrupted write's
            clean_temp_files(self.run_dir)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


@contextlib.contextmanager
def _record_lock(run_dir: Path) -> Iterator[None]:
    """Short exclusive lock around a record's read-merge-write (blocking: other holders only save)."""
    fd = os.open(Path(run_dir) / RECORD_LOCK, os.O_RDWR | os.O_CREAT, _mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading records
REQUIRED = {"run_id": str, "status": str, "config": dict, "metrics": dict}


def read_record(path: Path) -> dict[str, Any]:
    """The record at ``path``; RecordError (one line naming it) when it is unreadable, truncated or foreign."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: not a run record (not UTF-8 text: {e.reason})") from None
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not a run record (truncated or corrupt JSON: {e.msg} at line {e.lineno})") from None
    except OSError as e:
        raise RecordError(f"{path}: unreadable ({e.strerror})") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: not a run record (a JSON {type(data).__name__}, not an object)")
    bad = [k for k, t in REQUIRED.items() if not isinstance(data.get(k), t)]
    if bad:
        raise RecordError(f"{path}: not a run record (missing or mistyped: {', '.join(bad)})")
    return data


def warn_skipped(path: Path | str, err: Exception | str) -> None:
    """The one-line warning a reader prints for a record it skips."""
    print(f"warning: skipped {err}" if str(err).startswith(str(path)) else f"warning: skipped {path}: {err}",
          file=sys.stderr)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except Exception:
        return None


def provenance() -> dict[str, Any]:
    import torch

    from benchmark import __version__

    device = "cpu"
    if torch.cuda.is_available():
        device = f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return {
        "git_sha": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain")),
        "package_version": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "device": device, "cpu_threads": torch.get_num_threads(), "hostname": platform.node(),
        "argv": sys.argv, "pid": os.getpid(), "started": now(), "finished": None,
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
            if "error" in rec.data:  # the previous attempt's error stays in its history, not in the live record
                rec.data.setdefault("previous_errors", []).append(rec.data.pop("error"))
            rec.data["provenance"]["pid"] = os.getpid()
            rec.data["provenance"]["hostname"] = platform.node()
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
        return cls(Path(path), read_record(path))

    # Sections that concurrent evaluations add to: merged with the file's on every save, so nothing is lost.
    MERGED = ("metrics", "higher_is_better", "tasks", "timings")

    def save(self) -> None:
        with _record_lock(self.path.parent):
            if self.path.exists():
                try:
                    disk = read_record(self.path)
                except RecordError:
                    disk = {}
                if disk.get("run_id") == self.data.get("run_id"):
                    for sec in self.MERGED:
                        if isinstance(disk.get(sec), dict):
                            self.data[sec] = {**disk[sec], **self.data.get(sec, {})}
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
    if hasattr(o, "tolist"):  # tensors, numpy values
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
