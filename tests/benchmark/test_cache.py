"""The feature cache: resumable per shard, and training on it equals training on the raw shards."""

import copy
import json
import tarfile
from pathlib import Path

import pytest
import torch

from benchmark import registry
from benchmark.config import build_config
from benchmark.testing import CORRUPT, small_overrides, write_img2dataset_shards


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """4 img2dataset shards (5 samples each, one corrupt) of 64x80 images, a tiny random kl-f8-style VAE
    (3 downsamplings, 4 latent channels) and the tiny T5 of the synthetic data."""
    from diffusers import AutoencoderKL

    from benchmark.data import cache_root
    from benchmark.data.text_models import synthetic_text_dir

    root = tmp_path_factory.mktemp("cache_fixture")
    good = write_img2dataset_shards(root / "shards", height=64, width=80)
    AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                  norm_num_groups=4, sample_size=64).save_pretrained(root / "vae")
    t5 = synthetic_text_dir(cache_root())
    over = small_overrides(**{
        "data.name": "cc12m", "data.root": str(root / "shards"), "data.n_train": 19, "data.num_workers": 0,
        "data.resampled": "false", "data.shuffle_buffer": 6, "model.tokenizer": "sd_vae",
        "model.vae_path": str(root / "vae"), "model.t5_path": str(t5), "model.image_size": 64,
        "model.patch_size": 2, "train.batch_size": 8, "train.caption_dropout": 0.3, "tasks": ""})
    cfg = build_config("dream", overrides=over)
    return cfg, root, good


def cached_keys(cache: Path) -> list[str]:
    keys = []
    for shard in sorted(cache.glob("*.tar")):
        with tarfile.open(shard) as tar:
            keys += [n[:-len(".txt")] for n in tar.getnames() if n.endswith(".txt")]
    return keys


def test_cache_resumes_after_an_interrupted_shard(setup):
    from benchmark.cache import CacheInterrupted, cache_features

    cfg, root, good = setup
    cache = root / "shards" / "cache"
    with pytest.raises(CacheInterrupted):
        cache_features(cfg, batch_size=3, device="cpu", stop_after=7, progress=False)  # killed inside shard 1
    assert sorted(p.name for p in cache.glob("*.tar*")) == ["00000.tar", "00000.tar.json", "00001.tar.tmp"]
    first = (cache / "00000.tar").stat().st_mtime_ns
    manifest = cache_features(cfg, batch_size=3, device="cpu", progress=False)
    assert (cache / "00000.tar").stat().st_mtime_ns == first  # a finished shard is not redone
    assert not list(cache.glob("*.tmp"))
    keys = cached_keys(cache)
    assert len(keys) == len(set(keys)) and sorted(keys) == sorted(good) and CORRUPT not in keys
    assert manifest["n_samples"] == 19 and manifest["n_corrupt_skipped"] == 1
    assert manifest["shards"]["00001.tar"] | {"seconds": 0} == {
        "n": 4, "skipped": 1, "sha256": manifest["shards"]["00001.tar"]["sha256"],
        "source": str(root / "shards" / "00001.tar"), "seconds": 0}
    on_disk = json.loads((cache / "manifest.json").read_text())
    assert on_disk["models"]["vae"]["fingerprint"] == manifest["models"]["vae"]["fingerprint"]
    import hashlib

    assert on_disk["shards"]["00002.tar"]["sha256"] == hashlib.sha256((cache / "00002.tar").read_bytes()).hexdigest()


def test_cached_features_give_the_raw_loss(setup):
    """Same batch, same flips: the cached moments/T5/CLIP ids give the tokens and the loss of the raw path."""
    from benchmark.cache import cache_features
    from benchmark.config import set_value
    from benchmark.data import build_train_data
    from benchmark.train import build, prepare_batch, sample_masking

    cfg, root, good = setup
    if not (root / "shards" / "cache" / "manifest.json").exists():
        cache_features(cfg, batch_size=4, device="cpu", progress=False)
    comps = build(cfg)
    comps.model.eval()  # no dropout: the comparison is of the inputs
    raw_data = build_train_data(cfg)
    cached_cfg = copy.deepcopy(cfg)
    set_value(cached_cfg, "data.cached", "true")
    cached_data = build_train_data(cached_cfg)
    schedule = registry.schedules.get(cfg.schedule.name)(cfg.schedule)
    for step in range(2):
        raw, cached = raw_data.batch(step, 8), cached_data.batch(step, 8)
        assert raw["keys"] == cached["keys"] and torch.equal(raw["flip"], cached["flip"])
        out = []
        for b in (raw, cached):
            torch.manual_seed(step)  # the posterior noise and the diffusion draws
            batch = prepare_batch(comps, b, step)
            mask = sample_masking(cfg, schedule, 8, comps.backbone.seq_len, 0.5, step, 0, comps.device)
            out.append((batch, comps.model(batch, mask, 0.5)))
        (rb, rl), (cb, cl) = out
        assert torch.allclose(rb["tokens"], cb["tokens"], atol=1e-4, rtol=1e-4)
        assert torch.allclose(rb["t5"], cb["t5"], atol=2e-3, rtol=2e-3)  # cached as float16
        assert torch.equal(rb["clip_ids"], cb["clip_ids"]) and torch.equal(rb["caption_drop"], cb["caption_drop"])
        for k in ("total", "diff", "clip"):
            assert torch.allclose(rl[k], cl[k], rtol=1e-3, atol=1e-5), (k, rl[k], cl[k])
    # the comparison can fail: the other cached posterior (the unflipped crop for a flipped sample) differs
    flipped = cached["flip"]
    assert flipped.any()
    torch.manual_seed(0)
    wrong = comps.tokenizer.sample_moments(torch.where(flipped[:, None, None, None], cached_data_moments(
        cached_data, cached["keys"]), cached["moments"]))
    torch.manual_seed(0)
    right = comps.tokenizer.sample_moments(cached["moments"])
    assert not torch.allclose(wrong[flipped], right[flipped], atol=1e-2)


