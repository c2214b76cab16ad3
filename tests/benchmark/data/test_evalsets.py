"""The 14 few-shot loaders, each on a tiny fixture written in the set's released layout; seeded split files."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.data import evalsets as ev


def _img(path: Path, value: int = 50, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value, value, value)).save(path)


def _write(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _dtd(d):
    for c in ("banded", "zigzagged"):
        for i in range(3):
            _img(d / "images" / c / f"{c}_{i}.jpg")
    _write(d / "labels" / "train1.txt", ["banded/banded_0.jpg", "zigzagged/zigzagged_0.jpg"])
    _write(d / "labels" / "val1.txt", ["banded/banded_1.jpg"])
    _write(d / "labels" / "test1.txt", ["banded/banded_2.jpg", "zigzagged/zigzagged_1.jpg", "zigzagged/zigzagged_2.jpg"])
    return 3, [0, 1, 1]


def _caltech(d):
    for c in ("001.ak47", "002.american-flag", "257.clutter"):
        for i in range(62):
            _img(d / "256_ObjectCategories" / c / f"{c[:3]}_{i:04d}.jpg", size=4)
    return 120, [0] * 2 + [1] * 2  # 60 train per class, the rest test; clutter dropped


def _sun(d):
    for c in ("a/abbey", "b/bedroom", "a/apartment_building/outdoor"):
        for i in range(2):
            _img(d / "SUN397" / c / f"sun_{i}.jpg")
    _write(d / "Partitions" / "ClassName.txt", ["/a/abbey", "/a/apartment_building/outdoor", "/b/bedroom"])
    _write(d / "Partitions" / "Training_01.txt", ["/a/abbey/sun_0.jpg", "/b/bedroom/sun_0.jpg",
                                                  "/a/apartment_building/outdoor/sun_0.jpg"])
    _write(d / "Partitions" / "Testing_01.txt", ["/a/abbey/sun_1.jpg", "/a/apartment_building/outdoor/sun_1.jpg"])
    return 3, [0, 1]


def _food(d):
    for c in ("apple_pie", "waffles"):
        for i in range(2):
            _img(d / "images" / c / f"{i}.jpg")
    _write(d / "meta" / "classes.txt", ["apple_pie", "waffles"])
    _write(d / "meta" / "train.txt", ["apple_pie/0", "waffles/0"])
    _write(d / "meta" / "test.txt", ["waffles/1", "apple_pie/1"])
    return 2, [1, 0]


def _voc(d):
    v = d / "VOC2007"
    _img(v / "JPEGImages" / "000001.jpg", size=40)
    _img(v / "JPEGImages" / "000002.jpg", size=40)
    objs = {"000001": [("dog", 0, (2, 3, 20, 30)), ("person", 0, (5, 5, 10, 12)), ("cat", 1, (1, 1, 5, 5))],
            "000002": [("cat", 0, (11, 4, 40, 35))]}
    for img_id, items in objs.items():
        xml = "".join(f"<object><name>{n}</name><difficult>{dif}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                      f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, dif, b in items)
        _write(v / "Annotations" / f"{img_id}.xml", [f"<annotation>{xml}</annotation>"])
    _write(v / "ImageSets" / "Main" / "trainval.txt", ["000001"])
    _write(v / "ImageSets" / "Main" / "test.txt", ["000002"])
    return 2, [ev.VOC_CLASSES.index("cat")]  # difficult objects dropped


def _stl(d):
    b = d / "stl10_binary"
    b.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 4), ("test", 3)):
        x = rng.integers(0, 255, (n, 3, 96, 96), dtype=np.uint8)
        x.tofile(b / f"{name}_X.bin")
        np.array([1, 2, 10, 1][:n], dtype=np.uint8).tofile(b / f"{name}_y.bin")
    _write(b / "class_names.txt", ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"])
    return 4, [0, 1, 9]


def _flowers(d):
    from scipy.io import savemat

    for i in range(1, 7):
        _img(d / "jpg" / f"image_{i:05d}.jpg")
    savemat(d / "imagelabels.mat", {"labels": np.array([[1, 2, 1, 2, 3, 3]])})
    savemat(d / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[5]]), "tstid": np.array([[3, 4, 6]])})
    return 3, [0, 1, 2]


def _ucm(d):
    for c in ("agricultural", "beach"):
        for i in range(5):
            _img(d / "Images" / c / f"{c}{i:02d}.tif")
    return 8, [0, 1]


def _eurosat(d):
    for c in ("Forest", "River"):
        for i in range(5):
            _img(d / c / f"{c}_{i}.jpg")
    return 8, [0, 1]


def _resisc(d):
    for c in ("airport", "beach"):
        for i in range(10):
            _img(d / c / f"{c}_{i:03d}.jpg")
    return 16, [0] * 2 + [1] * 2


def _country(d):
    for split, n in (("train", 2), ("valid", 1), ("test", 1)):
        for c in ("AD", "ZW"):
            for i in range(n):
                _img(d / split / c / f"{split}{i}.jpg")
    return 6, [0, 1]


def _dogs(d):
    from scipy.io import savemat

    classes = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel"]
    for c in classes:
        for i in range(2):
            _img(d / "Images" / c / f"{c[:9]}_{i}.jpg")
    for name, items in (("train", [(0, 0), (1, 0)]), ("test", [(0, 1), (1, 1)])):
        files = np.empty((len(items), 1), dtype=object)
        for k, (c, i) in enumerate(items):
            files[k, 0] = np.array([f"{classes[c]}/{classes[c][:9]}_{i}.jpg"])
        savemat(d / f"{name}_list.mat", {"file_list": files, "labels": np.array([[c + 1] for c, _ in items])})
    return 2, [0, 1]


def _mit(d):
    for c in ("airport_inside", "bar"):
        for i in range(2):
            _img(d / "Images" / c / f"{c}_{i}.jpg")
    _write(d / "TrainImages.txt", ["airport_inside/airport_inside_0.jpg", "bar/bar_0.jpg"])
    _write(d / "TestImages.txt", ["bar/bar_1.jpg", "airport_inside/airport_inside_1.jpg"])
    return 2, [1, 0]


BUILDERS = {"dtd": _dtd, "caltech256": _caltech, "sun397": _sun, "food101": _food, "voc2007": _voc, "stl10": _stl,
            "flowers": _flowers, "ucmerced": _ucm, "eurosat": _eurosat, "country211": _country, "resisc45": _resisc,
            "dogs": _dogs, "mit_indoors": _mit}


@pytest.mark.parametrize("key", list(BUILDERS))
def test_fewshot_loader_on_a_real_layout_fixture(key, tmp_path):
    n_train, test_labels = BUILDERS[key](tmp_path / key)
    tr, te = ev.load_fewshot(key, tmp_path, seed=0)
    assert len(tr) == n_train, (key, tr.labels)
    if key in ev.SEEDED_TRAIN:  # seeded per-class split: only the per-class counts are fixed
        assert sorted(te.labels) == sorted(test_labels)
    else:
        assert te.labels == test_labels
    assert tr.classes == te.classes and tr.split_hash and te.split_hash
    img, y = te[0]
    assert img.mode == "RGB" and y == te.labels[0]
    if key == "voc2007":
        assert te.image(0).size == (30, 32)  # cropped to the 1-based inclusive box (11, 4)-(40, 35)
        assert tr.labels == [ev.VOC_CLASSES.index("dog"), ev.VOC_CLASSES.index("person")]
    if key == "caltech256":
        assert "257.clutter" not in tr.classes and len(tr.classes) == 2


def test_seeded_split_is_written_once_and_reproducible(tmp_path):
    _eurosat(tmp_path / "eurosat")
    tr1, te1 = ev.load_fewshot("eurosat", tmp_path, seed=3)
    files = list((ev.cache_root() / "splits").glob("eurosat-seed3.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert len(data["train"]) == 8 and len(data["test"]) == 2 and not set(data["train"]) & set(data["test"])
    tr2, _ = ev.load_fewshot("eurosat", tmp_path, seed=3)
    assert tr2.paths == tr1.paths and tr2.split_hash == tr1.split_hash
    files[0].unlink()
    tr3, _ = ev.load_fewshot("eurosat", tmp_path, seed=4)
    assert tr3.split_hash != tr1.split_hash or tr3.paths != tr1.paths


def test_imagenet_split_and_missing_sets(tmp_path):
    for w in ("n01440764", "n01443537"):
        _img(tmp_path / "in" / "train" / w / "a.JPEG")
        _img(tmp_path / "in" / "val" / w / "b.JPEG")
    tr, te = ev.load_fewshot("imagenet", None, imagenet=tmp_path / "in")
    assert tr.labels == [0, 1] and te.labels == [0, 1] and tr.classes == ["n01440764", "n01443537"]
    with pytest.raises(FileNotFoundError, match="eval.fewshot_root.*robots.ox.ac.uk"):
        ev.load_fewshot("dtd", tmp_path)
    with pytest.raises(FileNotFoundError, match="DREAM_BENCH_FEWSHOT"):
        ev.load_fewshot("dogs", None)
    assert set(ev.FEWSHOT_SETS) == set(BUILDERS) | {"imagenet"} and len(ev.FEWSHOT_SETS) == 14
