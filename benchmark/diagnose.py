"""Does a trained synthetic run use each word of its captions? ``python -m benchmark.diagnose RUN_DIR``.

Two readings, on held-out synthetic scenes, of what the text condition does (README, issue 15):
* ``caption_word_losses``: the decoder's diffusion loss with every token masked (the text is the only
  condition) under the true caption and under captions with one kind of word swapped (left/right, top/bottom,
  the main shape) or dropped (the null caption). A word the model uses raises the loss when it is swapped;
  a word it ignores leaves the loss unchanged. Same images, masks, timesteps and noise for every variant.
* ``position_centroids``: where the objects land in generated samples (centroid of the pixels far from the
  image's median colour), by the position words of the prompt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch


def _swap(text: str, a: str, b: str) -> str:
    return " ".join(b if w == a else a if w == b else w for w in text.split(" "))


def _swap_main_shape(text: str) -> str:
    """The main object's shape word -> the next shape in ``SHAPES`` (the second object's caption is kept)."""
    from benchmark.data.synthetic import SHAPES

    main, sep, rest = text.partition(", and ")
    words = main.split(" ")
    for i, w in enumerate(words):
        if w in SHAPES:
            words[i] = SHAPES[(SHAPES.index(w) + 1) % len(SHAPES)]
            break
    return " ".join(words) + sep + rest


def caption_variants(captions: list[str]) -> dict[str, list[str]]:
    from benchmark.data.synthetic import flip_caption

    return {
        "true": captions,
        "left/right swapped": [flip_caption(c) for c in captions],
        "top/bottom swapped": [_swap(c, "top", "bottom") for c in captions],
        "main shape swapped": [_swap_main_shape(c) for c in captions],
        "null caption": [""] * len(captions),
    }


@torch.no_grad()
def caption_word_losses(comps: Any, n: int = 256, repeats: int = 4, seed: int = 777) -> dict[str, float]:
    """Mean diffusion loss of ``n`` held-out scenes at mask ratio 1 for each caption variant (``repeats`` draws
    of the masks, timesteps and noise, the same draws for every variant)."""
    from benchmark.data.synthetic import SyntheticShapes
    from benchmark.objectives.base import generative_loss
    from benchmark.objectives.schedules import Fixed, MaskingSettings
    from benchmark.train import prepare_batch, sample_masking

    cfg, model = comps.cfg, comps.model
    model.eval()
    ds = SyntheticShapes(n, seed=seed, image_size=cfg.model.image_size)
    variants = caption_variants(list(ds.captions))
    everything_masked = Fixed(MaskingSettings(mean=1.0, sigma=1e-4, low=0.0, high=1.0))
    total = dict.fromkeys(variants, 0.0)
    for rep in range(repeats):
        # The encoder sees no image token at ratio 1 and no caption at all: one pass serves every variant.
        batch = prepare_batch(comps, {"images": ds.images, "captions": variants["true"]}, step=rep)
        mask = sample_masking(cfg, everything_masked, n, batch.tokens.shape[1], 1.0, rep, 0, comps.device,
                              objective=model.objective, backbone=model.backbone)
        enc = model.backbone.encode(batch.tokens, mask)
        for name, captions in variants.items():
            batch.t5, batch.t5_valid = (x.to(comps.device) for x in comps.t5.encode(captions))
            batch.caption_drop = torch.zeros_like(batch.caption_drop)  # every row keeps its (variant) caption
            torch.manual_seed(seed + rep)  # the diffusion timesteps and noise: the same for every variant
            total[name] += float(generative_loss(model.backbone, batch, enc, mask))
    return {name: v / repeats for name, v in total.items()}


def object_centroids(images: torch.Tensor, threshold: float = 60.0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8-range images [N, 3, H, W] -> (x, y) centroids in [0, 1] of the pixels whose colour is more than
    ``threshold`` (0-255) from the image's median colour in some channel."""
    x = images.float()
    med = x.flatten(2).median(-1).values[:, :, None, None]
    obj = ((x - med).abs().amax(1) > threshold).float()
    h, w = obj.shape[1:]
    ys = torch.linspace(0, 1, h)[:, None].expand(h, w)
    xs = torch.linspace(0, 1, w)[None, :].expand(h, w)
    mass = obj.sum((1, 2)).clamp_min(1)
    return (obj * xs).sum((1, 2)) / mass, (obj * ys).sum((1, 2)) / mass


def position_centroids(comps: Any, n: int = 128) -> dict[str, tuple[int, float, float]]:
    """Generate ``n`` evaluation prompts at the run's decoding settings; per position word of the main object:
    (count, mean object x, mean object y). The real scenes put left/top at 0.29 and right/bottom at 0.71."""
    from benchmark.data.synthetic import parse_caption
    from benchmark.tasks._generation import eval_prompts, gen_spec, generate

    cfg = comps.cfg
    e = cfg.eval
    prompts, _, _ = eval_prompts(cfg, None, n)
    images = generate(comps, prompts, gen_spec(e, 1, e.sample_steps, "self", e.sample_steps), e.gen_seed,
                      e.gen_batch).images
    cx, cy = object_centroids(images)
    where = [parse_caption(p)["position"] for p in prompts]
    out = {}
    for word in ("left", "right", "top", "bottom", "center"):
        sel = torch.tensor([word in p.split(" ") for p in where])
        out[word] = (int(sel.sum()), float(cx[sel].mean()) if sel.any() else float("nan"),
                     float(cy[sel].mean()) if sel.any() else float("nan"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.diagnose", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", help="a finished synthetic run (holds record.json and ema.pt)")
    p.add_argument("--n", type=int, default=256, help="held-out scenes for the caption-word losses")
    p.add_argument("--samples", type=int, default=128, help="generated samples for the position centroids (0: skip)")
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "record.json").exists():
        print(f"error: {run_dir} holds no record.json: give a run directory (see `python -m benchmark status`)",
              file=sys.stderr)
        return 2
    from benchmark.run import load_run

    comps, cfg, _ = load_run(run_dir)
    if cfg.data.name != "synthetic" or comps.t5 is None:
        print(f"error: {run_dir} is not a text-conditioned run on synthetic data: nothing to diagnose", file=sys.stderr)
        return 2
    losses = caption_word_losses(comps, args.n)
    print(f"diffusion loss at mask ratio 1 on {args.n} held-out scenes (a word the model ignores leaves it unchanged):")
    for name, v in losses.items():
        print(f"  {name:20s} {v:.5f}  ({v - losses['true']:+.5f})")
    if args.samples:
        print(f"object centroids in {args.samples} samples (real scenes: left/top 0.29, right/bottom 0.71):")
        for word, (k, x, y) in position_centroids(comps, args.samples).items():
            print(f"  {word:7s} n={k:4d}  x={x:.3f}  y={y:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
