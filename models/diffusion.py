"""Gaussian diffusion as in improved DDPM / MAR's ``diffusion/`` (§3.1): cosine schedule, 1000 training
steps, learned-range variance, epsilon prediction, hybrid loss (MSE + variational bound with the mean
detached), respacing to 100 steps for sampling, ancestral sampling with temperature and CFG.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch


def cosine_alpha_bar(t: float) -> float:
    """ᾱ(t) = cos²(((t + s) / (1 + s)) · π/2), s = 0.008, t in [0, 1] (Nichol & Dhariwal 2021)."""
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def make_betas(schedule: str, num_steps: int) -> np.ndarray:
    if schedule == "cosine":
        return np.array([min(1 - cosine_alpha_bar((i + 1) / num_steps) / cosine_alpha_bar(i / num_steps), 0.999)
                         for i in range(num_steps)], dtype=np.float64)
    if schedule == "linear":
        scale = 1000 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    raise ValueError(f"unknown noise schedule {schedule!r}; valid choices: cosine, linear")


def space_timesteps(num_steps: int, section_counts: str | int) -> set[int]:
    """The IDDPM respacing: ``"100"`` keeps 100 evenly strided steps of the original ``num_steps``."""
    counts = [int(x) for x in str(section_counts).split(",")]
    size_per, extra = divmod(num_steps, len(counts))
    start, kept = 0, set()
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count > size:
            raise ValueError(f"cannot take {count} steps out of a section of {size}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            kept.add(start + round(cur))
            cur += stride
        start += size
    return kept


def _extract(arr: np.ndarray, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    out = torch.as_tensor(arr, device=t.device)[t].to(x.dtype)
    return out.view(-1, *([1] * (x.ndim - 1)))


def _normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _discretized_gaussian_loglik(x, means, log_scales):
    """ADM's decoder likelihood for data in [-1, 1] with 256 bins (used at t = 0)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))))


class GaussianDiffusion:
    """Discrete-time diffusion over ``len(betas)`` steps; ``timestep_map`` maps (respaced) indices to
    the original step numbers that the model is conditioned on."""

    def __init__(self, betas: np.ndarray, timestep_map: list[int] | None = None) -> None:
        self.betas = betas = np.asarray(betas, dtype=np.float64)
        self.num_timesteps = len(betas)
        self.timestep_map = np.array(timestep_map if timestep_map is not None else range(len(betas)))
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # the posterior variance is 0 at t = 0: clip the log to the next value (IDDPM)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return _extract(self.sqrt_alphas_cumprod, t, x0) * x0 + _extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def q_posterior_mean_variance(self, x0, x_t, t):
        mean = _extract(self.posterior_mean_coef1, t, x_t) * x0 + _extract(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, _extract(self.posterior_variance, t, x_t), _extract(self.posterior_log_variance_clipped, t, x_t)

    def p_mean_variance(self, model_out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = False) -> dict[str, torch.Tensor]:
        """Learned-range variance: log σ² = f log β_t + (1 - f) log β̃_t with f = (v + 1) / 2."""
        eps, v = model_out.chunk(2, dim=-1)
        min_log = _extract(self.posterior_log_variance_clipped, t, x_t)
        max_log = _extract(np.log(self.betas), t, x_t)
        frac = (v + 1) / 2
        log_var = frac * max_log + (1 - frac) * min_log
        x0 = _extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        if clip_denoised:  # bounded data (pixels in [-1, 1]): ADM's clip; MAR's latents are not clipped
            x0 = x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(x0, x_t, t)
        return {"mean": mean, "log_variance": log_var, "eps": eps, "pred_xstart": x0}

    def training_losses(self, model_fn: Callable, x0: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                        noise: torch.Tensor | None = None) -> torch.Tensor:
        """Per-row hybrid loss: mean_c (ε - ε̂)² + VB (bits, with ε̂ detached so only σ learns from it)."""
        noise = torch.randn_like(x0) if noise is None else noise
        x_t = self.q_sample(x0, t, noise)
        out = model_fn(x_t, torch.as_tensor(self.timestep_map, device=t.device)[t], cond)
        eps, v = out.chunk(2, dim=-1)
        mse = ((noise - eps) ** 2).mean(dim=-1)
        frozen = torch.cat([eps.detach(), v], dim=-1)
        p = self.p_mean_variance(frozen, x_t, t)
        true_mean, _, true_logvar = self.q_posterior_mean_variance(x0, x_t, t)
        kl = _normal_kl(true_mean, true_logvar, p["mean"], p["log_variance"]).mean(dim=-1) / math.log(2.0)
        nll = -_discretized_gaussian_loglik(x0, p["mean"], 0.5 * p["log_variance"]).mean(dim=-1) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl)
        return mse + vb

    @torch.no_grad()
    def p_sample_loop(self, model_fn: Callable, shape: tuple[int, ...], cond: torch.Tensor, temperature: float = 1.0,
                      generator: torch.Generator | None = None, cfg: float | torch.Tensor | None = None,
                      clip_denoised: bool = False) -> torch.Tensor:
        """Ancestral sampling from pure noise. With ``cfg`` the batch is [cond; uncond] halves: the noise is
        shared by both halves and only ε is guided (MAR's ``forward_with_cfg``)."""
        device = cond.device
        guided = cfg is not None
        n = shape[0] // 2 if guided else shape[0]

        def randn(m: int) -> torch.Tensor:
            z = torch.randn((m, *shape[1:]), generator=generator)
            return z.to(device)

        x = randn(n)
        x = torch.cat([x, x]) if guided else x
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            out = model_fn(x, torch.as_tensor(self.timestep_map, device=device)[t], cond)
            if guided:
                eps, rest = out[:, : shape[1]], out[:, shape[1]:]
                c, u = eps[:n], eps[n:]
                s = cfg if not torch.is_tensor(cfg) else cfg.view(-1, *([1] * (eps.ndim - 1)))
                half = u + s * (c - u)
                out = torch.cat([torch.cat([half, half]), rest], dim=1)
            p = self.p_mean_variance(out, x, t, clip_denoised)
            noise = randn(n)
            noise = torch.cat([noise, noise]) if guided else noise
            step = torch.exp(0.5 * p["log_variance"]) * noise * temperature if i > 0 else 0.0
            x = p["mean"] + step
        return x


def create_diffusion(timestep_respacing: str | int | None = None, noise_schedule: str = "cosine",
                     num_steps: int = 1000) -> GaussianDiffusion:
    betas = make_betas(noise_schedule, num_steps)
    if not timestep_respacing:
        return GaussianDiffusion(betas)
    kept = sorted(space_timesteps(num_steps, timestep_respacing))
    alphas_cumprod = np.cumprod(1.0 - betas)
    new_betas, last = [], 1.0
    for i in kept:  # new β from consecutive ᾱ of the kept steps
        new_betas.append(1 - alphas_cumprod[i] / last)
        last = alphas_cumprod[i]
    return GaussianDiffusion(np.array(new_betas), timestep_map=kept)
