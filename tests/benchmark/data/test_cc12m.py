"""CC12M webdataset reader on a tiny img2dataset-layout fixture written here (one corrupt sample)."""

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data.cc12m import CC12MTrainData, cc12m_shards
from benchmark.testing import write_img2dataset_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("cc12m")
    return root, write_img2dataset_shards(root)


def one_epoch_keys(data: CC12MTrainData) -> list[str]:
    return [s["key"] for s in data.pipeline(0, stream_seed=3)]


def test_reads_shards_crops_and_skips_the_corrupt_sample(shards):
    root, good = shards
    data = CC12MTrainData(str(root), seed=0, image_size=32, num_workers=0, resampled=False, shuffle_buffer=8,
                          rank=0, world=1)
    samples = list(data.pipeline(0, stream_seed=3))
    keys = [s["key"] for s in samples]
    assert sorted(keys) == sorted(good) and len(keys) == 19  # every readable sample once, the corrupt one skipped
    assert keys != sorted(keys)  # the shuffle buffer reorders
    s = samples[0]
    assert s["caption"] == good[s["key"]]
    # 32x48 with image_size 32: no halving, no resize, centre crop = columns 8..39 of the decoded JPEG
    shard, i = int(s["key"][:4]), int(s["key"][4:])
    with tarfile.open(root / f"{shard:05d}.tar") as tar:
        ref = np.array(Image.open(tar.extractfile(f"{s['key']}.jpg")).convert("RGB"))[:, 8:40]
    assert s["image"].shape == (3, 32, 32) and torch.equal(s["image"], torch.from_numpy(ref).permute(2, 0, 1))
    assert i < 5

    # batches: uint8 crops, flipped exactly where the step's flip draw says; the skip is counted
    batches = [data.batch(step, 4) for step in range(4)]  # one epoch: 19 samples -> 4 full batches
    assert data.skipped == 1 and data.samples_seen == 16
    data.batch(4, 4)  # the next epoch meets the corrupt sample again
    assert data.skipped == 2 and data.stats()["corrupt_skipped"] == 2
    b = batches[0]
    flips = torch.stack([bb["flip"] for bb in batches])
    assert 0 < flips.float().mean() < 1
    crops = {x["key"]: x["image"] for x in samples}  # uint8: prepare_batch maps to [-1, 1] on the device
    for bb in batches:
        for img, key, f in zip(bb["images"], bb["keys"], bb["flip"].tolist()):
            assert torch.equal(img, crops[key].flip(-1) if f else crops[key])
    assert b["images"].shape == (4, 3, 32, 32) and len(b["captions"]) == 4


def test_two_ranks_see_disjoint_samples(shards):
    root, good = shards
    per_rank = [one_epoch_keys(CC12MTrainData(str(root), 0, 32, num_workers=0, resampled=False, rank=r, world=2))
                for r in range(2)]
    assert set(per_rank[0]).isdisjoint(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(good)
    # resampled (multi-node) streams: each rank draws its own shard sequence
    res = [CC12MTrainData(str(root), 0, 32, num_workers=0, resampled=True, rank=r, world=2).batch(0, 8)["keys"]
           for r in range(2)]
    assert res[0] != res[1]


def test_shard_pattern_and_missing_data_messages(shards, tmp_path):
    root, _ = shards
    assert [Path(p).name for p in cc12m_shards(str(root), "{00001..00002}.tar")] == ["00001.tar", "00002.tar"]
    with pytest.raises(FileNotFoundError, match="img2dataset"):
        cc12m_shards(str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="1 of 2 shards"):
        cc12m_shards(str(root), "{00003..00004}.tar")
    with pytest.raises(FileNotFoundError, match="benchmark cache"):
        CC12MTrainData(str(root), 0, 32, cached=True)


def test_skip_count_crosses_loader_workers(shards):
    """With 2 loader processes the corrupt sample is decoded in a worker; its count still reaches the data
    object (worker 1 reads shards 1 and 3: 9 samples -> 2 batches; the skip rides on one of them)."""
    root, good = shards
    data = CC12MTrainData(str(root), 0, 32, num_workers=2, resampled=False, shuffle_buffer=2, rank=0, world=1)
    keys = [k for step in range(4) for k in data.batch(step, 4)["keys"]]
    assert data.skipped == 1 and len(set(keys)) == 16 and set(keys) <= set(good)
