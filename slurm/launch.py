"""Runs and sweeps through submitit: executors, cluster profiles, the checkpointable job (issue 6).

* ``--executor slurm|local|debug`` picks submitit's SlurmExecutor, LocalExecutor (real subprocesses, real
  pickling and signals) or DebugExecutor (in-process, for breakpoints).
* ``--cluster NAME`` reads ``slurm/profiles/NAME.toml`` (or a path); ``--cluster-set key=value`` overrides it.
* The job is ``RunJob()(cfg_dict, force)``: the pickle carries the plain config only; where to resume from is
  worked out from the run directory at start-up, so a requeue never goes back to a stale checkpoint.
* Preemption / time limit: Slurm sends USR2 ``signal_delay_s`` before the end; our handler only sets a flag,
  the loop finishes its step, saves a checkpoint and returns, then submitit's own handler pickles
  ``RunJob.checkpoint(...)`` (a fresh instance, ``force`` dropped) and requeues the job.
* Every job writes only its own run directory (``record.json``, ``job.json``); ``status`` and the tables
  read files, never job handles.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import submitit

from benchmark.config import ConfigError

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
EXECUTORS = ("local", "slurm", "debug")
JOBS_DIR = ".jobs"  # under the runs directory: submitit's pickles and logs (must be on a shared filesystem)
# Profile keys -> their types. They map onto submitit's parameters (slurm_<key> for the Slurm-only ones).
PROFILE_KEYS: dict[str, type] = {
    "partition": str, "account": str, "qos": str, "constraint": str, "exclude": str, "nodes": int,
    "gpus_per_node": int, "tasks_per_node": int, "cpus_per_task": int, "mem_gb": float, "timeout_min": float,
    "signal_delay_s": int, "max_num_timeout": int, "array_parallelism": int, "setup": list, "additional": dict,
}
DEFAULT_PROFILE: dict[str, Any] = {"nodes": 1, "gpus_per_node": 0, "tasks_per_node": 1, "cpus_per_task": 2,
                                   "mem_gb": 0, "timeout_min": 60, "signal_delay_s": 60, "max_num_timeout": 3,
                                   "array_parallelism": 256, "setup": [], "additional": {}}


# ---------------------------------------------------------------- profiles
def load_profile(name: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults <- ``slurm/profiles/<name>.toml`` (or a .toml path) <- ``key=value`` overrides."""
    prof = {k: (v.copy() if isinstance(v, (list, dict)) else v) for k, v in DEFAULT_PROFILE.items()}
    if name:
        path = Path(name) if name.endswith(".toml") else PROFILE_DIR / f"{name}.toml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))
            raise FileNotFoundError(f"no cluster profile {path}; profiles in slurm/profiles: {known} "
                                    f"(or pass a path to a .toml file with keys {', '.join(PROFILE_KEYS)})")
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        data = tomllib.loads(path.read_text())
        for k, v in data.items():
            _check_key(k, path.name)
            prof[k] = v
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--cluster-set {item!r}: expected key=value")
        k, v = (s.strip() for s in item.split("=", 1))
        if k.startswith("additional."):  # any other #SBATCH key: additional.mail_type=END
            prof["additional"][k.split(".", 1)[1]] = v
            continue
        _check_key(k, "--cluster-set")
        typ = PROFILE_KEYS[k]
        try:
            prof[k] = [s for s in v.split(";") if s] if typ is list else typ(float(v)) if typ is int else typ(v)
        except ValueError:
            raise ConfigError(f"--cluster-set {k}={v!r}: expected {typ.__name__}") from None
    return prof


