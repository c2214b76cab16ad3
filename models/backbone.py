"""The one shared backbone: MAR-style encoder with buffer tokens, FLUID-style text-conditioned decoder,
text aligner and MLP diffusion head (§3.1, §9.2). Method names follow MAR (``forward_mae_encoder`` etc.
became ``encode`` / ``decode``) so readers of the reference code find their way.

Masks are boolean [B, L] with True = masked. Samples may have different numbers of visible tokens
(per-sample or per-group ratios): the encoder then pads to the longest row and uses a key-padding mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from benchmark.models.diffusion_head import DiffusionHead
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint


def _ln(dim: int, **kw) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6, **kw)  # MAR: LayerNorm eps 1e-6


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, drop: float = 0.0) -> None:
        super().__init__()
        self.heads, self.drop = heads, drop
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_valid: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
        # y may be one row shared by the batch (MAR's null condition): K/V projected once, broadcast
        k, v = self.kv(y).reshape(y.shape[0], y.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        mask = None if y_valid is None else y_valid[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))


class CrossAttentionBlock(nn.Module):
    """Self-attention over image tokens, cross-attention to the aligned text, MLP (FLUID decoder block)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop: float) -> None:
        super().__init__()
        self.block = Block(dim, heads, mlp_ratio, qkv_bias=True, proj_drop=drop, attn_drop=drop,
                           norm_layer=_ln)
        self.norm_x = nn.LayerNorm(dim, eps=1e-6)
        self.cross = CrossAttention(dim, heads, drop)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_valid: torch.Tensor | None = None) -> torch.Tensor:
        blk = self.block
        x = x + blk.drop_path1(blk.ls1(blk.attn(blk.norm1(x))))
        x = x + self.cross(self.norm_x(x), y, y_valid)
        return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))


def vit_block(dim: int, heads: int, mlp_ratio: float, drop: float) -> Block:
    return Block(dim, heads, mlp_ratio, qkv_bias=True, proj_drop=drop, attn_drop=drop,
                 norm_layer=_ln)


