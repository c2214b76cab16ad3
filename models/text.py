"""Text encoders (§3.1, §9.2.2).

* Conditioning: a frozen T5 encoder (transformers, local folder) -> embeddings [B, 128, d_t5] that the
  backbone's 6-layer aligner maps into the decoder. The released code calls T5 with ``input_ids`` only
  (pads attended); ``pad_mask=True`` passes the attention mask instead.
* Contrastive: a CLIP text transformer (open_clip ``TextTransformer``, OpenAI BPE tokenizer, 77 tokens)
  plus the image-side projection and the learnable temperature: ``ClipHead``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

T5_HELP = (
    "Download a T5 encoder in transformers format (official recipe: google-t5/t5-large; paper: "
    "google/t5-v1_1-xxl) on a machine with internet, e.g. `huggingface-cli download google-t5/t5-large "
    "--local-dir /data/weights/t5-large`, then pass --set model.t5_path=/data/weights/t5-large or export "
    "DREAM_BENCH_T5=/data/weights/t5-large. The folder needs config.json, the weights and spiece.model."
)


class FrozenT5(nn.Module):
    """Frozen T5 encoder from a local folder; ``encode(captions)`` -> ([B, L, d], valid [B, L])."""

    def __init__(self, path: str = "", max_length: int = 128, pad_mask: bool = False) -> None:
        super().__init__()
        from transformers import T5EncoderModel, T5Tokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        path = path or os.environ.get("DREAM_BENCH_T5", "")
        if not path or not (Path(path) / "config.json").exists():
            raise FileNotFoundError(f"T5 encoder not found at {path or '(model.t5_path is empty)'}. {T5_HELP}")
        if not (Path(path) / "spiece.model").exists():
            raise FileNotFoundError(f"T5 tokenizer (spiece.model) missing in {path}. {T5_HELP}")
        # transformers 5 ignores T5Tokenizer(vocab_file=...): load from the folder holding spiece.model.
        self.tokenizer = T5Tokenizer.from_pretrained(path, extra_ids=0, legacy=False)
        self.model = T5EncoderModel.from_pretrained(path).eval().requires_grad_(False)
        self.max_length, self.pad_mask = max_length, pad_mask
        self.dim = self.model.config.d_model

    def train(self, mode: bool = True) -> FrozenT5:  # always frozen, always eval
        return super().train(False)

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(captions, padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt")
        return tok.input_ids, tok.attention_mask.bool()

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        out = self.model(input_ids=ids.to(device),
                         attention_mask=valid.to(device).long() if self.pad_mask else None)
        return out.last_hidden_state.float()

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, valid = self.tokenize(captions)
        return self.encode_ids(ids, valid), valid


class ClipTokenizer:
    """OpenAI CLIP BPE (shipped inside open_clip, works offline)."""

    def __init__(self, context_length: int = 77) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.tok = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length

    def __call__(self, captions: list[str]) -> torch.Tensor:
        return self.tok(captions, context_length=self.context_length)


def build_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """StableRep's projection MLP (Linear-BN-ReLU x2, Linear), used by the released DREAM code."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim),
    )


class CausalSelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention``'s weights and maths as open_clip calls it (self-attention, no weights returned), causal
    through SDPA's ``is_causal`` (flash-eligible) instead of an explicit float mask [L, L] of -inf."""

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                need_weights: bool = False, attn_mask: torch.Tensor | None = None, **_) -> tuple[torch.Tensor, None]:
        if attn_mask is not None:
            raise ValueError("CausalSelfAttention is causal by itself: the text tower must pass no attn_mask")
        x = query if self.batch_first else query.transpose(0, 1)
        b, n, d = x.shape
        h = self.num_heads
        q, k, v = nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias).reshape(b, n, 3, h, d // h).permute(
            2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                                         is_causal=True)
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, d))
        return (out if self.batch_first else out.transpose(0, 1)), None


def causal_sdpa(text: nn.Module) -> None:
    """Swap an open_clip text tower's causal float mask for ``is_causal`` attention in place (same parameters)."""
    blocks = text.transformer.resblocks
    if text.attn_mask is None or getattr(text, "cls_emb", None) is not None or getattr(text, "use_pad_mask", False) \
            or not all(type(blk.attn) is nn.MultiheadAttention for blk in blocks):
        return  # a tower with other masks or attention keeps open_clip's path
    for blk in blocks:
        blk.attn.__class__ = CausalSelfAttention
    text.attn_mask = None


class ClipHead(nn.Module):
    """CLIP text tower + image projection + learnable temperature τ (Eq. 2)."""

    def __init__(self, cfg, image_width: int) -> None:
        super().__init__()
        from open_clip.transformer import QuickGELU, TextTransformer

        embed = cfg.embed_dim if cfg.image_proj != "none" else image_width
        self.text = TextTransformer(
            context_length=cfg.clip_context, vocab_size=49408, width=cfg.clip_text_width,
            heads=cfg.clip_text_heads, layers=cfg.clip_text_layers, output_dim=embed,
            act_layer=QuickGELU if cfg.clip_text_act == "quick_gelu" else nn.GELU,
        )
        causal_sdpa(self.text)
        if cfg.image_proj == "mlp":
            self.image_proj: nn.Module = build_mlp(image_width, cfg.proj_hidden, embed)
        elif cfg.image_proj == "linear":
            self.image_proj = nn.Linear(image_width, embed, bias=False)
            nn.init.normal_(self.image_proj.weight, std=image_width**-0.5)
        else:
            self.image_proj = nn.Identity()
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))
        self.logit_scale_max = cfg.logit_scale_max
        self.tokenizer = ClipTokenizer(cfg.clip_context)
        if cfg.clip_init == "official":
            self.official_init()

    def official_init(self) -> None:
        """The released code's init (anchors-models §0.10): MAR's ``_init_weights`` runs over the whole model, so every
        Linear of the text tower and of the projection MLP is xavier-uniform with zero bias; the token embedding keeps
        PyTorch's N(0, 1); attention in-projections keep ``nn.MultiheadAttention``'s xavier; positional embedding
        N(0, 0.01) and text projection N(0, width^-0.5) are open_clip's, unchanged. (``open_clip``: StableRep's init.)"""
        mlp = [self.image_proj] if isinstance(self.image_proj, nn.Sequential) else []
        for m in [self.text, *mlp]:
            for layer in m.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
                    if layer.bias is not None:
                        nn.init.zeros_(layer.bias)
                elif isinstance(layer, nn.MultiheadAttention):
                    nn.init.xavier_uniform_(layer.in_proj_weight)
                    nn.init.zeros_(layer.in_proj_bias)
        nn.init.normal_(self.text.token_embedding.weight, std=1.0)

    def embed_image(self, pooled: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.image_proj(pooled), dim=-1)

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.text(ids), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale) = 1/τ; clamped when logit_scale_max > 0 (StableRep / open_clip)."""
        s = self.logit_scale
        if self.logit_scale_max > 0:
            s = s.clamp(max=self.logit_scale_max)
        return s.exp()