def _check_key(k: str, where: str) -> None:
    if k not in PROFILE_KEYS:
        import difflib

        close = difflib.get_close_matches(k, PROFILE_KEYS, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown cluster profile key {k!r} in {where}{hint}; valid: {', '.join(PROFILE_KEYS)}")


def executor_parameters(prof: dict[str, Any]) -> dict[str, Any]:
    """Profile -> AutoExecutor.update_parameters keys (standard ones unprefixed, Slurm-only ones slurm_*)."""
    tasks = max(prof["tasks_per_node"], prof["gpus_per_node"])  # one process per GPU
    p: dict[str, Any] = {"nodes": prof["nodes"], "tasks_per_node": tasks, "cpus_per_task": prof["cpus_per_task"],
                         "timeout_min": max(1, int(round(prof["timeout_min"])))}
    if prof["gpus_per_node"]:
        p["gpus_per_node"] = prof["gpus_per_node"]
    if prof["mem_gb"]:
        p["mem_gb"] = prof["mem_gb"]
    for k in ("partition", "account", "qos", "constraint", "exclude"):
        if prof.get(k):
            p[f"slurm_{k}"] = prof[k]
    p["slurm_signal_delay_s"] = prof["signal_delay_s"]
    p["slurm_array_parallelism"] = prof["array_parallelism"]
    if prof["additional"]:
        p["slurm_additional_parameters"] = dict(prof["additional"])
    if prof["setup"]:
        p["slurm_setup"] = list(prof["setup"])
    return p


SLURM_COMMANDS = ("sbatch", "srun", "squeue")


def missing_slurm() -> list[str]:
    """The Slurm commands submission needs that are not on PATH."""
    import shutil

    return [c for c in SLURM_COMMANDS if shutil.which(c) is None]


def make_executor(kind: str, folder: str | Path, prof: dict[str, Any], preview: bool = False) -> submitit.AutoExecutor:
    if kind not in EXECUTORS:
        raise ConfigError(f"--executor {kind!r} is not valid; choose one of: {', '.join(EXECUTORS)}")
    if kind == "slurm" and missing_slurm() and not preview:
        raise ConfigError(f"--executor slurm needs the Slurm commands {', '.join(missing_slurm())} on PATH (not found "
                          f"here): submit from a cluster login node, or use --executor local, or --dry-run to plan")
    if kind == "slurm" and preview:  # planning needs no cluster: submitit only checks for srun when it is built
        from unittest import mock

        from submitit.slurm.slurm import SlurmExecutor

        with mock.patch.object(SlurmExecutor, "affinity", return_value=1):
            return _build_executor(kind, folder, prof)
    return _build_executor(kind, folder, prof)


def _build_executor(kind: str, folder: str | Path, prof: dict[str, Any]) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=folder, cluster=kind, slurm_max_num_timeout=prof["max_num_timeout"],
                               local_max_num_timeout=prof["max_num_timeout"])
    params = executor_parameters(prof)
    if kind != "slurm":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    ex.update_parameters(name="dream-bench", **params)
    if kind == "local":  # USR2 this long before the time limit, as Slurm's --signal does
        ex._executor.update_parameters(signal_delay_s=prof["signal_delay_s"])
    return ex


def sbatch_preview(prof: dict[str, Any], folder: str | Path, n_tasks: int) -> str:
    """The #SBATCH header submitit would write for an array of ``n_tasks`` (for --dry-run)."""
    from submitit.slurm.slurm import _make_sbatch_string

    ex = make_executor("slurm", folder, prof, preview=True)  # AutoExecutor translates the standard names (time, mem)
    text = _make_sbatch_string(command="python -u -m submitit.core._submit <folder>", folder=str(folder),
                               map_count=n_tasks if n_tasks > 1 else None, **ex._executor.parameters)
    return "\n".join(line for line in text.splitlines() if line.startswith("#SBATCH"))


# ---------------------------------------------------------------- the job
class RunJob(submitit.helpers.Checkpointable):
    """Train + evaluate one run from a plain config dict (the package is installed, so this unpickles in
    the job; the pickle carries no model, path to a checkpoint or resume flag)."""

    def __call__(self, cfg: dict[str, Any], force: bool = False, sample: bool = False) -> str:
        run_dir = run_job(cfg, force)
        if sample:  # Tables 6, 17 (sweeps): `bench sample` on the finished run
            from benchmark.slurm.sweeps import run_sample

            from benchmark import distributed
            from benchmark.config import from_dict

            if distributed.is_main():
                run_sample(run_dir, from_dict(cfg))
        return run_dir

    def checkpoint(self, cfg: dict[str, Any], force: bool = False, sample: bool = False) -> submitit.helpers.DelayedSubmission:
        # A fresh instance (no stale state) and never ``force`` again: a requeued --force job must resume.
        return submitit.helpers.DelayedSubmission(type(self)(), cfg, force=False, sample=sample)


class EvalJob(submitit.helpers.Checkpointable):
    """Evaluate a trained run (``eval --executor ...``); a requeued job evaluates the requested tasks again."""

    def __call__(self, run_dir: str, tasks: list[str], use_ema: bool = True) -> str:
        from benchmark.records import RunLock
        from benchmark.run import evaluate, load_run, print_summary

        with RunLock(Path(run_dir), "eval", shared=True):  # as `eval` here: evaluations merge, never during training
            comps, cfg, rec = load_run(Path(run_dir), use_ema=use_ema)
            evaluate(comps, cfg, rec, tasks)
        print_summary(rec)
        return run_dir


def _job_env() -> submitit.JobEnvironment | None:
    try:
        return submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job (direct call)
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def update_job_info(run_dir: Path, **info: Any) -> None:
    """``<run_dir>/job.json``: executor, Slurm job id, log folder, times (read by ``status``)."""
    from benchmark.records import atomic_write_bytes

    path = run_dir / "job.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(info)
    atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())