@dataclass
class EncoderOutput:
    tokens: torch.Tensor  # [B, nb + V, D] after the final norm (V = longest visible row)
    valid: torch.Tensor  # [B, nb + V] bool, False on padding
    ids_keep: torch.Tensor  # [B, V] positions of the visible tokens (padding rows point anywhere)
    num_buffer: int
    layers: dict[int, torch.Tensor] = field(default_factory=dict)  # block index (1-based) -> raw output

    def pool(self, which: str = "all", layer: int = 0) -> torch.Tensor:
        """Mean over valid tokens: all (buffer + image), buffer only, or image only."""
        x = self.tokens if layer == 0 else self.layers[layer]
        w = self.valid.clone()
        if which == "buffer":
            w[:, self.num_buffer:] = False
        elif which == "image":
            w[:, : self.num_buffer] = False
        w = w.to(x.dtype).unsqueeze(-1)
        return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class Backbone(nn.Module):
    def __init__(self, cfg, seq_len: int, token_dim: int, with_decoder: bool = True) -> None:
        super().__init__()
        d, nb = cfg.width, cfg.buffer_tokens
        self.cfg, self.seq_len, self.token_dim, self.num_buffer = cfg, seq_len, token_dim, nb
        self.encoder_depth = cfg.depth // 2
        self.grad_checkpoint = cfg.grad_checkpoint
        # Encoder (MAR): z_proj -> [buffer; tokens] + pos -> LN -> drop masked -> blocks -> norm.
        self.z_proj = nn.Linear(token_dim, d)
        self.buffer = nn.Parameter(torch.zeros(1, nb, d))  # §3.1 learnable buffer tokens [B]
        self.encoder_pos = nn.Parameter(torch.zeros(1, nb + seq_len, d))
        self.z_proj_ln = nn.LayerNorm(d, eps=1e-6)
        self.encoder_blocks = nn.ModuleList(
            vit_block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(self.encoder_depth))
        self.encoder_norm = nn.LayerNorm(d, eps=1e-6)
        self.with_decoder = with_decoder
        if with_decoder:
            self._build_decoder(cfg, d, nb, seq_len, token_dim)
        self.initialize_weights()
        if with_decoder:  # built after init so it keeps its own (zero-output) initialisation, as in MAR
            self.head = DiffusionHead(token_dim, d, cfg.head_width or d, cfg.head_depth,
                                      cfg.diffusion_steps, cfg.sample_steps, cfg.noise_schedule,
                                      clip_denoised=cfg.tokenizer == "pixel")

    def _build_decoder(self, cfg, d: int, nb: int, seq_len: int, token_dim: int) -> None:
        self.decoder_embed = nn.Linear(d, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder_pos = nn.Parameter(torch.zeros(1, nb + seq_len, d))
        self.decoder_proj_ln = nn.LayerNorm(d, eps=1e-6)
        self.decoder_blocks = nn.ModuleList(
            CrossAttentionBlock(d, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth // 2))
        self.decoder_norm = nn.LayerNorm(d, eps=1e-6)
        self.diffusion_pos = nn.Parameter(torch.zeros(1, seq_len, d))
        # Text aligner (FLUID): Linear(T5 -> D) + pos (zero init, as released) -> LN -> blocks.
        self.text_proj = nn.Linear(cfg.t5_dim, d)
        self.text_pos = nn.Parameter(torch.zeros(1, cfg.text_len, d))
        self.text_proj_ln = nn.LayerNorm(d, eps=1e-6)
        self.aligner_blocks = nn.ModuleList(
            vit_block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.aligner_depth))
        if cfg.null_text == "learned":  # the paper's "null token" for CFG (§9.5.2)
            self.null_text = nn.Parameter(torch.zeros(1, 1, cfg.t5_dim))

    def initialize_weights(self) -> None:
        for name, p in self.named_parameters(recurse=False):
            if name != "text_pos":  # the released aligner keeps its position embedding at zero init
                nn.init.normal_(p, std=0.02)
        self.apply(_init_weights)

    # -- encoder ------------------------------------------------------------------------------
    def _run(self, blk: nn.Module, *args) -> torch.Tensor:
        if self.grad_checkpoint and self.training:
            return checkpoint(blk, *args, use_reentrant=False)
        return blk(*args)

    def encode(self, tokens: torch.Tensor, mask=None, return_layers: tuple[int, ...] = (),
               num_blocks: int | None = None) -> EncoderOutput:
        """Encode the visible tokens. ``mask``: a [B, L] bool tensor (True = masked), None (all visible), or a
        training step's planned ``Masking`` whose host-made ``keep``/``keep_valid``/``padded`` shape the step
        without reading the device (the tensor path reads the longest row's length back: one sync)."""
        b, n, _ = tokens.shape
        nb = self.num_buffer
        x = self.z_proj(tokens)
        # position embeddings in the stream's dtype: under bf16 autocast an fp32 add would turn the residual stream fp32
        x = torch.cat([self.buffer.expand(b, -1, -1).to(x.dtype), x], dim=1) + self.encoder_pos.to(x.dtype)
        x = self.z_proj_ln(x)
        if getattr(mask, "planned", False):
            ids_keep, img_valid, padded = mask.keep, mask.keep_valid, mask.padded
        else:
            if mask is None:
                mask = torch.zeros(b, n, dtype=torch.bool, device=tokens.device)
            n_vis = (~mask).sum(1)
            v = int(n_vis.max())
            # Visible positions first (stable: in raster order), then the masked ones; keep the first v.
            ids_keep = torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, :v]
            img_valid = torch.arange(v, device=x.device)[None] < n_vis[:, None]
            padded = not bool(img_valid.all())
        img = torch.gather(x[:, nb:], 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :nb], img], dim=1)
        valid = torch.cat([torch.ones(b, nb, dtype=torch.bool, device=x.device), img_valid], dim=1)
        attn_mask = valid[:, None, None, :] if padded else None
        layers = {}
        for i, blk in enumerate(self.encoder_blocks[:num_blocks], start=1):
            x = self._run(blk, x, attn_mask)
            if i in return_layers:
                layers[i] = x
        if num_blocks is None or num_blocks == self.encoder_depth:
            x = self.encoder_norm(x)
        return EncoderOutput(x, valid, ids_keep, nb, layers)

    # -- text ---------------------------------------------------------------------------------
    def condition(self, t5: torch.Tensor, drop: torch.Tensor | None = None,
                  t5_null: torch.Tensor | None = None) -> torch.Tensor:
        """Swap dropped captions for the null condition (CFG training, §9.5.2): T5("") or learned. No device
        value is read: a batch without drops goes through the same ``where`` (it selects every caption)."""
        if drop is None:
            return t5
        if hasattr(self, "null_text"):
            null = self.null_text.to(t5.dtype).expand_as(t5)
        else:
            if t5_null is None:
                raise ValueError("null_text=empty_caption needs the T5 embedding of the empty caption")
            null = t5_null.to(t5.dtype).expand_as(t5)
        return torch.where(drop[:, None, None], null, t5)

    def null_valid(self, t5_null_valid: torch.Tensor | None, batch: int, length: int) -> torch.Tensor:
        """The null condition's own padding mask [batch, length]: T5("")'s (its EOS token only); every position
        for the learned null token (or when the caller has no mask for T5(""))."""
        if hasattr(self, "null_text") or t5_null_valid is None:
            return torch.ones(batch, length, dtype=torch.bool, device=self.text_pos.device)
        return t5_null_valid.to(self.text_pos.device).expand(batch, -1)

    def condition_valid(self, valid: torch.Tensor | None, drop: torch.Tensor | None,
                        t5_null_valid: torch.Tensor | None = None) -> torch.Tensor | None:
        """The padding mask that goes with ``condition``: dropped captions take the null condition's mask."""
        if valid is None or drop is None:  # no device read: a batch without drops selects every caption's mask
            return valid
        null = self.null_valid(t5_null_valid, valid.shape[0], valid.shape[1]).to(valid.device)
        return torch.where(drop[:, None], null, valid)

    def null_condition(self, t5_null: torch.Tensor | None, batch: int) -> torch.Tensor:
        if hasattr(self, "null_text"):
            return self.null_text.expand(batch, self.cfg.text_len, -1)
        assert t5_null is not None
        return t5_null.expand(batch, -1, -1)

    def align_text(self, t5: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        y = self.text_proj(t5)
        y = self.text_proj_ln(y + self.text_pos[:, : t5.shape[1]].to(y.dtype))
        attn_mask = None if valid is None else valid[:, None, None, :]
        for blk in self.aligner_blocks:
            y = self._run(blk, y, attn_mask)
        return y

    # -- decoder ------------------------------------------------------------------------------
    def decode(self, enc: EncoderOutput, text: torch.Tensor, text_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Condition z [B, L, D] for the diffusion head from the encoder output and the aligned text."""
        x = self.decoder_embed(enc.tokens)
        b, _, d = x.shape
        nb, n = self.num_buffer, self.seq_len
        img_valid = enc.valid[:, nb:]
        # Padding rows scatter into a dummy slot n that is dropped afterwards.
        index = torch.where(img_valid, enc.ids_keep, torch.full_like(enc.ids_keep, n))
        canvas = self.mask_token.to(x.dtype).expand(b, n + 1, d).clone()
        canvas = canvas.scatter(1, index.unsqueeze(-1).expand(-1, -1, d), x[:, nb:])
        x = torch.cat([x[:, :nb], canvas[:, :n]], dim=1) + self.decoder_pos.to(x.dtype)
        x = self.decoder_proj_ln(x)
        for blk in self.decoder_blocks:
            x = self._run(blk, x, text, text_valid)
        x = self.decoder_norm(x)[:, nb:]
        return x + self.diffusion_pos.to(x.dtype)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        if m.weight is not None:
            nn.init.ones_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
