"""THE training loop (one file, MAR/nanoGPT style): build -> resume -> steps -> atomic checkpoints.

Per step: lr (linear warmup, then constant; Tables 18-21) -> batch (a pure function of the step) ->
masking ratios from the schedule at fractional epoch ``progress`` -> objective losses -> AdamW step with
gradient clipping -> EMA. Everything random is either drawn from step-seeded generators (data order,
flips, masks, caption dropout) or from the global torch RNG whose state is checkpointed (dropout,
diffusion t and noise), so an interrupted run resumed with ``--resume`` ends bit-identical on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark import distributed, registry
from benchmark.config import RunConfig
from benchmark.data import build_train_data, cache_root, step_generator
from benchmark.models.backbone import Backbone
from benchmark.models.tokenizer import build_tokenizer, token_shape
from benchmark.objectives.base import Batch, Masking
from benchmark.objectives.schedules import make_mask
from benchmark.records import RunRecord, atomic_torch_save, load_checkpoint


class DreamModel(nn.Module):
    """Backbone + objective: the unit that DDP, the EMA and checkpoints wrap."""

    def __init__(self, backbone: Backbone, objective: nn.Module) -> None:
        super().__init__()
        self.backbone, self.objective = backbone, objective

    def forward(self, batch: Batch, mask: Masking, progress: float) -> dict[str, torch.Tensor]:
        """Eager ``prepare`` (the plan fallback and the diffusion draws), then the losses (what ``train.compile``
        compiles)."""
        return self.losses(batch, self.prepare(batch, mask), progress)

    def prepare(self, batch: Batch, mask: Masking) -> Masking:
        if not mask.planned:  # the loop plans on the host (sample_masking); this fallback reads the mask back
            mask = self.objective.plan(mask, self.backbone).to(batch.tokens.device)
        if mask.diffuse and mask.diff_t is None:  # (t, noise) per diffusion row, from the global RNG as before
            head, mul = self.backbone.head, self.backbone.cfg.diffusion_batch_mul
            t, noise = head.draw(mul * mask.diff_index.shape[0], (self.backbone.token_dim,), batch.tokens.device)
            mask = dataclasses.replace(mask, diff_t=t, diff_noise=noise)  # the caller's mask keeps no draws
            mark_dynamic(mask)
        return mask

    def losses(self, batch: Batch, mask: Masking, progress: float) -> dict[str, torch.Tensor]:
        return self.objective.losses(batch, self.backbone, mask, progress)


@dataclass
class Components:
    cfg: RunConfig
    model: DreamModel
    tokenizer: nn.Module
    t5: nn.Module | None
    t5_null: torch.Tensor | None  # T5("") [1, T, d]: the official CFG null condition
    device: torch.device
    ema_state: dict[str, torch.Tensor] | None = None  # set by train(): the weights evaluation uses
    finished: bool = False  # set by train(): all steps done (False after an early stop)
    t5_null_valid: torch.Tensor | None = None  # T5("")'s padding mask [1, T] (model.text_pad_mask)

    @property
    def backbone(self) -> Backbone:
        return self.model.backbone

    @property
    def objective(self) -> nn.Module:
        return self.model.objective


def pick_device(cfg: RunConfig) -> torch.device:
    if cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_text_path(cfg: RunConfig) -> str:
    """The embedded default builds (once) a tiny random T5 with a SentencePiece model trained on the
    synthetic captions, saved in the real transformers format under the cache."""
    if cfg.model.t5_path or cfg.data.name != "synthetic":
        return cfg.model.t5_path
    from benchmark.data.text_models import synthetic_text_dir

    return str(synthetic_text_dir(cache_root()))


def build_model(cfg: RunConfig) -> DreamModel:
    obj_cls = registry.objectives.get(cfg.objective.name)
    seq_len, token_dim = token_shape(cfg.model)
    backbone = Backbone(cfg.model, seq_len, token_dim, with_decoder="decoder" in obj_cls.needs)
    return DreamModel(backbone, obj_cls(cfg.objective, backbone))


def build(cfg: RunConfig, device: torch.device | None = None) -> Components:
    for inc in cfg.include:
        registry.include(inc)
    device = device or pick_device(cfg)
    # Weights that may be missing are loaded first, so a bad path fails before minutes of model init.
    tokenizer = build_tokenizer(cfg.model).to(device)
    needs = registry.objectives.get(cfg.objective.name).needs
    t5 = t5_null = t5_null_valid = None
    if "t5" in needs:
        from benchmark.models.text import FrozenT5

        t5 = FrozenT5(resolve_text_path(cfg), cfg.model.text_len, cfg.model.text_pad_mask).to(device)
        if t5.dim != cfg.model.t5_dim:
            from benchmark.config import ConfigError

            raise ConfigError(f"model.t5_dim={cfg.model.t5_dim} but the T5 at {cfg.model.t5_path} has "
                              f"d_model={t5.dim}; set --set model.t5_dim={t5.dim}")
        t5_null, t5_null_valid = t5.encode([""])
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    return Components(cfg, model, tokenizer, t5, t5_null, device, t5_null_valid=t5_null_valid)


def prepare_batch(comps: Components, raw: dict[str, Any], step: int, micro: int = 0) -> Batch:
    """Images -> tokens, captions -> T5 features and CLIP token ids, caption dropout draws.

    A batch from the feature cache (``data.cached``) carries VAE ``moments`` (of the crop or its flip),
    ``t5``/``t5_valid`` and ``clip_ids`` instead: only the posterior sample is drawn here, from the same
    global RNG as the raw path's VAE encode, so both paths train on the same tokens."""
    cfg, dev = comps.cfg, comps.device
    gen = step_generator(cfg.seed, step, 10 + micro)
    host = Batch(tokens=None)  # everything made on the host crosses to the device once, in Batch.to
    images = None
    if "moments" in raw:
        tokens = comps.tokenizer.sample_moments(raw["moments"].to(dev, non_blocking=True))
    else:
        images = raw["images"].to(dev, non_blocking=True)
        if images.dtype == torch.uint8:  # CC12M ships uint8 (4x less to copy); [-1, 1] on the device
            images = images.float() / 127.5 - 1.0
        tokens = comps.tokenizer.encode(images, generator=None)
    n = tokens.shape[0]
    if comps.t5 is not None:
        if "t5" in raw:
            t5, valid = raw["t5"], raw["t5_valid"]
        else:
            t5, valid = comps.t5.encode(raw["captions"])
        host.t5, host.t5_valid = t5, valid
        host.caption_drop = torch.rand(n, generator=gen) < cfg.train.caption_dropout
    if "clip_text" in comps.objective.needs:
        host.clip_ids = raw["clip_ids"] if "clip_ids" in raw else comps.objective.clip.tokenizer(raw["captions"])
    batch = host.to(dev)
    batch.tokens, batch.images = tokens, images
    if batch.t5 is not None:
        batch.t5, batch.t5_null = batch.t5.float(), comps.t5_null  # cache: float16
        batch.t5_null_valid = comps.t5_null_valid
    return batch


