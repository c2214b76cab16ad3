"""train.compile: one graph across mask ratios (no recompile after warm-up) and the same losses as eager.

Dynamo's guards decide recompiles whatever the backend, so the recompile test uses the ``eager`` backend (seconds);
the loss comparison uses ``aot_eager`` (AOTAutograd's traced forward and backward, the graphs inductor would
receive). Inductor itself on CPU compiles for ~40 CPU-s: `bench train --compile` measures it."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "objectives"))
from test_sync_free import masking, setup  # noqa: E402

from benchmark.train import compile_model  # noqa: E402


def run(comps, batch, ratio: float, seed: int, progress: float = 1.0) -> dict[str, torch.Tensor]:
    mask = comps.objective.plan(masking(comps.backbone.seq_len, ratio, seed), comps.backbone)
    out = comps.model(batch, mask, progress)
    out["total"].backward()
    return {k: v.detach() for k, v in out.items()}


@pytest.mark.parametrize("objective", ["dream", "mar"])
def test_no_recompile_across_visible_counts(objective, one_thread):
    import torch._dynamo

    torch._dynamo.reset()
    comps, batch = setup(objective)
    compile_model(comps.model, backend="eager")
    run(comps, batch, 0.6, 1)  # warm-up: the one compilation
    seen = set()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for ratio, seed in [(0.55, 2), (0.62, 3), (0.7, 4)]:  # three other visible counts, other progress values
            mask = comps.objective.plan(masking(comps.backbone.seq_len, ratio, seed), comps.backbone)
            seen.add(mask.keep.shape[1])
            run(comps, batch, ratio, seed, progress=ratio)
    assert len(seen) == 3
    torch._dynamo.reset()


def test_compiled_losses_match_eager(one_thread):
    """DREAM at three ratios (the CLIP and diffusion branches): compiled (aot_eager) vs eager losses and gradients,
    from the same diffusion draws (they are made outside the compiled region). Tolerance: 1e-5 relative on losses,
    1e-4 on gradients (AOTAutograd's decompositions reorder float sums)."""
    import torch._dynamo

    torch._dynamo.reset()
    comps, batch = setup("dream")
    model = comps.model
    eager = []
    for ratio, seed in [(0.3, 1), (0.6, 2), (0.9, 3)]:
        torch.manual_seed(seed)
        model.zero_grad(set_to_none=True)
        eager.append((run(comps, batch, ratio, seed), {n: p.grad.clone() for n, p in model.named_parameters()
                                                        if p.grad is not None}))
    compile_model(model, backend="aot_eager")
    for (ratio, seed), (losses, grads) in zip([(0.3, 1), (0.6, 2), (0.9, 3)], eager):
        torch.manual_seed(seed)
        model.zero_grad(set_to_none=True)
        out = run(comps, batch, ratio, seed)
        for k, v in losses.items():
            assert torch.allclose(out[k], v, rtol=1e-5, atol=1e-7), (ratio, k, out[k], v)
        assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
        for n, g in grads.items():
            assert torch.allclose(model.get_parameter(n).grad, g, rtol=1e-4, atol=1e-6), (ratio, n)
    torch._dynamo.reset()
