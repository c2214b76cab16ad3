"""The command line as a user meets it: listings, one-line errors with exit status 2, external plugins."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv,needle", [
    (["run", "--objective", "dreem"], "Did you mean 'dream'"),
    (["run", "--schedule", "wn"], "unknown schedule 'wn'"),
    (["run", "--preset", "XL"], "unknown preset 'XL'; valid choices: B, L, H, G, tiny"),
    (["run", "--tasks", "lp,fid0"], "unknown task 'fid0'"),
    (["run", "--set", "schedule.sigma=-1"], "schedule.sigma must be > 0"),
    (["run", "--steps", "0"], "--steps must be a positive integer"),
    (["run", "--recipe", "code"], "valid choices: official, paper"),
    (["run", "--data", "cc12m", "--set", "data.root=/nonexistent/cc12m", "--tasks", "none"], "/nonexistent/cc12m"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path):
    rc = main([*argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert needle in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_weights_error_says_how_to_provide_them(capsys, tmp_path):
    (tmp_path / "00000.tar").write_bytes(b"")  # data present, weights missing
    argv = ["run", "--preset", "L", "--data", "cc12m", "--set", f"data.root={tmp_path}", "--set",
            "model.vae_path=/no/vae", "--tasks", "none", "--out", str(tmp_path / "runs")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "/no/vae" in err and len(err.strip().splitlines()) == 1
    assert "huggingface-cli download stabilityai/sd-vae-ft-ema" in err and "DREAM_BENCH_VAE" in err


def test_list_shows_plugins_with_origins(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("clip", "mar", "fluid", "repa", "dream", "fx", "uni", "cd", "wm", "lp", "tiny", "G"):
        assert f"  {name} " in out
    assert "builtin" in out and "paper 570M" in out


def test_external_plugin_package_trains_through_the_cli(tmp_path):
    """pip-install the example package (into a private folder), discover it by entry points, train 2 steps with its
    objective's, schedule's and task's own settings: the objective's field reaches the loss, the record stores the
    three plugins' settings, the field changes the run id, and an unknown field of the plugin exits 2 naming its fields."""
    import json
    import shutil

    from benchmark.testing import small_overrides

    target, src = tmp_path / "site", tmp_path / "src"
    shutil.copytree(REPO / "tests/plugins/dream_bench_example", src)  # the build leaves files beside the source
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)],
                   check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(REPO)])}
    env.pop("DREAM_BENCH_DISABLE_PLUGIN_AUTOLOAD", None)

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "benchmark", *argv], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=600)

    listing = cli("list", "-v")
    assert "masked_distill" in listing.stdout and "entry_point:dream-bench-example==0.2.0" in listing.stdout
    for line in ("objective.distill_weight: float = 1.0", "schedule.final_mean: float = 1.0",
                 "task.feature_norm.n_images: int = 64"):
        assert line in listing.stdout, listing.stdout
    small = [a for k, v in small_overrides().items() if not k.startswith("objective.") for a in ("--set", f"{k}={v}")]
    args = ["--objective", "masked_distill", "--schedule", "cosine_wm", "--steps", "2", "--tasks", "feature_norm",
            "--out", str(tmp_path / "runs"), *small, "--set", "schedule.final_mean=0.5",
            "--set", "task.feature_norm.n_images=16"]
    run = cli("run", *args, "--set", "objective.distill_weight=3")
    assert run.returncode == 0, run.stderr[-3000:]
    (rec,) = (tmp_path / "runs").glob("*/record.json")
    data = json.loads(rec.read_text())
    assert data["status"] == "completed" and data["objective"] == "masked_distill"
    assert data["plugins"]["objective"]["origin"].startswith("entry_point:dream-bench-example")
    step, logs = data["train"]["loss_curve"][-1]
    assert step == 2 and logs["total"] == pytest.approx(3 * logs["distill"], abs=3e-6)  # logs keep 6 decimals
    c = data["config"]
    assert c["objective"] == {"name": "masked_distill", "distill_weight": 3.0}
    assert c["schedule"]["final_mean"] == 0.5 and c["task"]["feature_norm"]["n_images"] == 16
    assert data["metrics"]["feature_norm"]["norm"] > 0 and data["tasks"]["feature_norm"]["n_images"] == 16
    # the run id hashes the objective's settings: weight 3 is this run, weight 1 another
    ids = subprocess.run([sys.executable, "-c", (
        "import sys; from benchmark.cli import build_parser, config_from_args; from benchmark.config import run_id\n"
        "for w in ('3', '1'):\n"
        "    a = build_parser().parse_args(sys.argv[1:] + ['--set', 'objective.distill_weight=' + w])\n"
        "    print(run_id(config_from_args(a)))"),
        "run", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ids.returncode == 0, ids.stderr[-2000:]
    same, other = ids.stdout.split()
    assert same == data["run_id"] and other != same
    bad = cli("run", *args, "--set", "objective.distill_wieght=3")
    err = bad.stderr.strip()
    assert bad.returncode == 2 and len(err.splitlines()) == 1, err
    assert "Did you mean distill_weight?" in err and "Valid fields of objective 'masked_distill': objective.distill_weight" in err


def test_include_file_plugin(tmp_path):
    plugin = tmp_path / "my_sched.py"
    plugin.write_text(
        "from benchmark import MaskingSchedule, register_schedule\n"
        "@register_schedule('half')\n"
        "class Half(MaskingSchedule):\n"
        "    '''Always mean 0.5.'''\n"
        "    def mean(self, progress):\n"
        "        return 0.5\n")
    from benchmark import registry
    from benchmark.cli import build_parser, config_from_args

    args = build_parser().parse_args(["run", "--include", str(plugin), "--schedule", "half", "--out", str(tmp_path)])
    cfg = config_from_args(args)
    assert cfg.schedule.name == "half" and cfg.include == [str(plugin)]
    assert registry.schedules.origin("half").startswith("module:")
