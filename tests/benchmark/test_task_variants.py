"""`run --tasks` with task variants (issue 15): `fid/cc12m`, `clip_score/coco`, `lp@2` used to die at job start
(the registry's origin lookup kept the variant)."""

import json

from benchmark.cli import main
from benchmark.testing import small_overrides


def _sets(**extra: object) -> list[str]:
    out = []
    for k, v in small_overrides(**extra).items():
        out += ["--set", f"{k}={v}"]
    return out


def test_run_with_task_variants_completes(tmp_path, one_thread, capsys):
    tasks = ["lp/synthetic", "lp@2", "fid/synthetic", "clip_score/synthetic"]
    argv = ["run", "--preset", "tiny", "--steps", "2", "--tasks", ",".join(tasks), "--out", str(tmp_path),
            *_sets(**{"eval.gen_samples": 16, "eval.n_probe_train": 64, "eval.n_probe_test": 32, "eval.sample_steps": 2,
                      "train.epochs": 4, "train.snapshot_every": 2})]  # 2 steps of 4 epochs: a snapshot at epoch 2
    assert main(argv) == 0, capsys.readouterr().err
    (rec,) = tmp_path.glob("*/record.json")
    data = json.loads(rec.read_text())
    assert data["status"] == "completed"
    assert set(data["plugins"]["tasks"]) == set(tasks)
    assert all(o.startswith("builtin") for o in data["plugins"]["tasks"].values())
    # a synthetic run stores its stand-ins under synthetic names only: "lp@2" is the stand-in's lp/synthetic@2
    assert {"lp/synthetic", "lp/synthetic@2", "fid/synthetic", "clip_score/synthetic"} <= set(data["tasks"])
    assert not {"lp", "lp@2"} & set(data["metrics"])
    # lp@2 is the EMA snapshot of epoch 2 (taken at step 1 of 2), not the final weights
    assert data["tasks"]["lp/synthetic@2"]["version"] == data["tasks"]["lp/synthetic"]["version"]
    assert (rec.parent / "ema_e2.pt").exists()


def test_snapshot_task_without_snapshots_fails_before_training(tmp_path, capsys):
    argv = ["run", "--preset", "tiny", "--steps", "2", "--tasks", "lp@2", "--out", str(tmp_path), *_sets()]
    assert main(argv) == 2
    assert "train.snapshot_every" in capsys.readouterr().err
    assert not list(tmp_path.glob("*/record.json"))


def test_origin_of_a_variant_is_its_task():
    from benchmark import registry

    assert registry.tasks.origin("fid/coco") == registry.tasks.origin("fid")
    assert registry.tasks.origin("lp@12") == registry.tasks.origin("lp")
