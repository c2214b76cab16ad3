"""Sweeps for every table and figure (issue 15): the runs a tiny sweep lists are the runs its table reads, every
distinct point runs end to end, a table's missing-run command runs, the GPU-hour estimate, the mini report."""

import json
import shlex
from pathlib import Path

import pytest
from benchmark.slurm import mini
from benchmark.slurm.sweeps import FIG6_EPOCHS, FIG6_TRAIN_EPOCHS, SWEEPS, TABLE_NUMBERS, estimate_hours, load_bench, plan

from benchmark.cli import main
from benchmark.tables import TABLES, compute
from benchmark.testing import small_overrides

# eval settings small enough for seconds per run (every task still runs its whole code path)
FAST = small_overrides(**{
    "eval.gen_samples": 16, "eval.n_probe_train": 64, "eval.n_probe_test": 32, "eval.sample_steps": 16,
    "eval.lp_epochs": 1, "eval.lp_warmup_epochs": 0, "eval.ft_epochs": 1, "eval.ft_warmup_epochs": 0,
    "eval.ft_n_train": 64, "eval.ft_batch": 32, "eval.fewshot_episodes": 2, "eval.fewshot_way": 2,
    "eval.fewshot_shot": 1, "eval.fewshot_query": 1, "eval.zeroshot_seeds": 1,
    "eval.zeroshot_n": 32, "eval.dense_n_train": 16, "eval.dense_n_test": 8, "eval.dense_batch": 8,
    "eval.seg_iters": 2, "eval.seg_warmup": 0, "eval.depth_iters": 2, "eval.depth_warmup": 0,
    "eval.sad_bench_prompts": 4, "train.threads": 1})


def tiny_cli(out, **kw):
    return {"preset": "tiny", "out": str(out), "sets": dict(FAST), **kw}


def fake_record(cfg, run_id: str, metrics: dict | None = None) -> dict:
    from benchmark.tables import _task, task_versions

    d = cfg.to_dict()
    return {"schema": 1, "run_id": run_id, "status": "completed", "objective": cfg.objective.name,
            "schedule": cfg.schedule.name, "preset": cfg.preset, "recipe": cfg.recipe, "data": cfg.data.name,
            "seed": cfg.seed, "config": d, "tasks": {k: {"version": task_versions()[_task(k)]} for k in (metrics or {})},
            "metrics": metrics or {}}


def write_records(points, out: Path, metrics=None) -> None:
    for p in points:
        if p["state"] != "invalid":
            (out / p["run_id"]).mkdir(parents=True, exist_ok=True)
            rec = fake_record(p["cfg"], p["run_id"], metrics(p) if metrics else None)
            (out / p["run_id"] / "record.json").write_text(json.dumps(rec))


def missing_rows(n: int, runs) -> set[str]:
    _, _, notes = compute(n, runs)
    heads = [note[len("missing "):].split(": python -m", 1)[0] for note in notes if note.startswith("missing ")]
    return {h for h in heads if "[" not in h}  # "missing ROW [tasks]: ..." is a cell gap of a present run


# Rows a tiny sweep cannot fill here: REPA with a pretrained teacher (CLIP-L, DINOv2-B) needs its weights.
NEEDS_WEIGHTS = {7: {"4", "6", "8"}, 8: {"CLIP", "DINOv2"}}


@pytest.mark.parametrize("n", TABLE_NUMBERS)
def test_tiny_table_sweep_lists_the_runs_its_table_reads(n, tmp_path):
    """Records of exactly the listed runs leave the table without a missing-run footnote (no training: the
    records carry the runs' configs, which is what the tables match rows on)."""
    points = plan(f"table{n}", tiny_cli(tmp_path))
    invalid = {lbl.split(" ", 1)[1] for p in points if p["state"] == "invalid" for lbl in p["labels"]}
    assert invalid == NEEDS_WEIGHTS.get(n, set()), [p["error"] for p in points if p["state"] == "invalid"]
    assert all(t.split("@")[0].endswith("/synthetic") or t.startswith("sad")
               for p in points if p["cfg"] for t in p["cfg"].tasks), "tiny sweeps name the synthetic stand-ins"
    assert missing_rows(n, tmp_path) == {r.label for r in TABLES[n].rows if r.paper.get("preset") != "external"}
    write_records(points, tmp_path)
    assert missing_rows(n, tmp_path) == invalid


