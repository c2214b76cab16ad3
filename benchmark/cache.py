"""``python -m benchmark cache``: precompute the frozen features of CC12M once (MAR ``main_cache.py`` style).

For every raw shard ``<root>/NNNNN.tar`` it writes ``<cache_dir>/NNNNN.tar`` (webdataset, same keys, same
order, the corrupt samples left out) holding per sample:

* ``moments.npy`` / ``moments_flip.npy``: SD-VAE posterior parameters (mean, logvar) [2C, h, w] float32 of
  the §4.1 centre crop and of its horizontal flip (MAR caches both; training picks one per flip draw and
  samples the posterior on the device);
* ``t5.npy``: frozen T5 last hidden state [text_len, d] float16 (the released DREAM cache's dtype), and
  ``t5_len.npy`` the number of real tokens (the padding mask when ``model.text_pad_mask``);
* ``clip.npy``: CLIP BPE token ids [clip_context] int32; ``txt``: the caption.

Resumable per shard: a shard is written to ``NNNNN.tar.tmp``, renamed when complete, then its sidecar
``NNNNN.tar.json`` (count, skipped, sha256) marks it done; a rerun skips done shards and redoes the one that
was interrupted from its start, so nothing is duplicated or lost. Rank r of w caches shards r, r+w, ...
``manifest.json`` records the models (paths and file fingerprints), the settings and the per-shard counts;
a rerun against a manifest made with other models or settings stops instead of mixing caches.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.config import ConfigError, RunConfig
from benchmark.data.cc12m import cache_settings, clip_context  # noqa: F401 (the cache's settings live with its reader)


class CacheInterrupted(RuntimeError):
    """Raised by ``stop_after`` (tests: a kill in the middle of a shard)."""


def fingerprint(folder: str) -> str:
    """sha256 over (name, size, first MiB) of every file in a weights folder: cheap for T5-XXL's 20 GB,
    and changes with any re-download or other checkpoint."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(folder)}:{f.stat().st_size}:".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _chunks(it: Iterator[dict[str, Any]], n: int) -> Iterator[list[dict[str, Any]]]:
    buf: list[dict[str, Any]] = []
    for x in it:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def build_manifest(out: Path, header: dict[str, Any]) -> dict[str, Any]:
    shards = {}
    for meta in sorted(out.glob("*.tar.json")):
        shards[meta.name[:-len(".json")]] = json.loads(meta.read_text())
    return {**header, "shards": shards, "n_samples": sum(s["n"] for s in shards.values()),
            "n_corrupt_skipped": sum(s["skipped"] for s in shards.values())}


def launcher_rank() -> tuple[int, int]:
    """(rank, world) of this process: torch.distributed if initialised, else torchrun's RANK/WORLD_SIZE or
    Slurm's SLURM_PROCID/SLURM_NTASKS (shards are independent: caching needs no process group)."""
    from benchmark import distributed

    if distributed.is_dist():
        return distributed.rank(), distributed.world_size()
    for r, w in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if r in os.environ and w in os.environ:
            return int(os.environ[r]), int(os.environ[w])
    return 0, 1


