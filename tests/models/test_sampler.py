"""MAR decoding: the cosine schedule (closed form), the CFG schedules inside the loop, one [cond; null] batch."""

import math

import pytest
import torch
from benchmark.models.backbone import Backbone
from benchmark.models.sampler import cfg_scale, mask_len_at, sample_tokens, tokens_per_step

from benchmark.config import build_config

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py


def tiny_backbone(seed: int = 0) -> Backbone:
    cfg = build_config("dream", overrides={"model.width": "32", "model.depth": "2", "model.heads": "2",
                                           "model.buffer_tokens": "2", "model.head_width": "32", "model.head_depth": "1",
                                           "model.aligner_depth": "1", "model.sample_steps": "4"})
    torch.manual_seed(seed)
    return Backbone(cfg.model, 64, 48).eval()


def text(b: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 32, 64, generator=g), torch.randn(1, 32, 64, generator=g)


@pytest.mark.parametrize("steps,seq_len", [(64, 256), (64, 64), (32, 64), (8, 256), (1, 16), (16, 16)])
def test_cosine_schedule_reveals_every_token_once(steps, seq_len):
    per = tokens_per_step(steps, seq_len)
    assert len(per) == steps and sum(per) == seq_len and min(per) >= 1
    masked = seq_len - torch.tensor(per).cumsum(0)
    ratios = torch.cat([torch.tensor([1.0]), masked / seq_len])
    assert bool((ratios[1:] <= ratios[:-1]).all()) and ratios[-1] == 0  # monotone 1 -> 0
    # where neither clamp binds, the count is MAR's closed form floor(L cos(pi/2 (s+1)/S))
    for s in range(steps - 1):
        m = math.floor(seq_len * math.cos(math.pi / 2 * (s + 1) / steps))
        if 1 <= m < int(masked[s - 1]) - 1 if s else m < seq_len - 1:
            assert int(masked[s]) == m


def test_mask_len_clamps():
    assert mask_len_at(0, 64, 256, 256) == 255  # cos(pi/128) * 256 = 255.9 -> at least one token revealed
    assert mask_len_at(62, 64, 256, 3) == 2  # floor(256 cos(63/64 pi/2)) = 6 > n_masked - 1
    assert mask_len_at(63, 64, 256, 1) == 1


