"""Masking schedules against scipy.stats.truncnorm moments (independent closed forms)."""

import numpy as np
import pytest
import torch
from benchmark.objectives.schedules import Cooldown, Fixed, NoMask, Uniform, Warmup, make_mask, truncated_normal
from benchmark.objectives.schedules import MaskingSettings as ScheduleConfig
from scipy import stats

N = 200_000


def moments(mu, sigma, low, high):
    a, b = (low - mu) / sigma, (high - mu) / sigma
    d = stats.truncnorm(a, b, loc=mu, scale=sigma)
    return d.mean(), d.std()


def check(sample, mu, sigma, low, high):
    m, s = moments(mu, sigma, low, high)
    assert sample.min() >= low and sample.max() <= high
    # standard error of the mean is s / sqrt(N) ~ 1e-3; 5e-3 leaves room without hiding a wrong law
    assert abs(sample.mean().item() - m) < 5e-3, (sample.mean().item(), m)
    assert abs(sample.std().item() - s) < 5e-3, (sample.std().item(), s)


@pytest.mark.parametrize("progress", [0.0, 18.0, 36.0, 47.5])
@pytest.mark.parametrize("sigma", [0.35, 0.45, 0.55])
def test_wm_matches_truncnorm(progress, sigma):
    cfg = ScheduleConfig(sigma=sigma, low=0.0, high=1.0, warmup_epochs=36)
    g = torch.Generator().manual_seed(0)
    mu = min(progress / 36, 1.0)
    check(Warmup(cfg).sample(N, progress, g), mu, sigma, 0.0, 1.0)


@pytest.mark.parametrize("progress", [0.0, 18.0, 36.0, 47.5])
def test_cd_matches_truncnorm(progress):
    cfg = ScheduleConfig(sigma=0.45, low=0.0, high=1.0, warmup_epochs=36)
    mu = max(1 - progress / 36, 0.0)
    check(Cooldown(cfg).sample(N, progress, torch.Generator().manual_seed(1)), mu, 0.45, 0.0, 1.0)


@pytest.mark.parametrize("progress", [0.0, 18.0, 40.0])
def test_fx_mar_default(progress):
    # MAR/FLUID (§9.4.4): centred at 1.0, std 0.25, bounded to [0.7, 1]; MAR reports mean 0.867, std 0.084
    cfg = ScheduleConfig(sigma=0.25, low=0.7, high=1.0, mean=1.0)
    x = Fixed(cfg).sample(N, progress, torch.Generator().manual_seed(2))
    check(x, 1.0, 0.25, 0.7, 1.0)
    assert abs(x.mean().item() - 0.867) < 3e-3 and abs(x.std().item() - 0.084) < 3e-3


@pytest.mark.parametrize("progress", [0.0, 18.0, 40.0])
def test_uni(progress):
    x = Uniform(ScheduleConfig(low=0.0, high=1.0)).sample(N, progress, torch.Generator().manual_seed(3))
    d = stats.uniform(0, 1)
    assert abs(x.mean().item() - d.mean()) < 5e-3 and abs(x.std().item() - d.std()) < 5e-3


def test_mean_ramps():
    cfg = ScheduleConfig(warmup_epochs=36)
    wm, cd = Warmup(cfg), Cooldown(cfg)
    for p, expect in [(0, 0.0), (9, 0.25), (18, 0.5), (27, 0.75), (36, 1.0), (48, 1.0)]:
        assert wm.mean(p) == pytest.approx(expect)
        assert cd.mean(p) == pytest.approx(1 - expect)
    shifted = Warmup(ScheduleConfig(warmup_epochs=30, warmup_start=6))
    assert shifted.mean(3) == 0.0 and shifted.mean(21) == pytest.approx(0.5) and shifted.mean(40) == 1.0
    assert NoMask(cfg).sample(5, 10.0).eq(0).all()


def test_run_level_gate_fractions():
    """Oracle from anchors-models §3.4 (computed independently): over a 48-epoch WM run with sigma 0.45,
    P(r >= 0.5) = 0.563 and P(r <= 0.75) = 0.722."""
    cfg = ScheduleConfig(sigma=0.45, warmup_epochs=36)
    wm = Warmup(cfg)
    g = torch.Generator().manual_seed(4)
    xs = torch.cat([wm.sample(100, p, g) for p in np.linspace(0, 48, 1000, endpoint=False)])
    assert abs((xs >= 0.5).double().mean().item() - 0.563) < 0.006
    assert abs((xs <= 0.75).double().mean().item() - 0.722) < 0.006


def test_truncated_normal_is_reproducible():
    a = truncated_normal(10, 0.3, 0.5, 0, 1, torch.Generator().manual_seed(7))
    b = truncated_normal(10, 0.3, 0.5, 0, 1, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_make_mask_counts_and_groups():
    ratios = torch.tensor([0.0, 0.5, 0.77, 1.0], dtype=torch.float64)
    mask, r, group = make_mask(ratios, 3, 12, 256, torch.Generator().manual_seed(0))
    counts = mask.sum(1)
    # MAR: num_masked = ceil(256 * r); the CLIP gate (unmasked >= 25%) <=> r <= 0.75 exactly
    assert counts.tolist() == [0] * 3 + [128] * 3 + [198] * 3 + [256] * 3
    assert group.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert not torch.equal(mask[3], mask[4])  # a random order per sample
