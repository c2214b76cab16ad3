"""CLIP score (Tables 1, 2, 6, 17; anchors-eval §5.3): mean over generated images of 100 · max(cos(E_I, E_T), 0)
with an external CLIP (open_clip, ViT-L/14 by default, local weights; the model id is recorded), the scale
torchmetrics' ``CLIPScore`` uses and DREAM reports (CS ≈ 30). Variants ``clip_score/cc12m`` and
``clip_score/coco`` score the same generated images as ``fid/<variant>`` (one cached generation).

On synthetic data there is no CLIP: the score is ``agreement``, the percentage of images in which the
synthetic reference network (tasks/_reference.py) sees both the shape and the colour that the caption asks
for its main object. Its ceiling is the network's accuracy on real held-out scenes (in ``extra``).
"""

from __future__ import annotations

from typing import Any

import torch
from benchmark.tasks.base import Task, no_decoder_reason

from benchmark.registry import register_task


def clip_score(cos: torch.Tensor) -> float:
    """100 · max(cos, 0), averaged (torchmetrics CLIPScore)."""
    return float((100 * cos.clamp_min(0)).mean())


def caption_agreement(images: torch.Tensor, prompts: list[str], net: Any) -> torch.Tensor:
    """Per image: does the reference network predict the caption's main shape AND colour? uint8 images."""
    from benchmark.data.synthetic import COLOR_NAMES, SHAPES, parse_caption

    parsed = [parse_caption(p) for p in prompts]
    shape = torch.tensor([SHAPES.index(p["shape"]) for p in parsed])
    color = torch.tensor([COLOR_NAMES.index(p["color"]) for p in parsed])
    hits = []
    with torch.no_grad():
        for i in range(0, len(images), 256):
            ps, pc = net.predict(images[i:i + 256].float())
            hits.append((ps == shape[i:i + 256]) & (pc == color[i:i + 256]))
    return torch.cat(hits)


@register_task("clip_score")
class ClipScore(Task):
    """CLIP score 100·max(cos,0) with an external CLIP; on synthetic data caption agreement (reference network)."""

    version = 1
    higher_is_better = {"cs": True, "agreement": True}
    requires = ("gen_ref",)


    def applies(self, model, cfg) -> str | None:
        if no_decoder_reason(model):
            return no_decoder_reason(model)
        if not model.objective.capabilities.text_conditioned:  # Table 2: MAR has no text-to-image capability
            return f"{cfg.objective.name!r} is unconditional: its images follow no caption"
        return None

    def run(self, model, cfg) -> dict[str, float]:
        from benchmark.tasks._generation import eval_prompts, external_clip, gen_spec, generated_folder, read_folder

        e = cfg.eval
        prompts, ref_folder, protocol = eval_prompts(cfg, self.variant)
        spec = gen_spec(e)
        self._extra = {"protocol": protocol, "n_samples": len(prompts), "generation": spec.name, "sad_k": spec.candidates,
                       "nfe": spec.nfe, "cfg": e.cfg, "cfg_schedule": e.cfg_schedule, "temperature": e.temperature}
        if ref_folder is None:
            from benchmark.tasks._reference import load_reference

            net, info = load_reference(image_size=cfg.model.image_size)
            gen_dir, _ = generated_folder(model, cfg, prompts, spec)
            hits = caption_agreement(read_folder(gen_dir), prompts, net)
            self._extra.update({"judge": f"reference-network:{info['hash']}", "ceiling_real_images": info["held_out"]["both_acc"],
                                "generated": str(gen_dir)})
            return {"agreement": float(hits.float().mean() * 100)}
        clip = external_clip(cfg, model.device)  # fails before minutes of generation
        gen_dir, _ = generated_folder(model, cfg, prompts, spec)
        images = read_folder(gen_dir).float() / 127.5 - 1
        cos = torch.cat([clip.cosine(images[i:i + 256], prompts[i:i + 256]) for i in range(0, len(images), 256)])
        self._extra.update({"clip_model": clip.model_id, "generated": str(gen_dir)})
        return {"cs": clip_score(cos)}

