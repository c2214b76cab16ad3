"""CLIP score = mean of 100·max(cos, 0) with an external open_clip model (a tiny random one here), and the
synthetic caption agreement measured by the reference network."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from benchmark.tasks.clip_score import caption_agreement, clip_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from test_sad import tiny_open_clip  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py


def test_clip_score_formula():
    cos = torch.tensor([0.31, -0.2, 0.05, 0.0])
    assert clip_score(cos) == pytest.approx(100 * (0.31 + 0 + 0.05 + 0) / 4)


def test_external_clip_cosine_matches_open_clip():
    import open_clip

    clip = tiny_open_clip()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    prompts = ["a red circle", "a blue square on a gray background", "a green ring"]
    got = clip.cosine(images, prompts)
    m = clip.model  # independent path: open_clip's own tokenizer and encoders, mean/std normalisation by hand
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ei = F.normalize(m.encode_image(((images + 1) / 2 - mean) / std), dim=-1)
        et = F.normalize(m.encode_text(open_clip.tokenize(prompts)), dim=-1)
    assert torch.allclose(got, (ei * et).sum(-1), atol=1e-5)
    assert clip.model_id == "open_clip:tiny-random@random-init"


class LabelNet:
    """A stand-in judge that 'sees' the given shape/colour labels."""

    def __init__(self, shape, color):
        self.shape, self.color = shape, color

    def predict(self, x):
        n = len(x)
        out = self.shape[:n], self.color[:n]
        self.shape, self.color = self.shape[n:], self.color[n:]
        return out


def test_caption_agreement_needs_shape_and_colour():
    from benchmark.data.synthetic import COLOR_NAMES, SHAPES, SyntheticShapes

    ds = SyntheticShapes(40, seed=3)
    shape, color = ds.labels["shape"].clone(), ds.labels["color"].clone()
    shape[:10] = (shape[:10] + 1) % len(SHAPES)  # wrong shape
    color[5:15] = (color[5:15] + 1) % len(COLOR_NAMES)  # wrong colour (5 overlap the wrong shapes)
    hits = caption_agreement(ds.images, ds.captions, LabelNet(shape, color))
    assert hits.tolist() == [False] * 15 + [True] * 25


def test_reference_network_agrees_with_real_images(monkeypatch):
    """The judge itself: on real held-out scenes of their captions, agreement is far above chance (1/48)."""
    import benchmark.tasks._reference as ref

    from benchmark.data.synthetic import SyntheticShapes

    monkeypatch.setattr(ref, "DEFAULT_RECIPE", ref.RefRecipe(n_train=1024, epochs=2, batch=32, width=8))
    net, info = ref.load_reference()
    ds = SyntheticShapes(200, seed=9)
    agree = caption_agreement(ds.images, ds.captions, net).float().mean() * 100
    assert agree > 5 * 100 / 48 and info["held_out"]["both_acc"] > 5 * 100 / 48


def test_agreement_is_judged_at_the_generators_resolution(monkeypatch, tmp_path):
    """A 16-px run is judged by a network trained on 16-px scenes: real 16-px renders of the prompts agree."""
    from dataclasses import replace

    import benchmark.tasks._generation as gen
    import benchmark.tasks._reference as ref
    from benchmark.tasks.clip_score import ClipScore
    from torchvision.io import write_png

    from benchmark.config import build_config
    from benchmark.data import SYNTHETIC_SPLITS
    from benchmark.data.synthetic import SyntheticShapes

    monkeypatch.setattr(ref, "DEFAULT_RECIPE", ref.RefRecipe(n_train=1024, epochs=2, batch=32, width=8))
    cfg = build_config("dream", overrides={"model.image_size": 16, "eval.gen_samples": 64})
    prompts, _, _ = gen.eval_prompts(cfg, None)
    real = SyntheticShapes(64, seed=SYNTHETIC_SPLITS["probe_test"], image_size=16)
    assert real.captions == prompts
    for i, img in enumerate(real.images):
        write_png(img, str(tmp_path / f"{i:06d}.png"))
    monkeypatch.setattr(gen, "generated_folder", lambda model, cfg, prompts, spec: (tmp_path, {}))
    task = ClipScore(None)
    out = task.run(None, cfg)
    assert task._extra["judge"] == f"reference-network:{replace(ref.DEFAULT_RECIPE, image_size=16).key()}"
    assert out["agreement"] > 5 * 100 / 48


def test_real_clip_score_needs_weights(monkeypatch, tmp_path):
    from benchmark.tasks.clip_score import ClipScore

    from benchmark.config import build_config

    (tmp_path / "coco" / "images").mkdir(parents=True)
    (tmp_path / "coco" / "captions.txt").write_text("a dog\n")
    monkeypatch.delenv("DREAM_BENCH_CLIP", raising=False)
    cfg = build_config("dream", overrides={"data.name": "cc12m", "eval.gen_root": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="eval.clip_path"):
        ClipScore("coco").run(type("M", (), {"device": "cpu"})(), cfg)
