"""Zero-shot vs masking ratio: masks, the template classifier, the CLIP-path features, the task's keys."""

import math

import pytest
import torch
from benchmark.tasks.zeroshot import RATIOS, ZeroShot, masked_embeddings, nested_masks, synthetic_templates, text_classifier

from benchmark.config import ConfigError


def _small(objective="clip", **extra):
    from benchmark.config import build_config, plugin_class
    from benchmark.train import build

    over = {"model.width": 32, "model.depth": 4, "model.heads": 2, "model.buffer_tokens": 2, "objective.proj_hidden": 32,
            "objective.embed_dim": 16, "eval.n_probe_test": 96, "eval.zeroshot_n": 0, "train.batch_size": 16, "data.n_train": 256,
            "model.head_width": 32, "model.aligner_depth": 1, **extra}
    own = plugin_class("objective", objective).Settings.field_names()  # MAR has no CLIP head fields
    over = {k: v for k, v in over.items() if not k.startswith("objective.") or k.split(".", 1)[1] in own}
    cfg = build_config(objective, overrides={k: str(v) for k, v in over.items()})
    comps = build(cfg)
    comps.model.eval()
    return comps, cfg


@pytest.fixture(scope="module")
def small():
    return _small()


def test_nested_masks():
    L = 64
    prev = torch.zeros(10, L, dtype=torch.bool)
    for r in RATIOS:
        m = nested_masks(10, L, r, seed=3)
        assert (m.sum(1) == math.ceil(L * r - 1e-9)).all()
        assert not (prev & ~m).any()  # nested: everything masked at a lower ratio stays masked
        prev = m
    assert torch.equal(nested_masks(10, L, 0.5, 1), nested_masks(10, L, 0.5, 1))
    assert not torch.equal(nested_masks(10, L, 0.5, 1), nested_masks(10, L, 0.5, 2))


def test_ratios_and_templates():
    assert [f"{r:.1f}" for r in RATIOS] == ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    t = synthetic_templates()
    assert len(t) == 40 and "a large {} at the top left on a gray background" in t
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    assert len(OPENAI_IMAGENET_TEMPLATES) == 80


def test_text_classifier_is_the_renormalised_template_mean(small):
    comps, _ = small
    clip = comps.objective.clip
    W = text_classifier(clip, ["red circle", "blue square"], ["a {}", "the {} here", "{}"], comps.device)
    for j, name in enumerate(["red circle", "blue square"]):
        with torch.no_grad():
            e = [torch.nn.functional.normalize(clip.text(clip.tokenizer([t.format(name)])), dim=-1)[0]
                 for t in ["a {}", "the {} here", "{}"]]
        ref = torch.stack(e).mean(0)
        torch.testing.assert_close(W[:, j], ref / ref.norm(), atol=1e-5, rtol=1e-5)


def test_ratio_zero_is_the_unmasked_clip_path(small):
    from benchmark.tasks.base import extract_features

    from benchmark.data.synthetic import SyntheticShapes

    comps, cfg = small
    imgs = SyntheticShapes(20, seed=5, image_size=cfg.model.image_size).images
    ours = masked_embeddings(comps, imgs, 0.0, 0, 8)
    with torch.no_grad():
        ref = comps.objective.clip.embed_image(extract_features(comps, imgs, cfg.objective.clip_pool))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    # a masked view differs, and only the visible tokens enter: masking everything but one token changes it a lot
    assert (masked_embeddings(comps, imgs, 0.9, 0, 8) - ours).abs().max() > 1e-3


def test_zeroshot_task_keys(small):
    comps, cfg = small
    cfg.task_settings("zeroshot").seeds = 3
    task = ZeroShot()
    m = task.run(comps, cfg)
    assert set(m) == {f"acc@{r:.1f}" for r in RATIOS} | {f"acc@{r:.1f}_std" for r in RATIOS}
    assert all(0 <= m[f"acc@{r:.1f}"] <= 100 for r in RATIOS) and m["acc@0.0_std"] == 0
    assert task.extra()["templates"] == 40 and task.extra()["classes"] == 48 and task.extra()["n"] == 96


def test_zeroshot_needs_a_clip_tower():
    comps, cfg = _small("mar")
    with pytest.raises(ConfigError, match="CLIP text tower"):
        ZeroShot().run(comps, cfg)
