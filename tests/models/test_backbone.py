"""Backbone contracts: the encoder sees only visible tokens, padding is exact, sizes match the paper."""

import pytest
import torch
from benchmark.models.backbone import Backbone

from benchmark.config import PAPER_ENCODER_PARAMS, PAPER_PARAMS, build_config


def tiny_backbone(**over):
    cfg = build_config("dream", overrides={"model.dropout": "0", **over})
    torch.manual_seed(0)
    return Backbone(cfg.model, 64, 48).eval(), cfg


def test_encoder_ignores_masked_tokens():
    bb, _ = tiny_backbone()
    x = torch.randn(2, 64, 48)
    mask = torch.rand(2, 64).argsort(1) < 40  # 40 masked per row
    y = x.clone()
    y[mask] = torch.randn(int(mask.sum()), 48)  # change only masked tokens
    a, b = bb.encode(x, mask), bb.encode(y, mask)
    assert a.tokens.shape == (2, 16 + 24, 128)
    assert torch.allclose(a.tokens, b.tokens, atol=1e-6)
    z = torch.randn(2, 64, 48)
    z[mask] = x[mask]  # change only visible tokens: the output must change
    assert not torch.allclose(bb.encode(z, mask).tokens, a.tokens, atol=1e-3)


def test_padded_rows_equal_separate_rows():
    """Per-sample ratios: a batch with different visible counts (key-padding mask) gives each row the
    output it gets alone."""
    bb, _ = tiny_backbone()
    x = torch.randn(3, 64, 48)
    mask = torch.zeros(3, 64, dtype=torch.bool)
    mask[0, :10] = True
    mask[1, :50] = True
    mask[2, 5:64] = True
    t5 = torch.randn(3, 32, 64)
    enc = bb.encode(x, mask, return_layers=(2,))
    text = bb.align_text(t5)
    z = bb.decode(enc, text)
    for i in range(3):
        alone = bb.encode(x[i:i + 1], mask[i:i + 1])
        n = 16 + int((~mask[i]).sum())
        assert torch.allclose(enc.tokens[i, :n], alone.tokens[0], atol=1e-5)
        assert torch.allclose(enc.pool("all")[i], alone.pool("all")[0], atol=1e-5)
        z_alone = bb.decode(alone, bb.align_text(t5[i:i + 1]))
        assert torch.allclose(z[i], z_alone[0], atol=1e-5)
    assert enc.layers[2].shape == enc.tokens.shape


def test_pool_variants():
    bb, _ = tiny_backbone()
    enc = bb.encode(torch.randn(2, 64, 48))
    assert torch.allclose(enc.pool("buffer"), enc.tokens[:, :16].mean(1), atol=1e-6)
    assert torch.allclose(enc.pool("image"), enc.tokens[:, 16:].mean(1), atol=1e-6)
    assert torch.allclose(enc.pool("all"), enc.tokens.mean(1), atol=1e-6)


def test_caption_dropout_null_condition():
    bb, _ = tiny_backbone(**{"model.null_text": "learned"})
    t5 = torch.randn(3, 32, 64)
    out = bb.condition(t5, torch.tensor([True, False, True]))
    assert torch.equal(out[1], t5[1])
    assert torch.allclose(out[0], bb.null_text[0].expand(32, -1)) and torch.equal(out[0], out[2])


@pytest.mark.parametrize("preset", ["L", "H", "G"])
def test_parameter_counts_match_the_paper(preset):
    from benchmark.cli import count_params

    c = count_params(preset)
    assert abs(c["backbone"] - PAPER_PARAMS[preset]) / PAPER_PARAMS[preset] < 0.10, c
    if preset in PAPER_ENCODER_PARAMS:
        assert abs(c["encoder"] - PAPER_ENCODER_PARAMS[preset]) / PAPER_ENCODER_PARAMS[preset] < 0.10
