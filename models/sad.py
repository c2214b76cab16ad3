"""Semantically Aligned Decoding (Algorithm 3, §3.4) and the external-CLIP reranker (Table 6).

SAD: K candidates per prompt are decoded to step T (batched: one encoder pass of K·B rows per step);
each partial canvas is encoded by the model's own encoder with the current mask (decoded tokens
visible, the rest masked), pooled and projected exactly as for the CLIP loss, and scored by cosine
similarity with the prompt's embedding from the model's own CLIP text tower; per prompt the argmax
candidate alone is decoded from step T to the end. The reranker decodes K complete images and keeps the
one an external CLIP (open_clip) prefers. Both are ``sample_candidates`` with a different scorer and
select step (T = S for the reranker: it can only score finished images).

NFE accounting (Table 6, Table 17; anchors-models §0.9). NFE counts encoder forward passes per image
trajectory, one per decoding step of one candidate (the CFG halves travel in the same pass and are not
counted twice); the scoring passes are *not* counted (they are reported separately as
``score_passes``), because only that convention fits the paper's fixed budget of 128 with integer T:

    NFE = K·T + (S − T)        S = decoding steps (64), T = select step
    K=1, 64 NFE   -> 64 steps             K=1, 128 NFE -> 128 steps
    K=2 + Ext. CLIP, 128 NFE -> T = S = 64: two full decodes
    K=5 -> T=16,  K=9 -> T=8 (8 of 64 steps = the paper's "12.5 %"),  K=17 -> T=4

Algorithm 3 in the paper selects at step T without decoding it (S − 1 decoding steps in all, 127 NFE);
the released code selects and then decodes step T in the same iteration. We follow the code: the
selection happens before step T is decoded, so every image gets all S steps and the budget is exact.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from benchmark.models.sampler import DecodeState, decode_step, init_decoding

ScoreFn = Callable[[DecodeState], torch.Tensor]  # state -> scores [K * B] (candidate-major rows)


def nfe(candidates: int, select_step: int, steps: int) -> int:
    """Encoder passes of one image: K·T + (S − T) (scoring passes excluded, see the module docstring)."""
    return candidates * select_step + (steps - select_step)


def select_step_for_budget(candidates: int, budget: int, steps: int) -> int:
    """T such that K·T + (S − T) = budget (K > 1); a budget that no integer T meets is an error."""
    from benchmark.config import ConfigError

    if candidates == 1:
        if budget != steps:
            raise ConfigError(f"K=1 uses {steps} NFE per image, not {budget}: set the decoding steps to the budget")
        return steps
    t, rem = divmod(budget - steps, candidates - 1)
    if rem or not 1 <= t <= steps:
        raise ConfigError(f"no select step T in [1, {steps}] gives K*T + ({steps} - T) = {budget} for K={candidates}")
    return t


@dataclass
class CandidateResult:
    tokens: torch.Tensor  # [B, L, C] the kept candidate of each prompt
    scores: torch.Tensor | None  # [K, B] alignment scores at the select step (None for K = 1)
    chosen: torch.Tensor  # [B] index of the kept candidate
    nfe: int  # encoder passes per image, K·T + (S − T)
    score_passes: int  # scorer passes per image (K, or 0 for K = 1), not part of NFE


@torch.no_grad()
def sample_candidates(backbone, t5: torch.Tensor, t5_null: torch.Tensor | None, candidates: int,
                      select_step: int, score_fn: ScoreFn | None, steps: int = 64, cfg: float = 1.0,
                      cfg_schedule: str = "linear", temperature: float = 1.0,
                      generator: torch.Generator | None = None, t5_valid: torch.Tensor | None = None,
                      t5_null_valid: torch.Tensor | None = None) -> CandidateResult:
    """Decode ``candidates`` trajectories per prompt to ``select_step`` T, score them with ``score_fn``,
    keep the per-prompt argmax and decode it to the end (T = ``steps``: score the finished images).
    K = 1 never calls the scorer and equals ``sample_tokens`` bit for bit for the same generator."""
    if candidates > 1 and score_fn is None:
        raise ValueError("K > 1 candidates need a score function")
    if not 0 <= select_step <= steps:
        raise ValueError(f"select_step must be in [0, {steps}], got {select_step}")
    b = t5.shape[0]
    state = init_decoding(backbone, t5, t5_null, cfg, generator, t5_valid, candidates, t5_null_valid)
    scores = None
    chosen = torch.zeros(b, dtype=torch.long)
    for step in range(steps + 1):
        if step == select_step and candidates > 1:
            scores = score_fn(state).float().reshape(candidates, b).cpu()
            chosen = scores.argmax(dim=0)
            state.select(chosen)
        if step < steps:
            decode_step(backbone, state, step, steps, cfg, cfg_schedule, temperature, generator)
    return CandidateResult(state.tokens, scores, chosen, nfe(candidates, select_step, steps),
                           candidates if candidates > 1 else 0)


def self_scorer(backbone, objective, prompts: list[str]) -> ScoreFn:
    """The model's own alignment (the released ``_clip_scores``): encoder on the partial canvas with the
    current mask, pooled + projected as in the CLIP loss, cosine with the prompt's own CLIP-text embedding."""
    if not objective.capabilities.clip_text:
        from benchmark.settings import ConfigError

        raise ConfigError(f"Semantically Aligned Decoding needs an objective with a CLIP text tower "
                          f"(capabilities.clip_text), not {objective.name}")
    clip, c = objective.clip, objective.cfg
    was_training = clip.training
    clip.eval()  # the projection MLP has BatchNorm: running statistics at inference
    ids = clip.tokenizer(prompts).to(next(clip.parameters()).device)
    text = clip.embed_text(ids)
    clip.train(was_training)

    def score(state: DecodeState) -> torch.Tensor:
        layers = (c.clip_layer,) if c.clip_layer else ()
        enc = backbone.encode(state.tokens, state.visible(), return_layers=layers)  # host plan: no device read
        clip.eval()
        image = clip.embed_image(enc.pool(c.clip_pool, c.clip_layer))
        clip.train(was_training)
        return (image * text.repeat(state.candidates, 1)).sum(-1)

    return score


