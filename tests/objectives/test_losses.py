"""InfoNCE and the gamma/phi sample selection against direct per-sample loops."""

import math

import pytest
import torch
import torch.nn.functional as F
from benchmark.objectives.base import Masking, contrastive_loss, diffusion_rows


def loop_infonce(img, txt, scale, participate, mode):
    """Eq. 2 written sample by sample: -log softmax over the allowed candidates, averaged over P."""
    n = len(img)
    total, count = 0.0, 0
    for i in range(n):
        if not participate[i]:
            continue
        # image -> text: candidates are all texts (official) or the participating texts (symmetric)
        cands = [k for k in range(n) if mode == "official" or participate[k]]
        num = math.exp(scale * float(img[i] @ txt[i]))
        den = sum(math.exp(scale * float(img[i] @ txt[k])) for k in cands)
        l_i = -math.log(num / den)
        # text -> image: candidates are the participating images
        cands = [k for k in range(n) if participate[k]]
        num = math.exp(scale * float(txt[i] @ img[i]))
        den = sum(math.exp(scale * float(txt[i] @ img[k])) for k in cands)
        l_t = -math.log(num / den)
        total += (l_i + l_t) / 2
        count += 1
    return total / count


@pytest.mark.parametrize("mode", ["official", "symmetric"])
def test_infonce_matches_loop(mode):
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(9, 16, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(9, 16, generator=g, dtype=torch.float64), dim=-1)
    participate = torch.tensor([1, 1, 0, 1, 0, 1, 1, 1, 0], dtype=torch.bool)
    scale = torch.tensor(1 / 0.07)
    ours = contrastive_loss(img, txt, scale, participate, mode).item()
    assert ours == pytest.approx(loop_infonce(img, txt, 1 / 0.07, participate.tolist(), mode), rel=1e-5)


def test_infonce_all_participate_is_clip_loss():
    g = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    logits = 10.0 * img @ txt.t()
    labels = torch.arange(6)
    ref = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    assert contrastive_loss(img, txt, torch.tensor(10.0)).item() == pytest.approx(ref.item(), rel=1e-5)


def test_learnable_temperature_gets_gradient():
    g = torch.Generator().manual_seed(2)
    img = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    logit_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    contrastive_loss(img, txt, logit_scale.exp()).backward()
    assert logit_scale.grad is not None and logit_scale.grad.abs() > 0


def test_gamma_selection_per_group():
    # 3 groups of 2: masked fractions 0.25, 0.5, 0.75 -> gamma 0.5 keeps groups 1 and 2
    mask = torch.zeros(6, 8, dtype=torch.bool)
    mask[0:2, :2] = True
    mask[2:4, :4] = True
    mask[4:6, :6] = True
    m = Masking(mask, torch.tensor([0.25, 0.25, 0.5, 0.5, 0.75, 0.75]), torch.tensor([0, 0, 1, 1, 2, 2]), 3)
    rows = diffusion_rows(m, 0.5)
    assert rows[:2].sum() == 0
    assert torch.equal(rows[2:], mask[2:])  # only the masked tokens of the selected samples
    assert diffusion_rows(m, 0.8).sum() == 0
    # phi: the CLIP loss takes samples with masked fraction <= 0.75 (here all), <= 0.5 (first four)
    assert (m.masked_fraction <= 0.5).tolist() == [True, True, True, True, False, False]


