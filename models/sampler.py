"""MAR decoding (§3.4, §9.5.1): next-set-of-tokens prediction from a fully masked sequence.

The mask ratio is annealed 1 -> 0 with the cosine schedule over ``steps`` iterations; a fresh fully
random order per sample decides which tokens are revealed; each step predicts the tokens to reveal with
the diffusion head (temperature sampling over the respaced steps). Classifier-free guidance (§9.5.2)
runs the conditional and null halves through the network as one batch; the scale is constant or
linear in the fraction of decoded tokens (MAR: 1 + (w - 1) * (L - mask_len) / L).

The loop is split into ``init_decoding`` and ``decode_step`` (the released DREAM code's
``_init_generation`` / ``_generation_step``) so Semantically Aligned Decoding and the external reranker
(models/sad.py) reuse it. Several candidates per prompt are rows of one batch, laid out candidate-major
(row = k * B + i), sharing the prompt's order (as the released SAD code does) and differing in the
diffusion noise. Every random draw comes from one generator in a fixed sequence (orders, then the head's
noise per step), so K = 1 candidates reproduce ``sample_tokens`` bit for bit.

A step reads nothing back from the device (issue 12): every row has the same number of masked tokens, known on
the host from the cosine schedule (``DecodeState.masked``), so the visible tokens are ``orders[:, masked:]`` and
the revealed ones ``orders[:, mask_len:masked]``: gathers and scatters of host-known sizes. The head's noise is
drawn before the step (same generator, same order), so ``decode_forward`` -- encoder, decoder and the head's
sampling loop, CFG halves batched -- is one graph that ``compile_decoding`` compiles with symbolic sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def mask_len_at(step: int, steps: int, seq_len: int, n_masked: int) -> int:
    """Tokens still masked after ``step`` (MAR: floor(L cos(pi/2 (step+1)/S)), at least 1, and at least
    one token revealed per step)."""
    m = math.floor(seq_len * math.cos(math.pi / 2 * (step + 1) / steps))
    return max(1, min(n_masked - 1, m))


def tokens_per_step(steps: int, seq_len: int) -> list[int]:
    """Tokens revealed at each step of the cosine schedule (the last step reveals all that remain)."""
    out, masked = [], seq_len
    for step in range(steps):
        nxt = 0 if step == steps - 1 else mask_len_at(step, steps, seq_len, masked)
        out.append(masked - nxt)
        masked = nxt
    return out


def cfg_scale(cfg: float, schedule: str, seq_len: int, mask_len: int) -> float:
    """Guidance scale at a step with ``mask_len`` tokens left masked: constant, or MAR's linear ramp
    from 1 (nothing decoded) to ``cfg`` (everything decoded)."""
    if schedule == "linear":
        return 1 + (cfg - 1) * (seq_len - mask_len) / seq_len
    return cfg


@dataclass
class Visible:
    """Host plan of the visible positions for ``Backbone.encode`` (the decoding counterpart of a training step's
    planned ``Masking``): ``keep`` [R, V] ascending positions, the same count V in every row, so nothing is padded."""

    keep: torch.Tensor
    planned: bool = True
    padded: bool = False

    @property
    def keep_valid(self) -> torch.Tensor:
        return torch.ones_like(self.keep, dtype=torch.bool)


@dataclass
class DecodeState:
    """Rows = candidates x prompts (candidate-major). ``text`` holds [cond rows; null rows] when guided."""

    tokens: torch.Tensor  # [R, L, C]
    mask: torch.Tensor  # [R, L] bool, True = not decoded yet
    orders: torch.Tensor  # [R, L] reveal order (shared by the candidates of a prompt)
    text: torch.Tensor  # aligned text [R or 2R, T, D]
    text_valid: torch.Tensor | None
    guided: bool
    candidates: int = 1
    masked: int | None = None  # tokens still masked in every row (host count); None: read from ``mask`` once

    def visible(self) -> Visible:
        """The visible positions as ``Backbone.encode``'s host plan (no device read)."""
        masked = self.n_masked()
        return Visible(self.orders[:, masked:].sort(dim=1).values)

    def n_masked(self) -> int:
        if self.masked is None:  # a state built by hand: one read of the device, then tracked on the host
            self.masked = int(self.mask[0].sum())
        return self.masked

    @property
    def prompts(self) -> int:
        return self.tokens.shape[0] // self.candidates

    def select(self, best: torch.Tensor) -> None:
        """Keep one candidate per prompt: ``best`` [B] candidate index of each prompt."""
        b = self.prompts
        rows = best.to(self.tokens.device) * b + torch.arange(b, device=self.tokens.device)
        self.tokens, self.mask, self.orders = self.tokens[rows], self.mask[rows], self.orders[rows]
        if self.guided:
            rows = torch.cat([rows, rows + self.candidates * b])
        self.text = self.text[rows]
        if self.text_valid is not None:
            self.text_valid = self.text_valid[rows]
        self.candidates = 1


