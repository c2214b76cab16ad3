"""Gaussian diffusion (models/diffusion.py) and the MLP diffusion head (models/diffusion_head.py) against
closed forms written out independently here: the improved-DDPM ᾱ formula, Gaussian conditioning for the
posterior, the Gaussian KL, and analytic ε-oracles for Gaussian data (with which ancestral sampling must
reproduce the data distribution, and CFG must shift its mean to μ_u + s (μ_c - μ_u))."""

import math

import numpy as np
import pytest
import torch
from benchmark.models.diffusion import GaussianDiffusion, create_diffusion, make_betas, space_timesteps
from benchmark.models.diffusion_head import DiffusionHead, timestep_embedding

T = 1000


def gaussian_oracle(alpha_bar: np.ndarray, std: float, v: float = 0.0):
    """Exact ε̂(x_t, t) = E[ε | x_t] for x_0 ~ N(c, std² I): x_t = a x_0 + b ε gives b (x_t - a c) / (a² std² + b²).
    ``t`` are original step numbers (what the model receives); v is the variance output."""
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64)

    def model_fn(x, t, c):
        a, b = ab[t].sqrt()[:, None].to(x.dtype), (1 - ab[t]).sqrt()[:, None].to(x.dtype)
        eps = b * (x - a * c) / (a * a * std**2 + b * b)
        return torch.cat([eps, torch.full_like(eps, v)], dim=1)

    return model_fn


def test_cosine_alpha_bar_matches_improved_ddpm():
    # Nichol & Dhariwal (2021) eq. 17: ᾱ_t = f(t) / f(0), f(t) = cos²((t/T + s) / (1 + s) · π/2), s = 0.008,
    # ᾱ_t = prod_{i < t} (1 - β_i), i.e. cumprod index t - 1
    s = 0.008
    betas = make_betas("cosine", T)
    assert betas.dtype == np.float64 and betas.shape == (T,)
    f = lambda t: np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    clipped = np.flatnonzero(betas >= 0.999)
    assert clipped.tolist() == [T - 1]  # only the last beta hits the cap
    t = np.arange(1, T)  # every ᾱ_t built from unclipped betas only
    np.testing.assert_allclose(np.cumprod(1 - betas)[t - 1], f(t) / f(0), rtol=1e-6, atol=0)
    assert (np.diff(np.cumprod(1 - betas)) < 0).all()
    lin = make_betas("linear", T)
    assert lin[0] == pytest.approx(1e-4) and lin[-1] == pytest.approx(0.02)
    assert make_betas("linear", 500)[-1] == pytest.approx(0.04)  # stretched for other step counts
    with pytest.raises(ValueError):
        make_betas("quadratic", T)


@pytest.mark.parametrize("t", [0, 300, 999])
def test_q_sample_moments(t):
    d = create_diffusion(None)
    gen = torch.Generator().manual_seed(t)
    x0 = torch.tensor([0.7, -1.3], dtype=torch.float64).expand(100_000, 2)
    xt = d.q_sample(x0, torch.full((100_000,), t), torch.randn(100_000, 2, generator=gen, dtype=torch.float64))
    ab = float(np.cumprod(1 - make_betas("cosine", T))[t])
    torch.testing.assert_close(xt.mean(0), math.sqrt(ab) * x0[0], atol=0.012, rtol=0)  # 4 sigma of the estimate
    torch.testing.assert_close(xt.std(0), torch.full((2,), math.sqrt(1 - ab), dtype=torch.float64), atol=0.01, rtol=0)


