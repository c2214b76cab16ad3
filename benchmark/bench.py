"""``python -m benchmark bench train``: time warm training steps on random inputs of the real shapes.

No data and no weights are needed: tokens, T5 features and CLIP token ids are random tensors with the
shapes the preset implies (``--input cached``, the default: the frozen T5 and the VAE run once per sample
in the feature cache, ``python -m benchmark cache``, so they are not part of a training step). With
``--input raw`` every step also runs the frozen encoders the uncached loader needs: the VAE encoder on the
images (the SD kl-f8 architecture with random weights, or ``--vae tiny``: the 8-channel test VAE) and
the T5 encoder on random token ids (t5-large / T5-XXL architecture for t5_dim 1024 / 4096, random weights;
the tiny synthetic T5 otherwise); their FLOPs are reported apart (``frozen_tflop_per_step``) and not
counted in the MFU. Reported: median step time, images/s, peak memory and model FLOPs utilisation (MFU), and what keeps the step
off the GPU's critical path: graph breaks of the forward, host syncs of one whole step (``perf.SyncDetector`` on
CPU, ``torch.cuda.set_sync_debug_mode`` on a GPU) and recompiles after warm-up.

FLOPs are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` records every matmul and
attention call of every timed step (forward + backward of encoder, decoder, text aligner, diffusion head on
its 4x rows, CLIP text tower and projections), at 2 FLOPs per multiply-add; elementwise work is not
counted. The mask ratio is fixed (``--ratio``; default the middle of the masking warm-up). MFU = the timed
steps' FLOPs / their time / peak, where the peak is the device's dense bf16 figure
(H100 SXM 989 TFLOP/s, H200 989, A100 312) and, beside it, the rate of a large bf16 (CUDA) or fp32 (CPU)
matmul measured on the spot.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

SPEC_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def measured_matmul_tflops(device: torch.device, n: int = 0, per_cpu_second: bool = False) -> float:
    """TFLOP/s of a large matmul; ``per_cpu_second``: per second of this process's CPU time (a shared CPU's
    other load then slows the numerator and the denominator alike)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps = 20 if device.type == "cuda" else 5
    clock = time.process_time if per_cpu_second else time.perf_counter
    t = clock()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (clock() - t) / 1e12


def spec_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in SPEC_PEAK_TFLOPS.items() if k in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def frozen_encoders(cfg, vae: str, dev: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Random-weight VAE tokenizer and T5 encoder of the real architectures (timing needs no weights)."""
    import tempfile

    from diffusers import AutoencoderKL
    from transformers import T5Config, T5EncoderModel

    from benchmark.models.tokenizer import SD_KL_F8_CONFIG, VAETokenizer

    m = cfg.model
    arch = dict(SD_KL_F8_CONFIG) if vae == "sd" else dict(
        block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4, norm_num_groups=4)
    arch["sample_size"] = m.image_size
    with tempfile.TemporaryDirectory() as tmp:
        AutoencoderKL(**arch).save_pretrained(tmp)
        tok = VAETokenizer(tmp, m.patch_size, m.vae_scale, m.image_size).to(dev)
    if m.t5_dim == 1024:  # google-t5/t5-large
        t5cfg = T5Config(d_model=1024, d_ff=4096, num_layers=24, num_heads=16, d_kv=64)
    elif m.t5_dim == 4096:  # google/t5-v1_1-xxl
        t5cfg = T5Config(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64,
                         feed_forward_proj="gated-gelu")
    else:  # the tiny synthetic T5's shape
        t5cfg = T5Config(d_model=m.t5_dim, d_ff=4 * m.t5_dim, num_layers=2, num_heads=2, d_kv=m.t5_dim // 2)
    t5 = T5EncoderModel(t5cfg).eval().requires_grad_(False).to(dev)
    return tok, t5


def default_ratio(schedule, cfg) -> tuple[float, float]:
    """(progress, mean drawn mask ratio) in the middle of the masking warm-up (the schedule's own draws)."""
    c = cfg.schedule
    progress = c.warmup_start + c.warmup_epochs / 2
    return progress, ratio_at(schedule, progress)


def ratio_at(schedule, progress: float) -> float:
    return float(schedule.sample(100_000, progress, torch.Generator().manual_seed(0)).mean())


def count_sync_events(fn, device: torch.device, opt: torch.optim.Optimizer | None = None) -> tuple[int, dict[str, int]]:
    """Host syncs while running ``fn``: the dispatch-mode detector on CPU, CUDA's own sync debug mode on a GPU.
    On CPU the optimizer's step runs outside the detector: unfused AdamW keeps its step counts in host memory by
    design and reads them there (on a GPU the step is fused and the debug mode sees it)."""
    if device.type != "cuda" and opt is None:
        from benchmark.perf import count_syncs

        n, ops = count_syncs(fn)
        return n, dict(ops)
    if device.type != "cuda":
        from torch.utils._python_dispatch import _disable_current_modes

        from benchmark.perf import count_syncs

        step = opt.step

        def quiet(*args, **kwargs):
            with _disable_current_modes():
                return step(*args, **kwargs)

        opt.step = quiet
        try:
            n, ops = count_syncs(fn)
        finally:
            del opt.step
        return n, dict(ops)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0][:80] for w in caught if "synchroniz" in str(w.message)]
    return len(syncs), {m: syncs.count(m) for m in set(syncs)}


