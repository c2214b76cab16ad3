"""Typed run configuration: dataclasses, presets, recipes, ``--set`` overrides and the run id.

Every constant taken from the paper (arXiv 2603.02667) carries the paper's name in a comment.
Resolution order (later wins): dataclass defaults (the `official` recipe, i.e. the released training
scripts; the objective's and schedule's own ``Settings``) -> objective defaults for the other sections
(Tables 18-21) -> recipe (`official` | `paper`) -> preset (model size) -> command-line flags ->
``--set section.field=value``. The first three happen in one function, ``apply_plugin_defaults``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from benchmark.settings import ConfigError, Settings

__all__ = ["ConfigError", "RunConfig", "build_config", "from_dict", "run_id", "validate"]


@dataclass
class ModelConfig:
    tokenizer: str = "sd_vae"  # sd_vae (SD kl-f8-ft-EMA, §9.1) | pixel (embedded default stand-in)
    image_size: int = 256  # §4.1: centre crop 256
    patch_size: int = 2  # §9.1: 2x2 grouping of the 32x32x4 latent -> 256 tokens x 16 channels
    vae_path: str = ""  # local diffusers AutoencoderKL folder; env DREAM_BENCH_VAE
    vae_scale: float = 0.18215  # SD VAE latent scaling factor
    width: int = 1024  # §9.3 hidden size (L)
    depth: int = 32  # §9.3 total blocks; encoder = decoder = depth // 2
    heads: int = 16
    mlp_ratio: float = 4.0
    buffer_tokens: int = 64  # §9.2.1: 64 buffer tokens
    dropout: float = 0.1  # attention/projection dropout of the released code
    head_depth: int = 3  # diffusion MLP depth: official 3, paper "six-layer" (§3.1)
    head_width: int = 1024  # official diffloss_w 1024; 0 = the transformer width (paper)
    diffusion_batch_mul: int = 4  # §3.2: four noise levels per image
    diffusion_steps: int = 1000  # §3.1: 1000 training steps
    sample_steps: int = 100  # §3.1: 100 respaced steps at inference
    noise_schedule: str = "cosine"  # §3.1 cosine (improved DDPM); x0 is clipped to [-1, 1] only for pixels
    t5_path: str = ""  # local T5 encoder folder (official t5-large; paper T5-XXL); env DREAM_BENCH_T5
    t5_dim: int = 1024  # t5-large 1024 (official) | T5-XXL 4096 (paper)
    text_len: int = 128  # §3.1: SentencePiece, 128 tokens
    aligner_depth: int = 6  # §3.1: 6-layer text aligner
    null_text: str = "empty_caption"  # CFG null: official T5("") | learned (paper "null token")
    text_pad_mask: bool = False  # official: no attention mask into T5 nor in cross-attention
    grad_checkpoint: bool = False


@dataclass
class TrainConfig:
    batch_size: int = 2048  # Tables 18-21
    blr: float = 1e-4  # Tables 18-21 "Base learning rate"; lr = blr x batch / 256 (= 8e-4, §4.1)
    lr: float = 0.0  # absolute lr; 0 = derived from blr
    weight_decay: float = 0.02  # Tables 18-20: 0.02; Table 21 (DREAM): 0.04
    decay_logit_scale: bool = True  # official add_weight_decay decays the 0-d CLIP temperature; paper recipe: excluded
    beta1: float = 0.9  # Tables 18-21 "Momentum"
    beta2: float = 0.95
    warmup_epochs: float = 12.0  # Tables 18-21 "Warmup epochs"
    epochs: float = 48.0  # official scripts 48; paper text 49
    steps: int = 0  # total optimizer steps; 0 = epochs x n_train / batch (schedules scale with it)
    grad_clip: float = 3.0  # Tables 18-21 "Gradient clip"
    caption_dropout: float = 0.1  # Tables 18-21 "Label dropout" (caption dropout for CFG)
    ema_decay: float = 0.9999  # §4.1
    accum_steps: int = 1
    amp: str = "bf16"  # bf16 | fp32 (autocast on CUDA only)
    compile: bool = False
    ckpt_every: int = 500  # steps between atomic checkpoints
    snapshot_every: float = 0.0  # epochs between EMA snapshots ema_e<epoch>.pt (Fig. 6: metrics over training); 0 = off
    log_every: int = 10
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 = torch default


@dataclass
class DataConfig:
    name: str = "cc12m"  # cc12m | synthetic
    root: str = ""  # CC12M webdataset shards; env DREAM_BENCH_DATA
    n_train: int = 11_300_000  # §4.1: 11.3M pairs
    n_eval: int = 2048
    num_workers: int = 8
    hflip: bool = True  # §4.1 horizontal flip
    # Synthetic data only (no effect on cc12m): every scene is drawn with a twin that differs only in its main object's
    # shape, both in one batch, so the contrastive loss cannot be solved without shape (issue 15; not in the paper).
    shape_twins: bool = False
    # -- data and caching (issue 8) --
    shards: str = ""  # shard names under root in brace notation, e.g. "{00000..01242}.tar"; "" = every *.tar
    cached: bool = False  # read the feature cache (python -m benchmark cache) instead of the raw shards
    cache_dir: str = ""  # feature-cache shards; "" = <root>/cache, beside the images
    shuffle_buffer: int = 1000  # webdataset sample shuffle buffer (per loader worker)
    resampled: bool = True  # shards drawn with replacement per (rank, worker) seed; false = exact epochs
    holdout: int = 0  # CC12M pairs kept out of training for the CC12M-50K reference (50,000; benchmark/data/cc12m.py)


@dataclass
class EvalConfig:
    use_ema: bool = True  # §4.1: evaluation uses the EMA weights
    batch_size: int = 256
    lp_mode: str = "fast"  # fast: probe on cached centre-crop features | augmented: RandomResizedCrop + flip (Table 22)
    lp_pool: str = "all"  # all | buffer | image: which encoder tokens are mean-pooled
    lp_epochs: int = 90  # Table 22
    lp_blr: float = 0.1  # Table 22 (B 0.1, L/H 0.05, G 0.02)
    lp_batch: int = 4096  # Table 22
    lp_warmup_epochs: int = 10  # Table 22
    imagenet_root: str = ""  # ImageFolder layout train/<wnid>/*, val/<wnid>/*; env DREAM_BENCH_IMAGENET
    n_probe_train: int = 4096  # synthetic data only
    n_probe_test: int = 2048
    samples: int = 16  # images in the sample grid written after training (0 = none)
    sample_steps: int = 64  # §3.4: 64 MAR decoding steps
    cfg: float = 3.0
    cfg_schedule: str = "linear"  # constant | linear (§9.5.2)
    temperature: float = 1.0
    # -- generation tasks: fid, clip_score, SAD, bench sample (issue 3) --
    sad_k: int = 1  # Semantically Aligned Decoding candidates K (Alg. 3; Tables 6, 17: 1, 2, 5, 9, 17); 1 = plain MAR
    sad_nfe: int = 0  # encoder-pass budget per image, NFE = K*T + (S - T) (Table 6: 64 | 128); 0: S for K=1, 2S for K>1
    sad_rerank: str = "self"  # self (SAD, the model's own CLIP) | clip (Table 6 "K=2 w/ Ext. CLIP": full decodes)
    gen_samples: int = 0  # images for fid / clip_score; 0 = the protocol: cc12m 50,000 | coco 30,000 (Table 2); synthetic 256
    gen_batch: int = 64  # prompts per generation batch (the released eval: 48 per GPU)
    gen_seed: int = 0  # seed of the generation (orders and diffusion noise)
    gen_root: str = ""  # reference folders <root>/<cc12m|coco>/{captions.txt,images/}; env DREAM_BENCH_GEN_REF
    fid_mode: str = "clean"  # clean-fid mode: clean | legacy_tensorflow | legacy_pytorch
    inception_path: str = ""  # folder holding clean-fid's inception-2015-12-05.pt; env DREAM_BENCH_INCEPTION
    clip_model: str = "ViT-L-14"  # external CLIP for the CLIP score and the reranker (open_clip name; anchors-eval §5.3)
    clip_path: str = ""  # its local weights file; env DREAM_BENCH_CLIP
    sad_bench_prompts: int = 0  # prompts per `bench sample` row; 0 = gen_samples
    # -- representation tasks (issue 4); ft, fewshot, zeroshot, seg, depth own theirs (task.<name>.*) --
    lp_aug_scale: float = 0.2  # augmented mode: RandomResizedCrop scale (0.2, 1) + flip (MAGE main_linprobe, Table 22)
    lp_micro_batch: int = 0  # > 0: accumulate micro-batches of this size up to lp_batch (effective 4096, Table 22)
    robustness_root: str = ""  # IN-A/R/Sketch/Hard, ImageNetV2, ObjectNet folders; env DREAM_BENCH_ROBUSTNESS
    robustness_classifier: str = "ft"  # ft: the fine-tuned model (Table 2) | lp: the linear probe on frozen features
    fewshot_root: str = ""  # one folder per few-shot set (benchmark/data/evalsets.py); env DREAM_BENCH_FEWSHOT
    # -- dense probes: seg, depth (issue 5) --
    dense_mode: str = "full"  # full: the anchor's augmented pipeline (DINOv3) | fast: head on cached un-augmented features
    dense_resolution: int = 0  # px the encoder sees (seg crop/window side, depth short side); 0 = model.image_size
    dense_layer: int = 0  # encoder block whose output feeds the heads; 0 = last, after the final norm (DINOv3 LAST)
    dense_tokens: str = "image"  # image: patch tokens only (DINOv3) | image+buffer: concat the mean buffer token
    dense_batch: int = 16  # DINOv3: 2 per GPU x 8 GPUs, both probes
    dense_n_train: int = 2048  # synthetic data only
    dense_n_test: int = 512
    ade20k_root: str = ""  # ADEChallengeData2016 layout; env DREAM_BENCH_ADE20K
    nyu_root: str = ""  # BTS layout with nyu_train.txt / nyu_test.txt; env DREAM_BENCH_NYU


@dataclass
class RunConfig:
    preset: str = "tiny"
    recipe: str = "official"
    seed: int = 0
    tasks: list[str] = field(default_factory=lambda: ["lp"])
    include: list[str] = field(default_factory=list)
    out: str = "results/runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    # The selected plugins' own settings dataclasses (``Objective.Settings``, ``MaskingSchedule.Settings``).
    objective: Settings = field(default_factory=lambda: plugin_settings("objective", "dream"))
    schedule: Settings = field(default_factory=lambda: plugin_settings("schedule", "wm"))
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Each task's own settings (``Task.Settings``), keyed by task name; filled for the run's tasks and on demand.
    task: dict[str, Settings] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def task_settings(self, name: str) -> Settings:
        """The settings of task ``name`` (a variant ``fid/coco`` or snapshot ``lp@12`` -> ``fid``, ``lp``)."""
        name = name.split("/", 1)[0].split("@", 1)[0]
        if name not in self.task:
            self.task[name] = plugin_settings("task", name)
        return self.task[name]

    @property
    def lr(self) -> float:
        t = self.train
        return t.lr if t.lr > 0 else t.blr * t.batch_size / 256

    @property
    def encoder_depth(self) -> int:
        return self.model.depth // 2


SECTIONS = ("model", "objective", "schedule", "train", "data", "eval", "task")
PLUGIN_SECTIONS = ("objective", "schedule")  # sections whose fields are those of the selected plugin
TOP_LEVEL = ("preset", "recipe", "seed", "tasks", "include", "out")

# Model sizes (§9.3; heads and G's MLP width as in the released constructors).
PRESETS: dict[str, dict[str, Any]] = {
    "B": {"model.width": 768, "model.depth": 24, "model.heads": 12},
    "L": {"model.width": 1024, "model.depth": 32, "model.heads": 16},
    "H": {"model.width": 1280, "model.depth": 40, "model.heads": 16},
    "G": {"model.width": 1664, "model.depth": 48, "model.heads": 16, "model.mlp_ratio": 8192 / 1664},
    # The embedded default: CPU, synthetic captioned shapes, pixel patches, tiny random text encoders.
    # 8 epochs of 9,600 scenes at batch 16 = 4,800 steps; the epoch-based schedules keep the paper's
    # proportions: lr warmup 12/48 -> 2 of 8 epochs, masking warmup 36/48 -> 6 of 8 epochs.
    # Batch 16: in the same images, 4x the updates of batch 64 are what makes the samples show objects (issue 15).
    # 16 px (16 tokens of 4x4 px), not 32 (64 tokens): a step is 2.1x cheaper, so 4,800 steps fit the 2,400 of 32 px's
    # wall time, and the model binds both axes of position instead of one (32 px ignored "left"/"right" and smeared
    # each object over its row). lr 5e-4 (blr 8e-3), half 32 px's: in one-thread runs at 16 px, lp +26 instead of +11
    # points over the untrained encoder, agreement 53.5 % instead of 58.2 % (README, "Objects in the embedded ...").
    "tiny": {
        "model.tokenizer": "pixel", "model.image_size": 16, "model.patch_size": 4,
        "model.width": 128, "model.depth": 8, "model.heads": 4, "model.buffer_tokens": 16,
        "model.dropout": 0.0, "model.head_depth": 3, "model.head_width": 128,
        "model.t5_dim": 64, "model.text_len": 32, "model.aligner_depth": 2,
        "objective.proj_hidden": 256, "objective.embed_dim": 64, "objective.clip_context": 32,
        "objective.clip_text_width": 64, "objective.clip_text_layers": 2, "objective.clip_text_heads": 2,
        "objective.repa_teacher": "tiny", "objective.repa_layer": 2, "objective.repa_proj_dim": 256,
        "schedule.group_size": 8,
        "schedule.warmup_epochs": 6.0,
        "train.batch_size": 16, "train.blr": 8e-3, "train.epochs": 8, "train.warmup_epochs": 2.0,
        "train.ema_decay": 0.995,
        "train.ckpt_every": 400, "train.log_every": 40, "train.amp": "fp32",
        "data.name": "synthetic", "data.n_train": 9600, "data.n_eval": 1024,
        "data.num_workers": 0,
        # 4,800 scenes and their shape twins: with 16 captions a batch, colour, position and background alone solve the
        # contrastive loss, and no encoder learned shape (README, issue 15).
        "data.shape_twins": True,
        # Every task has a synthetic counterpart; the embedded default reports them all (ft: ~3 min, on request).
        "tasks": "lp/synthetic,fewshot/synthetic,zeroshot/synthetic,robustness/synthetic,seg/synthetic,depth/synthetic,"
                 "fid/synthetic,clip_score/synthetic",
        # MAE's LARS scales each step by 1e-3 x |w|/|g|: the tiny probe's 960 steps (the paper's ~28k) need a larger lr
        "eval.lp_epochs": 60, "eval.lp_blr": 32.0, "eval.lp_batch": 256, "eval.lp_warmup_epochs": 5,
        "eval.robustness_classifier": "lp", "eval.zeroshot_n": 256,
        "eval.dense_mode": "fast", "eval.dense_batch": 32, "eval.seg_iters": 300, "eval.seg_warmup": 30,
        "eval.seg_recipe": "dinov3", "eval.depth_iters": 300, "eval.depth_warmup": 30, "eval.depth_lr": 3e-3,
        "eval.batch_size": 256, "eval.samples": 16, "eval.sample_steps": 16, "eval.cfg": 3.0,  # 16 tokens: one a step
        "eval.temperature": 0.7,  # the paper samples at 1.0; a 10-minute head is too noisy per token for that
    },
}
# Parameter counts the paper gives (§3.1, §9.3, Figs. 8-10): backbone + aligner + diffusion head,
# without the frozen T5 and the CLIP text tower.
PAPER_PARAMS = {"L": 570e6, "H": 1.1e9, "G": 2.4e9}
PAPER_ENCODER_PARAMS = {"G": 921e6}

RECIPES = ("official", "paper")
# Where the paper text and the released code differ (anchors-models.md §3.13), in the sections the package owns.
# The plugins' fields carry their own paper values (``benchmark.settings.paper``); an objective may add more
# (``Objective.recipes``, e.g. DREAM's sigma 0.55).
RECIPE_OVERRIDES: dict[str, dict[str, Any]] = {
    "official": {},
    "paper": {
        "train.epochs": 49,  # §4.1
        "model.head_depth": 6,  # §3.1 "six-layer MLP diffusion head"
        "model.head_width": 0,  # "matches the transformer's embedding dimension"
        "model.t5_dim": 4096,  # T5-XXL
        "model.null_text": "learned",  # §9.5.2 "null token"
        "train.decay_logit_scale": False,  # open_clip/StableRep exclude the temperature from weight decay
    },
}


def plugin_class(kind: str, name: str) -> Any:
    """The registered objective / schedule / task class called ``name`` (``UnknownPluginError`` otherwise)."""
    from benchmark import registry

    return {"objective": registry.objectives, "schedule": registry.schedules, "task": registry.tasks}[kind].get(name)


def plugin_settings(kind: str, name: str) -> Settings:
    """A default instance of the settings dataclass the plugin declares (its ``Settings``)."""
    return plugin_class(kind, name).Settings(name=name)


def recipe_overrides(recipe: str, objective: str, schedule: str | None = None) -> dict[str, Any]:
    """Every field ``recipe`` changes for this objective and schedule (the schedule: the objective's default)."""
    if recipe not in RECIPE_OVERRIDES:
        raise ConfigError(f"unknown recipe {recipe!r}; valid choices: {', '.join(RECIPES)}")
    obj = plugin_class("objective", objective)
    sched = plugin_class("schedule", schedule or obj.defaults.get("schedule.name", "wm"))
    over = dict(RECIPE_OVERRIDES[recipe])
    if recipe == "paper":
        over.update({f"objective.{k}": v for k, v in obj.Settings.paper_values().items()})
        over.update({f"schedule.{k}": v for k, v in sched.Settings.paper_values().items()})
    over.update(obj.recipes.get(recipe, {}))
    return over


def apply_plugin_defaults(cfg: RunConfig, objective: str, schedule: str | None, recipe: str) -> None:
    """THE one place where plugin defaults and recipes are applied: the objective's settings dataclass, its
    defaults for the other sections (its table in the paper: weight decay, schedule and its parameters), then
    the recipe (``paper``: every field's paper value). A schedule field the selected schedule lacks is skipped."""
    obj = plugin_class("objective", objective)
    cfg.objective = obj.Settings(name=objective)
    defaults = dict(obj.defaults)
    schedule = schedule or defaults.pop("schedule.name", "wm")
    defaults.pop("schedule.name", None)
    cfg.schedule = plugin_settings("schedule", schedule)
    apply(cfg, defaults, lenient=True)
    apply(cfg, recipe_overrides(recipe, objective, schedule), lenient=True)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _convert(value: str, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            return int(float(value)) if "e" in value.lower() else int(value)
        if typ is float:
            return float(value)
        if typ is str:
            return value
        if origin is list:
            return [v for v in value.split(",") if v] if value not in ("none", "") else []
    except ValueError:
        pass
    raise ConfigError(f"{key}={value!r}: expected a value of type {getattr(typ, '__name__', typ)}")


def _task_alias(name: str) -> tuple[str, str] | None:
    """``eval.ft_epochs`` (the spelling before tasks owned their settings) -> ``("ft", "epochs")``."""
    from benchmark import registry

    for task in registry.tasks.names():
        s = registry.tasks.get(task).Settings
        prefix = getattr(s, "prefix", "")
        if prefix and name.startswith(prefix) and name[len(prefix):] in s.field_names():
            return task, name[len(prefix):]
    return None


def _switch_plugin(cfg: RunConfig, section: str, name: str) -> None:
    """``schedule.name=uni``: the new plugin's settings, keeping the values of the fields both have."""
    old = getattr(cfg, section)
    new = plugin_settings(section, name)
    for f in fields(new):
        if f.name != "name" and hasattr(old, f.name):
            setattr(new, f.name, getattr(old, f.name))
    setattr(cfg, section, new)


def set_value(cfg: RunConfig, key: str, value: Any, lenient: bool = False) -> None:
    """Set ``section.field``, ``task.<task>.field`` or a top-level field from a string or a typed value.
    ``lenient``: a plugin field the selected plugin lacks is skipped (presets, objective defaults, recipes)."""
    parts = key.split(".")
    owner = ""
    if len(parts) == 1:
        target, name = cfg, parts[0]
        valid = list(TOP_LEVEL)
    elif len(parts) == 3 and parts[0] == "task":
        target, name = cfg.task_settings(parts[1]), parts[2]
        owner = f" fields of task {parts[1]!r}"
        valid = [f"task.{parts[1]}.{v}" for v in target.field_names()]
    elif len(parts) == 2 and parts[0] in SECTIONS and parts[0] != "task":
        target, name = getattr(cfg, parts[0]), parts[1]
        if parts[0] == "eval" and name not in _field_types(EvalConfig):
            alias = _task_alias(name)
            if alias is not None:  # the old spelling eval.<prefix><field> of a task's setting
                return set_value(cfg, f"task.{alias[0]}.{alias[1]}", value, lenient)
        if parts[0] in PLUGIN_SECTIONS:
            if name == "name":
                return _switch_plugin(cfg, parts[0], str(value))
            owner = f" fields of {parts[0]} {target.name!r}"
            valid = [f"{parts[0]}.{v}" for v in target.field_names()]
        else:
            valid = [f"{parts[0]}.{f.name}" for f in fields(target)]
    else:
        close = difflib.get_close_matches(parts[0], SECTIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}; sections: {', '.join(SECTIONS)} (task.<task>.<field>)")
    types = _field_types(type(target))
    if name not in types or (target is cfg and name not in TOP_LEVEL) or (owner and name == "name"):
        if lenient and owner:
            return
        close = difflib.get_close_matches(name, [v.rsplit(".", 1)[-1] for v in valid], n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"unknown config key {key!r}.{hint} Valid{owner}: {', '.join(valid) or 'none (it has no settings)'}")
    if isinstance(value, str):
        value = _convert(value, types[name], key)
    elif types[name] is float and isinstance(value, int):
        value = float(value)
    setattr(target, name, value)


def apply(cfg: RunConfig, overrides: dict[str, Any], lenient: bool = False) -> None:
    for key, value in overrides.items():
        set_value(cfg, key, value, lenient)


def parse_set(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.field=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def validate(cfg: RunConfig) -> None:
    """Range checks with one-line messages. Plugin names are checked by the registries, plugin fields by the
    plugins' ``Settings.validate``."""
    m, t, d, e = cfg.model, cfg.train, cfg.data, cfg.eval
    validate_fields(cfg)  # first: the checks below divide by model.heads and model.patch_size

    def check(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    def choice(key: str, value: str, valid: tuple[str, ...]) -> None:
        check(value in valid, f"{key}={value!r} is not valid; choose one of: {', '.join(valid)}")

    check(cfg.preset in PRESETS, f"unknown preset {cfg.preset!r}; valid choices: {', '.join(PRESETS)}")
    choice("recipe", cfg.recipe, RECIPES)
    choice("model.tokenizer", m.tokenizer, ("sd_vae", "pixel"))
    choice("model.noise_schedule", m.noise_schedule, ("cosine", "linear"))
    choice("model.null_text", m.null_text, ("empty_caption", "learned"))
    choice("train.amp", t.amp, ("bf16", "fp32"))
    choice("train.device", t.device, ("auto", "cpu", "cuda"))
    choice("data.name", d.name, ("cc12m", "synthetic"))
    choice("eval.lp_pool", e.lp_pool, ("all", "buffer", "image"))
    choice("eval.cfg_schedule", e.cfg_schedule, ("constant", "linear"))
    check(m.depth >= 2 and m.depth % 2 == 0, f"model.depth must be an even number >= 2, got {m.depth}")
    check(m.width % m.heads == 0, f"model.width ({m.width}) must be divisible by model.heads ({m.heads})")
    check(m.image_size % m.patch_size == 0, "model.image_size must be divisible by model.patch_size")
    check(m.buffer_tokens >= 0, f"model.buffer_tokens must be >= 0, got {m.buffer_tokens}")
    check(m.diffusion_batch_mul >= 1, "model.diffusion_batch_mul must be >= 1")
    check(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    check(t.steps >= 0, f"--steps must be a positive integer, got {t.steps}")
    check(t.epochs > 0, f"train.epochs must be > 0, got {t.epochs}")
    check(t.accum_steps >= 1 and t.batch_size % t.accum_steps == 0,
          "train.accum_steps must divide train.batch_size")
    check(0 <= t.caption_dropout < 1, "train.caption_dropout must be in [0, 1)")
    check(0 <= t.ema_decay < 1, "train.ema_decay must be in [0, 1)")
    check(t.ckpt_every >= 1 and t.log_every >= 1, "train.ckpt_every and train.log_every must be >= 1")
    check(d.n_train >= t.batch_size, f"data.n_train ({d.n_train}) must be >= train.batch_size")
    check(d.holdout >= 0, f"data.holdout must be >= 0 (pairs kept out of training), got {d.holdout}")
    check(not d.shape_twins or d.name != "synthetic" or t.batch_size % 2 == 0,
          f"data.shape_twins keeps twin pairs in one batch: train.batch_size must be even, got {t.batch_size}")
    # -- generation tasks (issue 3) --
    choice("eval.sad_rerank", e.sad_rerank, ("self", "clip"))
    choice("eval.fid_mode", e.fid_mode, ("clean", "legacy_tensorflow", "legacy_pytorch"))
    check(e.sad_k >= 1, f"eval.sad_k must be >= 1, got {e.sad_k}")
    check(e.sad_nfe >= 0 and e.sample_steps >= 1, "eval.sad_nfe must be >= 0 and eval.sample_steps >= 1")
    check(e.gen_samples >= 0 and e.gen_batch >= 1 and e.sad_bench_prompts >= 0,
          "eval.gen_samples >= 0, eval.gen_batch >= 1, eval.sad_bench_prompts >= 0")
    # -- representation tasks (issue 4) --
    choice("eval.lp_mode", e.lp_mode, ("fast", "augmented"))
    choice("eval.robustness_classifier", e.robustness_classifier, ("ft", "lp"))
    check(0 < e.lp_aug_scale <= 1, f"eval.lp_aug_scale must be in (0, 1], got {e.lp_aug_scale}")
    check(e.lp_micro_batch >= 0, "eval.lp_micro_batch must be >= 0")
    # -- dense probes (issue 5) --
    choice("eval.dense_mode", e.dense_mode, ("full", "fast"))
    choice("eval.dense_tokens", e.dense_tokens, ("image", "image+buffer"))
    check(0 <= e.dense_layer <= cfg.encoder_depth, f"eval.dense_layer must be in [0, {cfg.encoder_depth}]")
    check(e.dense_resolution >= 0, f"eval.dense_resolution must be >= 0, got {e.dense_resolution}")
    check(e.dense_batch >= 1 and e.dense_n_train >= 1 and e.dense_n_test >= 1,
          "eval.dense_batch, eval.dense_n_train and eval.dense_n_test must be >= 1")
    # -- data and caching (issue 8) --
    check(d.shuffle_buffer >= 0, f"data.shuffle_buffer must be >= 0, got {d.shuffle_buffer}")
    check(d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}")
    check(not d.cached or d.name == "cc12m", "data.cached=true needs data.name=cc12m (the synthetic data is in memory)")
    check(not d.cached or m.tokenizer == "sd_vae",
          "data.cached=true needs model.tokenizer=sd_vae: the cache holds VAE latents")
    # -- the plugins check their own fields (their Settings.validate); capabilities are the objective's --
    for plugin in (cfg.objective, cfg.schedule, *cfg.task.values()):
        plugin.validate(cfg)
    caps = plugin_class("objective", cfg.objective.name).capabilities
    check(not d.cached or not caps.teacher,
          f"data.cached=true does not store images; objective {cfg.objective.name!r} has a teacher that needs them")


# Float fields that may be infinite: train.grad_clip=inf disables clipping (clip_grad_norm_ clamps its coefficient).
MAY_BE_INF = {"train.grad_clip"}


def validate_fields(cfg: RunConfig) -> None:
    """Train/model/data/generation ranges (issue 14): torch is never the one to complain and no value is silently
    replaced by a default. Every float must be finite (sigma=inf would zero the masks for a whole run)."""
    def check(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    sections = [(sec, getattr(cfg, sec)) for sec in SECTIONS if sec != "task"]
    for sec, obj in [*sections, *((f"task.{k}", v) for k, v in cfg.task.items())]:
        for f in fields(obj):
            v = getattr(obj, f.name)
            if isinstance(v, float) and not math.isfinite(v) and not (f"{sec}.{f.name}" in MAY_BE_INF and v > 0):
                raise ConfigError(f"{sec}.{f.name}={v} must be a finite number")
    m, t, d, e = cfg.model, cfg.train, cfg.data, cfg.eval
    check(cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}")
    # -- optimizer (AdamW, Tables 18-21) --
    check(t.blr > 0, f"train.blr must be > 0, got {t.blr}")
    check(t.lr >= 0, f"train.lr must be >= 0 (0 = derived from train.blr), got {t.lr}")
    check(0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, f"train.beta1 and train.beta2 must be in [0, 1), got {t.beta1}, {t.beta2}")
    check(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
    check(t.grad_clip > 0, f"train.grad_clip must be > 0 (inf disables clipping), got {t.grad_clip}")
    check(t.warmup_epochs >= 0, f"train.warmup_epochs must be >= 0, got {t.warmup_epochs}")
    check(t.snapshot_every >= 0 and t.threads >= 0, "train.snapshot_every and train.threads must be >= 0")
    # -- model shape --
    for key in ("image_size", "patch_size", "width", "heads", "head_depth", "diffusion_steps", "sample_steps",
                "t5_dim", "text_len"):
        check(getattr(m, key) >= 1, f"model.{key} must be >= 1, got {getattr(m, key)}")
    check(m.width % m.heads == 0, f"model.width ({m.width}) must be divisible by model.heads ({m.heads})")
    check(m.aligner_depth >= 0 and m.head_width >= 0, "model.aligner_depth and model.head_width must be >= 0")
    check(m.mlp_ratio > 0 and m.vae_scale > 0, "model.mlp_ratio and model.vae_scale must be > 0")
    check(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")
    grid = m.image_size if m.tokenizer == "pixel" else m.image_size // 8
    check((m.tokenizer == "pixel" or m.image_size % 8 == 0) and grid % m.patch_size == 0,
          f"model.image_size={m.image_size} does not split into model.patch_size={m.patch_size} patches"
          + ("" if m.tokenizer == "pixel" else " of the 8x-downsampled VAE latent"))
    # -- data --
    check(d.n_train >= 1 and d.n_eval >= 0, "data.n_train must be >= 1 and data.n_eval >= 0")
    # -- evaluation and generation --
    check(e.batch_size >= 1 and e.samples >= 0, "eval.batch_size must be >= 1 and eval.samples >= 0")
    check(e.lp_epochs >= 1 and e.lp_batch >= 1 and e.lp_blr > 0 and e.lp_warmup_epochs >= 0,
          "eval.lp_epochs, eval.lp_batch >= 1, eval.lp_blr > 0, eval.lp_warmup_epochs >= 0")
    check(e.n_probe_train >= 1 and e.n_probe_test >= 1, "eval.n_probe_train and eval.n_probe_test must be >= 1")
    check(e.cfg >= 0, f"eval.cfg (guidance scale) must be >= 0, got {e.cfg}")
    check(e.temperature > 0, f"eval.temperature must be > 0, got {e.temperature}")
    check(e.gen_seed >= 0, f"eval.gen_seed must be >= 0, got {e.gen_seed}")


def build_config(
    objective: str = "dream",
    schedule: str | None = None,
    preset: str = "tiny",
    recipe: str = "official",
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Resolve a full config: plugin defaults and recipe (``apply_plugin_defaults``) -> preset -> overrides."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid choices: {', '.join(PRESETS)}")
    cfg = RunConfig(preset=preset, recipe=recipe)
    apply_plugin_defaults(cfg, objective, schedule, recipe)
    apply(cfg, PRESETS[preset], lenient=True)  # a preset sizes every plugin; one without the field skips it
    apply(cfg, overrides or {})
    for t in cfg.tasks:  # the record stores the settings of the run's tasks (unknown names fail later, clearly)
        if t.split("/", 1)[0].split("@", 1)[0] in _task_names():
            cfg.task_settings(t)
    validate(cfg)
    return cfg


def _task_names() -> list[str]:
    from benchmark import registry

    return registry.tasks.names()


def from_dict(d: dict[str, Any]) -> RunConfig:
    """A config from a record (``to_dict``); fields a plugin no longer has are ignored."""
    from benchmark import registry

    for inc in d.get("include", []):
        registry.include(inc)
    cfg = RunConfig()
    for k in TOP_LEVEL:
        if k in d:
            setattr(cfg, k, d[k])
    for sec in PLUGIN_SECTIONS:
        if "name" in d.get(sec, {}):
            setattr(cfg, sec, plugin_settings(sec, d[sec]["name"]))
    for name in d.get("task", {}):
        cfg.task[name] = plugin_settings("task", name)
    for sec in SECTIONS:
        target = getattr(cfg, sec)
        for k, v in d.get(sec, {}).items():
            if sec == "task":
                for kk, vv in v.items():
                    if kk != "name" and hasattr(target[k], kk):
                        setattr(target[k], kk, vv)
            elif sec == "eval" and not hasattr(target, k):
                alias = _task_alias(k)  # a record written before tasks owned their settings
                if alias is not None and alias[0] not in d.get("task", {}):
                    setattr(cfg.task_settings(alias[0]), alias[1], v)
            elif hasattr(target, k) and not (sec in PLUGIN_SECTIONS and k == "name"):
                setattr(target, k, v)
    return cfg


# Fields that do not change the trained weights: excluded from the run id so reruns, requeues and later
# evaluations with other tasks or eval settings share one run (tasks record their own settings).
NON_TRAINING_SECTIONS = ("eval", "task")
# (a plugin marks such a field itself: ``field(..., metadata={"run_id": False})``, e.g. a local weights path)
NON_SEMANTIC = {"tasks",
    "out", "include", "model.vae_path", "model.t5_path", "data.root", "data.cache_dir",
    "data.num_workers", "train.ckpt_every", "train.snapshot_every", "train.log_every", "train.device", "train.threads",
    "train.compile", "model.grad_checkpoint",
}


# Fields added after runs were recorded: hashed only when set, so the run ids of existing records stay valid.
HASHED_WHEN_SET = {"data.holdout": 0}


def config_hash(cfg: RunConfig) -> str:
    d = cfg.to_dict()
    for key, default in HASHED_WHEN_SET.items():
        sec, name = key.split(".")
        if d[sec].get(name) == default:
            d[sec].pop(name)
    for sec in NON_TRAINING_SECTIONS:
        d.pop(sec, None)
    for key in NON_SEMANTIC:
        parts = key.split(".")
        if len(parts) == 1:
            d.pop(key, None)
        else:
            d[parts[0]].pop(parts[1], None)
    for sec in PLUGIN_SECTIONS:
        for f in fields(getattr(cfg, sec)):
            if not f.metadata.get("run_id", True):
                d[sec].pop(f.name, None)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def run_id(cfg: RunConfig) -> str:
    return (
        f"{cfg.objective.name}-{cfg.schedule.name}-{cfg.preset}-{cfg.data.name}-"
        f"{config_hash(cfg)[:8]}-s{cfg.seed}"
    )