@pytest.mark.parametrize("n", TABLE_NUMBERS)
def test_missing_run_commands_build_the_sweeps_runs(n, tmp_path):
    """The command a table prints for a missing row (at the held runs' setting, tiny here) makes the very run the
    sweep lists for that row (same run id: same training config), for every row of every table."""
    from benchmark.cli import build_parser, config_from_args
    from benchmark.config import run_id

    ids = {lbl.split(" ", 1)[1]: p["run_id"] for p in plan(f"table{n}", {"preset": "tiny", "out": str(tmp_path)})
           for lbl in p["labels"] if p["run_id"]}
    spec = TABLES[n]
    for row in spec.rows:
        if row.label not in ids:
            continue
        cmd = spec.command(row, "tiny", "synthetic").split(" && ")[0]
        args = build_parser().parse_args([*shlex.split(cmd)[3:], "--out", str(tmp_path)])
        assert run_id(config_from_args(args)) == ids[row.label], (row.label, cmd)


def test_paper_sweep_is_the_union_with_shared_runs_once(tmp_path):
    cli = tiny_cli(tmp_path)
    union = plan("paper", cli)
    ids = [p["run_id"] for p in union if p["run_id"]]
    assert len(ids) == len(set(ids))
    parts = {p["run_id"] for s in SWEEPS if s not in ("paper", "mini") for p in plan(s, cli) if p["run_id"]}
    assert set(ids) == parts
    default = next(p for p in union if "T5 DREAM" in p["labels"])  # the ablation default serves many rows
    assert {"T4 WM", "T6 64 NFE: DREAM (K=1)", "T17 1", "F6 sigma=0.45", "F7 DREAM"} <= set(default["labels"])
    assert default["sample"] and default["cfg"].train.snapshot_every > 0
    first = FIG6_EPOCHS[0] * default["cfg"].train.epochs // FIG6_TRAIN_EPOCHS  # epoch 12 of 48, scaled to the preset
    assert {f"lp/synthetic@{first:g}", "zeroshot/synthetic", "fid/synthetic"} <= set(default["cfg"].tasks)


def _distinct(points):
    """One point per new (objective, schedule, recipe), task, `bench sample` or snapshot use: the code paths."""
    seen, out = set(), []
    for p in points:
        if p["state"] == "invalid":
            continue
        c = p["cfg"]
        keys = {(c.objective.name, c.schedule.name, c.recipe), *c.tasks, ("sample", p["sample"]),
                ("snap", c.train.snapshot_every > 0)}
        if keys - seen:
            seen |= keys
            out.append(p)
    return out


def test_every_distinct_sweep_point_runs_end_to_end(tmp_path, one_thread):
    """The jobs a tiny `sweep paper` submits (full task lists, variants, bench sample, snapshots) complete."""
    from benchmark.slurm.launch import RunJob

    points = _distinct(plan("paper", tiny_cli(tmp_path, steps=4)))
    assert len(points) >= 8
    for p in points:
        RunJob()(p["cfg"].to_dict(), False, p["sample"])
        rec = json.loads((tmp_path / p["run_id"] / "record.json").read_text())
        assert rec["status"] == "completed", rec.get("error")
        assert set(p["cfg"].tasks) <= set(rec["tasks"]), p["labels"]
        if p["sample"]:
            assert {"sad/k1-nfe16-self", "sad/k9-nfe32-self"} <= set(rec["metrics"])
    again = plan("paper", tiny_cli(tmp_path, steps=4))  # resubmitting: the completed points are skipped
    assert all(q["state"] == "completed" for q in again if q["run_id"] in {p["run_id"] for p in points})


def test_missing_run_command_of_a_table_runs(tmp_path, one_thread, capsys):
    """Table 11 without its 30-epoch row prints a command at the held runs' setting; it runs and fills the row."""
    points = plan("table11", tiny_cli(tmp_path))
    write_records([p for p in points if p["label"] != "T11 30"], tmp_path)
    (note,) = [x for x in compute(11, tmp_path)[2] if x.startswith("missing 30:")]
    argv = shlex.split(note.split(": ", 1)[1])
    assert argv[:3] == ["python", "-m", "benchmark"] and "--preset" in argv and "lp/synthetic,fid/synthetic" in argv
    sets = [x for k, v in FAST.items() for x in ("--set", f"{k}={v}")]
    assert main([*argv[3:], "--steps", "2", "--out", str(tmp_path), *sets]) == 0, capsys.readouterr().err
    assert missing_rows(11, tmp_path) == set()