def test_posterior_matches_gaussian_conditioning():
    # q(x_{t-1} | x_0) = N(sqrt(ᾱ_{t-1}) x_0, 1 - ᾱ_{t-1}), q(x_t | x_{t-1}) = N(sqrt(α_t) x_{t-1}, β_t):
    # precision 1/(1 - ᾱ_{t-1}) + α_t/β_t, mean = var · (sqrt(ᾱ_{t-1}) x_0 / (1 - ᾱ_{t-1}) + sqrt(α_t) x_t / β_t)
    d = create_diffusion(None)
    betas = make_betas("cosine", T)
    ab = np.cumprod(1 - betas)
    t = torch.tensor([1, 5, 400, 998, 999])
    gen = torch.Generator().manual_seed(0)
    x0, xt = torch.randn(5, 3, generator=gen, dtype=torch.float64), torch.randn(5, 3, generator=gen, dtype=torch.float64)
    mean, var, log_var = d.q_posterior_mean_variance(x0, xt, t)
    for i, ti in enumerate(t.tolist()):
        beta, ab_prev = betas[ti], ab[ti - 1]
        ref_var = 1 / (1 / (1 - ab_prev) + (1 - beta) / beta)
        ref_mean = ref_var * (math.sqrt(ab_prev) * x0[i] / (1 - ab_prev) + math.sqrt(1 - beta) * xt[i] / beta)
        torch.testing.assert_close(mean[i], ref_mean, rtol=1e-9, atol=1e-9)
        assert var[i].item() == pytest.approx(ref_var, rel=1e-9)
        assert log_var[i].item() == pytest.approx(math.log(ref_var), rel=1e-9)
    # t = 0: x_{-1} is x_0 itself (zero variance); the log-variance is clipped to the t = 1 value
    mean0, var0, log_var0 = d.q_posterior_mean_variance(x0, xt, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(mean0, x0)
    assert (var0 == 0).all() and torch.allclose(log_var0, log_var[0].expand_as(log_var0))
    # learned range: v = 1 is β_t, v = -1 the (clipped) posterior variance β̃_t, v = 0 their geometric mean
    eps = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    for v, ref in [(1.0, np.log(betas[t])), (-1.0, log_var[:, 0].numpy()), (0.0, (np.log(betas[t]) + log_var[:, 0].numpy()) / 2)]:
        p = d.p_mean_variance(torch.cat([eps, torch.full_like(eps, v)], dim=1), xt, t)
        np.testing.assert_allclose(p["log_variance"][:, 0].numpy(), ref, rtol=1e-12)
    # the mean is the posterior mean at x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t)
    a = torch.as_tensor(ab[t])[:, None]
    torch.testing.assert_close(p["mean"], d.q_posterior_mean_variance((xt - (1 - a).sqrt() * eps) / a.sqrt(), xt, t)[0])


def test_respacing_keeps_alpha_bar_and_feeds_the_original_steps():
    kept = sorted(space_timesteps(T, "100"))
    assert len(kept) == 100 and kept[0] == 0 and kept[-1] == 999
    # fractional stride 999/99, accumulated and rounded (IDDPM): 60.54... -> 61 breaks the multiples of 10
    assert kept[:12] == [0, 10, 20, 30, 40, 50, 61, 71, 81, 91, 101, 111] and kept[-3:] == [979, 989, 999]
    assert space_timesteps(T, 100) == set(kept) and space_timesteps(T, "1000") == set(range(T))
    assert sorted(space_timesteps(T, "2,3")) == [0, 499, 500, 750, 999]  # equal sections; round(249.5) = 250
    for count in (21, 50, 250):  # IDDPM's loop, where round(k * stride) would differ for some counts
        pos, ref = 0.0, set()
        for _ in range(count):
            ref.add(round(pos))
            pos += 999 / (count - 1)
        assert space_timesteps(T, count) == ref
    full, resp = create_diffusion(None), create_diffusion("100")
    assert resp.num_timesteps == 100 and list(resp.timestep_map) == kept
    np.testing.assert_allclose(resp.alphas_cumprod, np.cumprod(1 - make_betas("cosine", T))[kept], rtol=1e-10)
    np.testing.assert_allclose(full.alphas_cumprod, np.cumprod(1 - make_betas("cosine", T)), rtol=1e-12)

    seen = []

    def spy(x, t, c):
        seen.append(t.unique().tolist())
        return torch.zeros(x.shape[0], 2 * x.shape[1])

    resp.p_sample_loop(spy, (3, 2), torch.zeros(3, 1), generator=torch.Generator().manual_seed(0))
    assert seen == [[k] for k in reversed(kept)]  # the model sees the original step numbers, last first
    seen.clear()
    resp.training_losses(spy, torch.zeros(2, 2), torch.tensor([1, 99]), torch.zeros(2, 1), torch.zeros(2, 2))
    assert seen == [[kept[1], 999]]


def test_head_is_zero_at_init_and_loss_is_mse_plus_the_gaussian_kl():
    torch.manual_seed(0)
    head = DiffusionHead(4, 8, 32, 2)
    gen = torch.Generator().manual_seed(1)
    x0, z = torch.randn(64, 4, generator=gen, dtype=torch.float64), torch.randn(64, 8, generator=gen)
    t = torch.cat([torch.zeros(4, dtype=torch.long), torch.randint(1, T, (60,), generator=gen)])
    out = head.net(x0.float(), t, z)
    assert torch.equal(out, torch.zeros_like(out))
    noise = torch.randn(64, 4, generator=gen, dtype=torch.float64)
    loss = head.train_diffusion.training_losses(lambda x, tt, c: head.net(x.float(), tt, c).double(), x0, t, z, noise)
    vb = loss - (noise**2).mean(1)  # ε̂ = 0: the MSE term is mean(ε²)
    assert torch.isfinite(loss).all() and (vb >= 0).all()
    # t > 0, ε̂ = 0 and v = 0: p has mean μ̃(x̂_0 = x_t / sqrt(ᾱ_t), x_t) and log σ² = (log β_t + log β̃_t) / 2
    betas = make_betas("cosine", T)
    ab = np.cumprod(1 - betas)
    for i in range(4, 64):
        ti = int(t[i])
        a, a_prev, beta = ab[ti], ab[ti - 1], betas[ti]
        xt = math.sqrt(a) * x0[i] + math.sqrt(1 - a) * noise[i]
        post_var = beta * (1 - a_prev) / (1 - a)
        c1, c2 = beta * math.sqrt(a_prev) / (1 - a), (1 - a_prev) * math.sqrt(1 - beta) / (1 - a)
        mu_q, mu_p = c1 * x0[i] + c2 * xt, c1 * xt / math.sqrt(a) + c2 * xt
        lv_q = math.log(post_var)
        lv_p = 0.5 * (math.log(beta) + lv_q)
        kl = 0.5 * (-1 + lv_p - lv_q + math.exp(lv_q - lv_p) + (mu_q - mu_p) ** 2 * math.exp(-lv_p))
        assert vb[i].item() == pytest.approx(kl.mean().item() / math.log(2), rel=1e-5, abs=1e-9)
    # t = 0: the decoder NLL of x_0 under N(μ_p, σ²) on 256 bins of [-1, 1] (edge bins open), with the exact
    # normal CDF here (ADM uses a tanh approximation, hence the tolerance); μ̃ coefficients are (1, 0) at t = 0
    phi = lambda u: 0.5 * (1 + math.erf(u / math.sqrt(2)))  # noqa: E731
    for i in range(4):
        mu = (math.sqrt(ab[0]) * x0[i] + math.sqrt(1 - ab[0]) * noise[i]) / math.sqrt(ab[0])
        sd = math.exp(0.25 * (math.log(betas[0]) + math.log(betas[1] * (1 - ab[0]) / (1 - ab[1]))))
        nll = []
        for xv, m in zip(x0[i].tolist(), mu.tolist()):
            hi, lo = (1.0 if xv > 0.999 else phi((xv - m + 1 / 255) / sd)), (0.0 if xv < -0.999 else phi((xv - m - 1 / 255) / sd))
            nll.append(-math.log(max(hi - lo, 1e-12)))
        assert vb[i].item() == pytest.approx(np.mean(nll) / math.log(2), rel=2e-2)
    # the bound trains the variance only: no gradient from vb reaches ε̂
    e, v = (torch.zeros(64, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    vb = head.train_diffusion.training_losses(lambda *_: torch.cat([e, v], 1), x0, t, z, noise) - ((noise - e) ** 2).mean(1)
    g_e, g_v = torch.autograd.grad(vb.sum(), [e, v])
    assert torch.equal(g_e, torch.zeros_like(g_e)) and g_v.abs().sum() > 0
    # forward: per-row, weights multiply, draws reproducible from the generator
    a = head(x0.float(), z, generator=torch.Generator().manual_seed(5))
    b = head(x0.float(), z, weight=torch.full((64,), 0.5), generator=torch.Generator().manual_seed(5))
    assert a.shape == (64,) and torch.allclose(b, 0.5 * a)


def test_timestep_embedding_is_cos_then_sin():
    t = torch.tensor([0, 7, 999])
    k = torch.arange(128, dtype=torch.float64)
    args = t[:, None].double() * torch.exp(-math.log(10_000) * k / 128)[None]
    torch.testing.assert_close(timestep_embedding(t).double(), torch.cat([args.cos(), args.sin()], 1), atol=1e-4, rtol=0)


def test_head_learns_a_two_mode_conditional_distribution_and_samples_it():
    # the linear schedule: with cosine, the last respaced step (β ≈ 0.99999) multiplies any ε error of an
    # undertrained head by ~300 (MAR's long training makes up for it); the cosine sampler is checked with an
    # exact ε-oracle below
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    head = DiffusionHead(2, 2, 64, 2, sample_steps=50, noise_schedule="linear")
    means = torch.tensor([[1.0, -0.5], [-0.6, 0.8]])
    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    losses = []
    for _ in range(300):
        mode = torch.randint(0, 2, (256,), generator=gen)
        x = means[mode] + 0.05 * torch.randn(256, 2, generator=gen)
        loss = head(x, torch.nn.functional.one_hot(mode, 2).float(), generator=gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.25 * np.mean(losses[:20])
    z = torch.nn.functional.one_hot(torch.tensor([0] * 200 + [1] * 200), 2).float()
    samples = head.sample(z, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (400, 2)
    for k, rows in enumerate([slice(0, 200), slice(200, 400)]):
        torch.testing.assert_close(samples[rows].mean(0), means[k], atol=0.15, rtol=0)
        assert (samples[rows].std(0) < 0.3).all()  # data std 0.05: the modes are not smeared into each other


@pytest.mark.parametrize("v", [-1.0, 1.0])
def test_cosine_sampler_with_an_exact_oracle_reproduces_the_data(v):
    # MAR's sampling setup (cosine, 100 respaced steps, no clipping) with the exact ε: samples ~ N(c, 0.5²)
    d = create_diffusion("100")
    mu = torch.tensor([1.5, -0.7, 0.0])
    cond = mu.expand(20_000, 3)
    x = d.p_sample_loop(gaussian_oracle(create_diffusion(None).alphas_cumprod, 0.5, v), (20_000, 3), cond,
                        generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.mean(0), mu, atol=0.02, rtol=0)
    torch.testing.assert_close(x.std(0), torch.full((3,), 0.5), atol=0.04, rtol=0)
    cold = d.p_sample_loop(gaussian_oracle(create_diffusion(None).alphas_cumprod, 0.5, v), (20_000, 3), cond,
                           temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert (cold.std(0) < 0.8 * x.std(0)).all()  # τ < 1 sharpens


def test_cfg_scale_one_is_the_conditional_path_and_guidance_extrapolates_the_mean():
    torch.manual_seed(0)
    head = DiffusionHead(3, 5, 16, 2, sample_steps=10)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    z, null = torch.randn(4, 5), torch.randn(4, 5)
    plain = head.sample(z, cfg=1.0, generator=torch.Generator().manual_seed(3))
    assert plain.shape == (4, 3)
    doubled = head.sample(torch.cat([z, null]), cfg=torch.ones(4), generator=torch.Generator().manual_seed(3))
    assert doubled.shape == (8, 3)
    torch.testing.assert_close(doubled[:4], plain, atol=1e-4, rtol=1e-5)  # scale 1: the null half has no influence
    guided = head.sample(torch.cat([z, null]), cfg=3.0, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(guided[:4], plain, atol=1e-2)
    assert head.sample(torch.cat([z, null]), cfg=1.0).shape == (8, 3)  # MAR: 1.0 is the unguided path

    # oracle: ε is linear in the mean, so ε_u + s (ε_c - ε_u) is the exact ε of mean μ_u + s (μ_c - μ_u)
    d, n = create_diffusion("100"), 6000
    mu_c, mu_u = torch.tensor([1.0, 0.5]), torch.tensor([0.2, -0.5])
    scale = torch.tensor([1.0, 2.0, 4.0]).repeat_interleave(n // 3)  # one scale per row of the half
    cond = torch.cat([mu_c.expand(n, 2), mu_u.expand(n, 2)])
    x = d.p_sample_loop(gaussian_oracle(create_diffusion(None).alphas_cumprod, 0.3), (2 * n, 2), cond,
                        generator=torch.Generator().manual_seed(1), cfg=scale)
    for k, s in enumerate([1.0, 2.0, 4.0]):
        rows = x[k * n // 3:(k + 1) * n // 3]
        torch.testing.assert_close(rows.mean(0), mu_u + s * (mu_c - mu_u), atol=0.03, rtol=0)
        torch.testing.assert_close(rows.std(0), torch.full((2,), 0.3), atol=0.04, rtol=0)
    assert torch.equal(x[:n], x[n:])  # same noise, same guided ε and the same variance: identical halves

    # MAR's forward_with_cfg: both halves are evaluated at the cond half's x even when their variances differ
    def spy(x_in, t, c):
        assert torch.equal(x_in[:2], x_in[2:])
        eps = 0.1 * x_in
        return torch.cat([eps, c.expand_as(eps)], 1)  # v = +1 for cond, -1 for uncond rows

    x = d.p_sample_loop(spy, (4, 2), torch.tensor([[1.0], [1.0], [-1.0], [-1.0]]), cfg=2.0)
    assert not torch.allclose(x[:2], x[2:])  # the halves did diverge


def test_temperature_zero_is_the_deterministic_mean_path():
    d = create_diffusion("100")
    x_T = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    zero = lambda x, t, c: torch.zeros(x.shape[0], 2 * x.shape[1], dtype=x.dtype)  # noqa: E731
    runs = [d.p_sample_loop(zero, (5, 3), torch.zeros(5, 1), temperature=tau, noise=x_T,
                            generator=torch.Generator().manual_seed(seed))
            for tau, seed in [(0.0, 1), (0.0, 2), (1.0, 1), (1.0, 2)]]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[2], runs[3])
    # with ε̂ = 0 every mean step is x_t / sqrt(α_t) (μ̃ coefficients sum to that), so x_0 = x_T / sqrt(ᾱ_T)
    ab_T = np.cumprod(1 - make_betas("cosine", T))[-1]
    torch.testing.assert_close(runs[0], x_T / math.sqrt(ab_T), rtol=1e-9, atol=0)

    # two steps, ε̂ = 0, v = 1 (σ² = β): x_1 = x_T / sqrt(α_1) + τ sqrt(β_1) z_1, x_0 = x_1 / sqrt(α_0), no noise
    # at the last step; z_1 is the generator's first draw after x_T, a [N, C] standard normal
    two = GaussianDiffusion(np.array([0.3, 0.6]))
    zero_v1 = lambda x, t, c: torch.cat([torch.zeros_like(x), torch.ones_like(x)], 1)  # noqa: E731
    out = two.p_sample_loop(zero_v1, (5, 3), torch.zeros(5, 1), temperature=0.7, noise=x_T,
                            generator=torch.Generator().manual_seed(4))
    z_1 = torch.randn(5, 3, generator=torch.Generator().manual_seed(4)).double()
    torch.testing.assert_close(out, (x_T / math.sqrt(0.4) + 0.7 * math.sqrt(0.6) * z_1) / math.sqrt(0.7))

    torch.manual_seed(0)
    head = DiffusionHead(3, 5, 16, 2, sample_steps=10)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    z = torch.randn(4, 5)
    a, b = (head.sample(z, temperature=0.0, generator=torch.Generator().manual_seed(s)) for s in (1, 1))
    assert torch.equal(a, b)
