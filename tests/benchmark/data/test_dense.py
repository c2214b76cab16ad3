"""Dense-probe data: ADE20K and NYU-Depth-v2 loaders on tiny fixtures written in their layouts, the synthetic
counterparts, and the missing-data errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data.dense import ADE20K, NYUDepthV2, SyntheticDense, reduce_zero_label


def _ade_fixture(root, n_train=3, n_val=2):
    base = root / "ADEChallengeData2016"
    rng = np.random.default_rng(0)
    labels = {}
    for split, n in (("training", n_train), ("validation", n_val)):
        (base / "images" / split).mkdir(parents=True)
        (base / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            name = f"ADE_{split[:5]}_{i:08d}"
            Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(base / "images" / split / f"{name}.jpg")
            lab = rng.integers(0, 151, (12, 16), dtype=np.uint8)
            Image.fromarray(lab).save(base / "annotations" / split / f"{name}.png")
            labels[(split, i)] = lab
    return labels


def test_reduce_zero_label():
    lab = torch.tensor([0, 1, 2, 150, 255])
    assert reduce_zero_label(lab).tolist() == [255, 0, 1, 149, 255]


def test_ade20k_layout(tmp_path):
    labels = _ade_fixture(tmp_path)
    for root in (tmp_path, tmp_path / "ADEChallengeData2016"):  # the parent or the folder itself
        tr, va = ADE20K(str(root), "train"), ADE20K(str(root), "val")
        assert (len(tr), len(va), tr.num_classes) == (3, 2, 150) and not tr.standard
        img, y = va[1]
        assert img.shape == (3, 12, 16) and img.dtype == torch.uint8 and y.dtype == torch.int64
        raw = torch.from_numpy(labels[("validation", 1)].astype(np.int64))
        assert torch.equal(y, torch.where(raw == 0, 255, raw - 1))  # PNG labels are lossless
        assert torch.equal(ADE20K(str(root), "val", reduce_zero=False)[1][1], raw)


def test_ade20k_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("DREAM_BENCH_ADE20K", raising=False)
    with pytest.raises(FileNotFoundError, match=r"eval\.ade20k_root.*ADEChallengeData2016"):
        ADE20K("", "train")
    _ade_fixture(tmp_path)
    next((tmp_path / "ADEChallengeData2016" / "annotations" / "training").glob("*.png")).unlink()
    with pytest.raises(FileNotFoundError, match="without an annotation"):
        ADE20K(str(tmp_path), "train")


def _nyu_fixture(root):
    rng = np.random.default_rng(1)
    depths = {}
    lines = {"train": [], "test": []}
    for split, scene, n in (("train", "sync/kitchen_0028b", 3), ("test", "official_splits/test/bathroom", 2)):
        (root / scene).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / scene / f"rgb_{i:05d}.jpg")
            mm = rng.integers(0, 10_000, (24, 32)).astype(np.uint16)
            Image.fromarray(mm).save(root / scene / f"sync_depth_{i:05d}.png")
            depths[(split, i)] = mm
            lines[split].append(f"/{scene}/rgb_{i:05d}.jpg /{scene}/sync_depth_{i:05d}.png 518.8579")
    lines["train"].append("/sync/kitchen_0028b/rgb_00099.jpg None 518.8579")  # BTS: frames without depth
    (root / "nyu_train.txt").write_text("\n".join(lines["train"]) + "\n")
    (root / "nyu_test.txt").write_text("\n".join(lines["test"]) + "\n")
    return depths


def test_nyu_layout(tmp_path):
    depths = _nyu_fixture(tmp_path)
    tr, te = NYUDepthV2(str(tmp_path), "train"), NYUDepthV2(str(tmp_path), "test")
    assert (len(tr), len(te)) == (3, 2) and not tr.standard
    img, d = te[1]
    assert img.shape == (3, 24, 32) and d.dtype == torch.float32
    assert torch.allclose(d, torch.from_numpy(depths[("test", 1)].astype(np.float32) / 1000.0))  # millimetres -> metres


def test_nyu_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("DREAM_BENCH_NYU", raising=False)
    with pytest.raises(FileNotFoundError, match=r"eval\.nyu_root.*nyu_train\.txt.*24,231"):
        NYUDepthV2("", "train")
    _nyu_fixture(tmp_path)
    next((tmp_path / "official_splits").rglob("*.png")).unlink()
    with pytest.raises(FileNotFoundError, match="missing files"):
        NYUDepthV2(str(tmp_path), "test")


def test_synthetic_counterparts():
    from benchmark.data.synthetic import SyntheticShapes

    seg, depth = SyntheticDense(64, 3, 32, "seg"), SyntheticDense(64, 3, 32, "depth")
    ref = SyntheticShapes(64, seed=3, image_size=32)
    assert torch.equal(seg.images, ref.images) and torch.equal(seg.targets, ref.seg.long())
    assert torch.equal(depth.targets, ref.depth) and seg.num_classes == 7
    assert 0 < seg.targets.max() <= 6 and (seg.targets == 0).any()
    assert depth.targets.min() > 1e-3 and depth.targets.max() < 10  # inside the probes' depth range
    img, y = seg[5]
    assert img.shape == (3, 32, 32) and y.shape == (32, 32)
    with pytest.raises(ValueError, match="target"):
        SyntheticDense(4, 0, 32, "normals")


def test_dense_config_checks():
    from benchmark.config import ConfigError, build_config

    for key, value in (("eval.dense_mode", "slow"), ("eval.dense_tokens", "cls"), ("eval.seg_recipe", "x"),
                       ("eval.seg_warmup", "40000"), ("eval.dense_layer", "99")):
        with pytest.raises(ConfigError, match=key.split(".")[1].replace("seg_", "seg.")):  # eval.seg_x is task.seg.x
            build_config("clip", overrides={key: value})