CLIP_HELP = (
    "The external CLIP (CLIP score, the Ext. CLIP reranker) is open_clip {model} with local weights: download "
    "them on a machine with internet, e.g. `huggingface-cli download timm/vit_large_patch14_clip_224.openai "
    "open_clip_pytorch_model.bin --local-dir /data/weights/clip-vit-l-14` (OpenAI ViT-L/14), then pass "
    "--set eval.clip_path=/data/weights/clip-vit-l-14/open_clip_pytorch_model.bin or export DREAM_BENCH_CLIP=<file>."
)


class ExternalClip(torch.nn.Module):
    """An open_clip model with local weights that scores (image, caption) pairs: cos(E_I, E_T).

    Images come in [-1, 1] at any square size; they are resized to the model's input size (torch bicubic
    with antialias, the generated images are square so no crop is needed) and normalised with the model's
    mean/std. ``model_id`` is what the record stores."""

    def __init__(self, model_name: str = "ViT-L-14", weights: str = "", device: str | torch.device = "cpu",
                 model: torch.nn.Module | None = None) -> None:
        super().__init__()
        import open_clip

        if model is None:
            weights = weights or os.environ.get("DREAM_BENCH_CLIP", "")
            if not weights or not os.path.isfile(weights):
                raise FileNotFoundError(f"external CLIP weights not found at {weights or '(eval.clip_path is empty)'}. "
                                        + CLIP_HELP.format(model=model_name))
            model = open_clip.create_model(model_name, pretrained=weights, device=device)
        self.model = model.eval().requires_grad_(False)
        known = model_name in open_clip.list_models()
        self.tokenizer = (open_clip.get_tokenizer(model_name) if known
                          else open_clip.tokenizer.SimpleTokenizer(context_length=getattr(model, "context_length", 77)))
        self.model_id = f"open_clip:{model_name}@{os.path.basename(weights) if weights else 'random-init'}"
        vis = self.model.visual
        pp = getattr(vis, "preprocess_cfg", None) or {}
        size = pp.get("size", vis.image_size)
        self.size = size if isinstance(size, int) else size[0]
        mean, std = pp.get("mean", open_clip.OPENAI_DATASET_MEAN), pp.get("std", open_clip.OPENAI_DATASET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        device = self.mean.device
        x = (images.float().to(device) + 1) / 2
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", antialias=True, align_corners=False)
        x = (x.clamp(0, 1) - self.mean) / self.std
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, captions: list[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(captions).to(self.mean.device)).float(), dim=-1)

    @torch.no_grad()
    def cosine(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        return (self.embed_images(images) * self.embed_texts(captions)).sum(-1).cpu()


def external_scorer(clip: ExternalClip, detokenize: Callable[[torch.Tensor], torch.Tensor], prompts: list[str]) -> ScoreFn:
    """Score finished candidates: tokens -> images (``detokenize``) -> external CLIP cosine with the prompt."""
    text = clip.embed_texts(prompts)

    def score(state: DecodeState) -> torch.Tensor:
        images = detokenize(state.tokens)
        return (clip.embed_images(images) * text.repeat(state.candidates, 1).to(clip.mean.device)).sum(-1)

    return score