def sample_masking(cfg: RunConfig, schedule, batch: int, seq_len: int, progress: float, step: int,
                   micro: int, device: torch.device, rows: slice | None = None, objective=None,
                   backbone: nn.Module | None = None) -> Masking:
    """The masks of the micro-batch of ``batch`` rows drawn on the host; ``rows``: only this rank's rows are
    built (the draws are those of the global micro-batch). With ``objective`` the host plan is made here
    (``Objective.plan``) and everything crosses to ``device`` once."""
    gen = step_generator(cfg.seed, step, 20 + micro)
    gs = min(cfg.schedule.group_size, batch)
    n_groups = math.ceil(batch / gs)
    ratios = schedule.sample(n_groups, progress, gen)
    mask, ratio, group = make_mask(ratios, gs, batch, seq_len, gen, rows=rows)
    num_masked = torch.ceil(seq_len * ratios[torch.arange(batch) // gs] - 1e-9).clamp(0, seq_len)
    masking = Masking(mask, ratio, group, n_groups, global_fraction=num_masked.float() / seq_len)
    if rows is not None:  # this rank's groups, numbered from 0
        masking.group, masking.num_groups = group - rows.start // gs, (rows.stop - rows.start) // gs
    if objective is not None:
        masking = objective.plan(masking, backbone)
    return masking.to(device)


def _check_world(cfg: RunConfig, world: int) -> None:
    """Under DDP each rank takes whole masking groups of the global micro-batch, so the per-group γ gate and
    the 1/G normalisation of the diffusion loss are those of one process on the global batch."""
    if world == 1:
        return
    from benchmark.config import ConfigError

    micro = cfg.train.batch_size // cfg.train.accum_steps
    if micro % world:
        raise ConfigError(f"train.batch_size / train.accum_steps = {micro} must be divisible by the world size {world}")
    gs = min(cfg.schedule.group_size, micro)
    if (micro // world) % gs:
        raise ConfigError(f"schedule.group_size={cfg.schedule.group_size} must divide the per-rank micro-batch "
                          f"{micro // world} (official: one group per GPU batch of 64)")


def shard_caption_drop(cfg: RunConfig, batch: Batch, rows: slice, step: int, micro: int, n: int) -> None:
    """prepare_batch drew this rank's caption dropout from its own rows only: redraw the global micro-batch's
    draws (n rows) and keep this rank's rows."""
    if batch.caption_drop is not None:
        drop = torch.rand(n, generator=step_generator(cfg.seed, step, 10 + micro)) < cfg.train.caption_dropout
        batch.caption_drop = Batch(tokens=None, caption_drop=drop[rows]).to(batch.caption_drop.device).caption_drop


def _check_accum(cfg: RunConfig) -> None:
    """Gradient accumulation is exact for per-sample losses only: the contrastive loss would take its negatives and
    the projection's BatchNorm statistics from each micro-batch instead of the global batch."""
    for inc in cfg.include:  # a plugin objective registers on import
        registry.include(inc)
    needs = registry.objectives.get(cfg.objective.name).needs
    if cfg.train.accum_steps > 1 and "clip_text" in needs and cfg.objective.clip_weight > 0:
        from benchmark.config import ConfigError

        micro = cfg.train.batch_size // cfg.train.accum_steps
        raise ConfigError(f"train.accum_steps={cfg.train.accum_steps} would change the CLIP loss of objective "
                          f"{cfg.objective.name!r} (negatives and BatchNorm statistics from micro-batches of {micro}, "
                          f"not the batch of {cfg.train.batch_size}): use train.accum_steps=1 (more GPUs or a smaller "
                          f"train.batch_size)")


class EMA:
    """Exponential moving average of the parameters (§4.1: decay 0.9999), foreach-fused."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = [params[n].detach().clone() for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        cur = [params[n].detach() for n in self.names]
        torch._foreach_lerp_(self.shadow, cur, 1 - self.decay)  # one pass: s += (1 - decay) (p - s)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with EMA values in place of the parameters (what evaluation loads)."""
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for n, s in zip(self.names, self.shadow):
            sd[n] = s.clone()
        return sd

    def load(self, shadow: list[torch.Tensor]) -> None:
        for s, v in zip(self.shadow, shadow):
            s.copy_(v)


def param_groups(model: nn.Module, weight_decay: float, decay_scalars: bool = True) -> list[dict[str, Any]]:
    """No decay for 1-D tensors, biases and the diffusion head (MAR/DREAM ``add_weight_decay``). That rule tests
    ``len(shape) == 1``, so the 0-d CLIP ``logit_scale`` is decayed there (``decay_scalars``, official); the paper
    recipe keeps it out, as open_clip and StableRep do."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or (p.ndim == 0 and not decay_scalars) or name.endswith(".bias") or ".head." in f".{name}":
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def total_steps(cfg: RunConfig) -> int:
    if cfg.train.steps > 0:
        return cfg.train.steps
    return max(1, int(cfg.train.epochs * cfg.data.n_train // cfg.train.batch_size))


def lr_at(cfg: RunConfig, progress: float) -> float:
    """Linear warmup over ``warmup_epochs`` then constant (Tables 18-21 "LR schedule: Constant")."""
    w = cfg.train.warmup_epochs
    return cfg.lr * (min(1.0, progress / w) if w > 0 else 1.0)


def autocast(cfg: RunConfig, device: torch.device):
    if device.type == "cuda" and cfg.train.amp == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(cfg: RunConfig, model: nn.Module, device: torch.device) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg.train.weight_decay, cfg.train.decay_logit_scale), lr=cfg.lr,
                             betas=(cfg.train.beta1, cfg.train.beta2), fused=device.type == "cuda")


def compile_model(model: DreamModel, backend: str = "inductor") -> None:
    """Compile the forward (losses) once: the visible count and the diffusion rows are symbolic sizes from the
    first step (``mark_dynamic``), so new mask ratios reuse the graph. A step where no group reaches γ (or none
    is within ϕ, or every row is full) runs other code and is compiled once on its first occurrence."""
    model.losses = torch.compile(model.losses, backend=backend)


def mark_dynamic(mask: Masking) -> None:
    if torch.compiler.is_compiling():  # traced as a whole (dynamo.explain): sizes are already symbolic there
        return
    for t, dim in ((mask.keep, 1), (mask.keep_valid, 1), (mask.diff_index, 0), (mask.diff_weight, 0),
                   (mask.diff_t, 0), (mask.diff_noise, 0)):
        if t is not None:
            torch._dynamo.maybe_mark_dynamic(t, dim)


def wrap(model: DreamModel, cfg: RunConfig, device: torch.device) -> nn.Module:
    """The module the step calls: compiled (``train.compile``) and DDP-wrapped under a world size > 1."""
    if cfg.train.compile:
        compile_model(model)
    model.train()
    if distributed.world_size() == 1:
        return model
    ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    distributed.sync_batchnorm(model, device.type == "cuda")  # official: SyncBN; in place, same parameters
    return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                               find_unused_parameters=model.objective.may_skip_parameters())


def micro_batches(comps: Components, data, schedule, step: int, progress: float) -> list[tuple[Batch, Masking]]:
    """This rank's (batch, mask) of each of the ``accum_steps`` micro-batches of ``step``: the data, masks and
    caption dropout are pure functions of the step, drawn for the global micro-batch; a rank keeps its rows."""
    cfg = comps.cfg
    world = distributed.world_size()
    streaming = world > 1 and hasattr(data, "shards")  # a webdataset reader shards by rank itself
    b, accum = cfg.train.batch_size, cfg.train.accum_steps
    micro_b = b // accum
    raw = data.batch(step, b // world if streaming else b)
    out = []
    for m in range(accum):
        lo, hi = m * micro_b, (m + 1) * micro_b
        if world > 1:  # this rank's rows [r·n/W, (r+1)·n/W) of the global micro-batch of n rows
            rows = distributed.shard(micro_b)
            lo, hi = (m * (hi - lo) // world, (m + 1) * (hi - lo) // world) if streaming else \
                (lo + rows.start, lo + rows.stop)
        batch = prepare_batch(comps, {k: v[lo:hi] for k, v in raw.items()}, step, m)
        if world > 1:
            shard_caption_drop(cfg, batch, rows, step, m, micro_b)
        mask = sample_masking(cfg, schedule, micro_b, comps.backbone.seq_len, progress, step, m, comps.device,
                              rows if world > 1 else None, comps.objective, comps.backbone)
        out.append((batch, mask))
    return out


def train_step(net: nn.Module, model: DreamModel, opt: torch.optim.Optimizer, ema: EMA,
               micro: list[tuple[Batch, Masking]], progress: float, cfg: RunConfig,
               device: torch.device) -> dict[str, torch.Tensor]:
    """One optimizer step (the only one: ``train`` and ``bench train`` both call it): forward and backward of
    each micro-batch (gradients averaged), clipping, AdamW, EMA. Returns the step's scalars, on the device
    (reading them would sync: the loop averages them over its logging window)."""
    logs: dict[str, list[torch.Tensor]] = {}
    for m, (batch, mask) in enumerate(micro):
        sync = net.no_sync() if isinstance(net, nn.parallel.DistributedDataParallel) and m < len(micro) - 1 \
            else contextlib.nullcontext()
        mark_dynamic(mask)
        with sync:
            with autocast(cfg, device):
                out = net(batch, mask, progress)
            if out["total"].requires_grad:  # no loss term ran (e.g. CLIP with every sample above ϕ): no gradient
                (out["total"] / len(micro)).backward()
        for k, v in out.items():
            logs.setdefault(k, []).append(v.detach().float())
        logs.setdefault("mask_ratio", []).append(mask.masked_fraction.mean())
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    ema.update(model)
    return {**{k: torch.stack(v).mean() for k, v in logs.items()}, "grad_norm": grad_norm.detach().float()}


@dataclass
class Progress:
    """What a checkpoint carries besides the weights: where the run is and what it logged."""

    step: int = 0
    curve: list = field(default_factory=list)  # [[step, {name: mean over the logging window}], ...]
    train_s: float = 0.0  # training seconds before this process
    log_window: dict = field(default_factory=dict)  # the partial logging window: a resumed curve equals the whole one


def resume_from(ckpt_path: Path, model: nn.Module, opt, ema: EMA, device: torch.device) -> Progress:
    """Weights, optimizer, EMA and RNG states of the checkpoint (this rank's RNG streams under DDP)."""
    ck = load_checkpoint(ckpt_path, device)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    ema.load(ck["ema"])
    rng_cpu, rng_cuda = ck["rng_cpu"], ck.get("rng_cuda")
    rank, world = distributed.rank(), distributed.world_size()
    if world > 1 and len(ck.get("rng_ranks") or []) == world:
        rng_cpu, rng_cuda = ck["rng_ranks"][rank]
    torch.set_rng_state(rng_cpu)
    if device.type == "cuda" and rng_cuda is not None:
        torch.cuda.set_rng_state(rng_cuda)
    window = {k: list(v.to(device).unbind()) for k, v in (ck.get("log_window") or {}).items()}
    return Progress(ck["step"], ck["loss_curve"], ck.get("train_s", 0.0), window)


class LogWindow:
    """Step scalars kept on the device and averaged every ``log_every`` steps: one host sync per window."""

    def __init__(self, values: dict[str, list[torch.Tensor]] | None = None) -> None:
        self.values: dict[str, list[torch.Tensor]] = values or {}

    def add(self, logs: dict[str, torch.Tensor]) -> None:
        for k, v in logs.items():
            self.values.setdefault(k, []).append(v)

    def flush(self) -> dict[str, float]:
        logs = {k: float(torch.stack(v).mean()) for k, v in self.values.items()}
        self.values = {}
        return {k: round(v, 6) for k, v in distributed.mean_over_ranks(logs).items()}


def train(cfg: RunConfig, run_dir: Path, record: RunRecord | None = None, resume: bool = False,
          stop_after: int | None = None, comps: Components | None = None) -> Components:
    """Train (or resume) the run in ``run_dir``. ``stop_after`` ends early after that many steps in this
    process (tests use it to simulate a kill right after a checkpoint)."""
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    _check_accum(cfg)
    data = build_train_data(cfg)  # a missing data set fails first
    comps = comps or build(cfg)
    model, device = comps.model, comps.device
    _check_world(cfg, distributed.world_size())
    schedule = registry.schedules.get(cfg.schedule.name)(cfg.schedule)
    opt, ema = make_optimizer(cfg, model, device), EMA(model, cfg.train.ema_decay)
    if distributed.world_size() > 1:  # per-rank streams for dropout and the diffusion (t, noise) draws (MAR)
        torch.manual_seed(cfg.seed * 1000 + distributed.rank())
    total = total_steps(cfg)
    ckpt_path = run_dir / "checkpoint.pt"
    state = Progress()
    if resume and ckpt_path.exists():
        state = resume_from(ckpt_path, model, opt, ema, device)
        print(f"resumed from {ckpt_path} at step {state.step}/{total}")
    net = wrap(model, cfg, device)
    window, bar, poll_stop = LogWindow(state.log_window), _progress(total, state.step), distributed.StopPoll()
    sigint = distributed.stop_on_sigint()  # Ctrl-C: checkpoint after this step and return (a second one aborts)
    t0, images_seen, start, done = time.time(), 0, state.step, state.step
    for step in range(start, total):
        progress = step / total * cfg.train.epochs  # fractional epochs of the (possibly shortened) run
        lr = lr_at(cfg, progress)
        for g in opt.param_groups:
            g["lr"] = lr
        micro = micro_batches(comps, data, schedule, step, progress)
        window.add(train_step(net, model, opt, ema, micro, progress, cfg, device))
        images_seen += cfg.train.batch_size
        done = step + 1
        if done % cfg.train.log_every == 0 or done == total:
            logs = {**window.flush(), "lr": lr}
            state.curve.append([done, logs])
            ips = images_seen / max(time.time() - t0, 1e-9)
            bar.update(done, logs, ips, state.train_s + time.time() - t0)
            if not all(math.isfinite(v) for v in logs.values()):
                bar.close()  # the error line starts on its own line
                raise FloatingPointError(f"non-finite loss at step {done}: "
                                         + ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if k != "lr"))
        maybe_snapshot(cfg, run_dir, model, ema, step, total)
        stop = poll_stop()  # preemption or time limit: all ranks stop after the same step
        if done % cfg.train.ckpt_every == 0 or done == total or stop:
            save_checkpoint(run_dir, model, opt, ema, done, state.curve, state.train_s + time.time() - t0, cfg, device,
                            window.values)
            if record is not None:  # what `status` shows while the run trains
                record.data["progress"] = {"step": done, "total": total}
                record.save()
        if stop:
            print(f"stop requested: checkpoint saved at step {done}/{total}", flush=True)
            break
        if stop_after is not None and done - start >= stop_after:
            break
    bar.close()
    sigint.restore()
    poll_stop.close()
    state.train_s += time.time() - t0
    if record is not None:
        record_training(record, cfg, data, total, state, images_seen / max(time.time() - t0, 1e-9) if images_seen else 0)
    comps.ema_state = ema.state_dict(model)
    comps.finished = done >= total
    return comps


def maybe_snapshot(cfg: RunConfig, run_dir: Path, model: nn.Module, ema: EMA, step: int, total: int) -> None:
    """EMA weights at each multiple of ``train.snapshot_every`` epochs (Fig. 6), written by rank 0."""
    snap, done = cfg.train.snapshot_every, step + 1
    if snap <= 0 or done >= total or not distributed.is_main():
        return
    k = math.floor(done / total * cfg.train.epochs / snap + 1e-9)
    if k > math.floor(step / total * cfg.train.epochs / snap + 1e-9):
        atomic_torch_save({"model": ema.state_dict(model), "step": done, "epoch": k * snap},
                          run_dir / snapshot_name(k * snap))


def record_training(record: RunRecord, cfg: RunConfig, data, total: int, state: Progress, ips: float) -> None:
    b = cfg.train.batch_size
    record.data["train"] = {
        "steps": total, "epochs": cfg.train.epochs, "batch_size": b, "lr": cfg.lr,
        "checkpoint": "checkpoint.pt", "ema": "ema.pt", "loss_curve": state.curve,
    }
    if hasattr(data, "stats"):  # CC12M: source (shards | cache), samples read, corrupt samples skipped
        record.data["train"]["data"] = data.stats()
    record.data["timings"]["train_s"] = round(state.train_s, 2)
    if ips:
        record.data["timings"]["images_per_s"] = round(ips, 2)
    record.save()


def snapshot_name(epoch: float) -> str:
    """File of the EMA snapshot taken at ``epoch`` (``train.snapshot_every``), e.g. ``ema_e12.pt``."""
    return f"ema_e{epoch:g}.pt"


def save_checkpoint(run_dir: Path, model: nn.Module, opt, ema: EMA, step: int, curve: list, train_s: float,
                    cfg: RunConfig, device: torch.device, window: dict[str, list[torch.Tensor]] | None = None) -> None:
    rng_cuda = torch.cuda.get_rng_state() if device.type == "cuda" else None
    rngs = distributed.gather_objects((torch.get_rng_state(), rng_cuda))  # collective: all ranks call this
    if not distributed.is_main():  # only rank 0 writes (the weights are identical on all ranks)
        return
    state = {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "ema": ema.shadow, "step": step,
        "loss_curve": curve, "train_s": train_s, "config": cfg.to_dict(), "rng_cpu": torch.get_rng_state(),
        "rng_cuda": rng_cuda, "rng_ranks": rngs if len(rngs) > 1 else None,
        "log_window": {k: torch.stack(v).cpu() for k, v in (window or {}).items() if v},
    }
    atomic_torch_save({"model": ema.state_dict(model), "step": step, "config": cfg.to_dict()}, run_dir / "ema.pt")
    atomic_torch_save(state, run_dir / "checkpoint.pt")  # written last: it marks the resume point


class _progress:
    """A tqdm bar with loss and images/s (plain lines when tqdm is unavailable)."""

    def __init__(self, total: int, start: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, mininterval=2.0,
                        disable=not distributed.is_main())
        self.last = start

    def update(self, done: int, logs: dict[str, float], ips: float, elapsed: float) -> None:
        self.bar.update(done - self.last)
        self.last = done
        shown = {k: f"{v:.4g}" for k, v in logs.items() if k in ("total", "diff", "clip", "repa", "mask_ratio")}
        self.bar.set_postfix(**shown, img_s=f"{ips:.1f}")

    def close(self) -> None:
        self.bar.close()
