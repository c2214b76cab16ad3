"""Tests of the embedded synthetic "captioned shapes" dataset and the tiny T5 text encoder."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from benchmark.data import synthetic as S
from benchmark.data.synthetic import (
    LABEL_NAMES,
    SHAPES,
    VARIANTS,
    SyntheticShapes,
    caption,
    caption_corpus,
    flip_caption,
    flip_scene,
    floor_depth,
    parse_caption,
    render,
    sample_scenes,
)

N = 400


@pytest.fixture(scope="module")
def ds() -> SyntheticShapes:
    return SyntheticShapes(N, seed=7)


# -- determinism --------------------------------------------------------------------------------
def test_same_seed_is_byte_identical(ds):
    again = SyntheticShapes(N, seed=7)
    assert again.images.numpy().tobytes() == ds.images.numpy().tobytes()
    assert again.seg.numpy().tobytes() == ds.seg.numpy().tobytes()
    assert again.depth.numpy().tobytes() == ds.depth.numpy().tobytes()
    assert again.captions == ds.captions
    for k in LABEL_NAMES:
        assert torch.equal(again.labels[k], ds.labels[k])


def test_different_seed_differs(ds):
    other = SyntheticShapes(N, seed=8)
    assert other.captions != ds.captions
    assert not torch.equal(other.images, ds.images)
    assert not torch.equal(other.labels["class"], ds.labels["class"])
    # not just a permutation of the same scenes
    assert set(other.captions) != set(ds.captions)


def test_sampling_is_prefix_stable_across_blocks():
    n = S.BLOCK + 37
    big = sample_scenes(n, 3)
    assert sample_scenes(50, 3) == big[:50]
    assert sample_scenes(S.BLOCK + 5, 3) == big[: S.BLOCK + 5]
    out_big = render(big[: S.BLOCK + 5])
    out_small = render(big[:20])
    assert torch.equal(out_big["image"][:20], out_small["image"])


def test_dataset_item_and_labels(ds):
    assert len(ds) == N
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (N, 3, 32, 32)
    assert ds.seg.dtype == torch.uint8 and ds.seg.shape == (N, 32, 32)
    assert ds.depth.dtype == torch.float32 and ds.depth.shape == (N, 32, 32)
    assert len(ds.class_names) == 48 and ds.class_names[0] == "red circle"
    item = ds[5]
    assert set(item) == {"image", "caption", "label", "index"}
    assert torch.equal(item["image"], ds.images[5]) and item["caption"] == ds.captions[5]
    assert isinstance(item["label"], int) and item["label"] == int(ds.labels["class"][5])
    assert item["index"] == 5 and ds[-1]["index"] == N - 1
    with pytest.raises(IndexError):
        ds[N]
    for k, names in ds.label_names.items():
        lab = ds.labels[k]
        assert lab.dtype == torch.int64 and lab.shape == (N,)
        assert int(lab.min()) >= 0 and int(lab.max()) < len(names), k
    # every label value actually occurs (the data are not degenerate)
    for k in ("shape", "color", "size", "position", "background", "count"):
        assert len(torch.unique(ds.labels[k])) == len(ds.label_names[k]), k
    assert torch.equal(ds.labels["class"], ds.labels["shape"] * 8 + ds.labels["color"])
    # all images differ
    assert len({bytes(im.numpy().tobytes()) for im in ds.images}) == N


# -- captions -----------------------------------------------------------------------------------
def test_caption_matches_labels(ds):
    names = ds.label_names
    for i, text in enumerate(ds.captions):
        p = parse_caption(text)
        assert names["shape"][ds.labels["shape"][i]] == p["shape"]
        assert names["color"][ds.labels["color"][i]] == p["color"]
        assert names["size"][ds.labels["size"][i]] == p["size"]
        assert names["position"][ds.labels["position"][i]] == p["position"]
        assert names["background"][ds.labels["background"][i]] == p["background"]
        assert ds.class_names[ds.labels["class"][i]] == f"{p['color']} {p['shape']}"
        two = p["second_shape"] is not None
        assert int(ds.labels["count"][i]) == int(two)
        scene = ds.scenes[i]
        if two:
            assert p["second_size"] == "small"
            assert (p["second_shape"], p["second_color"], p["second_position"]) == (
                scene.second.shape, scene.second.color, scene.second.position)
            assert p["second_shape"] != p["shape"] and p["second_position"] != p["position"]


def test_caption_depends_only_on_discrete_attributes():
    s = sample_scenes(1, 0)[0]
    moved = S.replace(s, main=S.replace(s.main, cx=s.main.cx + 0.01, shade=1.0, depth=2.0))
    assert caption(moved) == caption(s)
    assert caption(s).startswith(f"a {s.main.size} {s.main.color} {s.main.shape} ")
    with pytest.raises(ValueError):
        parse_caption("a large zebra")


# -- segmentation and depth ---------------------------------------------------------------------
def test_seg_consistent_with_scene(ds):
    seg = ds.seg.numpy()
    for i, scene in enumerate(ds.scenes):
        m = scene.main
        main_px = seg[i] == SHAPES.index(m.shape) + 1
        assert main_px.sum() >= 6, i
        # main pixels lie inside the main object's bounding box
        ys, xs = np.nonzero(main_px)
        cx, cy, r = m.cx * 32, m.cy * 32, m.scale * 32 * 1.1 + 1
        assert np.all(np.abs(xs + 0.5 - cx) <= r) and np.all(np.abs(ys + 0.5 - cy) <= r), i
        assert set(np.unique(seg[i])) - {0} == {SHAPES.index(o.shape) + 1 for o in scene.objects}, i
        assert len(set(np.unique(seg[i])) - {0}) == scene.count


def test_depth_range_and_ordering(ds):
    depth, seg = ds.depth.numpy(), ds.seg.numpy()
    assert depth.min() >= 0.5 and depth.max() <= 10.0
    floor = floor_depth(np.arange(32) / 31).astype(np.float32)  # per row
    assert floor[0] == pytest.approx(9.0) and floor[-1] == pytest.approx(3.0)
    assert np.all(np.diff(floor) < 0)
    bg = seg == 0
    np.testing.assert_allclose(depth, np.where(bg, floor[None, :, None], depth), rtol=1e-6)
    # objects are nearer than the floor behind them
    obj = ~bg
    floor_full = np.broadcast_to(floor[None, :, None], depth.shape)
    assert np.all(depth[obj] < floor_full[obj])
    for i, scene in enumerate(ds.scenes):
        main_px = seg[i] == SHAPES.index(scene.main.shape) + 1
        assert np.allclose(depth[i][main_px], scene.main.depth)
        if scene.second is not None:
            sec_px = seg[i] == SHAPES.index(scene.second.shape) + 1
            assert np.all(depth[i][sec_px] > depth[i][main_px].max())  # second is behind main
        expected = {"medium": 2.5, "large": 1.5}[scene.main.size]
        assert abs(scene.main.depth - expected) <= S.DEPTH_JITTER + 1e-9


# -- horizontal flips ---------------------------------------------------------------------------
def test_flip_caption_involution():
    corpus = caption_corpus(500, seed=1)
    for c in corpus:
        assert flip_caption(flip_caption(c)) == c
    assert flip_caption("a large red circle at the top left on a gray background, and a small blue "
                        "square at the bottom right") == (
        "a large red circle at the top right on a gray background, and a small blue square at the "
        "bottom left")
    assert sum(flip_caption(c) != c for c in corpus) > 0.5 * len(corpus)


def test_flipped_image_keeps_caption_true(ds):
    flipped_scenes = [flip_scene(s) for s in ds.scenes]
    out = render(flipped_scenes)
    flipped_images = torch.flip(ds.images, dims=[-1])
    diff = (out["image"].int() - flipped_images.int()).abs()
    assert (diff == 0).float().mean() > 0.99  # equal up to rare float ties on shape edges
    assert (out["seg"] != torch.flip(ds.seg, dims=[-1])).float().mean() < 0.002
    swap = {p: flip_caption(p) for p in S.POSITIONS}
    for i, (s, f) in enumerate(zip(ds.scenes, flipped_scenes)):
        assert caption(f) == flip_caption(ds.captions[i])
        assert f.main.position == swap[s.main.position]
        p = parse_caption(flip_caption(ds.captions[i]))
        assert p["position"] == swap[ds.label_names["position"][ds.labels["position"][i]]]
        # the flipped image shows the main object on the side the flipped caption names
        main_px = out["seg"][i].numpy() == SHAPES.index(s.main.shape) + 1
        xs = np.nonzero(main_px)[1].mean() + 0.5
        if "left" in p["position"]:
            assert xs < 16
        elif "right" in p["position"]:
            assert xs > 16


# -- robustness variants ------------------------------------------------------------------------
def test_variants_render_and_differ(ds):
    scenes = ds.scenes[:200]
    clean = render(scenes)
    assert torch.equal(clean["image"], ds.images[:200])
    for v in VARIANTS[1:]:
        out = render(scenes, variant=v, seed=7)
        assert out["image"].shape == clean["image"].shape and out["image"].dtype == torch.uint8
        assert torch.equal(out["seg"], clean["seg"]) and torch.equal(out["depth"], clean["depth"])
        differs = (out["image"] != clean["image"]).flatten(1).any(1)
        assert differs.float().mean() > 0.9, v
        again = render(scenes, variant=v, seed=7)
        assert torch.equal(again["image"], out["image"]), v
    sk = SyntheticShapes(50, seed=7, variant="sketch")
    assert sk.captions == ds.captions[:50] and torch.equal(sk.labels["class"], ds.labels["class"][:50])
    assert (sk.images.float().mean(dim=(1, 2, 3)) > 200).all()  # mostly white paper
    with pytest.raises(ValueError, match="clean.*noise.*sketch.*blur.*jitter.*occlude"):
        render(scenes[:2], variant="fog")
    with pytest.raises(ValueError, match="valid choices"):
        SyntheticShapes(2, variant="fog")


def test_other_image_sizes():
    out = render(sample_scenes(8, 0), image_size=64)
    assert out["image"].shape == (8, 3, 64, 64) and out["seg"].shape == (8, 64, 64)
    assert all(len(set(np.unique(s)) - {0}) >= 1 for s in out["seg"].numpy())


def test_render_speed_report():
    scenes = sample_scenes(5000, 11)
    t0 = time.perf_counter()
    out = render(scenes)
    dt = time.perf_counter() - t0
    print(f"\nrendered 5000 32x32 images in {dt:.2f}s")
    assert out["image"].shape[0] == 5000


# -- tiny T5 text encoder -----------------------------------------------------------------------
def test_build_tiny_t5(tmp_path):
    pytest.importorskip("sentencepiece")
    from transformers import T5EncoderModel, T5Tokenizer

    from benchmark.data.text_models import build_tiny_t5

    corpus = caption_corpus(2000, seed=5)
    folder = build_tiny_t5(tmp_path / "t5", corpus, seed=0)
    assert folder == tmp_path / "t5"
    for name in ("config.json", "spiece.model", "tokenizer_config.json", "model.safetensors"):
        assert (folder / name).exists(), name
    assert [p.name for p in tmp_path.iterdir()] == ["t5"]  # no temp folder left behind

    tok = T5Tokenizer.from_pretrained(folder)
    model = T5EncoderModel.from_pretrained(folder).eval()
    assert len(tok) == model.config.vocab_size <= 128
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    unseen = [caption(s) for s in sample_scenes(300, 99)]
    enc = tok(unseen, padding=True, return_tensors="pt")
    assert not (enc["input_ids"] == tok.unk_token_id).any()
    ids = tok(unseen[0])["input_ids"]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == unseen[0]
    assert len(ids) <= len(unseen[0].split()) + 3  # whole words are pieces

    with torch.no_grad():
        a = model(**enc).last_hidden_state
        b = T5EncoderModel.from_pretrained(folder).eval()(**enc).last_hidden_state
    assert a.shape == (len(unseen), enc["input_ids"].shape[1], 64)
    assert torch.isfinite(a).all() and torch.equal(a, b)

    # the build is deterministic
    folder2 = build_tiny_t5(tmp_path / "t5b", corpus, seed=0)
    assert (folder2 / "spiece.model").read_bytes() == (folder / "spiece.model").read_bytes()
    with torch.no_grad():
        c = T5EncoderModel.from_pretrained(folder2).eval()(**enc).last_hidden_state
    assert torch.equal(a, c)

    # a second call is a no-op (it would fail on an empty corpus if it tried to build)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert build_tiny_t5(folder, [], seed=1) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_synthetic_text_dir(tmp_path):
    pytest.importorskip("sentencepiece")
    from benchmark.data.text_models import synthetic_text_dir

    folder = synthetic_text_dir(tmp_path)
    assert folder == tmp_path / "synthetic" / "t5-tiny-v1"
    assert (folder / "config.json").exists()
    assert synthetic_text_dir(tmp_path) == folder


def test_synthetic_caches_carry_the_scene_version(monkeypatch, tmp_path):
    """Changing the scenes (bumping VERSION) must never reuse a cache built from the old ones."""
    from benchmark.tasks._reference import RefRecipe
    from benchmark.tasks.fid import synthetic_reference_folder

    import benchmark.data.synthetic as synthetic
    from benchmark.data.common import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert RefRecipe().data_version == synthetic.VERSION
    assert RefRecipe(data_version=synthetic.VERSION + 1).key() != RefRecipe().key()
    monkeypatch.setattr(synthetic, "VERSION", 99)
    assert synthetic.data_tag() == "synthetic-v99"
    assert synthetic_reference_folder(2, 16).name.startswith("synthetic-v99-")


def test_shape_twins_differ_only_in_the_main_shape_and_share_a_batch():
    from dataclasses import replace

    from benchmark.data import SyntheticTrainData

    twins = S.shape_twin_scenes(200, seed=3)
    assert twins[0::2] == S.sample_scenes(200, seed=3)  # the originals, in order
    for a, b in zip(twins[0::2], twins[1::2]):
        assert b.main.shape != a.main.shape and (a.second is None or b.main.shape != a.second.shape)
        assert replace(b, main=replace(b.main, shape=a.main.shape)) == a
        diff = S.parse_caption(S.caption(a)).items() ^ S.parse_caption(S.caption(b)).items()
        assert {k for k, _ in diff} == {"shape"}
    assert len({b.main.shape for b in twins[1::2]}) == len(S.SHAPES)  # every shape used as a twin

    data = SyntheticTrainData(64, seed=0, image_size=16, shape_twins=True)
    for step in (0, 5, 11):  # across epochs: 4 batches of 16 per epoch
        batch = data.batch(step, 16)
        idx = batch["index"]
        assert torch.equal(idx[0::2] + 1, idx[1::2]) and bool((idx[0::2] % 2 == 0).all())
        for a, b in zip(batch["captions"][0::2], batch["captions"][1::2]):  # flipped alike: only the shape differs
            pa, pb = S.parse_caption(a), S.parse_caption(b)
            assert pa["shape"] != pb["shape"] and {k: v for k, v in pa.items() if k != "shape"} == \
                {k: v for k, v in pb.items() if k != "shape"}
    with pytest.raises(ValueError, match="even train.batch_size"):
        data.batch(0, 15)