def test_gpu_hours_from_a_bench_measurement_and_from_flops(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps({"objective": "dream", "preset": "L", "batch": 32, "step_ms": 500.0,
                                                 "device": "H100"}))
    (tmp_path / "c.json").write_text(json.dumps({"batch": 64, "step_ms": 900.0, "device": "cpu",  # as bench train --json
                                                 "command": "python -m benchmark bench train --objective clip --preset B"}))
    bench = load_bench([str(tmp_path)])
    assert {(b["objective"], b["preset"]) for b in bench} == {("dream", "L"), ("clip", "B")}
    (p,) = [q for q in plan("table5", {"out": str(tmp_path)}) if "T5 DREAM" in q["labels"]]
    cfg = p["cfg"]
    hours, how = estimate_hours(cfg, bench)
    images = 48 * 11_300_000 // 2048 * 2048
    assert how.startswith("measured (H100") and hours == pytest.approx(images * 0.5 / 32 / 3600, rel=1e-3)
    flops_hours, how = estimate_hours(cfg, [])
    assert how == "flops" and 50 < flops_hours < 5000  # 6 N T x 542M images at 40 % of 989 TFLOP/s
    assert estimate_hours(cfg, [], mfu=0.2)[0] == pytest.approx(2 * flops_hours)


def test_dry_run_prints_runs_tasks_and_gpu_hours(tmp_path, capsys):
    assert main(["sweep", "table2", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sweep table2: 5 runs" in out and "GPU-hours for all 5 runs" in out and "assumed MFU" in out
    assert "tasks=lp,ft,robustness,fid/cc12m,clip_score/cc12m,fid/coco,clip_score/coco" in out


# ---------------------------------------------------------------- mini report
def test_pair_verdicts():
    assert mini.pair_verdict((10.0, 1.0, 3), (5.0, 1.0, 3), True)[0] == mini.HOLDS
    assert mini.pair_verdict((5.0, 1.0, 3), (10.0, 1.0, 3), True)[0] == mini.FAILS
    assert mini.pair_verdict((5.0, 1.0, 3), (10.0, 1.0, 3), False)[0] == mini.HOLDS  # lower is better (FID)
    assert mini.pair_verdict((10.0, 4.0, 3), (9.0, 4.0, 3), True)[0] == mini.OPEN
    assert mini.pair_verdict((10.0, None, 1), (5.0, None, 1), True)[0] == mini.OPEN  # one seed: unknown noise


def test_orderings_from_hand_made_records(tmp_path):
    """Mini-grid records with chosen LP / fd_ref values: each ordering gets the verdict the numbers imply."""
    lp = {"DREAM": 50, "CLIP": 40, "REPA": 30, "MAR": 20, "FLUID": 10,  # Table 2: holds
          "FX": 30, "UNI": 30, "CD": 31, "WM": 30,  # Table 4 LP: FX ties UNI and WM -> not resolved
          "CLIP-M": 45}  # Table 5: CLIP-M above CLIP -> does not hold
    fd = {"DREAM": 5, "REPA": 6, "FLUID": 7, "FX": 9, "UNI": 9, "CD": 9, "WM": 2}

    def metrics(p):
        row = p["labels"][0].split(" ", 1)[1]
        seed = p["cfg"].seed
        m = {"lp/synthetic": {"top1": lp[row] + 0.1 * seed}}
        if row in fd:
            m["fid/synthetic"] = {"fd_ref": fd[row] + 0.01 * seed}
        return m

    cli = {"preset": "tiny", "out": str(tmp_path), "seeds": [0, 1, 2], "steps": 10}
    write_records(plan("mini", cli), tmp_path, metrics)
    verdicts = {o.name.split(":")[0] + " " + o.column: v for o, v, _ in mini.check(tmp_path)}
    assert verdicts["Table 2 LP LP IN-1K"] == mini.HOLDS
    assert verdicts["Table 2 FID CC12M FID"] == mini.HOLDS
    assert verdicts["Table 4 LP LP"] == mini.OPEN  # CD above FX, but UNI and WM tie with it
    assert verdicts["Table 4 FID FID"] == mini.HOLDS
    assert verdicts["Table 5 LP LP"] == mini.FAILS
    assert verdicts["Table 17 agreement CLIP"] == mini.OPEN  # no bench sample entries
    assert "Paper orderings" in mini.report(tmp_path)



def test_local_sweep_runs_every_point_with_progress(tmp_path, one_thread, capsys):
    """`sweep --executor debug --parallelism 2` runs each point once, refilling slots, and prints its progress."""
    sets = [x for k, v in FAST.items() for x in ("--set", f"{k}={v}")]
    argv = ["sweep", "table15", "--preset", "tiny", "--steps", "2", "--tasks", "none", "--executor", "debug",
            "--parallelism", "2", "--out", str(tmp_path), *sets]
    assert main(argv) == 0
    out = capsys.readouterr().out
    n = len(plan("table15", tiny_cli(tmp_path, steps=2, tasks="none")))
    assert [f"[sweep table15] {i}/{n} runs done" in out for i in range(1, n + 1)] == [True] * n
    records = [json.loads(p.read_text()) for p in tmp_path.glob("*/record.json")]
    assert len(records) == n and {r["status"] for r in records} == {"completed"}
    assert main(argv) == 0 and "nothing to submit" in capsys.readouterr().out
