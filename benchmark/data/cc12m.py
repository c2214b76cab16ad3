"""CC12M from webdataset shards in the img2dataset layout, raw or through the feature cache.

Reading (§4.1): ADM/MAR centre crop to ``image_size`` (box-halve while the short side is >= 2x the size,
bicubic resize of the short side, centre crop) and a horizontal flip with p = 0.5. The pipeline is

    shards -> [rank split] -> [worker split] -> tar samples -> decode + crop -> shuffle buffer -> batches

* per-rank sharding: rank r of w reads shards r, r+w, ... (``data.resampled=false``: exact epochs, the
  shard order reshuffled every epoch), or each (rank, worker) draws shards with replacement from its own
  seed (``data.resampled=true``, the webdataset multi-node idiom: no rank waits for a shorter shard list);
* corrupt samples (unreadable tar members, undecodable images) are skipped by one counting handler; the
  count travels with each batch out of the loader workers and is summed in ``CC12MTrainData.skipped``;
* decoding happens *before* the shuffle buffer, so the raw shards and the feature cache (which holds the
  same samples minus the corrupt ones, in the same shard order) give the same sample sequence; the flip
  is drawn per step from the step seed in the main process, so both paths give the same batches and flips.

Cached samples (``benchmark cache``) hold the VAE posterior moments of the crop and of its flip (as MAR's
``main_cache.py``), the frozen T5 features (float16, as the released DREAM cache) and the CLIP token ids.
"""

from __future__ import annotations

import functools
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

CC12M_HELP = (
    "CC12M is read from webdataset shards in the img2dataset layout ({00000..NNNNN}.tar holding "
    "<key>.jpg/<key>.txt/<key>.json). Make them with: img2dataset --url_list cc12m.tsv --input_format tsv "
    "--url_col url --caption_col caption --output_format webdataset --output_folder /data/cc12m "
    "--image_size 256 --resize_mode center_crop, then pass --set data.root=/data/cc12m or export "
    "DREAM_BENCH_DATA=/data/cc12m (data.shards selects a subset, e.g. '{00000..01242}.tar')."
)
CACHE_HELP = (
    "Build the feature cache once with: python -m benchmark cache --preset <P> --set data.root=<shards> "
    "(it writes <root>/cache/{00000..}.tar and manifest.json; data.cache_dir picks another folder)."
)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def cc12m_shards(root: str, pattern: str = "") -> list[str]:
    """Shard paths: ``pattern`` (brace notation, relative to root) or every ``*.tar`` in root, sorted."""
    import braceexpand

    root = root or os.environ.get("DREAM_BENCH_DATA", "")
    if not root:
        raise FileNotFoundError(f"no CC12M shards: data.root is empty and $DREAM_BENCH_DATA is unset. {CC12M_HELP}")
    if pattern:
        shards = [Path(root) / p for p in braceexpand.braceexpand(pattern)]
        missing = [str(s) for s in shards if not s.exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(shards)} shards of data.shards={pattern!r} missing "
                                    f"under {root} (first: {missing[0]}). {CC12M_HELP}")
    else:
        shards = sorted(Path(root).glob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"no CC12M shards found at {root}. {CC12M_HELP}")
    return [str(s) for s in shards]


# CC12M-50K (Table 2): the paper's FID reference is 50,000 held-out CC12M pairs. With ``data.holdout = N`` the
# trailing shards of the sorted list that hold the first N pairs are kept out of training (whole shards, so the
# loaders stay shard-parallel; the rest of those shards is unused), and ``python -m benchmark genref`` writes
# the first N of them as the reference folder.
CC12M_HOLDOUT = 50_000


def shard_size(shard: str | Path) -> int:
    """Pairs in a shard: img2dataset's ``<shard>_stats.json`` ("successes") when present, else its tar listing."""
    import json
    import tarfile

    stats = Path(shard).with_name(Path(shard).stem + "_stats.json")
    if stats.exists():
        return int(json.loads(stats.read_text())["successes"])
    with tarfile.open(shard) as tar:
        names = tar.getnames()
    return len({n.rsplit(".", 1)[0] for n in names if n.rsplit(".", 1)[-1].lower() in IMAGE_EXTS})


