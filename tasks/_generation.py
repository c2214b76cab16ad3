"""Generation for the evaluations: the decoding spec, the image sets that the ``fid``, ``clip_score`` and
``bench sample`` evaluations score, and the external judges. The `generate` command (benchmark/generate.py)
and the tasks both build on it; it imports neither.

Decoding settings come from ``eval``: K = ``sad_k`` candidates, the budget ``sad_nfe`` (encoder passes per
image, NFE = K·T + (S − T), see models/sad.py) and ``sad_rerank`` (self = Semantically Aligned Decoding,
clip = the external-CLIP reranker). K = 1 decodes ``sad_nfe`` steps (0: ``sample_steps``); SAD decodes
S = ``sample_steps`` steps and selects at the T that meets the budget (0: 2·S, Table 6's 128 for S = 64);
the reranker decodes K full images of ``sad_nfe`` / K steps each.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.config import ConfigError


@dataclass(frozen=True)
class GenSpec:
    candidates: int  # K
    steps: int  # S, decoding steps of every image
    select_step: int  # T (= S: score finished images, the external reranker)
    rerank: str  # self | clip

    @property
    def nfe(self) -> int:
        from benchmark.models.sad import nfe

        return nfe(self.candidates, self.select_step, self.steps)

    @property
    def name(self) -> str:
        """The record entry of a Table-6 row: sad/k{K}-nfe{NFE}-{self|clip}."""
        return f"sad/k{self.candidates}-nfe{self.nfe}-{self.rerank}"


def gen_spec(e: Any, candidates: int | None = None, budget: int | None = None, rerank: str | None = None,
             steps: int | None = None) -> GenSpec:
    """Resolve (K, S, T) from the eval config (or the given overrides) under the NFE accounting of models/sad.py."""
    from benchmark.models.sad import select_step_for_budget

    k = candidates if candidates is not None else e.sad_k
    rerank = rerank or e.sad_rerank
    s = steps or e.sample_steps
    budget = budget if budget is not None else e.sad_nfe
    if k == 1:
        s = budget or s
        return GenSpec(1, s, s, "self")
    if rerank == "clip":
        budget = budget or 2 * s
        if budget % k:
            raise ConfigError(f"the external reranker decodes K full images: NFE budget {budget} is not a multiple of K={k}")
        return GenSpec(k, budget // k, budget // k, "clip")
    budget = budget or 2 * s
    return GenSpec(k, s, select_step_for_budget(k, budget, s), "self")


def external_clip(cfg: Any, device: torch.device):
    """open_clip with local weights (``eval.clip_model``, ``eval.clip_path`` / $DREAM_BENCH_CLIP). The name
    ``tiny-random`` builds a tiny randomly initialised open_clip model: a test stand-in, never a measurement."""
    from benchmark.models.sad import ExternalClip

    e = cfg.eval
    if e.clip_model == "tiny-random":
        import open_clip

        torch.manual_seed(0)
        model = open_clip.CLIP(embed_dim=32, vision_cfg={"image_size": 32, "layers": 1, "width": 64, "patch_size": 8,
                                                         "head_width": 32},
                               text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1})
        return ExternalClip("tiny-random", model=model).to(device)
    return ExternalClip(e.clip_model, e.clip_path, device).to(device)


class RefScorer:
    """Synthetic stand-in for an external image-text judge: the reference network's log-probability of the
    caption's main shape and colour (tasks/_reference.py)."""

    model_id = "reference-network"

    def __init__(self, image_size: int | None = None) -> None:
        from benchmark.tasks._reference import load_reference

        self.net, self.info = load_reference(image_size=image_size)

    @torch.no_grad()
    def log_prob(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        from benchmark.data.synthetic import COLOR_NAMES, SHAPES, parse_caption

        x = ((images.float().cpu() + 1) * 127.5).round().clamp(0, 255)
        f = self.net.features(x)
        ls, lc = self.net.shape_head(f).log_softmax(-1), self.net.color_head(f).log_softmax(-1)
        parsed = [parse_caption(p) for p in prompts]
        s = torch.tensor([SHAPES.index(p["shape"]) for p in parsed])
        c = torch.tensor([COLOR_NAMES.index(p["color"]) for p in parsed])
        return ls.gather(1, s[:, None])[:, 0] + lc.gather(1, c[:, None])[:, 0]


def _scorer(comps: Any, spec: GenSpec, prompts: list[str], judge: Any):
    from benchmark.models.sad import external_scorer, self_scorer

    if spec.candidates == 1:
        return None
    if spec.rerank == "self":
        return self_scorer(comps.backbone, comps.objective, prompts)
    if isinstance(judge, RefScorer):
        return lambda state: judge.log_prob(comps.tokenizer.decode(state.tokens), prompts * state.candidates)
    return external_scorer(judge, comps.tokenizer.decode, prompts)


@dataclass
class Generated:
    images: torch.Tensor  # uint8 [N, 3, H, W]
    prompts: list[str]
    scores: list[list[float]]  # per prompt: the K alignment scores at the select step (empty for K = 1)
    chosen: list[int]
    nfe: int
    score_passes: int
    seconds: float  # wall time of the decoding (and scoring), the throughput's denominator


@torch.no_grad()
def generate(comps: Any, prompts: list[str], spec: GenSpec, seed: int = 0, batch: int = 64, judge: Any = None,
             cfg_scale: float | None = None, cfg_schedule: str | None = None, temperature: float | None = None) -> Generated:
    """Decode one image per prompt with (K, S, T) of ``spec``; ``judge`` scores finished candidates for the
    external reranker (an ExternalClip or a RefScorer)."""
    from benchmark.models.sad import sample_candidates

    e = comps.cfg.eval
    scale = e.cfg if cfg_scale is None else cfg_scale
    schedule = cfg_schedule or e.cfg_schedule
    temp = e.temperature if temperature is None else temperature
    if spec.rerank == "clip" and spec.candidates > 1 and judge is None:
        raise ValueError("the external reranker needs a judge (ExternalClip or RefScorer)")
    comps.model.eval()
    conditional = comps.objective.capabilities.text_conditioned  # MAR: the null condition, no guidance
    g = torch.Generator().manual_seed(seed)
    images, scores, chosen = [], [], []
    res = None
    t0 = time.perf_counter()
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        t5, valid = comps.t5.encode(chunk) if conditional else (None, None)
        valid = valid.to(comps.device) if valid is not None and comps.cfg.model.text_pad_mask else None
        if not conditional:  # the null condition with its own padding mask, as in training
            t5 = comps.backbone.null_condition(comps.t5_null, len(chunk))
            if comps.cfg.model.text_pad_mask:
                valid = comps.backbone.null_valid(comps.t5_null_valid, len(chunk), t5.shape[1])
        res = sample_candidates(comps.backbone, t5.to(comps.device), comps.t5_null, spec.candidates, spec.select_step,
                                _scorer(comps, spec, chunk, judge), spec.steps, scale if conditional else 1.0,
                                schedule, temp, g, valid, comps.t5_null_valid)
        images.append(((comps.tokenizer.decode(res.tokens).float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu())
        scores += res.scores.T.tolist() if res.scores is not None else [[] for _ in chunk]
        chosen += res.chosen.tolist()
    seconds = time.perf_counter() - t0
    return Generated(torch.cat(images), list(prompts), scores, chosen, spec.nfe,
                     res.score_passes if res else 0, seconds)


# ------------------------------------------------------------------ evaluation prompts and image folders
GEN_REF_HELP = (
    "Generation references are read from {root}/<variant>/captions.txt (one caption per line) and "
    "{root}/<variant>/images/ (the reference images, any of png/jpg, sorted names; centre-cropped and resized to "
    "256). CC12M-50K: the first 50,000 held-out pairs of CC12M; MS-COCO-30K: 30,000 captions of COCO 2014 val "
    "(one per image, https://cocodataset.org) with their images. Pass --set eval.gen_root=/data/genref or export "
    "DREAM_BENCH_GEN_REF."
)
PROTOCOL_SAMPLES = {"cc12m": 50_000, "coco": 30_000, "synthetic": 256}  # Table 2: CC12M-50K, MS-COCO-30K


def eval_prompts(cfg: Any, variant: str | None, n: int = 0) -> tuple[list[str], Path | None, str]:
    """(prompts, reference image folder or None for synthetic, protocol name)."""
    import os

    e = cfg.eval
    if cfg.data.name == "synthetic":
        from benchmark.data import SYNTHETIC_SPLITS
        from benchmark.data.synthetic import caption, sample_scenes

        n = n or e.gen_samples or PROTOCOL_SAMPLES["synthetic"]
        return [caption(s) for s in sample_scenes(n, SYNTHETIC_SPLITS["probe_test"])], None, f"synthetic-{n}"
    variant = variant or "cc12m"
    if variant not in ("cc12m", "coco"):
        raise ConfigError(f"unknown generation protocol {variant!r}; choose cc12m or coco")
    root = e.gen_root or os.environ.get("DREAM_BENCH_GEN_REF", "")
    folder = Path(root) / variant
    if not root or not (folder / "captions.txt").is_file() or not (folder / "images").is_dir():
        raise FileNotFoundError(f"generation reference not found at {folder if root else '(eval.gen_root is empty)'}. "
                                + GEN_REF_HELP.format(root=root or "<eval.gen_root>"))
    n = n or e.gen_samples or PROTOCOL_SAMPLES[variant]
    prompts = [line.rstrip("\n") for line in (folder / "captions.txt").read_text().splitlines()][:n]
    return prompts, folder / "images", f"{variant}-{n}"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A cheap fingerprint of the weights (float64 sums), so cached images never outlive a retrained model."""
    with torch.no_grad():
        sums = [float(p.double().sum()) for p in model.parameters()]
    return hashlib.sha256(json.dumps(sums).encode()).hexdigest()[:12]


def generated_folder(comps: Any, cfg: Any, prompts: list[str], spec: GenSpec) -> tuple[Path, dict]:
    """PNG folder of the generated images (clean-fid reads PNGs; JPEG would shift FID), cached under
    ``cache_root()/generated/<key>`` so `fid` and `clip_score` of one run share one generation."""
    from torchvision.io import write_png

    from benchmark.data import cache_root

    e = cfg.eval
    facts = {"spec": asdict(spec), "cfg": e.cfg, "cfg_schedule": e.cfg_schedule, "temperature": e.temperature,
             "seed": e.gen_seed, "prompts": hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16],
             "weights": weights_fingerprint(comps.model), "judge": e.clip_model if spec.rerank == "clip" else None}
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_root()) / "generated" / key
    meta = folder / "meta.json"
    if meta.exists():
        return folder, json.loads(meta.read_text())
    judge = make_judge(cfg, comps, spec)
    out = generate(comps, prompts, spec, e.gen_seed, e.gen_batch, judge)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(out.images):
        write_png(img, str(folder / f"{i:06d}.png"))
    (folder / "captions.txt").write_text("\n".join(prompts) + "\n")
    info = {**facts, "n": len(prompts), "seconds": round(out.seconds, 3), "nfe": out.nfe,
            "throughput": len(prompts) / max(out.seconds, 1e-9),
            "judge_id": getattr(judge, "model_id", None)}
    meta.write_text(json.dumps(info, indent=1))
    return folder, info


def make_judge(cfg: Any, comps: Any, spec: GenSpec) -> Any:
    """The external reranker's judge: open_clip with local weights; on synthetic data without CLIP weights,
    the reference network (the only image-text judge available offline; recorded as such)."""
    import os

    if spec.rerank != "clip" or spec.candidates == 1:
        return None
    if cfg.data.name == "synthetic" and not (cfg.eval.clip_path or os.environ.get("DREAM_BENCH_CLIP")) \
            and cfg.eval.clip_model != "tiny-random":
        return RefScorer(cfg.model.image_size)
    return external_clip(cfg, comps.device)


def read_folder(folder: Path) -> torch.Tensor:
    from torchvision.io import read_image

    return torch.stack([read_image(str(p)) for p in sorted(folder.glob("*.png"))])
