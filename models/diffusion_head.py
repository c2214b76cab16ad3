"""The MLP diffusion head (MAR's ``DiffLoss`` / ``SimpleMLPAdaLN``, §3.1): predicts the noise of a single
continuous token given the decoder's per-token condition z, with AdaLN residual blocks."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.diffusion import create_diffusion


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, [cos, sin] order as in DiT/MAR."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(y).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class FinalLayer(nn.Module):
    def __init__(self, width: int, out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(y).chunk(2, dim=-1)
        return self.linear(self.norm(x) * (1 + scale) + shift)


class SimpleMLPAdaLN(nn.Module):
    def __init__(self, in_channels: int, width: int, out_channels: int, z_channels: int, depth: int) -> None:
        super().__init__()
        self.input_proj = nn.Linear(in_channels, width)
        self.time_embed = nn.Sequential(nn.Linear(256, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_embed = nn.Linear(z_channels, width)
        self.blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.final = FinalLayer(width, out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed[0].weight, std=0.02)
        nn.init.normal_(self.time_embed[2].weight, std=0.02)
        # zero the modulation and the output: the head predicts exactly 0 at init (MAR)
        for blk in self.blocks:
            nn.init.zeros_(blk.ada[-1].weight)
            nn.init.zeros_(blk.ada[-1].bias)
        for lin in (self.final.ada[-1], self.final.linear):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(x)
        y = self.time_embed(timestep_embedding(t).to(x.dtype)) + self.cond_embed(c)
        for blk in self.blocks:
            x = blk(x, y)
        return self.final(x, y)


class DiffusionHead(nn.Module):
    """Per-token diffusion loss and sampler over tokens of ``token_dim`` channels given z [N, cond_dim]."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, num_steps: int = 1000,
                 sample_steps: int = 100, noise_schedule: str = "cosine", clip_denoised: bool = False) -> None:
        super().__init__()
        self.token_dim = token_dim
        self.net = SimpleMLPAdaLN(token_dim, width, 2 * token_dim, cond_dim, depth)  # ε and the variance
        self.train_diffusion = create_diffusion(None, noise_schedule, num_steps)
        self.sample_diffusion = create_diffusion(str(sample_steps), noise_schedule, num_steps)
        self.num_steps, self.clip_denoised = num_steps, clip_denoised

    def forward(self, target: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-row losses [N] with t ~ U{0, ..., T-1} and fresh noise per row (caller weights/reduces)."""
        n = target.shape[0]
        t = torch.randint(0, self.num_steps, (n,), generator=generator).to(target.device)
        noise = torch.randn(target.shape, generator=generator).to(target.device, target.dtype)
        return self.train_diffusion.training_losses(self.net, target, t, z, noise)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, temperature: float = 1.0, cfg: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample one token per row of z. With ``cfg`` (a scale, even 1.0) z is [cond; uncond] and the
        result has the same doubled size with identical halves (the caller keeps the first)."""
        return self.sample_diffusion.p_sample_loop(self.net, (z.shape[0], self.token_dim), z, temperature,
                                                   generator, cfg, self.clip_denoised)