def holdout_split(shards: list[str], n: int) -> tuple[list[str], list[str]]:
    """(training shards, held-out shards): the fewest trailing shards that hold ``n`` pairs are held out."""
    if n <= 0:
        return shards, []
    held, count = [], 0
    for s in reversed(shards):
        if count >= n:
            break
        held.insert(0, s)
        count += shard_size(s)
    if count < n or len(held) == len(shards):
        raise FileNotFoundError(f"data.holdout={n} needs {n} held-out pairs and some shards left to train on; the "
                                f"{len(shards)} shards hold {count if len(held) == len(shards) else 'more'} pairs. "
                                f"{CC12M_HELP}")
    return shards[:-len(held)], held


def heldout_pairs(shards: list[str], n: int, image_size: int = 256) -> Iterator[dict[str, Any]]:
    """The first ``n`` readable pairs of the held-out shards, in shard and tar order (key, uint8 crop, caption)."""
    import webdataset as wds

    counter = SkipCounter()
    pipe = wds.DataPipeline(wds.SimpleShardList(holdout_split(shards, n)[1]), wds.tarfile_to_samples(handler=counter),
                            wds.map(functools.partial(decode_raw, image_size=image_size), handler=counter))
    for i, sample in enumerate(pipe):
        if i >= n:
            return
        yield sample


def cache_dir_for(root: str, cache_dir: str = "") -> Path:
    """The feature cache sits beside the images unless ``data.cache_dir`` says otherwise."""
    return Path(cache_dir) if cache_dir else Path(root or os.environ.get("DREAM_BENCH_DATA", "")) / "cache"


def center_crop_arr(image, image_size: int):
    """ADM's ``center_crop_arr`` (used by MAR and DREAM): box-halve, bicubic resize, centre crop."""
    from PIL import Image

    while min(*image.size) >= 2 * image_size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = image_size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    y, x = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return arr[y:y + image_size, x:x + image_size]


def clip_context(cfg: Any) -> int:
    """The CLIP ids' length: the objective's CLIP head's (``objective.clip_context``), else the OpenAI tokenizer's
    77 (§3.1): one cache serves every objective."""
    return int(getattr(cfg.objective, "clip_context", 77))


def cache_settings(cfg: Any) -> dict[str, Any]:
    """What a cache depends on: a cache made with other values is another cache."""
    m = cfg.model
    return {"image_size": m.image_size, "crop": "adm_center_crop", "text_len": m.text_len, "t5_dim": m.t5_dim,
            "clip_context": clip_context(cfg), "t5_dtype": "float16", "moments_dtype": "float32"}


class SkipCounter:
    """webdataset handler: log the first few errors, count them all, and continue."""

    def __init__(self) -> None:
        self.n = self._reported = 0

    def __call__(self, exn: Exception) -> bool:
        self.n += 1
        if self.n <= 5:
            log.warning("skipping a corrupt CC12M sample (%d so far): %r", self.n, exn)
        return True

    def take(self) -> int:
        """Skips since the previous call (each worker reports its own through its batches)."""
        delta, self._reported = self.n - self._reported, self.n
        return delta


def decode_raw(sample: dict[str, Any], image_size: int) -> dict[str, Any]:
    """img2dataset sample -> key, uint8 crop [3, S, S], caption. Raises on a corrupt image or caption."""
    from PIL import Image

    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    if ext is None or "txt" not in sample:
        raise ValueError(f"sample {sample.get('__key__')} in {sample.get('__url__')} lacks an image or a .txt")
    with Image.open(io.BytesIO(sample[ext])) as im:
        crop = center_crop_arr(im.convert("RGB"), image_size)
    return {"key": sample["__key__"], "image": torch.from_numpy(crop.copy()).permute(2, 0, 1),
            "caption": sample["txt"].decode("utf-8")}


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _npy(b: bytes) -> np.ndarray:
    return np.load(io.BytesIO(b), allow_pickle=False)


