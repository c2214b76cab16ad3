"""Gaussian diffusion and the diffusion head against independent closed forms."""

import math

import numpy as np
import pytest
import torch

from models.diffusion import create_diffusion, make_betas, space_timesteps
from models.diffusion_head import DiffusionHead


def test_cosine_alpha_bar_matches_improved_ddpm():
    # Nichol & Dhariwal (2021) eq. 17: ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2), s = 0.008
    T, s = 1000, 0.008
    betas = make_betas("cosine", T)
    alpha_bar = np.cumprod(1 - betas)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    unclipped = np.where(betas < 0.999)[0]
    last = unclipped[-1]
    for t in [0, 1, 10, 100, 500, 900, last]:
        assert alpha_bar[t] == pytest.approx(f(t + 1) / f(0), rel=1e-6, abs=1e-12)
    assert betas.max() <= 0.999 and (np.diff(alpha_bar) < 0).all()


def test_q_sample_moments():
    d = create_diffusion(None)
    x0 = torch.full((200_000, 1), 0.7, dtype=torch.float64)
    t = torch.full((200_000,), 300)
    xt = d.q_sample(x0, t, torch.randn_like(x0))
    ab = d.alphas_cumprod[300]
    assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=5e-3)
    assert xt.std().item() == pytest.approx(math.sqrt(1 - ab), abs=5e-3)


def test_posterior_matches_closed_form():
    d = create_diffusion(None)
    t = torch.tensor([5, 400])
    x0, xt = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    mean, var, _ = d.q_posterior_mean_variance(x0, xt, t)
    for i, ti in enumerate(t.tolist()):
        ab, ab_prev, beta = d.alphas_cumprod[ti], d.alphas_cumprod[ti - 1], d.betas[ti]
        alpha = 1 - beta
        ref_mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0[i] + (math.sqrt(alpha) * (1 - ab_prev) / (1 - ab)) * xt[i]
        assert torch.allclose(mean[i], ref_mean, atol=1e-10)
        assert var[i].item() == pytest.approx((1 - ab_prev) / (1 - ab) * beta, rel=1e-9)


def test_respacing_keeps_alpha_bar():
    kept = sorted(space_timesteps(1000, "100"))
    assert len(kept) == 100 and kept[0] == 0 and kept[-1] == 999
    full, resp = create_diffusion(None), create_diffusion("100")
    assert np.allclose(resp.alphas_cumprod, full.alphas_cumprod[kept], rtol=1e-10)
    assert list(resp.timestep_map) == kept


def test_head_is_zero_at_init_and_loss_is_mse_plus_vb():
    torch.manual_seed(0)
    head = DiffusionHead(4, 8, 32, 2)
    x, z = torch.randn(64, 4), torch.randn(64, 8)
    out = head.net(x, torch.randint(0, 1000, (64,)), z)
    assert torch.equal(out, torch.zeros_like(out))
    g = torch.Generator().manual_seed(1)
    loss = head(x, z, generator=g)
    g = torch.Generator().manual_seed(1)
    torch.randint(0, 1000, (64,), generator=g)
    noise = torch.randn(64, 4, generator=g)
    vb = loss - (noise**2).mean(1)
    assert torch.isfinite(loss).all() and (vb >= -1e-6).all()


def test_head_learns_a_conditional_distribution_and_samples_it():
    torch.manual_seed(0)
    # data in [-1, 1]: x0 clipped as for pixels. An undertrained head is badly conditioned at t = 999
    # (1/sqrt(alpha_bar) ~ 2e4 amplifies any epsilon error), which MAR's long training makes up for.
    head = DiffusionHead(2, 2, 64, 2, sample_steps=50, clip_denoised=True)
    means = torch.tensor([[0.8, -0.5], [-0.6, 0.7]])
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3)
    first = last = None
    for it in range(600):
        mode = torch.randint(0, 2, (256,))
        z = torch.nn.functional.one_hot(mode, 2).float()
        x = means[mode] + 0.05 * torch.randn(256, 2)
        loss = head(x, z).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if it < 20 and first is None else first
        last = loss.item()
    assert last < 0.7 * first
    z = torch.nn.functional.one_hot(torch.tensor([0] * 200 + [1] * 200), 2).float()
    samples = head.sample(z, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(samples[:200].mean(0), means[0], atol=0.12)
    assert torch.allclose(samples[200:].mean(0), means[1], atol=0.12)


def test_cfg_scale_one_equals_the_conditional_path_and_temperature_zero_is_deterministic():
    torch.manual_seed(0)
    head = DiffusionHead(3, 5, 16, 2, sample_steps=10)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    z = torch.randn(4, 5)
    plain = head.sample(z, generator=torch.Generator().manual_seed(3))
    doubled = head.sample(torch.cat([z, torch.randn(4, 5)]), cfg=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(plain, doubled[:4], atol=1e-6)  # scale 1: the null half has no influence
    guided = head.sample(torch.cat([z, torch.randn(4, 5)]), cfg=3.0, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(plain, guided[:4], atol=1e-3)
    a = head.sample(z, temperature=0.0, generator=torch.Generator().manual_seed(1))
    b = head.sample(z, temperature=0.0, generator=torch.Generator().manual_seed(2))
    # only the initial noise differs; the chain itself is deterministic at temperature 0
    c = head.sample(z, temperature=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, c) and not torch.equal(a, b)
