"""One run end to end: record -> train (or resume) -> EMA weights -> tasks -> sample grid -> summary."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import torch

from benchmark import registry
from benchmark.config import RunConfig, from_dict, run_id
from benchmark.records import RecordError, RunLock, RunRecord, load_checkpoint
from benchmark.taskdata import preflight
from benchmark.train import Components, build, train


class RunExistsError(RuntimeError):
    pass


def plugin_info(cfg: RunConfig) -> dict:
    return {
        "objective": {"name": cfg.objective.name, "origin": registry.objectives.origin(cfg.objective.name)},
        "schedule": {"name": cfg.schedule.name, "origin": registry.schedules.origin(cfg.schedule.name)},
        "tasks": {t: registry.tasks.origin(t) for t in cfg.tasks},
    }


def execute(cfg: RunConfig, resume: bool = False, force: bool = False, stop_after: int | None = None) -> Path:
    """Train and evaluate the run; returns its directory. Completed runs are not redone (idempotent
    sweeps) unless ``force``; an interrupted run continues only with ``resume``. The run folder is locked
    for the whole call: a second writer stops with RunLockedError naming this one."""
    for inc in cfg.include:
        registry.include(inc)
    preflight(cfg, cfg.tasks)  # missing real data fails now, not after training
    check_snapshot_tasks(cfg)
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        from benchmark.config import ConfigError

        raise ConfigError("train.device=cuda but no CUDA device is visible here; use train.device=auto or cpu")
    run_dir = Path(cfg.out) / run_id(cfg)
    with RunLock(run_dir, "run"):
        return _execute(cfg, run_dir, resume, force, stop_after)


def _execute(cfg: RunConfig, run_dir: Path, resume: bool, force: bool, stop_after: int | None) -> Path:
    rid = run_dir.name
    rec_path = run_dir / "record.json"
    if rec_path.exists() and not force:
        try:
            old = RunRecord.load(rec_path)
        except RecordError as e:
            raise RecordError(f"{e}; pass --force to start the run over") from None
        if old.data.get("status") == "completed" and not resume:
            missing = [t for t in cfg.tasks if t not in old.data.get("metrics", {})]
            print(f"run {rid} is already completed: {rec_path} (use --force to redo it)"
                  + (f"; evaluating the tasks it lacks: {', '.join(missing)}" if missing else ""))
            if missing:  # the run id ignores tasks and eval settings: a completed run only gains tasks
                comps, _, rec = load_run(run_dir, use_ema=cfg.eval.use_ema)
                rec.data["config"]["eval"] = cfg.to_dict()["eval"]
                rec.data["config"]["task"] = cfg.to_dict()["task"]
                evaluate(comps, cfg, rec, [t for t in missing if "@" not in t])
                evaluate_snapshots(comps, cfg, rec, run_dir, [t for t in missing if "@" in t])
                rec.save()
                print_summary(rec)
            return run_dir
    if (run_dir / "checkpoint.pt").exists() and not resume and not force:  # with or without a record
        raise RunExistsError(f"run {rid} has a checkpoint in {run_dir}: pass --resume to continue it, "
                             f"or --force to start over")
    if force and run_dir.exists():
        for f in ("checkpoint.pt", "ema.pt", "record.json", "samples.png", *(p.name for p in run_dir.glob("ema_e*.pt"))):
            (run_dir / f).unlink(missing_ok=True)
    for t in cfg.tasks:
        registry.tasks.get(t)  # fail on an unknown task before training, not after
    rec = RunRecord.create(run_dir, rid, cfg.to_dict(), plugin_info(cfg))
    print(f"run {rid} -> {run_dir}")
    try:
        comps = train(cfg, run_dir, rec, resume=resume, stop_after=stop_after)
        from benchmark import distributed

        distributed.cleanup()  # DDP ends with training: rank 0 evaluates alone (the other ranks have returned)
        if not comps.finished:
            rec.data["status"] = "interrupted"
            rec.save()
            return run_dir
        if cfg.eval.use_ema:
            comps.model.load_state_dict(comps.ema_state)
        evaluate(comps, cfg, rec, [t for t in cfg.tasks if "@" not in t])
        evaluate_snapshots(comps, cfg, rec, run_dir, [t for t in cfg.tasks if "@" in t])
        if cfg.eval.samples > 0 and comps.objective.capabilities.decoder:
            t0 = time.time()
            write_sample_grid(comps, cfg, run_dir / "samples.png")
            rec.data["timings"]["samples_s"] = round(time.time() - t0, 2)
        rec.finish("completed")
    except BaseException as e:
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        rec.finish("failed" if not isinstance(e, KeyboardInterrupt) else "interrupted", error=last)
        raise
    print_summary(rec)
    return run_dir


def evaluate(comps: Components, cfg: RunConfig, rec: RunRecord, task_names: list[str], suffix: str = "") -> None:
    """Run the tasks and store their metrics under ``<task><suffix>`` (``lp@12``: the snapshot at epoch 12)."""
    # Right after training the model is still in train mode: BatchNorm in the CLIP projection would use batch
    # statistics (and update its running ones), so results would differ from a reloaded run's.
    comps.model.eval()
    for res in preflight(cfg, task_names):  # "fid/coco": task fid, variant coco; "lp" on synthetic: lp/synthetic
        if res.note:
            print(res.note)
        name = res.name
        task = registry.tasks.get(name)(variant=res.variant)
        reason = task.applies(comps, res.cfg)
        if reason is not None:  # e.g. fid for CLIP (no decoder): recorded, the other tasks still run
            print(f"{name}: not applicable to objective {cfg.objective.name!r}: {reason}")
            rec.data["tasks"][name + suffix] = {"version": task.version, "status": "not_applicable", "reason": reason}
            rec.save()
            continue
        t0 = time.time()
        metrics = task.run(comps, res.cfg)
        extra = {**task.extra(), "data": "synthetic stand-in" if res.synthetic else "real"}
        rec.set_task(name + suffix, task.version, metrics, dict(task.higher_is_better), time.time() - t0, extra)


def check_snapshot_tasks(cfg: RunConfig) -> None:
    """``lp@E`` in ``--tasks`` needs an EMA snapshot at epoch E: fail before training, not after."""
    from benchmark.config import ConfigError

    every = cfg.train.snapshot_every
    for name in (t for t in cfg.tasks if "@" in t):
        epoch = name.rpartition("@")[2]
        try:
            e = float(epoch)
        except ValueError:
            raise ConfigError(f"task {name!r}: the part after @ is an epoch, e.g. lp@12") from None
        if every <= 0 or not 0 < e < cfg.train.epochs or abs(e / every - round(e / every)) > 1e-6:
            raise ConfigError(f"task {name!r} evaluates the EMA snapshot of epoch {epoch}: train with "
                              f"--set train.snapshot_every=S so that {epoch} is a multiple of S below train.epochs "
                              f"({cfg.train.epochs:g}); now snapshot_every={every:g}")


def evaluate_snapshots(comps: Components, cfg: RunConfig, rec: RunRecord, run_dir: Path, names: list[str]) -> None:
    """``lp@12``: the task on the EMA snapshot of epoch 12 (``train.snapshot_every``), stored as ``lp@12`` (Fig. 6);
    the model's weights are put back afterwards."""
    if not names:
        return
    from benchmark.train import snapshot_name

    by_epoch: dict[float, list[str]] = {}
    for name in names:
        base, _, epoch = name.rpartition("@")
        by_epoch.setdefault(float(epoch), []).append(base)
    final = {k: v.clone() for k, v in comps.model.state_dict().items()}
    try:
        for epoch, bases in sorted(by_epoch.items()):
            path = run_dir / snapshot_name(epoch)
            if not path.exists():
                have = sorted(p.name for p in run_dir.glob("ema_e*.pt"))
                raise FileNotFoundError(f"{bases[0]}@{epoch:g}: no {path.name} in {run_dir} (snapshots here: "
                                        f"{', '.join(have) or 'none'}; train with --set train.snapshot_every=N)")
            comps.model.load_state_dict(torch.load(path, map_location=comps.device, weights_only=False)["model"])
            evaluate(comps, cfg, rec, bases, suffix=f"@{epoch:g}")
    finally:
        comps.model.load_state_dict(final)