def decode_cached(sample: dict[str, Any]) -> dict[str, Any]:
    """Cached sample -> key, moments and moments_flip [2C, h, w], T5 features [L, d], token count, CLIP ids."""
    return {"key": sample["__key__"], "caption": sample["txt"].decode("utf-8"),
            "moments": torch.from_numpy(_npy(sample["moments.npy"])),
            "moments_flip": torch.from_numpy(_npy(sample["moments_flip.npy"])),
            "t5": torch.from_numpy(_npy(sample["t5.npy"])), "t5_len": int(_npy(sample["t5_len.npy"])),
            "clip_ids": torch.from_numpy(_npy(sample["clip.npy"]).astype(np.int64))}


def _collate(src: Iterator[dict[str, Any]], batch_size: int, counter: SkipCounter) -> Iterator[dict[str, Any]]:
    """Full batches (drop_last) + the number of samples this worker skipped since its previous batch."""
    buf: list[dict[str, Any]] = []
    for s in src:
        buf.append(s)
        if len(buf) < batch_size:
            continue
        out: dict[str, Any] = {"keys": [b["key"] for b in buf], "captions": [b["caption"] for b in buf]}
        for k in ("image", "moments", "moments_flip", "t5", "clip_ids"):
            if k in buf[0]:
                out[k] = torch.stack([b[k] for b in buf])
        if "t5_len" in buf[0]:
            out["t5_len"] = torch.tensor([b["t5_len"] for b in buf])
        out["skipped"] = counter.take()
        yield out
        buf = []


def _rank_split(src: Iterator[dict[str, Any]], rank: int, world: int) -> Iterator[dict[str, Any]]:
    for i, item in enumerate(src):
        if i % world == rank:
            yield item


def _worker_seed(rank: int) -> int:
    from webdataset.utils import pytorch_worker_info

    return rank * 1000 + pytorch_worker_info()[2]  # distinct per (rank, worker); ours, not the env's RANK


