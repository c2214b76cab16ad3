"""MAR decoding (§3.4, §9.5.1): next-set-of-tokens prediction from a fully masked sequence.

The mask ratio is annealed 1 -> 0 with the cosine schedule over ``steps`` iterations; a fresh fully
random order per sample decides which tokens are revealed; each step predicts the tokens to reveal with
the diffusion head (temperature sampling over the respaced steps). Classifier-free guidance (§9.5.2)
runs the conditional and null halves through the network as one batch; the scale is constant or
linear in the fraction of decoded tokens (MAR: 1 + (w - 1) * (L - mask_len) / L).
"""

from __future__ import annotations

import math

import torch


def mask_len_at(step: int, steps: int, seq_len: int, n_masked: int) -> int:
    """Tokens still masked after ``step`` (MAR: floor(L cos(pi/2 (step+1)/S)), at least 1, and at least
    one token revealed per step)."""
    m = math.floor(seq_len * math.cos(math.pi / 2 * (step + 1) / steps))
    return max(1, min(n_masked - 1, m))


def cfg_scale(cfg: float, schedule: str, seq_len: int, mask_len: int) -> float:
    if schedule == "linear":
        return 1 + (cfg - 1) * (seq_len - mask_len) / seq_len
    return cfg


@torch.no_grad()
def sample_tokens(backbone, t5: torch.Tensor, t5_null: torch.Tensor | None, steps: int = 64,
                  cfg: float = 1.0, cfg_schedule: str = "linear", temperature: float = 1.0,
                  generator: torch.Generator | None = None, t5_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Generate tokens [B, L, C] for the T5 caption embeddings ``t5`` [B, T, d]."""
    b, device = t5.shape[0], t5.device
    n, c = backbone.seq_len, backbone.token_dim
    guided = cfg != 1.0
    cond = t5
    if guided:
        null = backbone.null_condition(t5_null, b).to(t5.dtype)
        cond = torch.cat([t5, null], dim=0)
        t5_valid = None if t5_valid is None else torch.cat([t5_valid, torch.ones_like(t5_valid)], 0)
    text = backbone.align_text(cond, t5_valid)
    mask = torch.ones(b, n, dtype=torch.bool, device=device)
    tokens = torch.zeros(b, n, c, device=device)
    orders = torch.rand(b, n, generator=generator).argsort(dim=1).to(device)
    for step in range(steps):
        tok_in, mask_in = (torch.cat([tokens, tokens]), torch.cat([mask, mask])) if guided else (tokens, mask)
        z = backbone.decode(backbone.encode(tok_in, mask_in), text, t5_valid)
        n_masked = int(mask[0].sum())
        mask_len = mask_len_at(step, steps, n, n_masked)
        mask_next = torch.zeros_like(mask)
        mask_next.scatter_(1, orders[:, :mask_len], True)  # the first mask_len of the order stay masked
        to_pred = mask if step == steps - 1 else mask & ~mask_next
        rows = torch.cat([to_pred, to_pred]) if guided else to_pred
        scale = cfg_scale(cfg, cfg_schedule, n, mask_len) if guided else None
        out = backbone.head.sample(z[rows], temperature=temperature, cfg=scale, generator=generator)
        if guided:
            out = out[: out.shape[0] // 2]
        tokens[to_pred] = out.to(tokens.dtype)
        mask = mask_next if step < steps - 1 else torch.zeros_like(mask)
    return tokens