def load_run(run_dir: Path, use_ema: bool = True, epoch: float | None = None) -> tuple[Components, RunConfig, RunRecord]:
    """Rebuild a finished (or checkpointed) run from its directory, with EMA weights by default; ``epoch``
    loads the EMA snapshot taken at that epoch (``train.snapshot_every``)."""
    from benchmark.train import snapshot_name

    rec = RunRecord.load(run_dir / "record.json")
    cfg = from_dict(rec.data["config"])
    comps = build(cfg)
    path = run_dir / (snapshot_name(epoch) if epoch is not None else "ema.pt" if use_ema else "checkpoint.pt")
    if not path.exists():
        have = sorted(p.name for p in run_dir.glob("ema_e*.pt"))
        hint = f" (snapshots here: {', '.join(have) or 'none; train with --set train.snapshot_every=N'})" if epoch else ""
        raise FileNotFoundError(f"no {path.name} in {run_dir}: the run has not written it{hint}")
    state = load_checkpoint(path, comps.device)["model"]
    comps.model.load_state_dict(state)
    comps.model.eval()
    return comps, cfg, rec


def sample_prompts(cfg: RunConfig, n: int) -> list[str]:
    if cfg.data.name == "synthetic":
        from benchmark.data import SYNTHETIC_SPLITS
        from benchmark.data.synthetic import caption, sample_scenes

        return [caption(s) for s in sample_scenes(n, SYNTHETIC_SPLITS["probe_test"])]
    base = ["a photo of a dog on the beach", "a red double-decker bus in london", "a bowl of fresh fruit",
            "a snowy mountain at sunrise", "a cat sleeping on a sofa", "an aerial view of a city at night"]
    return [base[i % len(base)] for i in range(n)]


