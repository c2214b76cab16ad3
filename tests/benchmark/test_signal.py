"""A short tiny run learns: its losses go down and its linear probe is far above chance and above the
same probe on the untrained encoder."""


import pytest
import torch

from benchmark.config import build_config
from benchmark.records import RunRecord
from benchmark.run import execute, load_run
from benchmark.testing import small_overrides

PROBE = {"eval.n_probe_train": 2048, "eval.n_probe_test": 1024, "eval.lp_epochs": 40, "eval.lp_batch": 256,
         "eval.lp_blr": 32}  # LARS adapts by 1e-3 x |w|/|g|: a few hundred steps need a large lr (Table 22: 28k steps)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("signal")
    over = small_overrides(**{"out": str(out), "tasks": "lp,zeroshot", "eval.zeroshot_n": 96,
                              "train.steps": 150, "train.log_every": 15,
                              "train.batch_size": 32, "data.n_train": 4800, "train.ema_decay": 0.9,
                              "eval.samples": 4, "eval.sample_steps": 4, **PROBE})
    cfg = build_config("dream", "uni", overrides=over)
    run_dir = execute(cfg)
    return cfg, run_dir, RunRecord.load(run_dir / "record.json").data


def test_losses_decrease(trained):
    _, _, rec = trained
    curve = rec["train"]["loss_curve"]
    first, last = curve[0][1], curve[-1][1]
    # UNI keeps the masking distribution fixed, so the windows are comparable
    assert last["clip"] < 0.8 * first["clip"], (first, last)
    assert last["diff"] < 0.9 * first["diff"], (first, last)


def test_linear_probe_far_above_chance(trained):
    cfg, run_dir, rec = trained
    lp = rec["metrics"]["lp/synthetic"]  # a synthetic run's probe: never stored under the real name "lp"
    assert "lp" not in rec["metrics"]
    assert rec["status"] == "completed" and rec["tasks"]["lp/synthetic"]["version"] == 2
    assert lp["chance"] == pytest.approx(100 / 48)
    assert lp["top1"] > 5 * lp["chance"] and lp["top5"] > 5 * 5 * lp["chance"], lp
    assert rec["tasks"]["lp/synthetic"]["mode"] == "fast" and rec["tasks"]["lp/synthetic"]["n_test"] == PROBE["eval.n_probe_test"]


def test_probe_reads_the_features_it_is_given(trained):
    """The probe is not a constant: on features that carry no image information it falls to chance."""
    from benchmark.tasks.lp import train_probe

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 48, (2048,), generator=g)
    x = torch.randn(2048, 64, generator=g)
    head = train_probe(x[:1536], y[:1536], 48, 20, 256, 32, 2)
    acc = (head(x[1536:]).argmax(1) == y[1536:]).float().mean().item() * 100
    assert acc < 3 * 100 / 48
    # and with one informative dimension per class it is near perfect
    x = torch.nn.functional.one_hot(y, 48).float() + 0.1 * torch.randn(2048, 48, generator=g)
    head = train_probe(x[:1536], y[:1536], 48, 20, 256, 32, 2)
    assert (head(x[1536:]).argmax(1) == y[1536:]).float().mean().item() > 0.95


def test_outputs_of_a_run(trained):
    cfg, run_dir, rec = trained
    for f in ("record.json", "checkpoint.pt", "ema.pt", "samples.png", "samples.txt"):
        assert (run_dir / f).exists(), f
    for key in ("schema", "run_id", "status", "objective", "schedule", "preset", "data", "config", "provenance",
                "train", "metrics", "timings"):
        assert key in rec
    assert rec["config"]["schedule"]["name"] == "uni" and rec["provenance"]["torch"] == torch.__version__
    comps, cfg2, _ = load_run(run_dir)  # the EMA model reloads from the run folder alone
    assert cfg2 == cfg


def test_eval_command_reproduces_the_probe_from_the_run_folder(trained, capsys):
    from benchmark.cli import main

    cfg, run_dir, rec = trained
    assert main(["eval", "--run", str(run_dir), "--tasks", "lp"]) == 0
    again = RunRecord.load(run_dir / "record.json").data
    assert again["metrics"]["lp/synthetic"] == pytest.approx(rec["metrics"]["lp/synthetic"], abs=1e-6)
    # the CLIP head has BatchNorm: the tasks after training must see it in eval mode, as a reloaded run does
    from benchmark.tasks._features import clear_memory

    clear_memory()  # recompute, as a separate `eval` process would
    assert main(["eval", "--run", str(run_dir), "--tasks", "zeroshot"]) == 0
    again = RunRecord.load(run_dir / "record.json").data
    assert again["metrics"]["zeroshot/synthetic"] == pytest.approx(rec["metrics"]["zeroshot/synthetic"], abs=1e-6)
    assert main(["eval", "--run", str(run_dir), "--tasks", "nope"]) == 2
