"""data.holdout keeps the CC12M-50K reference pairs out of training; `genref` builds the reference folders
(CC12M from held-out shards, COCO from the 2014 val layout) in the layout `fid` reads, with their statistics."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.cli import main
from benchmark.data.cc12m import CC12MTrainData, cc12m_shards, holdout_split
from benchmark.testing import CORRUPT, write_img2dataset_shards


def _jpg(seed: int, h: int = 40, w: int = 56) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def cc12m(tmp_path_factory):
    """4 img2dataset shards of 5 pairs (the corrupt sample sits in shard 1, outside the held-out shards)."""
    root = tmp_path_factory.mktemp("cc12m")
    write_img2dataset_shards(root)
    return root


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    (root / "val2014").mkdir()
    (root / "annotations").mkdir()
    images, anns = [], []
    for i in range(6):
        name = f"COCO_val2014_{i:012d}.jpg"
        (root / "val2014" / name).write_bytes(_jpg(100 + i, 48, 64))
        images.append({"id": i, "file_name": name})
        anns += [{"id": 100 + i, "image_id": i, "caption": f"first caption of image {i}\n"},
                 {"id": 200 + i, "image_id": i, "caption": f"second caption of image {i}"}]
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root


def test_holdout_keeps_the_reference_pairs_out_of_training(cc12m):
    shards = cc12m_shards(str(cc12m))
    train, held = holdout_split(shards, 7)  # 7 pairs: the last two shards (10 pairs)
    assert [Path(s).name for s in held] == ["00002.tar", "00003.tar"] and len(train) == 2
    data = CC12MTrainData(str(cc12m), seed=0, image_size=16, num_workers=0, holdout=7, resampled=False)
    keys = {s["key"] for s in data.pipeline(0, stream_seed=1)}
    assert keys == {f"{s:04d}{i:05d}" for s in (0, 1) for i in range(5)} - {CORRUPT}  # the truncated one is skipped
    assert data.stats()["heldout_shards"] == ["00002.tar", "00003.tar"]
    with pytest.raises(FileNotFoundError, match="data.holdout=100"):
        holdout_split(shards, 100)


def test_genref_builds_the_folders_fid_reads(cc12m, coco, tmp_path, monkeypatch, capsys):
    from benchmark.tasks import _genref as genref

    from benchmark.config import build_config
    from benchmark.generate import eval_prompts

    out = tmp_path / "genref"
    assert main(["genref", "--out", str(out), "--cc12m", str(cc12m), "--holdout", "7",
                 "--coco", str(coco), "--coco-n", "4"]) == 0
    printed = capsys.readouterr().out
    assert "CC12M-7" in printed and "MS-COCO-4" in printed and "fid computes them on first use" in printed
    caps = (out / "cc12m" / "captions.txt").read_text().splitlines()
    assert caps == [f"a picture number {i} of shard 2" for i in range(5)] + [f"a picture number {i} of shard 3" for i in (0, 1)]
    pngs = sorted((out / "cc12m" / "images").iterdir())
    assert len(pngs) == 7 and Image.open(pngs[0]).size == (256, 256)
    coco_caps = (out / "coco" / "captions.txt").read_text().splitlines()
    assert len(coco_caps) == 4 and all(c.startswith("first caption of image ") for c in coco_caps)
    cfg = build_config("dream", preset="tiny", overrides={"data.name": "cc12m", "eval.gen_root": str(out)})
    prompts, folder, protocol = eval_prompts(cfg, "cc12m")
    assert prompts == caps and folder == out / "cc12m" / "images" and protocol.startswith("cc12m-")

    # with an Inception stand-in the statistics land in the cache under the key `fid` looks up
    class Net(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)

    monkeypatch.setattr("benchmark.tasks.fid.inception_extractor", lambda path, device: Net())
    h = genref.reference_statistics(out / "cc12m")
    from benchmark.tasks.fid import reference_stats

    assert reference_stats(out / "cc12m" / "images", None, {"net": "inception-2015-12-05 (clean-fid)"}, "clean",
                           None, "cpu")[2] == h  # cached: no network needed the second time


def test_genref_without_coco_files_is_one_line(tmp_path, capsys):
    assert main(["genref", "--out", str(tmp_path), "--coco", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "annotations/captions_val2014.json" in err and len(err.splitlines()) == 1