def run_job(cfg_dict: dict[str, Any], force: bool = False) -> str:
    from benchmark import distributed
    from benchmark.config import from_dict, run_id
    from benchmark.records import RunRecord
    from benchmark.run import execute
    from benchmark.train import train

    env = _job_env()
    if env is not None and env.num_tasks > 1:  # DDP: MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    distributed.setup()
    cfg = from_dict(cfg_dict)
    run_dir = Path(cfg.out) / run_id(cfg)
    usr = submitit.JobEnvironment._usr_sig()
    submitit_handler = signal.getsignal(usr)  # checkpoint + requeue (installed by submitit before the call)
    distributed.clear_stop()
    signal.signal(usr, distributed.request_stop)  # ours only sets a flag: the loop saves at a step boundary
    rec_path = run_dir / "record.json"
    try:
        decision = None
        if distributed.is_main():
            old = RunRecord.load(rec_path).data if rec_path.exists() else {}
            decision = "done" if old.get("status") == "completed" and not force else "force" if force else "resume"
            if env is not None:
                run_dir.mkdir(parents=True, exist_ok=True)
                update_job_info(run_dir, job_id=env.job_id, hostname=env.hostname, num_tasks=env.num_tasks,
                                started=_now(), pid=os.getpid())
        decision = distributed.gather_objects(decision)[0]  # every rank follows rank 0
        if not distributed.is_main():
            if decision != "done":
                train(cfg, run_dir, None, resume=decision == "resume")
            return str(run_dir)
        execute(cfg, resume=decision == "resume", force=decision == "force")
        if distributed.stop_requested() and RunRecord.load(rec_path).data.get("status") != "completed":
            _requeue(rec_path, submitit_handler, usr, env)
        return str(run_dir)
    finally:
        distributed.cleanup()


def _requeue(rec_path: Path, handler, usr: int, env) -> None:
    """Mark the record, then let submitit pickle ``RunJob.checkpoint(...)`` and requeue (it exits)."""
    from benchmark.records import RunRecord

    rec = RunRecord.load(rec_path)
    step = rec.data.get("progress", {}).get("step")
    rec.data["status"] = "requeued"
    rec.data["requeues"] = rec.data.get("requeues", 0) + 1
    rec.data.setdefault("interruptions", []).append({"step": step, "job_id": env.job_id if env else None,
                                                     "at": _now()})
    rec.save()
    print(f"interrupted at step {step}: checkpoint saved, requeueing", flush=True)
    if not callable(handler):  # debug executor or a direct call: nothing to requeue with
        rec.finish("interrupted", error="stop requested outside a requeueable job")
        return
    try:
        handler(usr, None)
    except submitit.core.utils.UncompletedJobError as e:  # out of requeues (max_num_timeout)
        rec.finish("interrupted", error=str(e))
        raise


# ---------------------------------------------------------------- submission
def jobs_folder(out: str | Path) -> Path:
    return Path(out).resolve() / JOBS_DIR / "%j"


def submit_runs(cfgs: list, executor: str, prof: dict[str, Any], force: bool = False,
                folder: str | Path | None = None, sample: list[bool] | None = None) -> list:
    """One job per config; several configs go out as one Slurm array (one sbatch call). ``sample[i]``: run
    `bench sample` after config i's run (sweeps of Tables 6, 17)."""
    from benchmark.config import run_id

    if not cfgs:
        return []
    folder = folder or jobs_folder(cfgs[0].out)
    ex = make_executor(executor, folder, prof)
    flags = sample or [False] * len(cfgs)
    if len(cfgs) == 1 or executor != "slurm":
        jobs = [ex.submit(RunJob(), c.to_dict(), force, s) for c, s in zip(cfgs, flags)]
    else:
        with ex.batch():
            jobs = [ex.submit(RunJob(), c.to_dict(), force, s) for c, s in zip(cfgs, flags)]
    for c, job in zip(cfgs, jobs):
        update_job_info(Path(c.out) / run_id(c), executor=executor, job_id=str(job.job_id), submitted=_now(),
                        log=str(job.paths.stdout), started=None)
    return jobs


def submit_eval(run_dir: str | Path, tasks: list[str], use_ema: bool, executor: str, prof: dict[str, Any]):
    run_dir = Path(run_dir).resolve()
    ex = make_executor(executor, run_dir.parent / JOBS_DIR / "%j", prof)
    return ex.submit(EvalJob(), str(run_dir), tasks, use_ema)


def wait(jobs: list) -> None:
    """Wait for local jobs and show their logs; a failed job's error is raised here."""
    for job in jobs:
        try:
            job.result()
        finally:
            out = job.stdout() or ""
            sys.stdout.write(out[-4000:])
