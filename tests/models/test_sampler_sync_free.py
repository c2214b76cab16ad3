"""The MAR decoding step reads nothing back from the device and traces as one graph (issue 12); it decodes what the
former boolean-mask step decoded, bit for bit; compiled, it keeps one graph across the steps of a run."""

import sys
from pathlib import Path

import pytest
import torch
from benchmark.models.sampler import (
    cfg_scale,
    compile_decoding,
    decode_forward,
    decode_step,
    init_decoding,
    mask_len_at,
    sample_tokens,
)

from benchmark.perf import SyncDetector, count_syncs, graph_breaks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_sampler import text, tiny_backbone  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py


def old_decode_step(backbone, state, step, steps, cfg=1.0, cfg_schedule="linear", temperature=1.0, generator=None):
    """The former step (the mask read back, boolean-mask gathers, the encoder's tensor path, the head drawing its
    own noise), kept here as the reference the host-planned step must reproduce."""
    tokens, mask, n = state.tokens, state.mask, backbone.seq_len
    guided = state.guided
    tok_in, mask_in = (torch.cat([tokens, tokens]), torch.cat([mask, mask])) if guided else (tokens, mask)
    z = backbone.decode(backbone.encode(tok_in, mask_in), state.text, state.text_valid)
    n_masked = int(mask[0].sum())
    mask_len = mask_len_at(step, steps, n, n_masked)
    mask_next = torch.zeros_like(mask)
    mask_next.scatter_(1, state.orders[:, :mask_len], True)
    to_pred = mask if step == steps - 1 else mask & ~mask_next
    rows = torch.cat([to_pred, to_pred]) if guided else to_pred
    scale = cfg_scale(cfg, cfg_schedule, n, mask_len) if guided else None
    out = backbone.head.sample(z[rows], temperature=temperature, cfg=scale, generator=generator)
    if guided:
        out = out[: out.shape[0] // 2]
    tokens[to_pred] = out.to(tokens.dtype)
    state.mask = mask_next if step < steps - 1 else torch.zeros_like(mask)
    state.masked = None


@torch.no_grad()
def decode(bb, t5, null, steps, cfg, schedule="linear", seed=0, step_fn=decode_step, valid=None):
    g = torch.Generator().manual_seed(seed)
    state = init_decoding(bb, t5, null, cfg, g, valid, t5_null_valid=None if valid is None else valid[:1])
    for s in range(steps):
        step_fn(bb, state, s, steps, cfg, schedule, 0.9, g)
    return state.tokens


@pytest.mark.parametrize("cfg,schedule,steps", [(1.0, "linear", 6), (3.0, "linear", 8), (2.0, "constant", 80)])
def test_planned_step_reproduces_the_former_step_bit_for_bit(cfg, schedule, steps):
    """Same generator, same tokens: the draws are made in the same order and meet the same (row, position) rows.
    80 steps on 64 tokens: steps that reveal no token (MAR's clamp) included."""
    bb = tiny_backbone()
    t5, null = text(3)
    valid = torch.arange(32)[None] < torch.tensor([[7], [32], [19]])
    new = decode(bb, t5, null, steps, cfg, schedule, valid=valid)
    old = decode(bb, t5, null, steps, cfg, schedule, step_fn=old_decode_step, valid=valid)
    assert torch.equal(new, old)
    assert not torch.equal(new, decode(bb, t5, null, steps, cfg, schedule, seed=1, valid=valid))


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_decoding_step_has_no_host_sync_and_no_graph_break(cfg):
    """Every step of a run (the host plan, the draws, encoder, decoder, head loop): no op that reads a device
    value; the step's device part traces as one graph. The former step is flagged: the detector can fail."""
    bb = tiny_backbone()
    t5, null = text(2)
    steps = 8
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        state = init_decoding(bb, t5, null, cfg, g)
        for s in range(steps):
            n, ops = count_syncs(lambda s=s: decode_step(bb, state, s, steps, cfg, "linear", 1.0, g))
            assert n == 0, (s, dict(ops))
            if s == 3:  # mid-run: visible and revealed tokens both present
                masked = state.masked
                keep = state.orders[:, masked:].sort(1).values
                reveal = state.orders[:, mask_len_at(4, steps, 64, masked):masked].sort(1).values
                noise = bb.head.draw_sample_noise(reveal.numel(), torch.device("cpu"), g)
                scale = torch.tensor(2.0) if cfg != 1.0 else None
                breaks, reasons = graph_breaks(decode_forward, bb, state.tokens, keep, reveal, state.text,
                                               state.text_valid, scale, 1.0, noise)
                assert breaks == 0, reasons
        old = init_decoding(bb, t5, null, cfg, torch.Generator().manual_seed(0))
        with SyncDetector() as d:
            old_decode_step(bb, old, 0, steps, cfg, "linear", 1.0, g)
        assert d.count > 0 and any("bool" in op or "local_scalar" in op for op in d.ops), dict(d.ops)
        with SyncDetector() as d:  # the encoder's unplanned path (a mask tensor) reads the longest row back
            bb.encode(state.tokens, torch.rand(2, 64) < 0.5)
        assert d.count > 0


def test_compiled_decoding_does_not_recompile_across_steps():
    """One sampling run compiles a few graphs (no visible token at step 0, one revealed token late in the run: sizes
    0 and 1 are specialised); a second run with other orders and prompts recompiles nothing."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    bb = tiny_backbone()
    compile_decoding(bb, backend="eager")
    t5, null = text(2)
    decode(bb, t5, null, 16, 3.0, seed=0)  # warm-up: every size class of the run
    warm = counters["stats"]["unique_graphs"]
    assert 1 <= warm <= 4, warm  # not one graph per step (16)
    with torch._dynamo.config.patch(error_on_recompile=True):
        decode(bb, *text(2, seed=5), 16, 3.0, seed=1)
    assert counters["stats"]["unique_graphs"] == warm and not counters["graph_break"]
    torch._dynamo.reset()


def test_compiled_decoding_matches_eager():
    """aot_eager (the graphs inductor would receive) vs eager, same generator: tokens within 1e-4 absolute (tokens
    are O(1); AOTAutograd's decompositions may reorder float sums, the draws are the same numbers)."""
    import torch._dynamo

    torch._dynamo.reset()
    bb = tiny_backbone()
    t5, null = text(2)
    eager = sample_tokens(bb, t5, null, steps=6, cfg=3.0, generator=torch.Generator().manual_seed(2))
    compile_decoding(bb, backend="aot_eager")
    compiled = sample_tokens(bb, t5, null, steps=6, cfg=3.0, generator=torch.Generator().manual_seed(2))
    assert eager.abs().max() > 0.1
    assert torch.allclose(compiled, eager, rtol=0, atol=1e-4), (compiled - eager).abs().max()
    torch._dynamo.reset()
