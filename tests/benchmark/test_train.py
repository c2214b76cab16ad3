"""The training loop: exact resume after a kill, checkpoints, records."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmark import registry
from benchmark.config import build_config
from benchmark.run import execute
from benchmark.testing import small_overrides

REPO = Path(__file__).resolve().parents[2]


def make_cfg(tmp_path, objective="dream", **extra):
    over = small_overrides(objective, **{"out": str(tmp_path), "tasks": "", **extra})
    return build_config(objective, overrides=over)


def final_state(run_dir):
    ck = torch.load(Path(run_dir) / "checkpoint.pt", weights_only=False)
    return ck["model"], ck["loss_curve"], ck["ema"]


@pytest.mark.parametrize("objective", ["dream", "repa"])
def test_resume_after_interruption_is_exact(tmp_path, objective):
    cfg = make_cfg(tmp_path / "a", objective, **{"train.steps": 12, "train.ckpt_every": 4, "train.log_every": 2})
    full = execute(cfg)
    cfg_b = make_cfg(tmp_path / "b", objective, **{"train.steps": 12, "train.ckpt_every": 4, "train.log_every": 2})
    run_b = execute(cfg_b, stop_after=6)  # dies at step 6: the last checkpoint is at step 4
    assert torch.load(run_b / "checkpoint.pt", weights_only=False)["step"] == 4
    assert json.loads((run_b / "record.json").read_text())["status"] == "interrupted"
    execute(cfg_b, resume=True)
    (ma, ca, ea), (mb, cb, eb) = final_state(full), final_state(run_b)
    assert ca == cb  # the whole loss curve, including the steps before the interruption
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    assert all(torch.equal(x, y) for x, y in zip(ea, eb))
    rec = json.loads((run_b / "record.json").read_text())
    assert rec["status"] == "completed" and rec["attempt"] == 2 and rec["train"]["steps"] == 12


def test_rerun_is_idempotent_and_checkpoint_requires_resume(tmp_path):
    from benchmark.run import RunExistsError

    cfg = make_cfg(tmp_path, **{"train.steps": 4, "train.ckpt_every": 2})
    run = execute(cfg, stop_after=3)
    with pytest.raises(RunExistsError, match="--resume"):
        execute(cfg)
    execute(cfg, resume=True)
    mtime = (run / "checkpoint.pt").stat().st_mtime
    execute(cfg)  # completed: nothing is redone
    assert (run / "checkpoint.pt").stat().st_mtime == mtime
    # asking a completed run for a task it lacks evaluates only that task (same run id), no retraining
    more = make_cfg(tmp_path, **{"train.steps": 4, "train.ckpt_every": 2, "tasks": "lp", "eval.lp_epochs": 2})
    assert execute(more) == run
    rec = json.loads((run / "record.json").read_text())
    assert (run / "checkpoint.pt").stat().st_mtime == mtime and "top1" in rec["metrics"]["lp/synthetic"]


def test_kill_and_resume_through_the_cli(tmp_path):
    """A real SIGKILL after the first checkpoint, then `--resume`: same weights as uninterrupted."""
    args = ["--objective", "dream", "--steps", "30", "--tasks", "none"]
    sets = []
    for k, v in small_overrides(**{"train.ckpt_every": 10, "train.log_every": 5}).items():
        sets += ["--set", f"{k}={v}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ref = subprocess.run([sys.executable, "-m", "benchmark", "run", *args, *sets, "--out", str(tmp_path / "ref")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", "run", *args, *sets, "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(out.glob("*/checkpoint.pt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = list(out.glob("*"))
    step = torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"]
    assert step < 30, "the run finished before it could be killed"
    res = subprocess.run([sys.executable, "-m", "benchmark", "run", *args, *sets, "--out", str(out), "--resume"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stdout
    (ref_dir,) = list((tmp_path / "ref").glob("*"))
    assert ref_dir.name == run_dir.name  # the run id does not depend on the output folder
    (ma, ca, _), (mb, cb, _) = final_state(ref_dir), final_state(run_dir)
    assert ca == cb
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_vae_latent_path_trains_end_to_end(tmp_path):
    """The paper's tokenizer path (a local diffusers AutoencoderKL, 2x2 grouping) through the same loop."""
    from diffusers import AutoencoderKL

    AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                  norm_num_groups=4, sample_size=64).save_pretrained(tmp_path / "vae")
    cfg = make_cfg(tmp_path / "runs", "dream", **{
        "model.tokenizer": "sd_vae", "model.vae_path": str(tmp_path / "vae"), "model.image_size": 64,
        "model.patch_size": 2, "train.steps": 3, "eval.samples": 2, "eval.sample_steps": 2})
    run = execute(cfg)
    rec = json.loads((run / "record.json").read_text())
    assert rec["status"] == "completed" and (run / "samples.png").exists()
    from benchmark.run import load_run

    comps, _, _ = load_run(run)
    assert comps.backbone.seq_len == 16 and comps.backbone.token_dim == 16  # (64/8/2)^2 tokens x 4*2*2


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """FLUID with one fixed mask ratio, no dropout and deterministic diffusion draws: two micro-batches of 8
    accumulate exactly the gradient of one batch of 16 (the loss is a mean over equal-sized groups)."""
    from benchmark.data import build_train_data
    from benchmark.train import build, prepare_batch, sample_masking

    over = {"train.steps": 1, "train.caption_dropout": 0.0, "schedule.low": 0.6, "schedule.high": 0.6000001,
            "schedule.group_size": 8, "model.diffusion_batch_mul": 1}
    cfg = make_cfg(tmp_path, "fluid", **over)
    comps = build(cfg)
    head = comps.backbone.head
    torch.nn.init.normal_(head.net.final.linear.weight, std=0.05)  # non-zero head output

    def deterministic(target, z, generator=None, **drawn):  # fixed (t, noise) per row, independent of the split
        t = torch.full((target.shape[0],), 500)
        return head.train_diffusion.training_losses(head.net, target, t, z, torch.sin(7 * target))

    head.forward = deterministic
    raw = build_train_data(cfg).batch(0, 16)
    sched = registry.schedules.get("fx")(cfg.schedule)
    batch = prepare_batch(comps, raw, 0)
    mask = sample_masking(cfg, sched, 16, comps.backbone.seq_len, 0.0, 0, 0, comps.device)
    comps.model(batch, mask, 0.0)["total"].backward()
    full = {n: p.grad.clone() for n, p in comps.model.named_parameters() if p.grad is not None}
    comps.model.zero_grad()
    for m in range(2):
        part = {k: v[m * 8:(m + 1) * 8] for k, v in raw.items()}
        sub = type(mask)(mask.mask[m * 8:(m + 1) * 8], mask.ratio[m * 8:(m + 1) * 8],
                         torch.zeros(8, dtype=torch.long), 1)
        (comps.model(prepare_batch(comps, part, 0, m), sub, 0.0)["total"] / 2).backward()
    assert len(full) > 50
    for n, g in full.items():
        assert torch.allclose(g, comps.model.get_parameter(n).grad, atol=1e-6, rtol=1e-4), n
    run = execute(make_cfg(tmp_path / "acc", "fluid", **{"train.steps": 2, "train.accum_steps": 2}))
    rec = json.loads((run / "record.json").read_text())
    assert rec["status"] == "completed" and rec["train"]["loss_curve"][-1][0] == 2


