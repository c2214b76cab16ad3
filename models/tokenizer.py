"""Image tokenizers: the SD kl-f8 VAE (§9.1) and a pixel-patch stand-in for the embedded default.

Both map images in [-1, 1] to a sequence of continuous tokens [B, L, C] and back. Patchify follows MAR:
channel-major inside a token (``nchpwq -> nhwcpq``), so a 32x32x4 latent with 2x2 grouping gives
256 tokens x 16 channels.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("nchpwq->nhwcpq", x)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(x: torch.Tensor, p: int, c: int, h: int, w: int) -> torch.Tensor:
    b = x.shape[0]
    x = x.reshape(b, h, w, c, p, p)
    x = torch.einsum("nhwcpq->nchpwq", x)
    return x.reshape(b, c, h * p, w * p)


class PixelTokenizer(nn.Module):
    """Pixel patches as tokens: what the tiny preset uses instead of a VAE (no weights needed)."""

    def __init__(self, image_size: int = 32, patch_size: int = 4) -> None:
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        self.grid = image_size // patch_size
        self.seq_len = self.grid**2
        self.token_dim = 3 * patch_size**2

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return patchify(images, self.patch_size)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return unpatchify(tokens, self.patch_size, 3, self.grid, self.grid).clamp(-1, 1)


# The SD kl-f8 architecture; diffusers' default AutoencoderKL() is NOT this (ENVIRONMENT.md §3).
SD_KL_F8_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), sample_size=256, scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)

VAE_HELP = (
    "Download stabilityai/sd-vae-ft-ema (diffusers format: config.json + diffusion_pytorch_model"
    ".safetensors) on a machine with internet, e.g. `huggingface-cli download stabilityai/sd-vae-ft-ema "
    "--local-dir /data/weights/sd-vae-ft-ema`, then pass --set model.vae_path=/data/weights/sd-vae-ft-ema "
    "or export DREAM_BENCH_VAE=/data/weights/sd-vae-ft-ema."
)


class VAETokenizer(nn.Module):
    """Frozen SD kl-f8-ft-EMA VAE (diffusers AutoencoderKL from a local folder) + 2x2 grouping."""

    def __init__(self, path: str = "", patch_size: int = 2, scale: float = 0.18215,
                 image_size: int = 256) -> None:
        super().__init__()
        from diffusers import AutoencoderKL

        path = path or os.environ.get("DREAM_BENCH_VAE", "")
        if not path or not (Path(path) / "config.json").exists():
            raise FileNotFoundError(
                f"SD VAE weights not found at {path or '(model.vae_path is empty)'}: expected a diffusers "
                f"folder with config.json. {VAE_HELP}"
            )
        self.vae = AutoencoderKL.from_pretrained(path).eval().requires_grad_(False)
        self.scale, self.patch_size = scale, patch_size
        self.latent_channels = self.vae.config.latent_channels
        self.down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.grid = image_size // self.down // patch_size
        self.seq_len = self.grid**2
        self.token_dim = self.latent_channels * patch_size**2

    @torch.no_grad()
    def encode_moments(self, images: torch.Tensor) -> torch.Tensor:
        """Posterior parameters [B, 2*C, h, w] (mean, logvar): what the feature cache stores."""
        return self.vae.encode(images).latent_dist.parameters

    def sample_moments(self, moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean, logvar = moments.chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return patchify((mean + std * noise) * self.scale, self.patch_size)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # MAR and DREAM sample the posterior (not its mean) at every step.
        return self.sample_moments(self.encode_moments(images), generator)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        z = unpatchify(tokens, self.patch_size, self.latent_channels, self.grid, self.grid) / self.scale
        return self.vae.decode(z).sample.clamp(-1, 1)


def build_tokenizer(model_cfg) -> nn.Module:
    if model_cfg.tokenizer == "pixel":
        return PixelTokenizer(model_cfg.image_size, model_cfg.patch_size)
    return VAETokenizer(model_cfg.vae_path, model_cfg.patch_size, model_cfg.vae_scale, model_cfg.image_size)


def token_shape(model_cfg) -> tuple[int, int]:
    """(sequence length, token channels) without loading any weights (for meta-device builds)."""
    if model_cfg.tokenizer == "pixel":
        return (model_cfg.image_size // model_cfg.patch_size) ** 2, 3 * model_cfg.patch_size**2
    grid = model_cfg.image_size // 8 // model_cfg.patch_size
    return grid**2, 4 * model_cfg.patch_size**2