def cached_data_moments(data, keys):
    """The unflipped moments of ``keys`` read straight from the cache shards."""
    import io

    import numpy as np

    found = {}
    for shard in data.shards:
        with tarfile.open(shard) as tar:
            for k in keys:
                try:
                    found[k] = np.load(io.BytesIO(tar.extractfile(f"{k}.moments.npy").read()))
                except KeyError:
                    pass
    return torch.stack([torch.from_numpy(found[k]) for k in keys])


def test_runs_on_raw_and_cached_cc12m_record_the_data(setup, tmp_path):
    """`run --data cc12m` end to end on both paths; the record keeps the source and the corrupt-sample count."""
    from benchmark.cache import cache_features
    from benchmark.config import set_value
    from benchmark.run import execute

    cfg, root, _ = setup
    if not (root / "shards" / "cache" / "manifest.json").exists():
        cache_features(cfg, batch_size=4, device="cpu", progress=False)
    seen = {}
    for cached in ("false", "true"):
        c = copy.deepcopy(cfg)
        for k, v in {"data.cached": cached, "train.steps": "2", "out": str(tmp_path), "eval.samples": "0"}.items():
            set_value(c, k, v)
        rec = json.loads((execute(c) / "record.json").read_text())
        assert rec["status"] == "completed"
        seen[cached] = rec["train"]["data"]
    assert seen["false"]["source"] == "shards" and seen["false"]["corrupt_skipped"] == 1  # 2 x 8 of 19: one epoch
    assert seen["true"]["source"] == "cache" and seen["true"]["corrupt_skipped"] == 0  # the cache left it out
    assert seen["true"]["samples_seen"] == seen["false"]["samples_seen"] == 16


def test_cache_cli_takes_the_launcher_rank(setup, tmp_path, monkeypatch, capsys):
    """`python -m benchmark cache` under torchrun/Slurm: rank 1 of 2 caches shards 1 and 3 only."""
    from benchmark.cli import main

    cfg, root, _ = setup
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    sets = {"data.root": cfg.data.root, "data.cache_dir": str(tmp_path / "c"), "model.vae_path": cfg.model.vae_path,
            "model.t5_path": cfg.model.t5_path, "model.tokenizer": "sd_vae", "model.image_size": "64",
            "model.patch_size": "2"}
    args = ["cache", "--preset", "tiny", "--device", "cpu", "--batch", "4"]
    assert main(args + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]) == 0
    assert sorted(p.name for p in (tmp_path / "c").glob("*.tar")) == ["00001.tar", "00003.tar"]
    assert "cache: 9 samples in 2/4 shards, 1 corrupt skipped" in capsys.readouterr().out
    assert main(["cache", "--preset", "tiny", "--set", f"data.root={tmp_path / 'none'}"]) == 2  # one-line error


def test_a_cache_for_other_settings_is_refused(setup):
    from benchmark.config import ConfigError, set_value
    from benchmark.data import build_train_data

    cfg, root, _ = setup
    if not (root / "shards" / "cache" / "manifest.json").exists():
        from benchmark.cache import cache_features

        cache_features(cfg, batch_size=4, device="cpu", progress=False)
    c = copy.deepcopy(cfg)
    set_value(c, "data.cached", "true")
    build_train_data(c)  # fits
    set_value(c, "model.text_len", "16")
    with pytest.raises(ConfigError, match="text_len"):
        build_train_data(c)
    # caching again into the same folder with another VAE (other weights) is refused, not mixed in
    from diffusers import AutoencoderKL

    from benchmark.cache import cache_features

    torch.manual_seed(1)
    AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                  norm_num_groups=4, sample_size=64).save_pretrained(root / "vae2")
    other = copy.deepcopy(cfg)
    set_value(other, "model.vae_path", str(root / "vae2"))
    with pytest.raises(ConfigError, match="other models"):
        cache_features(other, batch_size=4, device="cpu", progress=False)
