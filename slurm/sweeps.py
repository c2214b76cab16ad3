"""The paper's sweeps as data: one per table (1-17) and figure (4, 6, 7), their union ``paper``, and ``mini``
(Tables 2, 4, 5 and 17's orderings at one equal CPU budget, >= 3 seeds). The table grids are derived from the
table specs in ``benchmark.tables``, so a sweep fills exactly the rows its table reads.

``python -m benchmark sweep NAME [--dry-run] [--preset tiny] [--parallelism N]`` submits one Slurm array per
sweep; grid points whose record is completed are skipped, so resubmitting finishes only what is missing. Points
that resolve to one run (a table's default row, Table 6 and 17's run, ...) run once, with the union of tasks.
At ``--preset tiny`` (synthetic data) the tasks are the synthetic stand-ins, ``<task>/synthetic``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE_NUMBERS = tuple(range(1, 18))
FIG4_SIZES = ("B", "L", "H", "G")  # §9.3 / Fig. 4: DREAM (sigma 0.45) against FLUID at each size
FIG6_SIGMAS = (0.35, 0.45, 0.55)
FIG6_EPOCHS = (12, 24, 36)  # Fig. 6: evaluations at epochs 12/24/36 of 48 (+ the final one); no FID at 12
FIG6_TRAIN_EPOCHS = 48
SWEEPS = (*(f"table{n}" for n in TABLE_NUMBERS), "fig4", "fig6", "fig7", "paper", "mini")
# Mini reproduction on CPU: every row of Tables 2, 4, 5 at one step budget, MINI_SEEDS seeds, LP and fd_ref; the
# DREAM ablation default also runs `bench sample` for Table 17's K=1 vs K=9 at equal NFE.
MINI_TABLES = (2, 4, 5)
MINI_SEEDS = 3
MINI_STEPS = 1200  # a quarter of the tiny default's 4,800 steps (batch 16); wall time on 2 cores in the README
# S = 16 decoding steps: the smallest S at which Table 6's K = 17 SAD row has a whole select step (17T + S - T = 2S,
# T = 1); the paper's S/L = 64/256 would be S = 4 for the tiny preset's 16 tokens, where K = 5, 9, 17 have none.
MINI_SETS = {"train.threads": 1, "eval.gen_samples": 128, "eval.sad_bench_prompts": 64, "eval.sample_steps": 16,
             "eval.samples": 0}
# GPU-hour estimate without a `bench train` measurement: 6 x trained parameters x tokens FLOPs per image (forward
# + backward; the diffusion head once per noise copy), at an assumed MFU of a given peak (H100 SXM dense bf16).
ASSUMED_MFU = 0.4
ASSUMED_PEAK_TFLOPS = 989.0


@dataclass
class Point:
    label: str
    spec: dict[str, Any]  # objective, schedule, preset, data, recipe, set, paper_set, tasks, sample, snapshots


def _table_points(n: int) -> list[Point]:
    from benchmark.tables import TABLES

    table = TABLES[n]
    return [Point(f"T{n} {row.label}", table.overrides(row)) for row in table.rows
            if row.paper.get("preset") != "external"]  # Table 1's other models: numbers from their papers


def _ablation_default(tasks: list[str], **extra: Any) -> dict[str, Any]:
    from benchmark.tables import TABLES

    row = next(r for r in TABLES[5].rows if r.label == "DREAM")  # the DREAM-L ablation default (§5)
    return {**TABLES[5].overrides(row), "tasks": tasks, **extra}


def grid(name: str) -> list[Point]:
    """The grid points of a sweep (several may resolve to one run; ``plan`` merges them)."""
    from benchmark.config import ConfigError

    if name.startswith("table") and name[5:].isdigit() and int(name[5:]) in TABLE_NUMBERS:
        return _table_points(int(name[5:]))
    if name == "fig4":
        from benchmark.tables import BASE

        base_sets = {k[len("config."):]: v for k, v in BASE.items() if k.startswith("config.")}
        return [Point(f"F4 {obj.upper()}-{size}", {
            "objective": obj, "schedule": "wm" if obj == "dream" else None, "preset": size, "data": "cc12m",
            "recipe": "official", "set": base_sets if obj == "dream" else {}, "paper_set": {},
            "tasks": ["lp", "fid/cc12m"], "sample": obj == "dream"})  # the "with SD" curve: K=9, 128 NFE
            for obj in ("dream", "fluid") for size in FIG4_SIZES]
    if name == "fig6":  # EMA snapshots at epochs 12/24/36 evaluated as lp@E, fid/cc12m@E (no FID at 12)
        snaps = [f"lp@{e}" for e in FIG6_EPOCHS] + [f"fid/cc12m@{e}" for e in FIG6_EPOCHS[1:]]
        return [Point(f"F6 sigma={s}", {**_ablation_default(["lp", "fid/cc12m", *snaps]),
                                         "set": {} if s == 0.45 else {"schedule.sigma": s}, "snapshots": True})
                for s in FIG6_SIGMAS]
    if name == "fig7":  # zero-shot accuracy vs masking ratio: Table 5's CLIP, CLIP-M, DREAM
        return [Point(f"F7 {p.label[3:]}", {**p.spec, "tasks": ["zeroshot"]}) for p in _table_points(5)]
    if name == "paper":
        return [p for s in SWEEPS if s not in ("paper", "mini") for p in grid(s)]
    if name == "mini":
        out = []
        for n in MINI_TABLES:
            for p in _table_points(n):
                dream_default = n == 5 and p.label.endswith("DREAM")
                out.append(Point(p.label, {**p.spec, "tasks": ["lp", "fid/cc12m"], "sample": dream_default}))
        return out
    raise ConfigError(f"unknown sweep {name!r}; sweeps: {', '.join(SWEEPS)}")


def _resolve_fraction(v: Any, epochs: float) -> Any:
    return round(v[1] * epochs, 6) if isinstance(v, tuple) and v and v[0] == "fraction" else v


def point_config(spec: dict[str, Any], cli: dict[str, Any]):
    """A grid point's RunConfig; ``cli`` holds the sweep command's own flags (preset, data, steps, tasks, out,
    seed, sets), which win over the point (a smaller preset or other data marks the table row with †). At
    another preset than the paper's, the row's paper-only settings (REPA's CLIP-L teacher, ...) give way to
    the preset's own; on synthetic data the tasks are the synthetic stand-ins."""
    from benchmark.config import PRESETS, build_config
    from benchmark.tables import synthetic_names

    obj = spec["objective"]
    preset = cli.get("preset") or spec["preset"]
    data = cli.get("data") or (PRESETS[preset].get("data.name") if cli.get("preset") else None) or spec["data"]
    sets = dict(spec.get("set", {}))
    if preset == spec["preset"]:
        sets = {**spec.get("paper_set", {}), **sets}
    over: dict[str, Any] = {"data.name": data}
    if data == "cc12m":  # the CC12M-50K reference pairs stay out of training (`python -m benchmark genref`)
        from benchmark.data.cc12m import CC12M_HOLDOUT

        over["data.holdout"] = CC12M_HOLDOUT
    tasks = cli.get("tasks")
    task_list = list(spec["tasks"]) if tasks is None else [t for t in ("" if tasks == "none" else tasks).split(",") if t]
    if data == "synthetic":
        task_list = synthetic_names(task_list)
    if cli.get("steps"):
        over["train.steps"] = int(cli["steps"])
    if cli.get("out"):
        over["out"] = cli["out"]
    if cli.get("seed") is not None:
        over["seed"] = int(cli["seed"])
    deeper: dict[str, Any] = {}
    from benchmark.config import plugin_class

    # a sweep's --set objective.X reaches the points whose objective has X (MAR has no CLIP head to size)
    owned = set(plugin_class("objective", obj).Settings.field_names())
    cli_sets = {k: v for k, v in (cli.get("sets") or {}).items()
                if not k.startswith("objective.") or k.split(".", 1)[1] in owned}

    def build(extra: dict[str, Any]):
        return build_config(obj, spec.get("schedule"), preset, spec["recipe"],
                            {**over, **extra, **cli_sets, **deeper, "tasks": ""})

    if preset != spec["preset"] and spec.get("encoder_depth"):
        from benchmark.config import ConfigError

        try:
            depth = build({}).model.depth
        except ConfigError:  # e.g. the CLI's depth fails validation on its own; the real build says so
            depth = 0
        if depth < 2 * spec["encoder_depth"]:
            deeper["model.depth"] = 2 * spec["encoder_depth"]  # the encoder is the first half of the blocks

    epochs = build({}).train.epochs if any(isinstance(v, tuple) for v in sets.values()) or spec.get("snapshots") \
        else None
    resolved = {k: _resolve_fraction(v, epochs) for k, v in sets.items()}
    if spec.get("snapshots"):  # Fig. 6: snapshots at 12/24/36 of 48 epochs, scaled to the run's own epochs
        scale = epochs / FIG6_TRAIN_EPOCHS
        resolved["train.snapshot_every"] = round(FIG6_EPOCHS[0] * scale, 6)
        task_list = [t if "@" not in t else f"{t.split('@')[0]}@{float(t.split('@')[1]) * scale:g}" for t in task_list]
    cfg = build(resolved)
    cfg.tasks = task_list
    return cfg


def _teacher_missing(cfg) -> str | None:
    """A REPA point on synthetic data whose pretrained teacher has no local weights here cannot run (tiny's own
    teacher is a random stand-in; at the paper's scale the weights are the cluster's business)."""
    o = cfg.objective
    if o.name != "repa" or cfg.data.name != "synthetic":
        return None
    have = getattr(o, "repa_teacher_path", "") or os.environ.get("DREAM_BENCH_REPA_TEACHER")
    if getattr(o, "repa_teacher", "tiny") != "tiny" and not have:
        return (f"needs the {o.repa_teacher} teacher's weights (objective.repa_teacher_path or "
                f"$DREAM_BENCH_REPA_TEACHER)")
    return None


def plan(name: str, cli: dict[str, Any]) -> list[dict[str, Any]]:
    """[{label, run_id, cfg | None, state, error, sample}] with state in submit | completed | invalid; points that
    resolve to the same run id (e.g. a table's default row) appear once, with the union of their tasks and
    labels. ``cli["seeds"]`` (a list) repeats every point per seed."""
    from benchmark.config import ConfigError, run_id
    from benchmark.status import record_state

    seeds = cli.get("seeds") or [cli.get("seed")]
    by_id: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for p in grid(name):
        for seed in seeds:
            try:
                cfg = point_config(p.spec, {**cli, "seed": seed})
            except ConfigError as e:  # e.g. a CLIP layer beyond a tiny preset's encoder
                out.append({"label": p.label, "run_id": None, "cfg": None, "state": "invalid", "error": str(e),
                            "sample": False, "labels": [p.label]})
                continue
            rid = run_id(cfg)
            if rid in by_id:  # one run: the union of the tasks, `bench sample` if any point needs it
                q = by_id[rid]
                q["cfg"].tasks = list(dict.fromkeys([*q["cfg"].tasks, *cfg.tasks]))
                q["sample"] = q["sample"] or bool(p.spec.get("sample"))
                if cfg.train.snapshot_every and not q["cfg"].train.snapshot_every:  # Fig. 6 on a table's run
                    q["cfg"].train.snapshot_every = cfg.train.snapshot_every
                if p.label not in q["labels"]:
                    q["labels"].append(p.label)
                continue
            missing = _teacher_missing(cfg)
            state = record_state(Path(cfg.out) / rid)
            q = {"label": p.label, "labels": [p.label], "run_id": rid, "cfg": cfg, "sample": bool(p.spec.get("sample")),
                 "state": "invalid" if missing else "completed" if state == "completed" else "submit",
                 "error": missing, "was": state}
            by_id[rid] = q
            out.append(q)
    for q in out:  # a completed run that lacks tasks or `bench sample` entries is submitted again to add them
        if q["state"] == "completed":
            rec = json.loads((Path(q["cfg"].out) / q["run_id"] / "record.json").read_text())
            have = set(rec.get("tasks") or {})
            lacks = [t for t in q["cfg"].tasks if t not in have]
            if lacks or (q["sample"] and not any(k.startswith("sad/") for k in have)):
                q["state"] = "submit"
                q["error"] = None
    return out


def run_sample(run_dir: str | Path, cfg) -> None:
    """`bench sample` on a finished run unless its record already holds the entries (Tables 6, 17; Fig. 4), at the
    run's own decoding steps S (the paper's 64 at scale); a subprocess, as a user would type it."""
    import subprocess
    import sys

    rec = json.loads((Path(run_dir) / "record.json").read_text())
    if rec.get("status") != "completed" or any(k.startswith("sad/") for k in rec.get("metrics") or {}):
        return
    subprocess.run([sys.executable, "-m", "benchmark", "bench", "sample", "--run", str(run_dir),
                    "--decode-steps", str(cfg.eval.sample_steps)], check=True)


# ---------------------------------------------------------------- cost estimate
def load_bench(paths: list[str]) -> list[dict[str, Any]]:
    """Measurements written by ``bench train --json`` (files or folders of them): dicts with objective, preset,
    batch and step_ms (other keys ignored); a list of such dicts per file also works."""
    out: list[dict[str, Any]] = []
    for p in paths:
        files = sorted(Path(p).glob("*.json")) if Path(p).is_dir() else [Path(p)]
        for f in files:
            data = json.loads(f.read_text())
            for d in data if isinstance(data, list) else [data]:
                if isinstance(d, dict) and "command" in d and "preset" not in d:  # `bench train --json` keeps argv
                    import shlex

                    argv = shlex.split(d["command"])
                    flag = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--preset", "--objective")}
                    d = {**d, "preset": flag.get("--preset", "L"), "objective": flag.get("--objective", "dream")}
                if isinstance(d, dict) and {"preset", "batch", "step_ms"} <= set(d):
                    out.append({**d, "_file": str(f)})
    return out


_PARAMS: dict[tuple[str, str], dict[str, float]] = {}


def _params(cfg) -> dict[str, float]:
    key = (cfg.preset, cfg.recipe, json.dumps(cfg.to_dict()["model"], sort_keys=True))
    if key not in _PARAMS:
        import torch
        from benchmark.models.backbone import Backbone
        from benchmark.models.text import ClipHead
        from benchmark.models.tokenizer import token_shape

        from benchmark.config import build_config

        seq_len, token_dim = token_shape(cfg.model)
        clip_cfg = build_config("clip", None, cfg.preset, cfg.recipe, {"data.name": cfg.data.name}).objective
        with torch.device("meta"):
            bb = Backbone(cfg.model, seq_len, token_dim, with_decoder=True)
            clip = ClipHead(clip_cfg, cfg.model.width)  # the CLIP towers' size: the preset's CLIP settings
        n = sum(p.numel() for p in bb.parameters())
        head = sum(p.numel() for p in bb.head.parameters())
        _PARAMS[key] = {"trunk": n - head, "head": head, "clip": sum(p.numel() for p in clip.parameters()),
                        "clip_context": clip_cfg.clip_context, "tokens": seq_len, "buffer": cfg.model.buffer_tokens}
    return _PARAMS[key]


def flop_per_image(cfg) -> float:
    """Trained FLOPs per image: 6 N T for the transformer (image + buffer tokens), the diffusion head per token
    and noise copy, the CLIP towers on their tokens (frozen T5 / VAE forward passes not counted)."""
    p = _params(cfg)
    from benchmark.config import plugin_class

    can = plugin_class("objective", cfg.objective.name).capabilities
    trunk = 6 * p["trunk"] * (p["tokens"] + p["buffer"])
    head = 6 * p["head"] * p["tokens"] * cfg.model.diffusion_batch_mul if can.decoder else 0.0
    clip = 6 * p["clip"] * p["clip_context"] if can.clip_text else 0.0
    return trunk + head + clip


def estimate_hours(cfg, bench: list[dict[str, Any]], mfu: float = ASSUMED_MFU,
                   peak_tflops: float = ASSUMED_PEAK_TFLOPS) -> tuple[float, str]:
    """(GPU-hours of training, how): from a matching `bench train` measurement (objective and preset), else
    from the FLOP count at an assumed MFU. Evaluation is not included."""
    from benchmark.train import total_steps

    images = total_steps(cfg) * cfg.train.batch_size
    for b in bench:
        if b["preset"] == cfg.preset and b.get("objective", cfg.objective.name) == cfg.objective.name:
            sec_per_image = float(b["step_ms"]) / 1e3 / float(b["batch"])
            return images * sec_per_image / 3600, f"measured ({b.get('device', '?')}, {Path(b['_file']).name})"
    return images * flop_per_image(cfg) / (mfu * peak_tflops * 1e12) / 3600, "flops"
