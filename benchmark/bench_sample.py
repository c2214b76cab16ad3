"""`bench sample`: Table 6 (and Table 17) rows -- decoding throughput at a fixed NFE budget with the two quality
metrics -- measured on a trained run and written into its record as ``sad/k{K}-nfe{NFE}-{self|clip}``.

Rows (NFE = encoder passes per image, K·T + (S − T), models/sad.py): K=1 at 64 NFE (64 steps), K=1 at 128
(128 steps), K=2 with the external CLIP at 128 (two full 64-step decodes, scored as finished images), SAD with
K=5, 9, 17 at 128 (64 steps, select at T = 16, 8, 4; K=5 is Table 17's). Throughput is images per second of
the decoding and scoring (batched candidates, the same prompts and seed for every row); quality is ``fid`` +
``cs`` on real data, ``fd_ref`` + ``agreement`` on synthetic data (tasks/fid.py, tasks/clip_score.py). On
synthetic data without CLIP weights, the external reranker's judge is the reference network (recorded).

Without a run (``bench_decode``), `bench sample` times the decoding alone on random weights of a preset, like
`bench train`: K = 1 at S NFE with CFG, eager and (``--compile``) compiled side by side in one process, with the
graph breaks of one step's device part, the host syncs per step and the recompiles after warm-up.
"""

from __future__ import annotations

import statistics
import tempfile
import time
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

            net, info = load_reference(image_size=cfg.model.image_size)
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
                 variant: str | None = None, use_ema: bool = True, compile: bool = False,
                 backend: str = "inductor") -> list[dict[str, Any]]:
    """Measure the rows on the run at ``run`` (EMA weights unless ``use_ema`` is False) and write them into its
    record; returns the rows. ``compile``: the decoding step compiled (``compile_decoding``), warmed up on a full
    S-step decode at two batch sizes (every size class, and the row count made dynamic) before the rows."""
    from benchmark.run import load_run
    from benchmark.tasks._generation import eval_prompts, gen_spec, generate, make_judge

    run_dir = Path(run)
    if not (run_dir / "record.json").exists():
        raise FileNotFoundError(f"no record.json in {run_dir}: pass a run folder such as results/runs/<run_id>")
    comps, cfg, rec = load_run(run_dir, use_ema=use_ema)
    e = cfg.eval
    prompts, ref_folder, protocol = eval_prompts(cfg, variant, prompts_n or e.sad_bench_prompts)
    if compile:
        import torch._dynamo as dynamo

        from benchmark.models.sampler import compile_decoding

        dynamo.reset()  # a fresh recompile budget for decode_forward in this process
        compile_decoding(comps.backbone, backend)
        for n in (2, 3):
            generate(comps, prompts[:n], gen_spec(e, 1, steps, "self", steps), e.gen_seed, e.gen_batch)
    generate(comps, prompts[:2], gen_spec(e, 1, 2, "self", 2), e.gen_seed, e.gen_batch)  # warm-up (allocations, threads)
    out = []
    for k, budget, rerank in rows or [(k, m * steps, r) for k, m, r in ROWS]:
        spec = gen_spec(e, k, budget, rerank, steps)
        judge = make_judge(cfg, comps, spec)
        g = generate(comps, prompts, spec, e.gen_seed, e.gen_batch, judge)
        metrics = {"throughput": len(prompts) / g.seconds, **_quality(g.images, prompts, cfg, ref_folder, comps)}
        # decode_steps: the bench's S, the unit of the budget (K = 1 at 2 S decodes 2 S steps, so its `steps` is not S)
        extra: dict[str, Any] = {"K": spec.candidates, "steps": spec.steps, "decode_steps": steps,
                                 "select_step": spec.select_step, "nfe": spec.nfe,
                                 "score_passes": g.score_passes, "rerank": spec.rerank, "protocol": protocol,
                                 "n_prompts": len(prompts), "seconds": round(g.seconds, 3), "device": str(comps.device),
                                 "threads": torch.get_num_threads(), "cfg": e.cfg, "cfg_schedule": e.cfg_schedule,
                                 "temperature": e.temperature, "judge": getattr(judge, "model_id", "self"),
                                 "weights": "ema" if use_ema else "live", "compiled": backend if compile else False}
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