def init_decoding(backbone, t5: torch.Tensor, t5_null: torch.Tensor | None, cfg: float = 1.0,
                  generator: torch.Generator | None = None, t5_valid: torch.Tensor | None = None,
                  candidates: int = 1, t5_null_valid: torch.Tensor | None = None) -> DecodeState:
    """Fully masked canvas, one random order per prompt, the aligned text (computed once for the prompts
    and repeated for the candidates). With a padding mask ``t5_valid`` the null half uses the null condition's
    own mask (``t5_null_valid``, T5("")'s), as a dropped caption does in training."""
    b, device = t5.shape[0], t5.device
    n, c = backbone.seq_len, backbone.token_dim
    guided = cfg != 1.0
    cond, valid = t5, t5_valid
    if guided:
        null = backbone.null_condition(t5_null, b).to(t5.dtype)
        cond = torch.cat([t5, null], dim=0)
        if t5_valid is not None:
            null_valid = backbone.null_valid(t5_null_valid, b, t5_valid.shape[1]).to(t5_valid.device)
            valid = torch.cat([t5_valid, null_valid], 0)
    text = backbone.align_text(cond, valid)
    orders = torch.rand(b, n, generator=generator).argsort(dim=1).to(device)
    if candidates > 1:
        rep = torch.arange(b, device=device).repeat(candidates)
        idx = torch.cat([rep, rep + b]) if guided else rep
        text, orders = text[idx], orders.repeat(candidates, 1)
        valid = None if valid is None else valid[idx.to(valid.device)]
    r = b * candidates
    return DecodeState(torch.zeros(r, n, c, device=device), torch.ones(r, n, dtype=torch.bool, device=device),
                       orders, text, valid, guided, candidates, masked=n)


def decode_forward(backbone, tokens: torch.Tensor, keep: torch.Tensor, reveal: torch.Tensor, text: torch.Tensor,
                   text_valid: torch.Tensor | None, scale: torch.Tensor | None, temperature: float,
                   noise: torch.Tensor) -> torch.Tensor:
    """The device part of one step, reading nothing back: encoder on the visible positions ``keep`` [R, V], decoder,
    the head's sampling loop on the positions to reveal ``reveal`` [R, k] (both ascending), with [cond; null] halves
    in one batch when ``scale`` (a 0-d tensor) is given; ``noise`` [sample steps, R * k, C] are the head's draws.
    Returns the tokens [R, L, C] with the revealed positions written."""
    guided = scale is not None
    r, k = reveal.shape
    tok_in, keep_in, rev_in = (torch.cat([tokens, tokens]), torch.cat([keep, keep]), torch.cat([reveal, reveal])) \
        if guided else (tokens, keep, reveal)
    z = backbone.decode(backbone.encode(tok_in, Visible(keep_in)), text, text_valid)
    # rows in (row, ascending position) order: the order boolean-mask indexing gave, so the draws meet the same tokens
    z = z.gather(1, rev_in[..., None].expand(-1, -1, z.shape[-1])).flatten(0, 1)
    out = backbone.head.sample(z, temperature=temperature, cfg=scale, generator=noise)
    out = out[: r * k].reshape(r, k, out.shape[-1]).to(tokens.dtype)
    return tokens.scatter(1, reveal[..., None].expand(-1, -1, tokens.shape[-1]), out)


def compile_decoding(backbone, backend: str = "inductor") -> None:
    """Compile ``decode_forward`` for ``decode_step`` on this backbone: the visible and revealed counts are symbolic
    sizes (``maybe_mark_dynamic``), so the steps of a run share a graph; sizes 0 and 1 (the first step sees no
    visible token, late steps may reveal one) get their own, compiled once on first occurrence."""
    backbone._decode_forward = torch.compile(decode_forward, backend=backend)


def decode_step(backbone, state: DecodeState, step: int, steps: int, cfg: float = 1.0, cfg_schedule: str = "linear",
                temperature: float = 1.0, generator: torch.Generator | None = None) -> None:
    """One MAR step in place: encoder + decoder on the canvas, reveal the next tokens of the order. The sizes come
    from the host count ``state.masked``; the head's noise is drawn here, in the order the head would draw it."""
    n, device = backbone.seq_len, state.tokens.device
    masked = state.n_masked()
    mask_len = mask_len_at(step, steps, n, masked)
    after = 0 if step == steps - 1 else mask_len  # the first ``after`` of the order stay masked
    keep = state.orders[:, masked:].sort(dim=1).values
    reveal = state.orders[:, after:masked].sort(dim=1).values
    scale = None
    if state.guided:  # MAR scales the last step with its clamped mask_len too
        scale = torch.tensor(cfg_scale(cfg, cfg_schedule, n, mask_len), dtype=torch.float32)
        scale = scale.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else scale.to(device)
    noise = backbone.head.draw_sample_noise(reveal.numel(), device, generator)
    forward = getattr(backbone, "_decode_forward", None)
    if forward is None:
        forward = decode_forward
    elif not torch.compiler.is_compiling():
        for t, dim in ((keep, 1), (reveal, 1), (noise, 1)):
            torch._dynamo.maybe_mark_dynamic(t, dim)
    state.tokens = forward(backbone, state.tokens, keep, reveal, state.text, state.text_valid, scale, temperature, noise)
    state.mask = torch.zeros_like(state.mask).scatter_(1, state.orders[:, :after], True)
    state.masked = after


@torch.no_grad()
def sample_tokens(backbone, t5: torch.Tensor, t5_null: torch.Tensor | None, steps: int = 64,
                  cfg: float = 1.0, cfg_schedule: str = "linear", temperature: float = 1.0,
                  generator: torch.Generator | None = None, t5_valid: torch.Tensor | None = None,
                  t5_null_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Generate tokens [B, L, C] for the T5 caption embeddings ``t5`` [B, T, d] (``steps`` encoder passes)."""
    state = init_decoding(backbone, t5, t5_null, cfg, generator, t5_valid, t5_null_valid=t5_null_valid)
    for step in range(steps):
        decode_step(backbone, state, step, steps, cfg, cfg_schedule, temperature, generator)
    return state.tokens
