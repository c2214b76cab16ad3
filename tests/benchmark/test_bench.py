"""`bench train` measures a real step on CPU: counted FLOPs match the model's size."""

from benchmark.bench import bench_train


def test_bench_train_tiny_cpu():
    res = bench_train("fluid", "tiny", batch=8, steps=1, progress=0.0, device="cpu",
                      overrides={"model.diffusion_batch_mul": "1"})
    assert res["step_ms"] > 0 and res["images_per_s"] > 0 and 0 < res["mfu_vs_matmul"] < 1.5
    # forward + backward is ~3x the forward; the forward is at least 2 FLOPs per parameter per encoder token
    # (the encoder sees >= buffer tokens), so a step is well above 6 * params_encoder * 16 tokens * 8 images
    assert res["tflop_per_step"] * 1e12 > 6 * 0.8e6 * 16 * 8
