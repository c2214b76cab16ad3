"""The bad-input battery (issue 14): every case ends with exit 2 and exactly one line on stderr, no traceback,
and changes no file (validation happens before anything is written; nothing trains).

The cases run in-process through ``benchmark.cli.main`` (the CLI's own error handling, without paying a Python
start-up per case); ``test_subprocess_sample`` runs a few of them as real ``python -m benchmark`` processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.testing import small_overrides

# train.steps=1: a case that wrongly starts training fails in a second, not after a whole run
SMALL = [a for k, v in small_overrides(**{"train.steps": 1}).items() for a in ("--set", f"{k}={v}")]


def run_args(*extra: str) -> list[str]:
    return ["run", "--out", "{out}", "--tasks", "none", *SMALL, *extra]


def sets(*kv: str) -> list[str]:
    return run_args(*[a for x in kv for a in ("--set", x)])


CASES: dict[str, list[str]] = {
    # optimizer (AdamW, Tables 18-21): a negative lr used to fall back to the default silently
    "lr negative": sets("train.lr=-1"), "lr inf": sets("train.lr=inf"), "blr negative": sets("train.blr=-1"),
    "blr zero": sets("train.blr=0"), "beta1 2": sets("train.beta1=2"), "beta2 negative": sets("train.beta2=-0.1"),
    "weight decay negative": sets("train.weight_decay=-0.1"), "grad clip negative": sets("train.grad_clip=-1"),
    "grad clip zero": sets("train.grad_clip=0"), "grad clip nan": sets("train.grad_clip=nan"),
    "warmup negative": sets("train.warmup_epochs=-1"), "ema decay 1": sets("train.ema_decay=1"),
    "batch 0": sets("train.batch_size=0"), "accum not dividing": sets("train.accum_steps=3"),
    "steps 0": run_args("--steps", "0"), "steps negative": run_args("--steps", "-5"),
    "seed negative": run_args("--seed", "-1"), "seed negative via set": sets("seed=-1"),
    # model shape
    "heads 0": sets("model.heads=0"), "patch 0": sets("model.patch_size=0"), "patch not dividing": sets("model.patch_size=5"),
    "width not divisible by heads": sets("model.width=65"), "depth odd": sets("model.depth=3"),
    "dropout 1.5": sets("model.dropout=1.5"), "mlp ratio 0": sets("model.mlp_ratio=0"),
    "image size 0": sets("model.image_size=0"),
    # objective and schedule: a loss that can never be active is refused, not trained as "completed"
    "sigma inf": sets("schedule.sigma=inf"), "sigma 0": sets("schedule.sigma=0"), "sigma nan": sets("schedule.sigma=nan"),
    "clip weight negative": sets("objective.clip_weight=-1"), "gamma 1.5": sets("objective.gamma=1.5"),
    "schedule never reaches gamma": sets("schedule.high=0.3"),
    "no masking never reaches gamma": run_args("--schedule", "none"),
    "schedule never below phi": sets("schedule.low=0.9"),
    "mar without its loss": run_args("--objective", "mar", "--set", "objective.diff_weight=0"),
    # data and generation settings
    "n_train 0": sets("data.n_train=0"), "shape twins odd batch": sets("data.shape_twins=true", "train.batch_size=15"),
    "unknown data": run_args("--data", "imagenet"),
    "temperature 0": sets("eval.temperature=0"), "cfg negative": sets("eval.cfg=-1"), "cfg nan": sets("eval.cfg=nan"),
    "cuda without a gpu": sets("train.device=cuda") if not __import__("torch").cuda.is_available() else sets("seed=-2"),
    # keys, types and names
    "unknown section": sets("nosuch.key=1"), "unknown key": sets("train.lrr=1"), "bad type": sets("train.lr=abc"),
    "set without =": run_args("--set", "train"), "unknown preset": run_args("--preset", "XL"),
    "unknown recipe": run_args("--recipe", "foo"), "unknown objective": run_args("--objective", "nope"),
    "unknown schedule": run_args("--schedule", "nope"), "steps not a number": run_args("--steps", "x"),
    # a real name means real data: missing data exits 2 naming the path, before training
    "unknown task": ["run", "--out", "{out}", "--tasks", "nope", *SMALL],
    "fid/coco without reference": ["run", "--out", "{out}", "--tasks", "fid/coco", *SMALL],
    "lp with a missing imagenet root": ["run", "--out", "{out}", "--tasks", "lp", *SMALL, "--set", "eval.imagenet_root=/nope"],
    "seg with a missing ade20k root": ["run", "--out", "{out}", "--tasks", "seg", *SMALL, "--set", "eval.ade20k_root=/nope"],
    "depth with a missing nyu root": ["run", "--out", "{out}", "--tasks", "depth", *SMALL, "--set", "eval.nyu_root=/nope"],
    "fewshot set without root": ["run", "--out", "{out}", "--tasks", "fewshot/dtd", *SMALL],
    "synthetic name on real data": ["run", "--out", "{out}", "--data", "cc12m", "--tasks", "lp/synthetic", *SMALL],
    # eval
    "eval missing run": ["eval", "--run", "{out}/nope", "--tasks", "lp"],
    "eval unknown task": ["eval", "--run", "{run}", "--tasks", "nope"],
    "eval empty tasks": ["eval", "--run", "{run}", "--tasks", ","],
    "eval non-eval set": ["eval", "--run", "{run}", "--tasks", "lp", "--set", "train.lr=1"],
    "eval fid/coco without reference": ["eval", "--run", "{run}", "--tasks", "fid/coco"],
    "eval lp with a missing root": ["eval", "--run", "{run}", "--tasks", "lp", "--set", "eval.imagenet_root=/nope"],
    "eval missing snapshot": ["eval", "--run", "{run}", "--tasks", "lp", "--epoch", "3"],
    "eval truncated ema": ["eval", "--run", "{truncated}", "--tasks", "lp"],
    "eval corrupt record": ["eval", "--run", "{corrupt}", "--tasks", "lp"],
    "eval foreign record": ["eval", "--run", "{foreign}", "--tasks", "lp"],
    "eval while the run trains": ["eval", "--run", "{locked}", "--tasks", "lp"],
    # the run folder
    "run over a checkpoint without --resume": ["run", "--out", "{ckpt_out}", "--tasks", "none", *SMALL],
    "resume a truncated checkpoint": ["run", "--out", "{ckpt_out}", "--tasks", "none", "--resume", *SMALL],
    "run while another writer holds the folder": ["run", "--out", "{locked_out}", "--tasks", "none", *SMALL],
    "run over a corrupt record": ["run", "--out", "{corrupt_out}", "--tasks", "none", *SMALL],
    # generate: flags are checked before the model is loaded
    "generate steps 0": ["generate", "--run", "{run}", "--out", "{out}/g.png", "--steps", "0"],
    "generate seeds 0": ["generate", "--run", "{run}", "--out", "{out}/g.png", "--seeds", "0"],
    "generate candidates 0": ["generate", "--run", "{run}", "--out", "{out}/g.png", "--candidates", "0"],
    "generate temperature 0": ["generate", "--run", "{run}", "--out", "{out}/g.png", "--temperature", "0"],
    "generate cfg nan": ["generate", "--run", "{run}", "--out", "{out}/g.png", "--cfg", "nan"],
    "generate read-only out": ["generate", "--run", "{run}", "--out", "{readonly}/g.png"],
    "generate out under a file": ["generate", "--run", "{run}", "--out", "{run}/record.json/g.png"],
    "generate out not an image": ["generate", "--run", "{run}", "--out", "{out}/g.txt"],
    "generate missing run": ["generate", "--run", "{out}/nope", "--out", "{out}/g.png"],
    # other commands
    "table unknown": ["table", "99", "--runs", "{out}"], "figure unknown": ["figure", "5", "--out", "{out}/f.png"],
    "list unknown": ["list", "foo"], "sweep unknown": ["sweep", "nosuch", "--dry-run", "--out", "{out}"],
    "bench unknown": ["bench", "nosuch"],
    "run --executor slurm without slurm": run_args("--executor", "slurm"),
    "sweep --executor slurm without slurm": ["sweep", "table4", "--preset", "tiny", "--out", "{out}", "--executor", "slurm"],
}
NEEDS_NO_SLURM = {"run --executor slurm without slurm", "sweep --executor slurm without slurm"}


def _tree(root: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Run folders in the states the cases need, made without training (records and files written directly)."""
    from benchmark.config import build_config, run_id
    from benchmark.records import RunRecord
    from benchmark.run import plugin_info

    root = tmp_path_factory.mktemp("battery")
    out = root / "runs"
    cfg = build_config("dream", overrides={**small_overrides(**{"train.steps": 1}), "out": str(out)})

    def make(name: str) -> Path:
        d = out / name
        d.mkdir(parents=True)
        RunRecord.create(d, name, cfg.to_dict(), plugin_info(cfg))
        return d

    run = make("good")
    truncated = make("truncated")
    (truncated / "ema.pt").write_bytes(b"PK\x03\x04 truncated")
    corrupt = make("corrupt")
    (corrupt / "record.json").write_text('{"run_id": "corr')
    foreign = make("foreign")
    (foreign / "record.json").write_text('{"status": "completed"}')
    locked = make("locked")
    # the folder of the CLI's own config (the run id of the `run` cases), with a damaged checkpoint
    ckpt_out = root / "ckpt"
    (ckpt_out / run_id(cfg)).mkdir(parents=True)
    (ckpt_out / run_id(cfg) / "checkpoint.pt").write_bytes(b"\x80\x02 not a checkpoint")
    locked_out, corrupt_out = root / "locked", root / "corrupt"
    (locked_out / run_id(cfg)).mkdir(parents=True)
    (corrupt_out / run_id(cfg)).mkdir(parents=True)
    (corrupt_out / run_id(cfg) / "record.json").write_bytes(b"\xff\x00garbage")
    readonly = root / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    fields = {"out": out, "run": run, "truncated": truncated, "corrupt": corrupt, "foreign": foreign, "locked": locked,
              "ckpt_out": ckpt_out, "locked_out": locked_out, "corrupt_out": corrupt_out, "readonly": readonly}
    yield root, fields, [locked, locked_out / run_id(cfg)]
    readonly.chmod(0o755)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line(case, folders, capsys, monkeypatch):
    from benchmark.records import RunLock

    root, fields, to_lock = folders
    if case in NEEDS_NO_SLURM:
        import shutil

        if shutil.which("sbatch"):
            pytest.skip("Slurm is installed here")
    if case == "generate read-only out" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    argv = [a.format(**fields) for a in CASES[case]]
    monkeypatch.chdir(root)
    locks = [RunLock(d, "run").__enter__() for d in to_lock]  # "another live writer" of those folders
    before = _tree(root)
    try:
        with pytest.raises(SystemExit) if case in ARGPARSE else _nullcontext() as exc:
            rc = main(argv)
        if case in ARGPARSE:
            rc = exc.value.code
    finally:
        for lk in locks:
            lk.__exit__(None, None, None)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (case, rc, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (case, err)
    assert "Traceback" not in err
    after = _tree(root)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    # outside the run folder a refused command writes nothing; inside it only its lock files, except a --resume
    # that finds the checkpoint damaged only after taking the folder: its record says so (failed, with the error)
    inside = ("ckpt/",) if case == "resume a truncated checkpoint" else ()
    assert all(Path(k).name in (".lock", ".record.lock") or k.startswith(inside) for k in changed), (case, changed)


ARGPARSE = {"steps not a number", "list unknown", "bench unknown"}


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_messages_name_the_fix(folders, capsys, monkeypatch):
    """Spot checks of what the lines say: the missing path, the holder, the loss that can never be active."""
    root, fields, to_lock = folders
    monkeypatch.chdir(root)
    cases = {"lp with a missing imagenet root": "/nope", "fid/coco without reference": "eval.gen_root",
             "sigma inf": "schedule.sigma", "lr negative": "train.lr", "schedule never reaches gamma": "gamma",
             "eval truncated ema": "ema.pt", "eval foreign record": "not a run record",
             "run --executor slurm without slurm": "sbatch"}
    for case, text in cases.items():
        main([a.format(**fields) for a in CASES[case]])
        err = capsys.readouterr().err
        assert text in err, (case, err)


def test_subprocess_sample(folders):
    """Through a real interpreter: exit 2, one line, no traceback (the in-process battery's assumptions hold)."""
    root, fields, _ = folders
    for case in ("lr negative", "eval corrupt record"):
        argv = [a.format(**fields) for a in CASES[case]]
        p = subprocess.run([sys.executable, "-m", "benchmark", *argv], capture_output=True, text=True, cwd=root,
                           timeout=120)
        lines = [line for line in p.stderr.splitlines() if line.strip()]
        assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, (case, p.stderr)
