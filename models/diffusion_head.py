"""The MLP diffusion head (MAR's ``DiffLoss`` around ``SimpleMLPAdaLN``, §3.1): per-token diffusion loss and
sampler for a continuous token given the decoder's condition z for that token.

Module names differ from MAR's (``blocks``/``ada``/``final`` for ``res_blocks``/``adaLN_modulation``/
``final_layer``, ``time_embed`` is the bare MLP); the computation and the initialisation are MAR's.
"""

from __future__ import annotations

import math

import torch
from benchmark.models.diffusion import create_diffusion
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) steps [N] -> [N, dim], [cos, sin] order as in DiT/MAR."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


class ResBlock(nn.Module):
    """x + gate · MLP(LN(x) · (1 + scale) + shift), with (shift, scale, gate) from the condition y."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(y).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class FinalLayer(nn.Module):
    """Affine-free LN, adaLN modulation by y, then the output projection."""

    def __init__(self, width: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(y).chunk(2, dim=-1)
        return self.linear(self.norm(x) * (1 + scale) + shift)


class SimpleMLPAdaLN(nn.Module):
    """MAR's denoiser: ``forward(x [N, in], t [N], c [N, z_channels]) -> [N, out_channels]``."""

    def __init__(self, in_channels: int, model_channels: int, out_channels: int, z_channels: int,
                 num_res_blocks: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.input_proj = nn.Linear(in_channels, model_channels)
        self.time_embed = nn.Sequential(nn.Linear(256, model_channels), nn.SiLU(), nn.Linear(model_channels, model_channels))
        self.cond_embed = nn.Linear(z_channels, model_channels)
        self.blocks = nn.ModuleList(ResBlock(model_channels) for _ in range(num_res_blocks))
        self.final = FinalLayer(model_channels, out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed[0].weight, std=0.02)
        nn.init.normal_(self.time_embed[2].weight, std=0.02)
        # zero modulations and output: every block starts as the identity and the head predicts exactly 0
        for lin in [blk.ada[-1] for blk in self.blocks] + [self.final.ada[-1], self.final.linear]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(x)
        y = self.time_embed(timestep_embedding(t).to(x.dtype)) + self.cond_embed(c)
        for blk in self.blocks:
            x = blk(x, y)
        return self.final(x, y)


class DiffusionHead(nn.Module):
    """MAR's ``DiffLoss`` for tokens of ``token_dim`` channels conditioned on z [N, cond_dim]: the net predicts
    ε and the variance (2 · token_dim outputs); training uses all ``num_steps`` steps, sampling the steps
    respaced to ``sample_steps``. ``clip_denoised`` clamps x̂_0 to [-1, 1] while sampling (pixel tokens only)."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, num_steps: int = 1000,
                 sample_steps: int = 100, noise_schedule: str = "cosine", clip_denoised: bool = False) -> None:
        super().__init__()
        self.token_dim, self.num_steps, self.clip_denoised = token_dim, num_steps, clip_denoised
        self.net = SimpleMLPAdaLN(token_dim, width, 2 * token_dim, cond_dim, depth)
        self.train_diffusion = create_diffusion(None, noise_schedule, num_steps)
        self.sample_diffusion = create_diffusion(str(sample_steps), noise_schedule, num_steps)

    def _apply(self, fn, recurse: bool = True):
        out = super()._apply(fn, recurse)
        device = next(self.parameters()).device
        self.train_diffusion.materialize(device)
        self.sample_diffusion.materialize(device)
        return out

    def draw(self, n: int, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype = torch.float32,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(t [n] ~ U{0, ..., T-1}, noise [n, *shape]) for n rows, t first, from ``generator`` when given. The
        training step draws them before the (compiled) forward: sizes only known at run time stay out of the
        graph and a compiled step sees the same draws as an eager one."""
        gen_device = generator.device if generator is not None else device
        t = torch.randint(0, self.num_steps, (n,), generator=generator, device=gen_device).to(device)
        noise = torch.randn((n, *shape), generator=generator, device=gen_device).to(device, dtype)
        return t, noise

    def forward(self, target: torch.Tensor, z: torch.Tensor, weight: torch.Tensor | None = None,
                generator: torch.Generator | None = None, t: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """Per-row losses [N] (times ``weight`` [N] if given; no reduction: the caller reduces), each row
        with its own t ~ U{0, ..., T-1} and noise: ``t``/``noise`` when given, else drawn here (``draw``)."""
        if t is None or noise is None:
            t, noise = self.draw(target.shape[0], tuple(target.shape[1:]), target.device, target.dtype, generator)
        loss = self.train_diffusion.training_losses(self.net, target, t, z, noise)
        return loss if weight is None else loss * weight

    @torch.no_grad()
    def sample(self, z: torch.Tensor, temperature: float = 1.0, cfg: float | torch.Tensor | None = 1.0,
               generator: torch.Generator | torch.Tensor | None = None) -> torch.Tensor:
        """One token per row of z -> [N, token_dim]. As in MAR, a float ``cfg`` other than 1.0 (or any tensor
        of scales: one, or one per row of a half) means z is [cond; uncond] (N even): the result then also has N rows,
        the guided samples are the first half and the caller drops the second. ``None`` or 1.0: no guidance.
        ``generator`` may also be the loop's draws made beforehand (``draw_sample_noise``): a tensor."""
        guided = torch.is_tensor(cfg) or (cfg is not None and cfg != 1.0)
        draws = generator if torch.is_tensor(generator) else None
        return self.sample_diffusion.p_sample_loop(self.net, (z.shape[0], self.token_dim), z, temperature,
                                                   None if draws is not None else generator,
                                                   cfg if guided else None, self.clip_denoised, draws=draws)

    def draw_sample_noise(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """The draws ``sample`` makes for n tokens (n per guided half) [sample steps, n, token_dim], from
        ``generator`` in the order ``sample`` would draw them: passing them as its generator gives the same tokens."""
        return self.sample_diffusion.draw_all(n, (self.token_dim,), device, generator)