def test_tasks_that_do_not_apply_are_recorded_not_fatal(tmp_path):
    """The tiny preset's task list holds generation and zero-shot tasks; CLIP has no decoder and MAR no text
    tower: a trained run records those tasks as not applicable and still completes with the others."""
    cfg = make_cfg(tmp_path, "clip", **{"train.steps": 2, "tasks": "fid,clip_score"})
    run = execute(cfg)
    rec = json.loads((run / "record.json").read_text())
    assert rec["status"] == "completed"
    assert {t: rec["tasks"][t + "/synthetic"]["status"] for t in ("fid", "clip_score")} == {
        "fid": "not_applicable", "clip_score": "not_applicable"}
    cfg = make_cfg(tmp_path, "mar", **{"train.steps": 2, "tasks": "zeroshot,clip_score"})
    rec = json.loads((execute(cfg) / "record.json").read_text())
    assert rec["status"] == "completed" and "CLIP text tower" in rec["tasks"]["zeroshot/synthetic"]["reason"]
    assert rec["tasks"]["zeroshot/synthetic"]["status"] == rec["tasks"]["clip_score/synthetic"]["status"] == "not_applicable"


def test_ema_snapshots_over_training_are_evaluated_as_task_at_epoch(tmp_path):
    """Fig. 6 needs metrics over epochs: train.snapshot_every writes the EMA at each multiple of that many epochs,
    and `eval --epoch E` stores the metrics under `<task>@E`."""
    from benchmark.cli import main

    # 4 epochs, here 8 steps -> 2 steps per epoch; snapshots at epochs 1, 2, 3 (steps 2, 4, 6)
    cfg = make_cfg(tmp_path / "a", **{"train.epochs": 4, "train.steps": 8, "train.snapshot_every": 1, "eval.lp_epochs": 2})
    run = execute(cfg)
    assert sorted(p.name for p in run.glob("ema_e*.pt")) == ["ema_e1.pt", "ema_e2.pt", "ema_e3.pt"]
    stopped = execute(make_cfg(tmp_path / "b", **{"train.epochs": 4, "train.steps": 8, "train.ckpt_every": 4}), stop_after=4)
    snap = torch.load(run / "ema_e2.pt", weights_only=False)
    ref = torch.load(stopped / "ema.pt", weights_only=False)  # the EMA after step 4 of the same run
    assert snap["step"] == ref["step"] == 4
    assert all(torch.equal(snap["model"][k], ref["model"][k]) for k in ref["model"])
    assert main(["eval", "--run", str(run), "--epoch", "2", "--tasks", "lp", "--set", "eval.lp_epochs=2"]) == 0
    rec = json.loads((run / "record.json").read_text())
    from benchmark.tasks.lp import LinearProbe

    assert "top1" in rec["metrics"]["lp/synthetic@2"] and rec["tasks"]["lp/synthetic@2"]["version"] == LinearProbe.version
    assert main(["eval", "--run", str(run), "--epoch", "5", "--tasks", "lp"]) == 2  # no such snapshot: one line


