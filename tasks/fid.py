"""FID (Tables 1, 2, 4-16; anchors-eval §5.1): clean-fid in "clean" mode on generated PNGs.

Variants: ``fid/cc12m`` (CC12M-50K: 50,000 held-out captions, reference = their images) and ``fid/coco``
(MS-COCO-30K: 30,000 COCO 2014 val captions, reference = their images centre-cropped and resized to 256).
Images are generated with the run's decoding settings (``eval.sad_k`` / ``sad_nfe`` / ``sad_rerank``, CFG,
temperature), saved as PNG and read back through clean-fid's own folder path (``get_folder_features``: PIL
bicubic resize without quantisation, then the feature extractor). The Inception weights are read from a local
folder (``eval.inception_path`` / $DREAM_BENCH_INCEPTION), never downloaded. Reference statistics (mu, sigma)
are computed by us and stored with their hash under the data cache, not inside site-packages.

On synthetic data the feature network is the synthetic reference network (tasks/_reference.py), the resize
goes to its 32 px input instead of 299, and the distance is reported as ``fd_ref``, never as FID.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchmark.tasks.base import Task, no_decoder_reason

from benchmark.registry import register_task

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_HELP = (
    "clean-fid's Inception (TF 2015 weights, torchscript) is read from a local folder: download "
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt on a "
    "machine with internet into e.g. /data/weights/clean-fid/, then pass --set eval.inception_path=/data/weights/"
    "clean-fid or export DREAM_BENCH_INCEPTION=/data/weights/clean-fid."
)


def inception_extractor(path: str = "", device: str | torch.device = "cpu"):
    """clean-fid's InceptionV3W from a local folder (or the .pt file); [N, 3, 299, 299] in [0, 255] -> [N, 2048]."""
    from cleanfid.inception_torchscript import InceptionV3W

    path = path or os.environ.get("DREAM_BENCH_INCEPTION", "")
    folder = Path(path).parent if path.endswith(".pt") else Path(path)
    if not path or not (folder / INCEPTION_FILE).is_file():
        raise FileNotFoundError(f"{INCEPTION_FILE} not found in {folder if path else '(eval.inception_path is empty)'}. "
                                f"{INCEPTION_HELP}")
    model = InceptionV3W(str(folder), download=False, resize_inside=False).to(device).eval()
    return model


def folder_features(folder: Path, model: Any, mode: str = "clean", size: int | None = None, batch_size: int = 64,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """Features of every image in ``folder`` through clean-fid's real code path; ``size`` replaces the 299 px
    resize (the reference network's input size) with the same PIL bicubic, unquantised resizer."""
    from cleanfid import fid
    from cleanfid.resize import make_resizer

    resize = make_resizer("PIL", False, "bicubic", (size, size)) if size else None
    return fid.get_folder_features(str(folder), model=model, num_workers=0, batch_size=batch_size,
                                   device=torch.device(device), mode=mode, custom_fn_resize=resize, verbose=False)


def stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def frechet(feats1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    from cleanfid import fid

    mu1, s1 = stats(feats1)
    return float(fid.frechet_distance(mu1, s1, mu2, sigma2))


def reference_stats(folder: Path, model: Any, key_facts: dict, mode: str, size: int | None, device) -> tuple:
    """(mu, sigma, hash) of the reference folder, cached under ``cache_root()/fid_stats/<hash>.npz``. The hash
    covers the feature network, the mode and the file list with sizes, so a changed folder is recomputed."""
    from benchmark.data import cache_root

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    listing = [(p.name, p.stat().st_size) for p in files]
    facts = {**key_facts, "mode": mode, "size": size, "folder": str(folder), "files": listing}
    h = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_root()) / "fid_stats" / f"{h}.npz"
    if path.exists():
        d = np.load(path)
        return d["mu"], d["sigma"], h
    mu, sigma = stats(folder_features(folder, model, mode, size, device=device))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, mu=mu, sigma=sigma, n=len(files), facts=json.dumps({k: v for k, v in facts.items() if k != "files"}))
    os.replace(tmp, path)
    return mu, sigma, h


def synthetic_reference_folder(prompts_n: int, image_size: int) -> Path:
    """The real images of the evaluation captions (probe_test scenes) as PNGs, written once under the cache."""
    from torchvision.io import write_png

    from benchmark.data import SYNTHETIC_SPLITS, cache_root
    from benchmark.data.synthetic import SyntheticShapes, data_tag

    folder = Path(cache_root()) / "genref" / f"{data_tag()}-probe_test-{prompts_n}-{image_size}"
    done = folder / "done"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        ds = SyntheticShapes(prompts_n, seed=SYNTHETIC_SPLITS["probe_test"], image_size=image_size)
        for i, img in enumerate(ds.images):
            write_png(img, str(folder / f"{i:06d}.png"))
        done.write_text("ok\n")
    return folder


@register_task("fid")
class FID(Task):
    """FID of generated images (clean-fid, clean mode); on synthetic data fd_ref in reference-network features."""

    version = 1
    higher_is_better = {"fid": False, "fd_ref": False}
    requires = ("gen_ref",)


    def applies(self, model, cfg) -> str | None:
        return no_decoder_reason(model)

    def run(self, model, cfg) -> dict[str, float]:
        from benchmark.tasks._generation import eval_prompts, gen_spec, generated_folder

        e = cfg.eval
        prompts, ref_folder, protocol = eval_prompts(cfg, self.variant)
        spec = gen_spec(e)
        synthetic = ref_folder is None
        device = "cpu" if synthetic else model.device  # the 128-d reference network is faster on the CPU
        if synthetic:
            from benchmark.tasks._reference import load_reference

            net, info = load_reference(image_size=cfg.model.image_size)
            ref_folder = synthetic_reference_folder(len(prompts), cfg.model.image_size)
            size, mode, feature_net, facts = cfg.model.image_size, "clean", f"reference-network:{info['hash']}", info
        else:
            net = inception_extractor(e.inception_path, device)  # fails before minutes of generation
            size, mode, feature_net, facts = None, e.fid_mode, "inception-2015-12-05 (clean-fid)", {"net": "inception"}
        gen_dir, gen_info = generated_folder(model, cfg, prompts, spec)
        mu, sigma, ref_hash = reference_stats(ref_folder, net, {"net": feature_net}, mode, size, device)
        value = frechet(folder_features(gen_dir, net, mode, size, device=device), mu, sigma)
        self._extra = {"backend": "clean-fid", "mode": mode, "feature_network": feature_net, "protocol": protocol,
                       "n_samples": len(prompts), "reference_stats": ref_hash, "generation": spec.name,
                       "sad_k": spec.candidates, "nfe": spec.nfe, "steps": spec.steps, "select_step": spec.select_step,
                       "cfg": e.cfg, "cfg_schedule": e.cfg_schedule, "temperature": e.temperature,
                       "generated": str(gen_dir), "gen_seconds": gen_info.get("seconds")}
        if synthetic:
            self._extra["reference_network"] = {"hash": facts["hash"], "held_out": facts["held_out"]}
            return {"fd_ref": value}
        return {"fid": value}

