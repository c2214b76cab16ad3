"""benchmark.diagnose: the caption variants swap exactly one kind of word, the centroids are where the objects are,
and a bad run directory ends in one line (exit 2)."""

import pytest
import torch

from benchmark.diagnose import caption_variants, main, object_centroids


def test_caption_variants_swap_one_kind_of_word():
    caps = ["a large red diamond at the bottom right on a black background, and a small blue circle at the top left",
            "a medium white square in the center on a brown background"]
    v = caption_variants(caps)
    assert v["true"] == caps
    assert v["left/right swapped"][0] == ("a large red diamond at the bottom left on a black background, and a small "
                                          "blue circle at the top right")
    assert v["top/bottom swapped"][0] == ("a large red diamond at the top right on a black background, and a small "
                                          "blue circle at the bottom left")
    # the main object's shape moves to the next shape; the second object's shape stays
    assert v["main shape swapped"][0].startswith("a large red ") and "diamond" not in v["main shape swapped"][0]
    assert v["main shape swapped"][0].endswith("a small blue circle at the top left")
    assert v["main shape swapped"][1] != caps[1] and "square" not in v["main shape swapped"][1]
    assert v["left/right swapped"][1] == v["top/bottom swapped"][1] == caps[1]  # no position word to swap
    assert v["null caption"] == ["", ""]


def test_object_centroids_find_the_object():
    img = torch.full((2, 3, 32, 32), 40, dtype=torch.uint8)
    img[0, :, 2:8, 22:30] = 230  # top right block: x centre 25.5 / 31, y centre 4.5 / 31
    img[1, 0, 24:30, 1:5] = 250  # bottom left, red only
    cx, cy = object_centroids(img)
    assert cx[0].item() == pytest.approx(25.5 / 31) and cy[0].item() == pytest.approx(4.5 / 31)
    assert cx[1].item() == pytest.approx(2.5 / 31) and cy[1].item() == pytest.approx(26.5 / 31)


def test_bad_run_dir_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "record.json" in err
