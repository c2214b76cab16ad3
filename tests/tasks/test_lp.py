"""Linear probe: one LARS step by hand (MAE util/lars.py), the schedule, accumulation, both modes."""

import math

import pytest
import torch
from benchmark.tasks.lp import cosine_lr, fit_head, lars_param_groups, make_head, train_probe
from torch import nn


def test_one_lars_step_matches_the_mae_formula():
    from timm.optim import Lars

    torch.manual_seed(0)
    head = nn.Sequential(nn.BatchNorm1d(6, affine=False, eps=1e-6), nn.Linear(6, 4))
    x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
    w0, b0 = head[1].weight.detach().clone(), head[1].bias.detach().clone()
    opt = Lars(lars_param_groups(head), lr=0.7, momentum=0.9, weight_decay=0.0, trust_coeff=0.001)
    nn.functional.cross_entropy(head(x), y).backward()
    gw, gb = head[1].weight.grad.clone(), head[1].bias.grad.clone()
    opt.step()
    # MAE LARS: ndim > 1 -> dp = g * 0.001 * |p| / |g|; 1-D params (bias) -> plain; mu = dp at step 1; p -= lr mu
    q = 0.001 * w0.norm() / gw.norm()
    torch.testing.assert_close(head[1].weight.detach(), w0 - 0.7 * q * gw)
    torch.testing.assert_close(head[1].bias.detach(), b0 - 0.7 * gb)
    # second step: momentum buffer mu = 0.9 mu + dp
    opt.zero_grad()
    w1 = head[1].weight.detach().clone()
    nn.functional.cross_entropy(head(x), y).backward()
    gw2 = head[1].weight.grad.clone()
    opt.step()
    mu = 0.9 * q * gw + 0.001 * w1.norm() / gw2.norm() * gw2
    torch.testing.assert_close(head[1].weight.detach(), w1 - 0.7 * mu)


def test_cosine_schedule():
    assert cosine_lr(0, 100, 10, 1.0) == 0 and cosine_lr(5, 100, 10, 1.0) == 0.5
    assert cosine_lr(10, 100, 10, 1.0) == 1.0 and cosine_lr(100, 100, 10, 1.0) == pytest.approx(0)
    assert cosine_lr(55, 100, 10, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_accumulation_equals_the_full_batch_gradient_without_bn():
    """Micro-batches sum to the full-batch mean CE gradient (BN aside: its statistics are per micro-batch)."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    heads = []
    for micro in (0, 16):
        h = nn.Sequential(nn.Identity(), nn.Linear(8, 3))
        torch.manual_seed(1)
        nn.init.normal_(h[1].weight)
        fit_head(h, lambda e: [(x, y)], 1, 1, 64, 1.0, 0, micro)
        heads.append(h[1].weight.detach())
    torch.testing.assert_close(heads[0], heads[1])


def test_probe_learns_and_fails_on_noise():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (1200,), generator=g)
    noise = torch.randn(1200, 16, generator=g)
    head = train_probe(noise[:1000], y[:1000], 10, 10, 200, 32, 1)
    assert (head(noise[1000:]).argmax(1) == y[1000:]).float().mean() < 0.25
    x = nn.functional.one_hot(y, 16).float() + 0.1 * noise
    head = train_probe(x[:1000], y[:1000], 10, 30, 200, 32, 1)
    assert (head(x[1000:]).argmax(1) == y[1000:]).float().mean() > 0.95
    assert isinstance(make_head(5, 2, g)[0], nn.BatchNorm1d) and not make_head(5, 2, g)[0].affine


@pytest.mark.parametrize("mode", ["fast", "augmented"])
def test_lp_task_modes(mode):
    from benchmark.tasks.lp import LinearProbe

    from benchmark.config import build_config
    from benchmark.train import build

    over = {"model.width": 32, "model.depth": 4, "model.heads": 2, "model.buffer_tokens": 2, "objective.proj_hidden": 32,
            "objective.embed_dim": 16, "eval.n_probe_train": 256, "eval.n_probe_test": 128, "train.batch_size": 16,
            "data.n_train": 256, "eval.lp_epochs": 3, "eval.lp_batch": 128, "eval.lp_blr": 32, "eval.lp_mode": mode,
            "eval.lp_warmup_epochs": 1}
    cfg = build_config("clip", overrides={k: str(v) for k, v in over.items()})
    comps = build(cfg)
    task = LinearProbe()
    m = task.run(comps, cfg)
    assert 0 <= m["top1"] <= m["top5"] <= 100 and m["chance"] == pytest.approx(100 / 48)
    ex = task.extra()
    assert ex["mode"] == mode and ex["n_train"] == 256 and ex["n_test"] == 128 and ex["classes"] == 48
    assert ("RandomResizedCrop" in ex["augmentation"]) == (mode == "augmented")
