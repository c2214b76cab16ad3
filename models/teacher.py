"""Frozen REPA teachers (§9.4.2, Tables 7-8): patch features of the full image on the student's token grid.

* ``clip_l``: OpenAI CLIP ViT-L/14 (open_clip, local weights) at 224 px -> 16x16 patch tokens (paper).
* ``dinov2_b``: DINOv2 ViT-B/14 (timm, local weights) at 224 px -> 16x16 ``x_norm_patchtokens``
  (the released script).
* ``tiny``: a small random frozen ViT on the tiny preset's grid (no weights needed; fixed seed).
The grids are made equal by choosing the input size (REPA's convention), never by resampling features.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

TEACHER_HELP = {
    "clip_l": "open_clip ViT-L-14 'openai' weights (open_clip_pytorch_model.bin from "
              "hf.co/timm/vit_large_patch14_clip_224.openai)",
    "dinov2_b": "timm vit_base_patch14_dinov2.lvd142m weights (model.safetensors from "
                "hf.co/timm/vit_base_patch14_dinov2.lvd142m)",
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class Teacher(nn.Module):
    def __init__(self, kind: str, grid: int, image_size: int, path: str = "") -> None:
        super().__init__()
        self.kind, self.grid = kind, grid
        if kind == "tiny":
            from timm.models.vision_transformer import VisionTransformer

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1234)  # the same random teacher in every run and after resume
                self.net = VisionTransformer(img_size=image_size, patch_size=image_size // grid, embed_dim=64,
                                             depth=2, num_heads=2, num_classes=0, global_pool="")
            self.size, self.mean, self.std = image_size, (0.5,) * 3, (0.5,) * 3
            self.dim = 64
        else:
            path = path or os.environ.get("DREAM_BENCH_REPA_TEACHER", "")
            if not path or not Path(path).exists():
                raise FileNotFoundError(
                    f"REPA teacher {kind!r} weights not found at {path or '(objective.repa_teacher_path is empty)'}:"
                    f" provide {TEACHER_HELP[kind]} via --set objective.repa_teacher_path=FILE or "
                    f"DREAM_BENCH_REPA_TEACHER, or use --set objective.repa_teacher=tiny for a random stand-in.")
            self.size = grid * 14
            if kind == "dinov2_b":
                import timm

                self.net = timm.create_model("vit_base_patch14_dinov2", pretrained=True, img_size=self.size,
                                             num_classes=0, pretrained_cfg_overlay={"file": path})
                self.mean, self.std, self.dim = IMAGENET_MEAN, IMAGENET_STD, 768
            else:
                import open_clip

                model = open_clip.create_model("ViT-L-14", pretrained=path)
                self.net = model.visual
                self.net.output_tokens = True
                self.mean, self.std, self.dim = CLIP_MEAN, CLIP_STD, 1024
        self.net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images in [-1, 1] -> patch tokens [B, grid*grid, dim]."""
        x = (images.float() + 1) / 2
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        if self.kind == "clip_l":
            return self.net(x)[1]
        feats = self.net.forward_features(x)
        return feats[:, self.net.num_prefix_tokens:]