def test_cfg_schedule_values():
    w, n = 4.0, 256
    assert cfg_scale(w, "linear", n, n) == 1.0  # nothing decoded: unguided
    assert cfg_scale(w, "linear", n, n // 2) == pytest.approx(1 + (w - 1) / 2)
    assert cfg_scale(w, "linear", n, 0) == w
    assert all(cfg_scale(w, "constant", n, m) == w for m in (n, n // 2, 0))


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_decoding_loop_guides_one_batch(schedule, monkeypatch):
    """Inside the loop: the head sees [cond; null] rows in one call, with the scale of the schedule at the
    first, middle and last step; every token ends up written."""
    bb = tiny_backbone()
    calls = []
    real = bb.head.sample

    def spy(z, temperature=1.0, cfg=1.0, generator=None):
        calls.append((z.shape[0], cfg))
        return real(z, temperature=temperature, cfg=cfg, generator=generator)

    monkeypatch.setattr(bb.head, "sample", spy)
    t5, null = text(3)
    steps, w, n = 8, 3.0, 64
    tokens = sample_tokens(bb, t5, null, steps=steps, cfg=w, cfg_schedule=schedule, generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (3, n, 48) and bool((tokens.abs().sum(-1) > 0).all())
    per = tokens_per_step(steps, n)
    assert [c[0] for c in calls] == [2 * 3 * k for k in per]  # cond and null halves in one batch
    masked_after = (n - torch.tensor(per).cumsum(0)).clamp_min(1)  # MAR scales the last step with mask_len 1
    for s in (0, steps // 2, steps - 1):
        want = w if schedule == "constant" else 1 + (w - 1) * (n - int(masked_after[s])) / n
        assert calls[s][1] == pytest.approx(want)


def test_unguided_batch_and_determinism():
    bb = tiny_backbone()
    t5, null = text(2)
    a = sample_tokens(bb, t5, null, steps=4, cfg=1.0, generator=torch.Generator().manual_seed(5))
    b = sample_tokens(bb, t5, null, steps=4, cfg=1.0, generator=torch.Generator().manual_seed(5))
    c = sample_tokens(bb, t5, null, steps=4, cfg=1.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_null_half_uses_the_null_captions_padding_mask():
    """With a padding mask the guided null half attends what a dropped caption attends in training: T5("")'s mask."""
    from benchmark.models.sampler import init_decoding

    bb = tiny_backbone()
    g = torch.Generator().manual_seed(3)
    t5, null = torch.randn(2, 32, 64, generator=g), torch.randn(1, 32, 64, generator=g)
    valid = torch.arange(32)[None] < torch.tensor([[9], [20]])
    null_valid = torch.arange(32)[None] < 1
    with torch.no_grad():
        state = init_decoding(bb, t5, null, cfg=3.0, generator=g, t5_valid=valid, t5_null_valid=null_valid)
        assert torch.equal(state.text_valid, torch.cat([valid, null_valid.expand(2, -1)]))
        ref = bb.align_text(null.expand(2, -1, -1), null_valid.expand(2, -1))
        assert torch.allclose(state.text[2:], ref, atol=1e-6)


@pytest.fixture(scope="module")
def memorised():
    """A small DREAM model trained by the real step (prepare_batch, masking, objective losses) to memorise two
    captioned scenes with large objects: ~10 s on one core."""
    from benchmark import registry
    from benchmark.data.synthetic import Scene, SceneObject, caption, render
    from benchmark.train import build, param_groups, prepare_batch, sample_masking

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    scenes = [Scene(SceneObject("square", "red", "large", "top left", 0.3, 0.3, 0.3, 1.0, 1.5), None, "navy"),
              Scene(SceneObject("circle", "yellow", "large", "bottom right", 0.68, 0.68, 0.3, 1.0, 1.5), None, "gray")]
    r = render(scenes, 16)
    images, captions = r["image"].float() / 127.5 - 1, [caption(s) for s in scenes]
    over = {"model.image_size": 16, "model.patch_size": 4, "model.width": 64, "model.depth": 2, "model.heads": 2,
            "model.buffer_tokens": 2, "model.head_width": 64, "model.head_depth": 2, "model.aligner_depth": 1,
            "model.sample_steps": 20, "objective.clip_weight": 0.0, "objective.gamma": 0.0,
            "schedule.name": "uni", "schedule.low": 0.5, "schedule.group_size": 1, "train.caption_dropout": 0.0}
    cfg = build_config("dream", overrides=over)
    torch.manual_seed(0)
    comps = build(cfg, torch.device("cpu"))
    raw = {"images": images.repeat(4, 1, 1, 1), "captions": captions * 4}
    sched = registry.schedules.get("uni")(cfg.schedule)
    opt = torch.optim.AdamW(param_groups(comps.model, 0.0), lr=3e-3)
    for step in range(200):
        out = comps.model(prepare_batch(comps, raw, step), sample_masking(cfg, sched, 8, 16, 1.0, step, 0, comps.device), 1.0)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
    comps.model.eval()
    yield comps, cfg, images, r["seg"] > 0, captions
    torch.set_num_threads(n)


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_sampler_reproduces_what_the_model_memorised(memorised, cfg_scale):
    """Bug vs budget (issue 15): after memorising two scenes, MAR decoding + the diffusion head + unpatchify give
    back each caption's own scene, objects included: the sampling path loses nothing the model has learned."""
    comps, cfg, images, seg, captions = memorised
    t5, _ = comps.t5.encode(captions)
    with torch.no_grad():
        tokens = sample_tokens(comps.backbone, t5, comps.t5_null, steps=4, cfg=cfg_scale, temperature=1.0,
                               generator=torch.Generator().manual_seed(0))
    out = comps.tokenizer.decode(tokens)
    for i in range(2):
        own, other = (out[i] - images[i]).abs().mean(), (out[i] - images[1 - i]).abs().mean()
        obj = (out[i] - images[i]).abs().mean(0)[seg[i]].mean()  # error on the object's pixels
        flat = (images[i][:, ~seg[i]].mean(1)[:, None] - images[i][:, seg[i]]).abs().mean()  # a background-only image's
        assert own < 0.75 * other, (i, own, other)
        assert obj < 0.6 * flat, (i, obj, flat)


def test_sample_grid_shows_objects_not_one_flat_colour(memorised, tmp_path):
    """The grid the default run writes (samples.png): every image has object pixels, not only its background."""
    import numpy as np
    from PIL import Image

    from benchmark.run import write_sample_grid

    comps, cfg, images, seg, captions = memorised
    write_sample_grid(comps, cfg, tmp_path / "samples.png", captions)
    grid = torch.from_numpy(np.array(Image.open(tmp_path / "samples.png").convert("RGB"))).permute(2, 0, 1).float()
    for i in range(2):  # nrow = 1: images stacked vertically with 1 px padding
        img = grid[:, 1 + 17 * i:17 + 17 * i, 1:17]
        median = img.flatten(1).median(dim=1).values[:, None, None]
        far = (img - median).norm(dim=0) > 60  # pixels far from the image's dominant colour
        assert far.float().mean() > 0.15, (i, far.float().mean())  # the scenes' objects cover ~30 % of the pixels
        assert ((far == seg[i]).float().mean()) > 0.8  # ... and sit where the caption put them
