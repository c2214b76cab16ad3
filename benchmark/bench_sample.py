"""`bench sample`: Table 6 (and Table 17) rows -- decoding throughput at a fixed NFE budget with the two quality
metrics -- measured on a trained run and written into its record as ``sad/k{K}-nfe{NFE}-{self|clip}``.

Rows (NFE = encoder passes per image, K·T + (S − T), models/sad.py): K=1 at 64 NFE (64 steps), K=1 at 128
(128 steps), K=2 with the external CLIP at 128 (two full 64-step decodes, scored as finished images), SAD with
K=5, 9, 17 at 128 (64 steps, select at T = 16, 8, 4; K=5 is Table 17's). Throughput is images per second of
the decoding and scoring (batched candidates, the same prompts and seed for every row); quality is ``fid`` +
``cs`` on real data, ``fd_ref`` + ``agreement`` on synthetic data (tasks/fid.py, tasks/clip_score.py). On
synthetic data without CLIP weights, the external reranker's judge is the reference network (recorded).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

# (K, budget in units of S, rerank): with S = 64 the paper's 64 / 128 NFE rows. The tiny preset has L = 64 tokens,
# where S >= 64 reveals one token per step (MAR's clamp), so S = 64 and S = 128 decode identical images; pass
# --decode-steps 16 there to keep the paper's S / L = 64 / 256 (rows then read nfe16 / nfe32).
ROWS = [(1, 1, "self"), (1, 2, "self"), (2, 2, "clip"), (5, 2, "self"), (9, 2, "self"), (17, 2, "self")]
SAD_VERSION = 1


def _quality(images: torch.Tensor, prompts: list[str], cfg: Any, ref_folder: Path | None, comps: Any) -> dict[str, float]:
    from torchvision.io import write_png

    from benchmark.tasks.clip_score import caption_agreement, clip_score
    from benchmark.tasks.fid import folder_features, frechet, inception_extractor, reference_stats, synthetic_reference_folder

    e = cfg.eval
    with tempfile.TemporaryDirectory(prefix="dream-bench-sample-") as tmp:
        for i, img in enumerate(images):
            write_png(img, str(Path(tmp) / f"{i:06d}.png"))
        if ref_folder is None:
            from benchmark.tasks._reference import load_reference

            net, info = load_reference()
            ref = synthetic_reference_folder(len(prompts), cfg.model.image_size)
            size = cfg.model.image_size
            mu, sigma, _ = reference_stats(ref, net, {"net": f"reference-network:{info['hash']}"}, "clean", size, "cpu")
            fd = frechet(folder_features(Path(tmp), net, "clean", size), mu, sigma)
            return {"fd_ref": fd, "agreement": float(caption_agreement(images, prompts, net).float().mean() * 100)}
        from benchmark.tasks._generation import external_clip

        net = inception_extractor(e.inception_path, comps.device)
        mu, sigma, _ = reference_stats(ref_folder, net, {"net": "inception-2015-12-05 (clean-fid)"}, e.fid_mode, None,
                                       comps.device)
        fid = frechet(folder_features(Path(tmp), net, e.fid_mode, device=comps.device), mu, sigma)
        clip = external_clip(cfg, comps.device)
        x = images.float() / 127.5 - 1
        cos = torch.cat([clip.cosine(x[i:i + 256], prompts[i:i + 256]) for i in range(0, len(x), 256)])
        return {"fid": fid, "cs": clip_score(cos)}


def bench_sample(run: str, prompts_n: int = 0, steps: int = 64, rows: list[tuple[int, int, str]] | None = None,
                 variant: str | None = None, use_ema: bool = True) -> list[dict[str, Any]]:
    """Measure the rows on the run at ``run`` (EMA weights unless ``use_ema`` is False) and write them into its
    record; returns the rows."""
    from benchmark.run import load_run
    from benchmark.tasks._generation import eval_prompts, gen_spec, generate, make_judge

    run_dir = Path(run)
    if not (run_dir / "record.json").exists():
        raise FileNotFoundError(f"no record.json in {run_dir}: pass a run folder such as results/runs/<run_id>")
    comps, cfg, rec = load_run(run_dir, use_ema=use_ema)
    e = cfg.eval
    prompts, ref_folder, protocol = eval_prompts(cfg, variant, prompts_n or e.sad_bench_prompts)
    generate(comps, prompts[:2], gen_spec(e, 1, 2, "self", 2), e.gen_seed, e.gen_batch)  # warm-up (allocations, threads)
    out = []
    for k, budget, rerank in rows or [(k, m * steps, r) for k, m, r in ROWS]:
        spec = gen_spec(e, k, budget, rerank, steps)
        judge = make_judge(cfg, comps, spec)
        g = generate(comps, prompts, spec, e.gen_seed, e.gen_batch, judge)
        metrics = {"throughput": len(prompts) / g.seconds, **_quality(g.images, prompts, cfg, ref_folder, comps)}
        extra: dict[str, Any] = {"K": spec.candidates, "steps": spec.steps, "select_step": spec.select_step, "nfe": spec.nfe,
                                 "score_passes": g.score_passes, "rerank": spec.rerank, "protocol": protocol,
                                 "n_prompts": len(prompts), "seconds": round(g.seconds, 3), "device": str(comps.device),
                                 "threads": torch.get_num_threads(), "cfg": e.cfg, "cfg_schedule": e.cfg_schedule,
                                 "temperature": e.temperature, "judge": getattr(judge, "model_id", "self"),
                                 "weights": "ema" if use_ema else "live"}
        if spec.candidates > 1:  # the alignment score of the kept candidate vs the mean over candidates
            s = torch.tensor(g.scores)
            extra["score_selected"] = float(s.max(1).values.mean())
            extra["score_mean"] = float(s.mean())
        rec.set_task(spec.name, SAD_VERSION, metrics, {k2: k2 not in ("fid", "fd_ref") for k2 in metrics}, g.seconds, extra)
        out.append({"name": spec.name, **metrics, **extra})
    return out


def format_rows(rows: list[dict[str, Any]]) -> str:
    keys = [k for k in ("throughput", "fid", "cs", "fd_ref", "agreement") if any(k in r for r in rows)]
    head = f"{'row':<22} {'K':>3} {'S':>4} {'T':>4} {'NFE':>4} " + " ".join(f"{k:>10}" for k in keys) \
        + f" {'sel score':>9} {'mean score':>10}"
    lines = [head]
    for r in rows:
        sel = f"{r['score_selected']:9.4f} {r['score_mean']:10.4f}" if "score_selected" in r else f"{'':9} {'':10}"
        lines.append(f"{r['name']:<22} {r['K']:>3} {r['steps']:>4} {r['select_step']:>4} {r['nfe']:>4} "
                     + " ".join(f"{r[k]:10.3f}" if k in r else f"{'':>10}" for k in keys) + " " + sel)
    return "\n".join(lines)