def test_diffusion_loss_reads_only_masked_tokens_of_selected_groups():
    from benchmark.models.backbone import Backbone
    from benchmark.objectives.base import diffusion_loss

    from benchmark.config import build_config

    cfg = build_config("dream", overrides={"model.dropout": "0"})
    torch.manual_seed(0)
    bb = Backbone(cfg.model, 64, 48)
    for p in bb.head.parameters():  # a non-trivial head (it is zero at init)
        torch.nn.init.normal_(p, std=0.05)
    mask = torch.zeros(4, 64, dtype=torch.bool)
    mask[:2, :16] = True  # group 0: 25% masked -> below gamma = 0.5
    mask[2:, :40] = True  # group 1: 62.5% masked -> selected
    m = Masking(mask, torch.tensor([0.25, 0.25, 0.625, 0.625]), torch.tensor([0, 0, 1, 1]), 2)
    z, target = torch.randn(4, 64, 128), torch.randn(4, 64, 48)
    m = m.plan(0.5, None, bb.cfg.diffusion_batch_mul)  # the host plan: tokens and weights of the γ-gated groups
    base = diffusion_loss(bb, z, target, m, torch.Generator().manual_seed(1))
    other = target.clone()
    other[:2] = torch.randn(2, 64, 48)  # unselected group
    other[2:, 40:] = torch.randn(2, 24, 48)  # visible tokens of the selected group
    same = diffusion_loss(bb, z, other, m, torch.Generator().manual_seed(1))
    assert torch.equal(base, same)
    other[2, 0] += 1.0  # a masked token of the selected group does change it
    assert not torch.equal(base, diffusion_loss(bb, z, other, m, torch.Generator().manual_seed(1)))
    # normalised by both groups: half of the selected group's token mean (4 draws per token)
    g = torch.Generator().manual_seed(1)
    rows = mask & torch.tensor([False, False, True, True])[:, None]
    per = bb.head(target[rows].repeat(4, 1), z[rows].repeat(4, 1), generator=g)
    assert base.item() == pytest.approx(per.mean().item() / 2, rel=1e-5)


def _padded_text(b: int, t: int = 8, d: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t5, null = torch.randn(b, t, d, generator=g), torch.randn(1, t, d, generator=g)
    valid = torch.arange(t)[None] < torch.tensor([5, 3, 8, 6][:b])[:, None]
    null_valid = torch.arange(t)[None] < 1  # T5(""): its </s> only
    return t5, valid, null, null_valid


def test_dropped_caption_uses_the_null_captions_padding_mask():
    """model.text_pad_mask: a caption dropped for CFG is the null condition with the null's own mask, exactly as if
    the empty caption had been the input (and as the sampler's null half sees it)."""
    from benchmark.models.backbone import Backbone
    from benchmark.objectives.base import Batch, generative_loss

    from benchmark.config import build_config

    cfg = build_config("dream", overrides={"model.width": "32", "model.depth": "2", "model.heads": "2",
                                           "model.buffer_tokens": "2", "model.head_width": "32", "model.head_depth": "1",
                                           "model.aligner_depth": "1", "model.t5_dim": "64", "model.text_len": "8",
                                           "model.text_pad_mask": "true"})
    torch.manual_seed(0)
    bb = Backbone(cfg.model, 16, 12)
    for lin in (bb.head.net.final.linear, bb.head.net.final.ada[-1]):  # zero-init: the loss would not depend on z
        torch.nn.init.normal_(lin.weight, std=0.1)
    t5, valid, null, null_valid = _padded_text(4)
    tokens = torch.randn(4, 16, 12, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    mask = Masking(torch.ones(4, 16, dtype=torch.bool), torch.ones(4), torch.zeros(4, dtype=torch.long), 1)
    drop = torch.tensor([True, False, True, False])

    def loss(batch):
        torch.manual_seed(5)  # the same diffusion (t, noise) draws for every call
        planned = mask.plan(0.5, None, bb.cfg.diffusion_batch_mul)
        return generative_loss(bb, Batch(tokens=tokens, t5_null=null, t5_null_valid=null_valid, **batch),
                               bb.encode(tokens, planned), planned).item()

    dropped = loss({"t5": t5, "t5_valid": valid, "caption_drop": drop})
    explicit = loss({"t5": torch.where(drop[:, None, None], null, t5),
                     "t5_valid": torch.where(drop[:, None], null_valid, valid)})
    assert dropped == pytest.approx(explicit, rel=1e-6)
    kept_mask = loss({"t5": torch.where(drop[:, None, None], null, t5), "t5_valid": valid})
    assert abs(kept_mask - explicit) > 1e-4  # the mask matters, so the check above can fail
