"""Robustness: IN-A/IN-R masks, ImageNetV2 integer labels, ObjectNet projection, ImageNet-Hard multi-label, each on
a tiny fixture written in the set's real layout; the task end to end on real-layout fixtures and on synthetic."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from benchmark.data import evalsets as ev

WNIDS = [f"n0{i:07d}" for i in range(10)]


def _img(path: Path, value: int = 0, size: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value, value, value)).save(path)


def _imagenet(root: Path) -> Path:
    for i, w in enumerate(WNIDS):
        _img(root / "train" / w / f"{w}_1.JPEG", i * 20)
        _img(root / "val" / w / f"ILSVRC2012_val_{i:08d}.JPEG", i * 20)
    return root


def test_in_a_mask_picks_the_200_style_columns(tmp_path):
    sub = [WNIDS[2], WNIDS[5], WNIDS[7]]
    for w in sub:
        _img(tmp_path / "imagenet-a" / w / "a.jpg")
        _img(tmp_path / "imagenet-a" / w / "b.jpg")
    ds, mask = ev.load_wnid_subset(tmp_path, "imagenet-a", WNIDS)
    assert mask.tolist() == [i in (2, 5, 7) for i in range(10)]
    assert ds.classes == sub and ds.labels == [0, 0, 1, 1, 2, 2]
    # logits: the true class wins among the subset's columns, a column outside the subset wins overall
    logits = torch.zeros(6, 10)
    for i, y in enumerate(ds.labels):
        logits[i, [2, 5, 7][y]] = 1.0
    logits[:, 9] = 5.0
    assert (logits[:, mask].argmax(1) == torch.tensor(ds.labels)).all()
    assert not (logits.argmax(1) == torch.tensor(ds.labels)).any()
    _img(tmp_path / "imagenet-r" / "n99999999" / "x.jpg")
    with pytest.raises(ValueError, match="not ImageNet-1K wnids"):
        ev.load_wnid_subset(tmp_path, "imagenet-r", WNIDS)


def test_imagenet_v2_labels_are_integer_folder_names(tmp_path):
    d = tmp_path / "imagenetv2-matched-frequency-format-val"
    for c in ("0", "1", "2", "10", "100"):
        _img(d / c / "7e4f.jpeg")
    ds = ev.load_imagenet_v2(tmp_path, "v2_mf")
    assert sorted(ds.labels) == [0, 1, 2, 10, 100]
    assert all(int(p.parent.name) == y for p, y in zip(ds.paths, ds.labels))
    from torchvision.datasets import ImageFolder  # the silent bug this avoids: lexicographic class indices

    assert ImageFolder(str(d)).class_to_idx["10"] == 2


def _objectnet(root: Path) -> None:
    d = root / "objectnet-1.0"
    m = d / "mappings"
    m.mkdir(parents=True)
    (m / "folder_to_objectnet_label.json").write_text(json.dumps({"alarm_clock": "Alarm clock", "banana": "Banana",
                                                                   "chair": "Chair", "zebra_toy": "Zebra toy"}))
    # ObjectNet classes -> IN-1K names ("; "-separated); "Zebra toy" has no IN-1K counterpart
    (m / "objectnet_to_imagenet_1k.json").write_text(json.dumps({"Alarm clock": "analog clock; digital clock",
                                                                  "Banana": "banana", "Chair": "folding chair; rocking chair"}))
    names_2012 = ["banana", "analog clock", "rocking chair", "digital clock", "folding chair", "x5", "x6", "x7", "x8", "x9"]
    (m / "imagenet_to_label_2012_v2").write_text("\n".join(names_2012) + "\n")
    # pytorch column -> 2012 id (a permutation)
    perm = {0: 3, 1: 0, 2: 4, 3: 1, 4: 2, 5: 5, 6: 6, 7: 7, 8: 8, 9: 9}
    (m / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps({str(k): v for k, v in perm.items()}))
    for folder in ("alarm_clock", "banana", "chair", "zebra_toy"):
        _img(d / "images" / folder / "1.png", size=12)


def test_objectnet_projection_and_border(tmp_path):
    _objectnet(tmp_path)
    ds, columns = ev.load_objectnet(tmp_path)
    # 2012 ids: analog clock 1 -> column 3, digital clock 3 -> column 0, banana 0 -> 1, folding 4 -> 2, rocking 2 -> 4
    assert ds.classes == ["Alarm clock", "Banana", "Chair"] and columns == [[3, 0], [1], [2, 4]]
    assert len(ds) == 3 and ds.labels == [0, 1, 2]  # zebra_toy (no IN-1K class) dropped
    assert ds.image(0).size == (8, 8)  # 2-px border cut
    logits = torch.tensor([[0.0, 5.0, 1.0, 2.0, 0.0, 9.0, 0, 0, 0, 0]])
    assert ev.project_logits(logits, columns).tolist() == [[2.0, 5.0, 1.0]]  # max over mapped columns, 9.0 ignored


def test_imagenet_hard_counts_any_listed_label(tmp_path):
    d = tmp_path / "imagenet-hard"
    for f in ("a.jpg", "b.jpg", "c.jpg"):
        _img(d / "images" / f)
    (d / "labels.json").write_text(json.dumps({"a.jpg": [3, 7, -1], "b.jpg": [1], "c.jpg": [4, 5]}))
    (d / "revision.txt").write_text("abc123\n")
    ds, rev = ev.load_imagenet_hard(tmp_path)
    assert rev == "abc123" and ds.targets == [[3, 7], [1], [4, 5]]
    assert ev.multilabel_correct(torch.tensor([7, 2, 4]), ds.targets).tolist() == [True, False, True]


def test_missing_sets_name_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("DREAM_BENCH_ROBUSTNESS", raising=False)
    with pytest.raises(FileNotFoundError, match="eval.robustness_root"):
        ev.load_sketch(tmp_path, WNIDS)
    with pytest.raises(FileNotFoundError, match="DREAM_BENCH_ROBUSTNESS"):
        ev.load_objectnet(tmp_path)


class _Oracle(torch.nn.Module):
    """Reads the class from the image brightness (value = 20 * column): a classifier with known answers."""

    def forward(self, images):
        col = (images.float().mean((1, 2, 3)) / 20).round().long().clamp(0, 9)
        return torch.nn.functional.one_hot(col, 10).float()


def test_robustness_task_on_real_layout_fixtures(tmp_path, monkeypatch):
    import benchmark.tasks.robustness as rb

    from benchmark.config import build_config

    inet = _imagenet(tmp_path / "imagenet")
    rob = tmp_path / "rob"
    for folder, cols in (("imagenet-a", (2, 5)), ("imagenet-r", (1, 3))):
        for c in cols:
            _img(rob / folder / WNIDS[c] / "x.jpg", 20 * c)
    for c in range(10):
        _img(rob / "sketch" / WNIDS[c] / "s.JPEG", 20 * ((c + 1) % 10))  # every sketch is misread
    for d in ev.IMAGENET_V2_DIRS.values():
        for c in (0, 4, 9):
            _img(rob / d / str(c) / "v.jpeg", 20 * c)
    d = rob / "imagenet-hard"
    _img(d / "images" / "h1.png", 20 * 6)
    _img(d / "images" / "h2.png", 20 * 8)
    (d / "labels.json").write_text(json.dumps({"h1.png": [2, 6], "h2.png": [1]}))
    _objectnet(rob)  # images are black: column 0 wins -> digital clock -> "Alarm clock" correct, others not
    cfg = build_config("clip", overrides={"eval.imagenet_root": str(inet), "eval.robustness_root": str(rob),
                                          "data.name": "cc12m", "model.image_size": 8, "model.patch_size": 4})
    monkeypatch.setattr(rb, "build_classifier", lambda model, cfg: (_Oracle(), {"classifier": "oracle"}))
    fake = type("M", (), {"device": torch.device("cpu")})()
    task = rb.Robustness()
    m = task.run(fake, cfg)
    expect = {"in1k": 100.0, "in_a": 100.0, "in_r": 100.0, "in_s": 0.0, "in_h": 50.0, "v2_mf": 100.0, "v2_t7": 100.0,
              "v2_top": 100.0, "objectnet": 100 / 3}
    for k, v in expect.items():
        assert m[k] == pytest.approx(v), k
    assert m["avg"] == pytest.approx(sum(expect.values()) / 9)
    assert task.extra()["avg_includes_in1k"] and set(task.extra()["split_hash"]) == set(expect)


def test_robustness_task_on_synthetic():
    from benchmark.tasks.robustness import KEYS, SYNTHETIC_SHIFTS, Robustness

    from benchmark.config import build_config
    from benchmark.train import build

    over = {"model.width": 32, "model.depth": 4, "model.heads": 2, "model.buffer_tokens": 2, "objective.proj_hidden": 32,
            "objective.embed_dim": 16, "eval.n_probe_train": 256, "eval.n_probe_test": 64, "train.batch_size": 16,
            "data.n_train": 256, "eval.lp_epochs": 2, "eval.lp_batch": 128, "eval.lp_warmup_epochs": 1,
            "eval.robustness_classifier": "lp"}
    cfg = build_config("clip", overrides={k: str(v) for k, v in over.items()})
    task = Robustness()
    m = task.run(build(cfg), cfg)
    assert set(m) == set(KEYS) | {"avg"} and m["avg"] == pytest.approx(sum(m[k] for k in KEYS) / len(KEYS))
    assert task.extra()["stand_ins"]["in_s"]["variant"] == "sketch" and len(SYNTHETIC_SHIFTS) == 8