@pytest.mark.parametrize("recipe", ["official", "paper"])
def test_logit_scale_weight_decay_follows_the_recipe(recipe):
    """The released add_weight_decay excludes len(shape) == 1 tensors, so the 0-d CLIP temperature is decayed;
    the paper recipe (open_clip/StableRep) keeps it out. 1-d tensors and biases are never decayed."""
    from benchmark.train import build_model, param_groups

    cfg = build_config("dream", recipe=recipe, overrides=small_overrides())
    model = build_model(cfg)
    no_decay, decay = param_groups(model, 0.04, cfg.train.decay_logit_scale)
    ids = {id(p) for p in decay["params"]}
    assert (id(model.objective.clip.logit_scale) in ids) == (recipe == "official")
    assert id(model.backbone.encoder_norm.weight) not in ids and id(model.backbone.z_proj.bias) not in ids
    assert id(model.backbone.encoder_pos) in ids and decay["weight_decay"] == 0.04 and no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize("objective", ["dream", "clip"])
def test_gradient_accumulation_with_a_contrastive_loss_is_refused(objective, capsys, tmp_path):
    """Micro-batches would change the CLIP loss (its negatives and BatchNorm statistics): one line, exit 2."""
    from benchmark.cli import main

    over = small_overrides(**{"train.accum_steps": 2, "train.steps": 2})
    argv = ["run", "--objective", objective, "--tasks", "none", "--out", str(tmp_path)]
    rc = main([*argv, *(a for k, v in over.items() for a in ("--set", f"{k}={v}"))])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "train.accum_steps=2" in err and "CLIP loss" in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