def cache_features(cfg: RunConfig, batch_size: int = 64, device: str = "auto", rank: int | None = None,
                   world: int | None = None, stop_after: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Cache this rank's shards; returns the manifest (all ranks' finished shards so far)."""
    import webdataset as wds
    from tqdm import tqdm

    from benchmark.data.cc12m import SkipCounter, cache_dir_for, cc12m_shards, decode_raw, npy_bytes
    from benchmark.models.text import ClipTokenizer, FrozenT5
    from benchmark.models.tokenizer import VAETokenizer

    m, d = cfg.model, cfg.data
    if m.tokenizer != "sd_vae":
        raise ConfigError("the feature cache stores SD-VAE latents: needs model.tokenizer=sd_vae "
                          f"(got {m.tokenizer!r}); the pixel tokenizer needs no cache")
    shards = cc12m_shards(d.root, d.shards)
    out = cache_dir_for(d.root, d.cache_dir)
    env_rank, env_world = launcher_rank()
    rank = env_rank if rank is None else rank
    world = env_world if world is None else world
    dev = torch.device("cuda" if (device == "auto" and torch.cuda.is_available()) or device == "cuda" else "cpu")
    if dev.type == "cuda" and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))

    vae = VAETokenizer(m.vae_path, m.patch_size, m.vae_scale, m.image_size).to(dev)
    t5 = FrozenT5(m.t5_path, m.text_len, m.text_pad_mask).to(dev)
    if t5.dim != m.t5_dim:
        raise ConfigError(f"model.t5_dim={m.t5_dim} but the T5 at {m.t5_path} has d_model={t5.dim}")
    clip = ClipTokenizer(clip_context(cfg))
    vae_path = m.vae_path or os.environ.get("DREAM_BENCH_VAE", "")
    t5_path = m.t5_path or os.environ.get("DREAM_BENCH_T5", "")
    header = {"format": "dream-bench feature cache v1", "source_root": str(Path(shards[0]).parent),
              "n_source_shards": len(shards), "settings": cache_settings(cfg),
              "models": {"vae": {"path": vae_path, "fingerprint": fingerprint(vae_path)},
                         "t5": {"path": t5_path, "fingerprint": fingerprint(t5_path)},
                         "clip_tokenizer": "open_clip SimpleTokenizer (OpenAI BPE)"}}
    out.mkdir(parents=True, exist_ok=True)
    old = out / "manifest.json"
    if old.exists():
        prev = json.loads(old.read_text())
        def prints(h: dict[str, Any]) -> dict[str, Any]:  # the weights, wherever they are stored
            return {k: v.get("fingerprint") if isinstance(v, dict) else v for k, v in h.get("models", {}).items()}

        if prev.get("settings") != header["settings"] or prints(prev) != prints(header):
            raise ConfigError(f"the cache at {out} was made with other models or settings "
                              f"({prev.get('models')}, {prev.get('settings')}); pass another --set data.cache_dir=")
    _atomic_write_json(old, build_manifest(out, header))

    mine = shards[rank::world]
    bar = tqdm(total=len(mine), unit="shard", desc=f"cache rank {rank}", disable=not progress, dynamic_ncols=True)
    written = 0
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    for shard in mine:
        dst = out / Path(shard).name
        meta = dst.with_name(dst.name + ".json")
        if dst.exists() and meta.exists():  # done in an earlier run
            bar.update(1)
            continue
        tmp = dst.with_name(dst.name + ".tmp")
        counter = SkipCounter()
        samples = wds.DataPipeline(wds.SimpleShardList([shard]), wds.tarfile_to_samples(handler=counter),
                                   wds.map(lambda s: decode_raw(s, m.image_size), handler=counter))
        n, t0 = 0, time.time()
        with wds.TarWriter(str(tmp)) as sink:
            for chunk in _chunks(iter(samples), batch_size):
                images = torch.stack([s["image"] for s in chunk]).to(dev).float() / 127.5 - 1.0
                captions = [s["caption"] for s in chunk]
                moments = vae.encode_moments(images).float().cpu().numpy()
                moments_flip = vae.encode_moments(images.flip(-1)).float().cpu().numpy()
                ids, valid = t5.tokenize(captions)
                with amp:
                    feats = t5.encode_ids(ids, valid)
                feats = feats.to(torch.float16).cpu().numpy()
                clip_ids = clip(captions).numpy().astype(np.int32)
                for i, s in enumerate(chunk):
                    if stop_after is not None and written >= stop_after:
                        raise CacheInterrupted(f"stopped after {written} samples, inside {Path(shard).name}")
                    sink.write({"__key__": s["key"], "txt": s["caption"],
                                "moments.npy": npy_bytes(moments[i]), "moments_flip.npy": npy_bytes(moments_flip[i]),
                                "t5.npy": npy_bytes(feats[i]), "t5_len.npy": npy_bytes(np.int32(valid[i].sum())),
                                "clip.npy": npy_bytes(clip_ids[i])})
                    n += 1
                    written += 1
                bar.set_postfix(samples=written, corrupt=counter.n)
        os.replace(tmp, dst)
        _atomic_write_json(meta, {"n": n, "skipped": counter.n, "sha256": sha256_file(dst),
                                  "source": shard, "seconds": round(time.time() - t0, 2)})
        bar.update(1)
    bar.close()
    manifest = build_manifest(out, header)
    _atomic_write_json(out / "manifest.json", manifest)
    return manifest
