"""Semantically Aligned Decoding: K = 1 is plain sampling bit for bit, the kept candidate is the per-prompt argmax,
the NFE accounting of Table 6 (counted by instrumenting the encoder), the model's own scorer, the external reranker."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from benchmark.models.sad import ExternalClip, external_scorer, nfe, sample_candidates, select_step_for_budget, self_scorer
from benchmark.models.sampler import sample_tokens

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_sampler import text, tiny_backbone  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_k1_equals_plain_sampling(cfg):
    bb = tiny_backbone()
    t5, null = text(3)
    plain = sample_tokens(bb, t5, null, steps=6, cfg=cfg, generator=torch.Generator().manual_seed(7))
    res = sample_candidates(bb, t5, null, 1, 3, None, steps=6, cfg=cfg, generator=torch.Generator().manual_seed(7))
    assert torch.equal(res.tokens, plain) and res.nfe == 6 and res.score_passes == 0


@pytest.mark.parametrize("select_step", [2, 6])
def test_kept_candidate_is_the_per_prompt_argmax(select_step):
    """The scorer sees all K candidates; the result continues exactly the argmax candidate of each prompt: the
    tokens decoded before the select step are never changed afterwards (at T = S: the whole image)."""
    bb = tiny_backbone()
    b, k, steps = 3, 4, 6
    t5, null = text(b)
    seen = {}
    g = torch.Generator().manual_seed(11)
    fixed = torch.randn(k * b, generator=g)

    def score(state):
        seen["tokens"], seen["mask"] = state.tokens.clone(), state.mask.clone()
        return fixed

    res = sample_candidates(bb, t5, null, k, select_step, score, steps=steps, cfg=2.0,
                            generator=torch.Generator().manual_seed(3))
    want = fixed.reshape(k, b).argmax(0)
    assert torch.equal(res.chosen, want) and torch.equal(res.scores, fixed.reshape(k, b))
    cand = seen["tokens"].reshape(k, b, *seen["tokens"].shape[1:])
    decoded = ~seen["mask"].reshape(k, b, -1)
    assert bool(decoded.any())
    for i in range(b):
        d = decoded[want[i], i]
        assert torch.equal(res.tokens[i][d], cand[want[i], i][d])
        others = [j for j in range(k) if j != want[i]]
        assert any(not torch.equal(res.tokens[i][d], cand[j, i][d]) for j in others)  # candidates differ
    # candidates share the prompt's order (the released code): identical masks at the select step
    m = seen["mask"].reshape(k, b, -1)
    assert all(torch.equal(m[0], m[j]) for j in range(k))


# (K, budget, decoding steps S, select step T expected, rerank) of Table 6 / Table 17 under K*T + (S - T) = NFE
TABLE6 = [(1, 64, 64, 64, "self"), (1, 128, 128, 128, "self"), (2, 128, 64, 64, "clip"), (5, 128, 64, 16, "self"),
          (9, 128, 64, 8, "self"), (17, 128, 64, 4, "self")]


@pytest.mark.parametrize("k,budget,steps,t,rerank", TABLE6)
def test_nfe_accounting_of_table6(k, budget, steps, t, rerank):
    if rerank == "self":
        assert select_step_for_budget(k, budget, steps) == t
    assert nfe(k, t, steps) == budget
    assert t / steps == {1: 1.0, 2: 1.0, 5: 0.25, 9: 0.125, 17: 0.0625}[k]  # 9 -> "12.5 %" of the steps


def test_nfe_counted_by_the_encoder():
    """Count encoder passes per image (rows / prompts, the CFG half not counted twice) while decoding."""
    bb = tiny_backbone()
    b = 2
    t5, null = text(b)
    rows = []
    real = bb.encode

    def counting(tokens, mask=None, **kw):
        rows.append(tokens.shape[0])
        return real(tokens, mask, **kw)

    bb.encode = counting
    for k, budget, steps, t in [(3, 24, 8, 8), (5, 16, 8, 2), (1, 8, 8, 8)]:
        rows.clear()
        res = sample_candidates(bb, t5, null, k, t, (lambda s: torch.zeros(s.tokens.shape[0])) if k > 1 else None,
                                steps=steps, cfg=2.0, generator=torch.Generator().manual_seed(0))
        assert sum(rows) / (2 * b) == res.nfe == budget == nfe(k, t, steps)


def test_budget_without_integer_select_step_is_an_error():
    from benchmark.config import ConfigError

    with pytest.raises(ConfigError):
        select_step_for_budget(4, 128, 64)  # 64 / 3 is not an integer
    with pytest.raises(ConfigError):
        select_step_for_budget(1, 128, 64)


def test_self_scorer_is_the_clip_loss_embedding():
    """Score = <normalised projection of the pooled encoder output of the partial canvas, CLIP-text embedding>."""
    from benchmark.objectives.dream import DREAM

    from benchmark.config import build_config

    bb = tiny_backbone()
    cfg = build_config("dream", overrides={"model.width": "32", "model.depth": "2", "model.heads": "2",
                                           "objective.clip_text_width": "32",
                                           "objective.clip_text_layers": "1", "objective.clip_text_heads": "2",
                                           "objective.proj_hidden": "32", "objective.embed_dim": "16",
                                           "objective.clip_context": "32"})
    obj = DREAM(cfg.objective, bb)
    obj.train()  # the scorer must use eval-mode BatchNorm anyway
    prompts = ["a red circle", "a blue square"]
    seen = {}
    score = self_scorer(bb, obj, prompts)

    def spy(state):
        seen["s"] = score(state)
        seen["state"] = (state.tokens.clone(), state.mask.clone())
        return seen["s"]

    t5, null = text(2)
    sample_candidates(bb, t5, null, 3, 2, spy, steps=4, cfg=1.0, generator=torch.Generator().manual_seed(0))
    tokens, mask = seen["state"]
    assert obj.clip.training  # the scorer restored the mode it found
    obj.eval()
    with torch.no_grad():
        pooled = bb.encode(tokens, mask).pool("all")
        img = F.normalize(obj.clip.image_proj(pooled), dim=-1)
        txt = F.normalize(obj.clip.text(obj.clip.tokenizer(prompts)), dim=-1).repeat(3, 1)
    assert torch.allclose(seen["s"], (img * txt).sum(-1), atol=1e-5)


def tiny_open_clip():
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(embed_dim=16, vision_cfg={"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                                     "head_width": 16},
                           text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1})
    return ExternalClip("tiny-random", model=model)


def test_external_reranker_keeps_the_best_finished_image():
    bb = tiny_backbone()
    clip = tiny_open_clip()
    prompts = ["a red circle", "a green cross"]
    t5, null = text(2)

    def detok(tokens):  # 64 tokens x 48 = 4x4 patches of a 32x32 RGB image
        from benchmark.models.tokenizer import unpatchify

        return unpatchify(tokens, 4, 3, 8, 8).clamp(-1, 1)

    k = 3
    seen = {}
    score = external_scorer(clip, detok, prompts)

    def spy(state):
        seen["tokens"] = state.tokens.clone()
        return score(state)

    res = sample_candidates(bb, t5, null, k, 4, spy, steps=4, cfg=1.0, generator=torch.Generator().manual_seed(0))
    imgs = detok(seen["tokens"])
    cos = torch.stack([clip.cosine(imgs[j * 2:(j + 1) * 2], prompts) for j in range(k)])  # [K, B], independent path
    assert torch.equal(res.chosen, cos.argmax(0)) and res.nfe == k * 4 and res.score_passes == k
    for i in range(2):
        assert torch.equal(res.tokens[i], seen["tokens"][res.chosen[i] * 2 + i])


def test_external_clip_needs_local_weights(monkeypatch):
    monkeypatch.delenv("DREAM_BENCH_CLIP", raising=False)
    with pytest.raises(FileNotFoundError, match="eval.clip_path"):
        ExternalClip("ViT-L-14", "")