def profile_split(step, n: int, device: torch.device) -> dict[str, float]:
    """Kernel time per step split into GEMM / attention / elementwise+other, and idle = wall - busy (ms per step),
    from torch.profiler over ``n`` steps (device kernels on a GPU, CPU ops' self time on CPU)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync(device)
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        for j in range(n):
            step(j)
        _sync(device)
    wall = (time.perf_counter() - t) / n * 1e3
    split = {"gemm": 0.0, "attention": 0.0, "elementwise_other": 0.0}
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", 0) if cuda else e.self_cpu_time_total
        if cuda and getattr(e, "device_type", None) is not None and "CUDA" not in str(e.device_type):
            continue
        name = e.key.lower()
        if any(k in name for k in ("flash", "fmha", "attention", "sdpa", "softmax")):
            split["attention"] += us
        elif any(k in name for k in ("gemm", "matmul", "aten::mm", "aten::addmm", "aten::bmm", "cutlass", "sm90_",
                                     "xmma", "ampere_", "cublas")):
            split["gemm"] += us
        elif cuda or name.startswith("aten::"):
            split["elementwise_other"] += us
    out = {f"profile_{k}_ms": v / 1e3 / n for k, v in split.items()}
    out["profile_idle_ms"] = max(0.0, wall - sum(out.values())) if cuda else float("nan")
    out["profile_wall_ms"] = wall
    return out


def bench_train(objective: str = "dream", preset: str = "L", batch: int = 64, steps: int = 10,
                progress: float | None = None, compile: bool = False, device: str = "auto",
                overrides: dict[str, Any] | None = None, inputs: str = "cached", vae: str = "sd",
                matmul_n: int = 0, ratio: float | None = None, warmup: int = 3, profile: bool = False) -> dict[str, Any]:
    """Time ``steps`` training steps (``train.train_step``, the loop's own) after ``warmup`` (>= 3) untimed ones, at
    one fixed mask ratio: ``ratio``, else the schedule's mean ratio at ``progress``, else at the middle of its
    masking warm-up. Every group gets that ratio (the same shapes every step: the FLOPs of each timed step are
    counted, from its own mask); MFU = sum of FLOPs / sum of step times."""
    from torch.utils.flop_counter import FlopCounterMode

    from benchmark import registry
    from benchmark.config import build_config
    from benchmark.objectives.base import Batch, Masking
    from benchmark.objectives.schedules import make_mask
    from benchmark.perf import graph_breaks
    from benchmark.train import EMA, DreamModel, autocast, build_model, compile_model, make_optimizer, train_step

    over = {"data.name": "cc12m", "train.batch_size": str(batch), **(overrides or {})}
    if preset == "tiny":
        over["data.name"] = "synthetic"
    cfg = build_config(objective, preset=preset, overrides=over)
    dev = torch.device("cuda" if (device == "auto" and torch.cuda.is_available()) or device == "cuda" else "cpu")
    torch.manual_seed(0)
    model: DreamModel = build_model(cfg).to(dev)
    if model.objective.capabilities.teacher:
        raise ValueError("bench train does not load REPA teachers; use objective fluid for its cost")
    opt, ema = make_optimizer(cfg, model, dev), EMA(model, cfg.train.ema_decay)
    schedule = registry.schedules.get(cfg.schedule.name)(cfg.schedule)
    if ratio is None:
        progress, ratio = default_ratio(schedule, cfg) if progress is None else (progress, ratio_at(schedule, progress))
    progress = 0.0 if progress is None else progress
    if not 0 <= ratio <= 1:
        from benchmark.config import ConfigError

        raise ConfigError(f"--ratio must be in [0, 1], got {ratio}")
    warmup = max(3, warmup)
    bb, m = model.backbone, cfg.model
    gs = min(cfg.schedule.group_size, batch)
    n_groups = -(-batch // gs)

    def masking(i: int) -> Masking:
        """Step i's mask at the fixed ratio (fresh positions each step), planned on the host, moved once."""
        ratios = torch.full((n_groups,), ratio, dtype=torch.float64)
        mask, r, group = make_mask(ratios, gs, batch, bb.seq_len, torch.Generator().manual_seed(1000 + i))
        return model.objective.plan(Masking(mask, r, group, n_groups), bb).to(dev)

    def batch_of(i: int) -> Batch:
        g = torch.Generator().manual_seed(i)
        return Batch(
            tokens=torch.randn(batch, bb.seq_len, bb.token_dim, generator=g),
            images=torch.rand(batch, 3, m.image_size, m.image_size, generator=g) * 2 - 1,
            t5=torch.randn(batch, m.text_len, m.t5_dim, generator=g),
            t5_valid=torch.ones(batch, m.text_len, dtype=torch.bool),
            t5_null=torch.randn(1, m.text_len, m.t5_dim, generator=g),
            caption_drop=torch.rand(batch, generator=g) < cfg.train.caption_dropout,
            clip_ids=torch.randint(1, 49407, (batch, cfg.objective.clip_context), generator=g)
            if model.objective.capabilities.clip_text else None,
        ).to(dev)

    batches = [batch_of(i) for i in range(2)]  # made before timing: input generation is not training
    if inputs not in ("cached", "raw"):
        raise ValueError(f"inputs must be cached or raw, got {inputs!r}")
    raw = inputs == "raw"
    if raw:
        if m.tokenizer != "sd_vae":
            from benchmark.config import ConfigError

            raise ConfigError("--input raw times the VAE encoder: needs model.tokenizer=sd_vae "
                              "(e.g. --set model.tokenizer=sd_vae --set model.image_size=64 --vae tiny)")
        vae_tok, t5 = frozen_encoders(cfg, vae, dev)
        t5_ids = [torch.randint(0, t5.config.vocab_size, (batch, m.text_len),
                                generator=torch.Generator().manual_seed(i)).to(dev) for i in range(len(batches))]

    def encode(i: int) -> None:
        """The uncached loader's per-step work: VAE posterior sample of the images, T5 of the captions."""
        b = batches[i % 2]
        with torch.no_grad():
            b.tokens = vae_tok.encode(b.images)
            with autocast(cfg, dev):
                b.t5 = t5(input_ids=t5_ids[i % 2]).last_hidden_state.float()

    masks = [masking(i) for i in range(warmup + steps)]  # host work of the data side, not timed

    def step(i: int) -> None:
        if raw:
            encode(i)
        train_step(model, model, opt, ema, [(batches[i % 2], masks[i])], progress, cfg, dev)

    # what the step costs, measured before compiling: graph breaks of the forward, host syncs of one whole step
    breaks, reasons = graph_breaks(model.losses, batches[0], model.prepare(batches[0], masks[0]), progress)
    syncs, sync_ops = count_sync_events(lambda: step(0), dev, opt)
    if compile:
        compile_model(model)
    from torch._dynamo.utils import counters

    for i in range(warmup):  # warm-up (and compilation)
        step(i)
    graphs_warm = counters["stats"]["unique_graphs"]
    flops_by_shape: dict[tuple, int] = {}

    def step_flops(i: int) -> int:
        """FLOPs of step i's forward + backward (matmul/conv/attention), counted once per distinct shape."""
        mk = masks[i]
        key = (tuple(mk.keep.shape), None if mk.diff_index is None else mk.diff_index.numel(), mk.diffuse,
               mk.contrast, mk.padded)
        if key not in flops_by_shape:
            counter = FlopCounterMode(display=False)
            with counter:
                if raw:
                    encode(i)
                with autocast(cfg, dev):
                    out = model(batches[i % 2], mk, progress)
                if out["total"].requires_grad:
                    out["total"].backward()
            model.zero_grad(set_to_none=True)
            flops_by_shape[key] = counter.get_total_flops()
        return flops_by_shape[key]

    frozen = 0
    if raw:
        enc_counter = FlopCounterMode(display=False)
        with enc_counter:
            encode(1)
        frozen = enc_counter.get_total_flops()
    flops = [step_flops(warmup + i) - frozen for i in range(steps)]  # MFU counts the trained model's FLOPs only
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times, cpu_times = [], []
    for i in range(warmup, warmup + steps):
        _sync(dev)
        t, c = time.perf_counter(), time.process_time()
        step(i)
        _sync(dev)
        times.append(time.perf_counter() - t)
        cpu_times.append(time.process_time() - c)
    recompiles = counters["stats"]["unique_graphs"] - graphs_warm
    split = profile_split(lambda j: step(warmup + j % steps), min(steps, 3), dev) if profile else {}
    med, total_s, total_flop = statistics.median(times), sum(times), sum(flops)
    measured = measured_matmul_tflops(dev, matmul_n)
    spec = spec_peak(dev)
    res = {
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "batch": batch, "ratio": ratio,
        "progress": progress, "warmup_steps": warmup, "timed_steps": steps,
        "step_ms": med * 1e3, "images_per_s": batch * steps / total_s,
        # CPU seconds of this process per step (all threads): on a shared CPU it does not grow with the load
        "step_cpu_ms": statistics.median(cpu_times) * 1e3, "tflop_per_step": total_flop / steps / 1e12,
        "achieved_tflops": total_flop / total_s / 1e12, "matmul_peak_tflops": measured,
        "mfu_vs_matmul": total_flop / total_s / 1e12 / measured,
        "peak_mem_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan"),
        "graph_breaks": breaks, "host_syncs_per_step": syncs, "recompiles_after_warmup": recompiles,
    }
    if dev.type == "cpu":  # the same ratio in CPU time: what a loaded shared machine still measures right
        per_cpu = measured_matmul_tflops(dev, matmul_n, per_cpu_second=True)
        res["mfu_vs_matmul_cpu_time"] = total_flop / sum(cpu_times) / 1e12 / per_cpu
    if raw:
        res["frozen_tflop_per_step"] = frozen / 1e12
    if spec:
        res["spec_peak_tflops"] = spec
        res["mfu"] = total_flop / total_s / 1e12 / spec
    res["device"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    res.update(split)
    res["details"] = {"graph_break_reasons": reasons, "sync_ops": sync_ops, "compile": compile,
                      "torch": torch.__version__}
    return res


def bench_loader(preset: str = "L", overrides: dict[str, Any] | None = None, samples: int = 1024,
                 batch: int = 64) -> dict[str, Any]:
    """``bench loader``: CPU cost and rate of the CC12M pipeline on the shards at ``data.root`` (raw or,
    with ``data.cached=true``, the feature cache). Single process: CPU ms per sample (decode + crop, or
    reading the cached arrays); then ``data.num_workers`` loader processes: batches/s in wall time."""
    from benchmark.config import build_config
    from benchmark.data import build_train_data

    cfg = build_config("dream", preset=preset, overrides={"data.name": "cc12m", **(overrides or {})})
    data = build_train_data(cfg)
    t, c, n = time.perf_counter(), time.process_time(), 0
    pipe = data.pipeline(0, stream_seed=0)
    for _ in pipe:
        n += 1
        if n >= samples:
            break
    cpu, wall = time.process_time() - c, time.perf_counter() - t
    res: dict[str, Any] = {"source": "cache" if data.cached else "shards", "samples": n,
                           "cpu_ms_per_sample": cpu / max(n, 1) * 1e3, "samples_per_s_one_process": n / wall,
                           "corrupt_skipped": pipe.skip_counter.n}
    if data.num_workers > 0:
        data.batch(0, batch)  # workers start and fill their shuffle buffers
        steps = max(1, samples // batch)
        t = time.perf_counter()
        for i in range(steps):
            data.batch(1 + i, batch)
        res[f"samples_per_s_{data.num_workers}_workers"] = steps * batch / (time.perf_counter() - t)
    return res