def bench_decode(preset: str = "L", batch: int = 64, steps: int = 64, compile: bool = False, device: str = "auto",
                 overrides: dict[str, Any] | None = None, runs: int = 2, backend: str = "inductor",
                 seed: int = 0) -> dict[str, Any]:
    """`bench sample` without a run: K = 1 decoding of ``batch`` images at ``steps`` NFE (eval.cfg, its schedule and
    temperature; random T5 features, random weights with a non-zero head), ``runs`` timed decodes after one untimed.
    Reported: images/s, ms per step, CPU seconds per image, the graph breaks of one step's device part
    (``decode_forward``), the host syncs of every step of a decode (per step) and, with ``compile``, the same figures
    compiled beside eager ones (runs interleaved), the graphs compiled in warm-up, the recompiles after it and the
    largest token difference compiled vs eager from the same generator."""
    from benchmark.bench import _sync, count_sync_events
    from benchmark.config import ConfigError, build_config
    from benchmark.models.backbone import Backbone
    from benchmark.models.sampler import compile_decoding, decode_forward, decode_step, init_decoding, mask_len_at
    from benchmark.models.tokenizer import token_shape
    from benchmark.perf import graph_breaks

    if batch < 1 or steps < 1 or runs < 1:
        raise ConfigError(f"bench sample needs --batch, --decode-steps and --runs >= 1, got {batch}, {steps}, {runs}")
    over = {"data.name": "synthetic" if preset == "tiny" else "cc12m", **(overrides or {})}
    cfg = build_config("dream", preset=preset, overrides=over)
    dev = torch.device("cuda" if (device == "auto" and torch.cuda.is_available()) or device == "cuda" else "cpu")
    m, e = cfg.model, cfg.eval
    torch.manual_seed(seed)
    bb = Backbone(m, *token_shape(m)).eval().requires_grad_(False)
    torch.nn.init.normal_(bb.head.net.final.linear.weight, std=0.05)  # zero-init: the head would predict 0
    bb = bb.to(dev)
    g = torch.Generator().manual_seed(seed)
    t5 = torch.randn(batch, m.text_len, m.t5_dim, generator=g).to(dev)
    t5_null = torch.randn(1, m.text_len, m.t5_dim, generator=g).to(dev)
    n = bb.seq_len

    @torch.no_grad()
    def decode(syncs: list | None = None) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)  # a host generator, as generate() uses: orders and noise drawn there
        state = init_decoding(bb, t5, t5_null, e.cfg, gen)
        for s in range(steps):
            if syncs is not None:
                syncs.append(count_sync_events(lambda s=s: decode_step(bb, state, s, steps, e.cfg, e.cfg_schedule,
                                                                       e.temperature, gen), dev))
            else:
                decode_step(bb, state, s, steps, e.cfg, e.cfg_schedule, e.temperature, gen)
        _sync(dev)
        return state.tokens

    # what a step costs, measured eager: graph breaks of the device part at the middle step, host syncs of every step
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        state = init_decoding(bb, t5, t5_null, e.cfg, gen)
        for s in range(steps // 2):
            decode_step(bb, state, s, steps, e.cfg, e.cfg_schedule, e.temperature, gen)
        masked, s = state.masked, steps // 2
        keep = state.orders[:, masked:].sort(1).values
        reveal = state.orders[:, (0 if s == steps - 1 else mask_len_at(s, steps, n, masked)):masked].sort(1).values
        scale = torch.tensor(e.cfg, device=dev) if state.guided else None
        noise = bb.head.draw_sample_noise(reveal.numel(), dev, gen)
        breaks, reasons = graph_breaks(decode_forward, bb, state.tokens, keep, reveal, state.text, state.text_valid,
                                       scale, e.temperature, noise)
    per_step: list = []
    eager_tokens = decode(per_step)  # also the eager warm-up
    syncs = sum(c for c, _ in per_step)
    sync_ops: dict[str, int] = {}
    for _, ops in per_step:
        for k, v in ops.items():
            sync_ops[k] = sync_ops.get(k, 0) + v
    modes = {"eager": None}
    res: dict[str, Any] = {"preset": preset, "batch": batch, "decode_steps": steps, "nfe": steps, "K": 1,
                           "cfg": e.cfg, "cfg_schedule": e.cfg_schedule, "temperature": e.temperature,
                           "head_sample_steps": m.sample_steps, "timed_runs": runs,
                           "params_M": sum(p.numel() for p in bb.parameters()) / 1e6,
                           "graph_breaks": breaks, "host_syncs_per_step": syncs / steps}
    if compile:
        import torch._dynamo as dynamo
        from torch._dynamo.utils import counters

        dynamo.reset()  # a fresh recompile budget for decode_forward in this process
        compile_decoding(bb, backend)
        modes["compiled"] = bb._decode_forward
        graphs0 = counters["stats"]["unique_graphs"]
        t, c = time.perf_counter(), time.process_time()
        compiled_tokens = decode()  # warm-up: every size class of a run compiles here
        res["compile_warmup_s"], res["compile_warmup_cpu_s"] = time.perf_counter() - t, time.process_time() - c
        res["graphs_compiled_in_warmup"] = counters["stats"]["unique_graphs"] - graphs0
        res["max_token_diff_vs_eager"] = float((compiled_tokens - eager_tokens).abs().max())
        graphs_warm = counters["stats"]["unique_graphs"]
    times: dict[str, list[float]] = {k: [] for k in modes}
    cpu: dict[str, list[float]] = {k: [] for k in modes}
    for _ in range(runs):  # interleaved: a change of the machine's load hits both alike
        for name, fwd in modes.items():
            bb.__dict__.pop("_decode_forward", None)
            if fwd is not None:
                bb._decode_forward = fwd
            t, c = time.perf_counter(), time.process_time()
            decode()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    if compile:
        res["recompiles_after_warmup"] = counters["stats"]["unique_graphs"] - graphs_warm
    for name in modes:
        pre = "" if name == ("compiled" if compile else "eager") else "eager_"
        res[f"{pre}images_per_s"] = batch * runs / sum(times[name])
        res[f"{pre}step_ms"] = statistics.median(times[name]) / steps * 1e3
        # CPU seconds of this process per image (all threads): on a shared CPU it does not grow with the load
        res[f"{pre}cpu_s_per_image"] = sum(cpu[name]) / (batch * runs)
    if compile:
        res["speedup_cpu_time"] = res["eager_cpu_s_per_image"] / res["cpu_s_per_image"]
        res["speedup_wall"] = res["images_per_s"] / res["eager_images_per_s"]
    res["device"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    res["details"] = {"graph_break_reasons": reasons, "sync_ops": sync_ops, "compile": backend if compile else False,
                      "torch": torch.__version__}
    return res