@torch.no_grad()
def write_sample_grid(comps: Components, cfg: RunConfig, path: Path, prompts: list[str] | None = None) -> None:
    from torchvision.utils import save_image

    from benchmark.models.sampler import sample_tokens

    prompts = prompts or sample_prompts(cfg, cfg.eval.samples)
    comps.model.eval()
    t5, valid = comps.t5.encode(prompts) if comps.t5 is not None else (None, None)
    conditional = comps.objective.capabilities.text_conditioned
    valid = valid.to(comps.device) if valid is not None and cfg.model.text_pad_mask else None
    if not conditional:  # an unconditional decoder (MAR): every row gets the null condition, no guidance
        t5 = comps.backbone.null_condition(comps.t5_null, len(prompts))
        valid = None if valid is None else comps.backbone.null_valid(comps.t5_null_valid, len(prompts), valid.shape[1])
    g = torch.Generator().manual_seed(cfg.seed)
    e = cfg.eval
    tokens = sample_tokens(comps.backbone, t5.to(comps.device), comps.t5_null, steps=e.sample_steps,
                           cfg=e.cfg if conditional else 1.0, cfg_schedule=e.cfg_schedule,
                           temperature=e.temperature, generator=g, t5_valid=valid, t5_null_valid=comps.t5_null_valid)
    images = comps.tokenizer.decode(tokens)
    nrow = max(1, int(len(prompts) ** 0.5))
    save_image((images + 1) / 2, path, nrow=nrow, padding=1)
    path.with_suffix(".txt").write_text("\n".join(prompts) + "\n")


def print_summary(rec: RunRecord) -> None:
    d = rec.data
    curve = d["train"].get("loss_curve", [])
    first, last = (curve[0][1], curve[-1][1]) if curve else ({}, {})
    print(f"\n== {d['run_id']} ({d['status']}) ==")
    print(f"objective={d['objective']} schedule={d['schedule']} preset={d['preset']} data={d['data']} "
          f"recipe={d['recipe']} steps={d['train'].get('steps')}")
    if curve:
        keys = [k for k in ("total", "diff", "clip", "repa") if k in last]
        print("loss: " + ", ".join(f"{k} {first[k]:.4f} -> {last[k]:.4f}" for k in keys))
    for task, m in d["metrics"].items():
        print(f"{task}: " + ", ".join(f"{k}={v:.2f}" for k, v in m.items()))
    t = d["timings"]
    print(f"time: train {t.get('train_s', 0):.0f}s ({t.get('images_per_s', 0):.0f} img/s), "
          + ", ".join(f"{k[:-2]} {v:.0f}s" for k, v in t.items() if k.endswith("_s") and k not in ("train_s", "images_per_s")))
    if (rec.path.parent / "samples.png").exists():
        print(f"samples: {rec.path.parent / 'samples.png'} (prompts in samples.txt)")
    print(f"record: {rec.path}")
