"""Tokenizers and text encoders through their real loading code, on tiny weights written by the test."""

import pytest
import torch
from benchmark.models.tokenizer import PixelTokenizer, VAETokenizer, patchify, unpatchify


def test_patchify_is_mar_layout_and_invertible():
    x = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4, 4)
    t = patchify(x, 2)
    assert t.shape == (2, 4, 16)
    # token 0 holds the top-left 2x2 block, channel-major: index c*4 + i*2 + j
    assert t[0, 0, 1 * 4 + 1 * 2 + 0].item() == x[0, 1, 1, 0].item()
    assert torch.equal(unpatchify(t, 2, 4, 2, 2), x)
    pix = PixelTokenizer(32, 4)
    img = torch.rand(3, 3, 32, 32) * 2 - 1
    assert pix.encode(img).shape == (3, 64, 48) and torch.equal(pix.decode(pix.encode(img)), img)


def test_vae_wrapper_loads_a_local_diffusers_folder(tmp_path):
    from diffusers import AutoencoderKL

    # a tiny AutoencoderKL with the kl-f8 topology (3 downsamplings -> factor 8, 4 latent channels)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                        norm_num_groups=4, sample_size=64)
    vae.save_pretrained(tmp_path / "vae")
    tok = VAETokenizer(str(tmp_path / "vae"), patch_size=2, image_size=64)
    img = torch.rand(2, 3, 64, 64) * 2 - 1
    tokens = tok.encode(img)
    assert tokens.shape == (2, 16, 16) and tok.seq_len == 16 and tok.token_dim == 16  # 8x8x4 latent, 2x2 groups
    assert tok.decode(tokens).shape == (2, 3, 64, 64)
    moments = tok.encode_moments(img)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(tok.sample_moments(moments, g1), tok.sample_moments(moments, g2))


def test_missing_weights_name_the_path_and_the_fix(tmp_path):
    from benchmark.models.text import FrozenT5

    with pytest.raises(FileNotFoundError, match="stabilityai/sd-vae-ft-ema"):
        VAETokenizer(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="DREAM_BENCH_T5"):
        FrozenT5(str(tmp_path / "nope"))


def test_tiny_t5_and_clip_head():
    from benchmark.models.text import ClipHead, FrozenT5

    from benchmark.config import build_config
    from benchmark.data import cache_root
    from benchmark.data.text_models import synthetic_text_dir

    t5 = FrozenT5(str(synthetic_text_dir(cache_root())), max_length=32)
    emb, valid = t5.encode(["a large red circle at the top left on a gray background", ""])
    assert emb.shape == (2, 32, 64) and valid[0].sum() > valid[1].sum() == 1  # "" is just </s>
    cfg = build_config("dream").objective
    head = ClipHead(cfg, 128)
    ids = head.tokenizer(["a red circle", "a blue square"])
    assert ids.shape == (2, 32)
    e = head.embed_text(ids)
    assert e.shape == (2, 64) and torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert head.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)


@pytest.mark.parametrize("recipe", ["official", "paper"])
def test_clip_text_tower_init_follows_the_recipe(recipe):
    """official = the released code (MAR's xavier over every Linear, zero biases, token embedding at PyTorch's
    N(0, 1)); paper = open_clip/StableRep's init (token embedding N(0, 0.02), normal Linear weights)."""
    from benchmark.models.text import ClipHead

    from benchmark.config import build_config

    torch.manual_seed(0)
    head = ClipHead(build_config("dream", recipe=recipe).objective, 128)
    tok = head.text.token_embedding.weight
    fc = head.text.transformer.resblocks[0].mlp.c_fc
    bound = (6 / (fc.in_features + fc.out_features)) ** 0.5  # xavier-uniform's limit
    if recipe == "official":
        assert tok.std().item() == pytest.approx(1.0, rel=0.05)
        assert fc.weight.abs().max().item() <= bound and fc.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)
        assert float(fc.bias.detach().abs().max()) == 0.0
        lin = head.image_proj[0]  # the projection MLP is inside the released model too
        assert lin.weight.abs().max().item() <= (6 / (lin.in_features + lin.out_features)) ** 0.5
    else:
        assert tok.std().item() == pytest.approx(0.02, rel=0.05)
        assert fc.weight.std().item() == pytest.approx((2 * fc.in_features) ** -0.5, rel=0.05)


def test_clip_text_tower_is_causal_sdpa_and_equals_open_clips_masked_path():
    """The CLIP text tower attends through SDPA's is_causal (flash-eligible), not open_clip's float mask: same
    embeddings and gradients as open_clip's own path on the same parameters, and the same state dict keys."""
    import copy

    from benchmark.models.text import CausalSelfAttention, ClipHead

    from benchmark.config import build_config
    from benchmark.testing import small_overrides

    cfg = build_config("dream", preset="tiny", overrides=small_overrides("dream"))
    torch.manual_seed(0)
    head = ClipHead(cfg.objective, 64).train()
    assert head.text.attn_mask is None and all(isinstance(b.attn, CausalSelfAttention) for b in head.text.transformer.resblocks)
    ref = copy.deepcopy(head.text)
    for b in ref.transformer.resblocks:
        b.attn.__class__ = torch.nn.MultiheadAttention
    ref.attn_mask = ref.build_causal_mask()
    assert head.text.state_dict().keys() == ref.state_dict().keys()
    ids = head.tokenizer(["a red square", "a big blue circle on the left of a green background"])
    out, want = head.text(ids), ref(ids)
    assert torch.allclose(out, want, atol=1e-5), (out - want).abs().max()
    out.square().sum().backward()
    want.square().sum().backward()
    for (n, p), q in zip(head.text.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), n
    ids2 = ids.clone()
    ids2[:, 3] = 1000  # a later token changes the embeddings only from its position on: causal
    x, x2 = head.text._embeds(ids)[0], head.text._embeds(ids2)[0]
    y, y2 = head.text.transformer(x), head.text.transformer(x2)
    assert torch.equal(y[:, :3], y2[:, :3]) and not torch.equal(y[:, 3:], y2[:, 3:])
