"""Zero-shot accuracy vs masking ratio (Fig. 7), with the model's own CLIP text tower.

Classifier (CLIP_benchmark ``zero_shot_classifier``): every class name is put into every template, the text
embeddings are L2-normalised, averaged and renormalised; logits = 100 * image_embedding @ W. The image
embedding is the CLIP-loss path of the objective: the encoder sees only the visible tokens of a random mask
at ratio r, the output is mean-pooled (``objective.clip_pool`` at ``objective.clip_layer``) and projected by
the CLIP image projection. Each image has a fixed random token order per seed (so the masks are nested across
ratios, as in MAR's ordering); ratios 0.0, 0.1, ..., 0.9; the mean and std over ``task.zeroshot.seeds`` seeds.

Templates: ImageNet uses the 80 OpenAI templates and OpenAI class names (open_clip ships both). The synthetic
data uses caption-style templates, "a {size} {class} {where} on a {background} background" over all sizes,
positions and backgrounds (40), the analogue of prompt ensembling over the nuisance attributes; the classes
are the 48 shape x colour classes ("red circle").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from benchmark.tasks._features import cached
from benchmark.tasks.base import Task, TaskSettings, objectives_with

from benchmark.config import ConfigError
from benchmark.registry import register_task
from benchmark.settings import check, choice


@dataclass
class ZeroShotSettings(TaskSettings):
    """Fig. 7: zero-shot accuracy under masking. ``--set task.zeroshot.<field>=`` (or ``eval.zeroshot_<field>``)."""

    prefix = "zeroshot_"
    seeds: int = 3  # Fig. 7: mask seeds per ratio (>= 3)
    templates: str = "auto"  # auto | openai (the 80 OpenAI ImageNet templates) | synthetic (caption-style)
    n: int = 0  # images evaluated (0 = all of ImageNet val; synthetic: eval.n_probe_test)

    def validate(self, run) -> None:
        choice("task.zeroshot.templates", self.templates, ("auto", "openai", "synthetic"))
        check(self.seeds >= 1 and self.n >= 0, "task.zeroshot.seeds must be >= 1 and task.zeroshot.n >= 0")

RATIOS = tuple(round(0.1 * i, 1) for i in range(10))  # Fig. 7: 0.0 ... 0.9


def synthetic_templates() -> list[str]:
    from benchmark.data.synthetic import BACKGROUND_NAMES, POSITIONS, SIZES

    where = {p: ("in the center" if p == "center" else f"at the {p}") for p in POSITIONS}
    return [f"a {s} {{}} {where[p]} on a {b} background" for s in SIZES for p in POSITIONS for b in BACKGROUND_NAMES]


@torch.no_grad()
def text_classifier(clip, class_names: list[str], templates: list[str], device, batch: int = 1024) -> torch.Tensor:
    """[D, C]: per class, the renormalised mean of the L2-normalised template embeddings."""
    texts = [t.format(name) for name in class_names for t in templates]
    emb = torch.cat([clip.embed_text(clip.tokenizer(texts[i:i + batch]).to(device)).float().cpu()
                     for i in range(0, len(texts), batch)])
    emb = emb.view(len(class_names), len(templates), -1).mean(1)
    return torch.nn.functional.normalize(emb, dim=-1).T


def nested_masks(n: int, seq_len: int, ratio: float, seed: int) -> torch.Tensor:
    """[n, L] bool, True = masked: ceil(L * ratio) tokens per image, the first ones of a random order that is
    fixed per (seed, image): the mask at a higher ratio contains the mask at a lower one."""
    g = torch.Generator().manual_seed(1_000_003 * seed + 17)
    rank = torch.rand(n, seq_len, generator=g).argsort(1).argsort(1)
    return rank < math.ceil(seq_len * ratio - 1e-9)


@torch.no_grad()
def masked_embeddings(model, images: torch.Tensor, ratio: float, seed: int, batch_size: int) -> torch.Tensor:
    """CLIP image embeddings of uint8 images [N, 3, H, W] with the encoder given masks at ``ratio``."""
    backbone, clip, c = model.backbone, model.objective.clip, model.objective.cfg
    backbone.eval()
    seq_len = backbone.seq_len
    masks = nested_masks(len(images), seq_len, ratio, seed)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(model.device).float() / 127.5 - 1.0
        g = torch.Generator(device=model.device).manual_seed(i)
        tokens = model.tokenizer.encode(x, generator=g)
        layers = (c.clip_layer,) if c.clip_layer else ()
        enc = backbone.encode(tokens, masks[i:i + batch_size].to(model.device), return_layers=layers)
        out.append(clip.embed_image(enc.pool(c.clip_pool, c.clip_layer)).float().cpu())
    return torch.cat(out)


@register_task("zeroshot")
class ZeroShot(Task):
    """Top-1 zero-shot accuracy (%) at masking ratios 0.0 ... 0.9 (Fig. 7)."""

    Settings = ZeroShotSettings
    version = 1
    higher_is_better = {f"acc@{r:.1f}": True for r in RATIOS}

    def _data(self, model, cfg) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str], str]:
        e, z = cfg.eval, cfg.task_settings("zeroshot")
        kind = z.templates
        if cfg.data.name == "synthetic":
            from benchmark.data import SYNTHETIC_SPLITS
            from benchmark.data.synthetic import CLASS_NAMES, SyntheticShapes, data_tag

            n = z.n or e.n_probe_test
            ds = SyntheticShapes(n, seed=SYNTHETIC_SPLITS["probe_test"], image_size=cfg.model.image_size)
            if kind == "openai":
                from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

                templates = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
            else:
                templates, kind = synthetic_templates(), "synthetic"
            return ds.images, ds.labels["class"], list(CLASS_NAMES), templates, f"{data_tag()}-probe_test-n{n}-{kind}"
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

        from benchmark.data.evalsets import eval_transform, imagenet_root, load_imagenet

        if kind == "synthetic":
            raise ConfigError("task.zeroshot.templates=synthetic needs data=synthetic; use auto or openai")
        val = load_imagenet(imagenet_root(cfg), "val")
        idx = list(range(len(val)))
        if z.n:  # an evenly spaced subset (every class keeps its share)
            idx = idx[:: max(1, len(idx) // z.n)][: z.n]
        val.transform = eval_transform(cfg.model.image_size)
        sub = torch.utils.data.Subset(val, idx)
        loader = torch.utils.data.DataLoader(sub, batch_size=e.batch_size, num_workers=cfg.data.num_workers)
        images, labels = zip(*[(x, y) for x, y in loader])
        templates = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
        return torch.cat(images), torch.cat(labels), list(IMAGENET_CLASSNAMES), templates, \
            f"imagenet-val-{val.split_hash}-n{len(idx)}-openai"

    def applies(self, model, cfg) -> str | None:
        if not model.objective.capabilities.clip_text:
            return f"needs an objective with a CLIP text tower ({objectives_with('clip_text')}); {cfg.objective.name!r} has none"
        return None

    def run(self, model, cfg) -> dict[str, float]:
        if not model.objective.capabilities.clip_text:
            raise ConfigError(f"zeroshot needs an objective with a CLIP text tower ({objectives_with('clip_text')}); "
                              f"{cfg.objective.name!r} has none")
        clip = model.objective.clip
        e, z = cfg.eval, cfg.task_settings("zeroshot")
        images, labels, classes, templates, key = self._data(model, cfg)
        W = text_classifier(clip, classes, templates, model.device)
        seeds = list(range(z.seeds))
        out: dict[str, float] = {}
        for r in RATIOS:
            accs = []
            for s in seeds[:1] if r == 0 else seeds:  # ratio 0 masks nothing: every seed is the same
                feats = cached(model, f"zeroshot-{key}-r{r:.1f}-s{s}-size{cfg.model.image_size}",
                               lambda r=r, s=s: masked_embeddings(model, images, r, s, e.batch_size), disk=False)
                pred = (100.0 * feats @ W).argmax(1)
                accs.append(100.0 * (pred == labels).float().mean().item())
            acc = torch.tensor(accs, dtype=torch.float64)
            out[f"acc@{r:.1f}"] = acc.mean().item()
            out[f"acc@{r:.1f}_std"] = acc.std().item() if len(accs) > 1 else 0.0
        self._extra = {"ratios": list(RATIOS), "seeds": z.seeds, "templates": len(templates),
                       "template_set": key.rsplit("-", 1)[-1], "classes": len(classes), "n": len(labels),
                       "pool": cfg.objective.clip_pool, "layer": cfg.objective.clip_layer, "data": cfg.data.name,
                       "chance": 100.0 / len(classes),
                       "note": "ratio 0.0 is mask-free, so its std over seeds is 0 by construction"}
        return out


