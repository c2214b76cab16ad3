"""`bench train` measures a real step on CPU: counted FLOPs match the model's size."""

from benchmark.bench import bench_train


def test_bench_train_tiny_cpu():
    res = bench_train("fluid", "tiny", batch=8, steps=1, progress=0.0, device="cpu",
                      overrides={"model.diffusion_batch_mul": "1"}, matmul_n=512)
    assert res["step_ms"] > 0 and res["images_per_s"] > 0 and 0 < res["mfu_vs_matmul"] < 1.5
    assert 0 < res["mfu_vs_matmul_cpu_time"] < 1.5 and res["step_cpu_ms"] > 0
    # forward + backward is ~3x the forward; the forward is at least 2 FLOPs per parameter per encoder token
    # (the encoder sees >= buffer tokens), so a step is well above 6 * params_encoder * 16 tokens * 8 images
    assert res["tflop_per_step"] * 1e12 > 6 * 0.8e6 * 16 * 8


def test_bench_raw_input_adds_the_frozen_encoders():
    """--input raw runs the VAE and T5 encoders in the step: their FLOPs are counted apart (the T5 part has a
    closed form), and the trained model's FLOPs are those of the cached-input step."""
    over = {"model.diffusion_batch_mul": "1", "model.tokenizer": "sd_vae", "model.image_size": "64",
            "model.patch_size": "2"}
    cached = bench_train("dream", "tiny", batch=4, steps=1, progress=0.0, device="cpu", overrides=over, matmul_n=256)
    raw = bench_train("dream", "tiny", batch=4, steps=1, progress=0.0, device="cpu", overrides=over,
                      inputs="raw", vae="tiny", matmul_n=256)
    assert "frozen_tflop_per_step" not in cached
    b, length, d, d_ff, layers = 4, 32, 64, 256, 2  # tiny preset: text_len 32, t5_dim 64; the synthetic T5 shape
    t5 = 2 * b * length * layers * (4 * d * d + 2 * d * d_ff + 2 * length * d)  # q,k,v,o + FF + QK^T, AV
    vae_bound = 2 * b * 64 * 64 * 8 * 8 * 9 * 20  # 8-channel 3x3 convs: generously < 20 per pixel of the input
    assert t5 < raw["frozen_tflop_per_step"] * 1e12 < t5 + vae_bound
    assert abs(raw["tflop_per_step"] / cached["tflop_per_step"] - 1) < 1e-6


def test_bench_loader_reads_the_fixture_shards(tmp_path):
    """`bench loader` on the img2dataset fixture: one epoch (19 readable of 20) in one process."""
    from benchmark.bench import bench_loader
    from benchmark.testing import write_img2dataset_shards

    write_img2dataset_shards(tmp_path)
    res = bench_loader("tiny", {"data.root": str(tmp_path), "data.resampled": "false", "data.num_workers": "0"})
    assert res["samples"] == 19 and res["corrupt_skipped"] == 1 and res["cpu_ms_per_sample"] > 0


def test_bench_train_json_reports_no_graph_break_and_no_sync(tmp_path, one_thread):
    """`bench train --ratio 0.5 --json` on tiny: the loop's own step, 0 graph breaks, 0 host syncs, and FLOPs of a
    step that ran the decoder (ratio 0.5 >= γ): more than the CLIP-only step at ratio 0.3."""
    import json

    from benchmark.cli import main
    from benchmark.testing import small_overrides

    sets = [x for k, v in small_overrides("dream").items() if k.startswith("model.") for x in ("--set", f"{k}={v}")]
    args = ["bench", "train", "--objective", "dream", "--preset", "tiny", "--batch", "8", "--steps", "2",
            "--device", "cpu", *sets]
    assert main([*args, "--ratio", "0.5", "--json", str(tmp_path / "b.json")]) == 0
    res = json.loads((tmp_path / "b.json").read_text())
    assert res["graph_breaks"] == 0 and res["host_syncs_per_step"] == 0 and res["recompiles_after_warmup"] == 0
    assert res["ratio"] == 0.5 and res["warmup_steps"] >= 3 and res["timed_steps"] == 2
    assert main([*args, "--ratio", "0.3", "--json", str(tmp_path / "c.json")]) == 0
    low = json.loads((tmp_path / "c.json").read_text())
    assert low["tflop_per_step"] < res["tflop_per_step"]


def test_bench_default_ratio_is_mid_warmup():
    from benchmark import registry
    from benchmark.bench import default_ratio
    from benchmark.config import build_config

    cfg = build_config("dream")
    progress, ratio = default_ratio(registry.schedules.get("wm")(cfg.schedule), cfg)
    # WM: mean 0 -> 1 over the warm-up, so 0.5 half-way, and the truncated normal on [0, 1] is symmetric there
    assert progress == cfg.schedule.warmup_start + cfg.schedule.warmup_epochs / 2 and abs(ratio - 0.5) < 0.01


def test_bench_sample_json_compiled_beside_eager(tmp_path, one_thread, capsys):
    """`bench sample --compile --json` without a run (tiny, aot_eager): 0 graph breaks in a step's device part, 0 host
    syncs per step, no recompile after the warm-up decode, and the compiled decode gives the eager tokens (1e-4)."""
    import json

    from benchmark.cli import main
    from benchmark.testing import small_overrides

    over = {**small_overrides("dream"), "model.depth": "2", "model.head_depth": "1", "model.sample_steps": "3"}
    sets = [x for k, v in over.items() if k.startswith("model.") for x in ("--set", f"{k}={v}")]
    args = ["bench", "sample", "--preset", "tiny", "--batch", "2", "--decode-steps", "8", "--runs", "1", "--device", "cpu",
            *sets]
    assert main([*args, "--compile", "--backend", "aot_eager", "--json", str(tmp_path / "s.json")]) == 0
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["graph_breaks"] == 0 and res["host_syncs_per_step"] == 0 and res["recompiles_after_warmup"] == 0
    assert 1 <= res["graphs_compiled_in_warmup"] <= 4 and res["max_token_diff_vs_eager"] <= 1e-4
    assert res["images_per_s"] > 0 and res["eager_images_per_s"] > 0 and res["nfe"] == 8 and res["compile"] == "aot_eager"
    assert main([*args, "--runs", "0"]) == 2 and "--runs" in capsys.readouterr().err