class CC12MTrainData:
    """Streaming CC12M reader (raw shards or the feature cache) with per-rank sharding.

    The order is not step-addressable: a resumed run restarts the stream with a shuffle seed that depends
    on the step it resumes at (the standard webdataset trade-off); the flips stay step-seeded.
    """

    def __init__(self, root: str, seed: int, image_size: int, hflip: bool = True, num_workers: int = 8,
                 shards: str = "", cached: bool = False, cache_dir: str = "", shuffle_buffer: int = 1000,
                 resampled: bool = True, rank: int | None = None, world: int | None = None,
                 expect: dict[str, Any] | None = None, holdout: int = 0) -> None:
        """``expect``: the cache settings the run needs (``benchmark.cache.cache_settings``), checked
        against the cache's manifest; ``holdout``: pairs kept out of training (``holdout_split``)."""
        from benchmark import distributed

        self.raw_shards, self.heldout_shards = holdout_split(cc12m_shards(root, shards), holdout)
        self.cached = cached
        if cached:
            cdir = cache_dir_for(root, cache_dir)
            self.shards = [str(cdir / Path(s).name) for s in self.raw_shards]
            missing = [s for s in self.shards if not Path(s).exists()]
            if missing:
                raise FileNotFoundError(f"data.cached=true but {len(missing)} of {len(self.shards)} cache shards "
                                        f"are missing in {cdir} (first: {missing[0]}). {CACHE_HELP}")
            self.manifest = read_manifest(cdir)
            have = self.manifest.get("settings", {})
            diff = {k: (have.get(k), v) for k, v in (expect or {}).items() if have.get(k) != v}
            if diff:
                from benchmark.config import ConfigError

                raise ConfigError(f"the feature cache in {cdir} does not fit this run (cache vs run: {diff}); "
                                  f"rebuild it into another data.cache_dir. {CACHE_HELP}")
        else:
            self.shards = self.raw_shards
        self.seed, self.image_size, self.hflip, self.num_workers = seed, image_size, hflip, num_workers
        self.shuffle_buffer, self.resampled = shuffle_buffer, resampled
        self.rank = distributed.rank() if rank is None else rank
        self.world = distributed.world_size() if world is None else world
        self.skipped = 0  # corrupt samples skipped so far (all workers of this rank)
        self.samples_seen = 0
        self._it: Iterator[dict[str, Any]] | None = None
        self._batch_size = 0

    def pipeline(self, batch_size: int, stream_seed: int):
        """The webdataset pipeline of this rank (``batch_size=0``: single samples, no collation)."""
        import webdataset as wds

        counter = SkipCounter()
        if self.resampled:
            src = [wds.ResampledShards(self.shards, seed=stream_seed, deterministic=True,
                                       worker_seed=functools.partial(_worker_seed, self.rank))]
        else:
            src = [wds.SimpleShardList(self.shards), wds.detshuffle(len(self.shards), len(self.shards), stream_seed),
                   wds.pipelinefilter(_rank_split)(self.rank, self.world), wds.split_by_worker]
        decode = decode_cached if self.cached else functools.partial(decode_raw, image_size=self.image_size)
        stages = src + [wds.tarfile_to_samples(handler=counter), wds.map(decode, handler=counter)]
        if self.shuffle_buffer > 1:
            stages.append(wds.detshuffle(self.shuffle_buffer, min(100, self.shuffle_buffer), stream_seed + 1))
        if batch_size:
            stages.append(wds.pipelinefilter(_collate)(batch_size, counter))
        pipe = wds.DataPipeline(*stages)
        pipe.skip_counter = counter  # in-process use (no loader workers): the corrupt samples met so far
        return pipe

    def _stream(self, start_step: int, batch_size: int) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        stream_seed = (self.seed * 1_000_003 + start_step) * 7919 + self.rank
        ds = self.pipeline(batch_size, stream_seed).repeat()  # epochs follow each other (resampled: endless)
        if self.num_workers == 0:
            return iter(ds)
        loader = wds.WebLoader(ds, batch_size=None, num_workers=self.num_workers,
                               pin_memory=torch.cuda.is_available(), persistent_workers=True)
        return iter(loader)

    def batch(self, step: int, batch_size: int) -> dict[str, Any]:
        from benchmark.data.common import step_generator

        if self._it is None or batch_size != self._batch_size:
            self._it, self._batch_size = self._stream(step, batch_size), batch_size
        b = next(self._it)
        self.skipped += int(b.pop("skipped"))
        self.samples_seen += len(b["keys"])
        flip = torch.rand(batch_size, generator=step_generator(self.seed, step, 1)) < 0.5
        if not self.hflip:
            flip[:] = False
        out: dict[str, Any] = {"captions": b["captions"], "keys": b["keys"], "flip": flip}
        if self.cached:
            # MAR: one of the two cached posteriors (crop / flipped crop), sampled in prepare_batch
            out["moments"] = torch.where(flip[:, None, None, None], b["moments_flip"], b["moments"])
            out["t5"] = b["t5"]  # float16: prepare_batch casts on the device
            out["t5_valid"] = torch.arange(b["t5"].shape[1])[None] < b["t5_len"][:, None]
            out["clip_ids"] = b["clip_ids"]
        else:  # uint8 crops: prepare_batch maps them to [-1, 1] on the device
            images = b["image"]
            out["images"] = torch.where(flip[:, None, None, None], images.flip(-1), images)
        if torch.cuda.is_available():  # the flip made new tensors: pin them for the non-blocking copy
            out = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
        return out

    def stats(self) -> dict[str, Any]:
        """What the run record keeps about the data (the loop stores it under record["train"]["data"])."""
        return {"source": "cache" if self.cached else "shards", "n_shards": len(self.shards),
                "heldout_shards": [Path(s).name for s in self.heldout_shards],
                "samples_seen": self.samples_seen, "corrupt_skipped": self.skipped,
                "rank": self.rank, "world_size": self.world, "resampled": self.resampled}


def read_manifest(cache_dir: Path) -> dict[str, Any]:
    import json

    path = Path(cache_dir) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}
